# A PixArt/Flux-like text-to-image DiT at toy scale, on toy-VAE image latents (4x16x16, patch 2):
# cross-attention on the toy CLIP text tokens, the pooled CLIP text vector joined to the timestep,
# learned nulls for guidance. Needs config/toyav_ae_image.py trained and prepare.py toyav --features
# toy.
out_dir = 'out/toyav_t2i'
method = 'ldm'
model_args = dict(net='dit', shape=(4, 16, 16), target='ae_image_latent', ctx='clip_text_tokens',
                  vec='clip_text_emb',
                  net_args=dict(input_size=16, patch_size=2, in_channels=4, hidden_size=128,
                                depth=6, num_heads=4,
                                ctx_dim=128, vec_dim=128, learn_sigma=False))
batch_size = 32
max_iters = 3500
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 100
ema_decay = 0.999
eval_interval = 500
