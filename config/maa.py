# Make-An-Audio + ImageBind on toyav, Experiment B (token alignment): the toy ImageBind embeddings
# of each caption's text part and of a picture of its place alone, averaged, mapped to 16 tokens
# shaped like the toy CLAP text tokens the toy Make-An-Audio generator (config/ldm_tokens.py)
# cross-attends to; loss 2 MSE + (1 - cos) to the CLAP text tokens of the whole caption. The
# generator never runs in training. Needs toyav's toy parts, out/toyav_t2a_tokens, then
#   python prepare.py toyav_maa && python prepare.py toyav_maa --features toy
#   python sample.py --ckpt out/toyav_maa --text "a loud dog barking" --image tunnel.png
out_dir = 'out/toyav_maa'
method = 'maa'
dataset = 'toyav_maa'
model_args = dict(experiment='b', fusion='average', emb_dim=128, n_tokens=16, token_dim=128,
                  width=256, n_layer=2, n_head=4, mse_weight=2.0, cos_weight=1.0)
batch_size = 128
max_iters = 3000
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 100
eval_interval = 100
patience = 6
