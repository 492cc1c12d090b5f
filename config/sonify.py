# Seeing Sound on toyav: the toy PixArt (config/ldm_pixart.py) fine-tuned on sonified toyav
# pictures. Its caption projection is re-created as the audio projector (an MLP from the toy AST's
# 64 tokens, 128 wide) and every other weight is the toy PixArt's; the whole DiT trains. Needs
# python prepare.py sonify && python prepare.py sonify --features toy (after toyav's toy parts and
# config/toyav_ast.py). Rates are toy values: the paper's (AdamW 3.16e-5, weight decay 3e-2) are
# config/vggsound_sonify.py's; the fresh projector learns faster than the DiT.
out_dir = 'out/toyav_sonify'
method = 'sonify'
dataset = 'sonify'
init_from = 'out/toyav_pixart'
init_new = ['net.ctx_embedder']
model_args = dict(shape=(4, 16, 16), target='ae_image_latent', audio='ast_audio_tokens',
                  net_args=dict(input_size=16, patch_size=2, in_channels=4, hidden_size=128,
                                depth=6, num_heads=4,
                                ctx_dim=128, learn_sigma=False, adaln='single'))
batch_size = 32
max_iters = 1500
learning_rate = 3e-4
min_lr = 3e-5
lr_groups = dict(projector=1e-3)
weight_decay = 3e-2
warmup_iters = 50
ema_decay = 0.999
eval_interval = 250
