# Seeing Sound at full scale for one GPU: a folder of pictures sonified from a folder of recordings,
# then PixArt-alpha (XL-2, 512 px) fine-tuned on them. Not run here (no GPU, no weights). The data
# step, with a real VLM (LLaVA-1.5 through transformers) and the published CLAP for retrieval, 5-s
# chunks:
#   python prepare.py sonify --src /path/to/pictures --audio_src /path/to/recordings \
#       --vlms data.sonify:llava --image_size 512 --duration 5 --device cuda
#   python prepare.py sonify --features hf --encoders ast,sd_vae --device cuda  # AST, PixArt's VAE
# The published AST's 1214 tokens (768 wide) pass through the audio projector (768 -> 1152) into the
# 28 blocks of the transformer/ folder of a PixArt-alpha/PixArt-XL-2-512x512 download, read by the
# model's setup (so init_from stays 'scratch'); its 4096-wide caption projection is left out, the
# learned null for guidance is new. The whole DiT trains with the paper's AdamW at 3.16e-5, weight
# decay 3e-2. The AST cache holds 1.9 MB of float16 a clip.
#   python sample.py --ckpt out/sonify_full --audio dog.wav --mix bell.wav --mix_gain 0.3 \
#       --device cuda
out_dir = 'out/sonify_full'
method = 'sonify'
dataset = 'sonify'
model_args = dict(shape=(4, 64, 64), target='sd_vae_latent', audio='ast_audio_tokens',
                  generator='weights/PixArt-XL-2-512x512/transformer',
                  net_args=dict(input_size=64, patch_size=2, in_channels=4, hidden_size=1152,
                                depth=28, num_heads=16,
                                ctx_dim=768, learn_sigma=True, adaln='single', learn_null=True))
batch_size = 16
grad_accum = 4
max_iters = 20000
learning_rate = 3.16e-5
min_lr = 3.16e-5
decay_lr = False
weight_decay = 3e-2
warmup_iters = 500
eval_interval = 1000
patience = 5
device = 'cuda'
