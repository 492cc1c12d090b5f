# VQ-VAE log-mel tokenizer for toyav: 64x64 mel -> 8x8 = 64 tokens from a 128-code book
out_dir = 'out/toyav_vq_audio'
method = 'vq'
model_args = dict(modality='audio', width=64, n_down=3, codebook_size=128, code_dim=32)
batch_size = 64
max_iters = 2000
learning_rate = 2e-3
eval_interval = 500
