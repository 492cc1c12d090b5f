# KL autoencoder for toyav log-mels (AudioLDM's VAE at toy scale): 64x64 mel -> 4x16x16 latents for
# the t2a generators
out_dir = 'out/toyav_ae_audio'
method = 'autoencoder'
model_args = dict(modality='audio', channels=(16, 32, 64), layers=1, latent=4, groups=8,
                  kl_weight=1e-4)
batch_size = 32
max_iters = 300
learning_rate = 2e-3
eval_interval = 150
