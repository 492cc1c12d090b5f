# Seeing Sound's Appendix A.11 on toyav, first stage: the audio projector alone, trained
# contrastively (InfoNCE) against the text of the same rows (their concepts, the toy CLIP's tokens)
# as the toy PixArt's own caption projection reads it, frozen; the DiT is loaded (setup) but unused.
# config/sonify_a11.py fine-tunes from it.
out_dir = 'out/toyav_sonify_projector'
method = 'sonify'
dataset = 'sonify'
model_args = dict(shape=(4, 16, 16), target='ae_image_latent', audio='ast_audio_tokens',
                  stage='projector',
                  text='clip_text_tokens', text_dim=128, generator='out/toyav_pixart',
                  net_args=dict(input_size=16, patch_size=2, in_channels=4, hidden_size=128,
                                depth=6, num_heads=4,
                                ctx_dim=128, learn_sigma=False, adaln='single'))
batch_size = 128
max_iters = 1000
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 50
eval_interval = 250
