# A PixArt-alpha-like text-to-image DiT at toy scale, the one Seeing Sound fine-tunes, layered on
# the toy DiT's training settings: python train.py config/ldm_t2i.py config/ldm_pixart.py. Tokens
# only (the toy CLIP's text tokens through cross-attention, no pooled vector), adaLN-single (one
# shared t_block and a table per block), a learned null for guidance, on toy-VAE image latents
# (4x16x16, patch 2). Needs config/toyav_ae_image.py trained and prepare.py toyav --features toy.
out_dir = 'out/toyav_pixart'
model_args = dict(net='dit', shape=(4, 16, 16), target='ae_image_latent', ctx='clip_text_tokens',
                  net_args=dict(input_size=16, patch_size=2, in_channels=4, hidden_size=128,
                                depth=6, num_heads=4,
                                ctx_dim=128, learn_sigma=False, adaln='single'))
max_iters = 14000   # 4x the toy DiT's: t2i source 0.962 (7000: 0.936-0.940, 3500: 0.85-0.93)
