# VQ-VAE log-mel tokenizer for toyav: 64x64 mel -> 16x16 = 256 tokens from a 256-code book
out_dir = 'out/toyav_vq_audio'
method = 'vq'
model_args = dict(modality='audio', width=64, n_down=2, codebook_size=256, code_dim=32)
batch_size = 64
max_iters = 1000
learning_rate = 2e-3
eval_interval = 500
