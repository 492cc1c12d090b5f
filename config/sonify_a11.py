# Seeing Sound's Appendix A.11 on toyav, second stage, layered on config/sonify.py's fine-tune:
# python train.py config/sonify.py config/sonify_a11.py. It starts from the pre-trained projector of
# config/sonify_projector.py (every other weight is the toy PixArt's there; the frozen text
# projector rides along unused) instead of a fresh one.
out_dir = 'out/toyav_sonify_a11'
init_from = 'out/toyav_sonify_projector'
init_new = []
model_args = dict(shape=(4, 16, 16), target='ae_image_latent', audio='ast_audio_tokens',
                  text='clip_text_tokens',
                  text_dim=128,
                  net_args=dict(input_size=16, patch_size=2, in_channels=4, hidden_size=128,
                                depth=6, num_heads=4, ctx_dim=128, learn_sigma=False,
                                adaln='single'))
