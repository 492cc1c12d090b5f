# KL autoencoder for toyav pictures (the SD/PixArt VAE at toy scale): 32x32x3 -> 4x16x16 latents for
# the t2i DiT
out_dir = 'out/toyav_ae_image'
method = 'autoencoder'
model_args = dict(modality='image', channels=(32, 64), layers=1, latent=4, groups=8, kl_weight=1e-4)
batch_size = 32
max_iters = 400
learning_rate = 2e-3
eval_interval = 200
