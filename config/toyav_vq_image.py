# VQ-VAE image tokenizer for toyav: 32x32 RGB -> 8x8 = 64 tokens from a 256-code book
out_dir = 'out/toyav_vq_image'
method = 'vq'
model_args = dict(modality='image', width=64, n_down=2, codebook_size=256, code_dim=32)
batch_size = 64
max_iters = 2000
learning_rate = 2e-3
eval_interval = 500
