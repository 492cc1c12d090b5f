# Make-An-Audio's route at toy scale: the same UNet on toy-VAE mel latents, conditioned by cross-
# attention on the toy CLAP text tokens. Needs config/toyav_ae_audio.py trained and prepare.py toyav
# --features toy.
out_dir = 'out/toyav_t2a_tokens'
method = 'ldm'
model_args = dict(net='unet', shape=(4, 16, 16), target='ae_audio_latent', ctx='clap_text_tokens',
                  net_args=dict(in_ch=4, out_ch=4, channels=(64, 128), layers=1,
                                attn=(False, True), heads=4, groups=16, ctx_dim=128))
batch_size = 32
max_iters = 1500
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 100
ema_decay = 0.999
eval_interval = 500
