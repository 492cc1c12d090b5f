# A start of our own for Seeing Sound's fine-tune (not the paper's), layered on
# config/sonify_projector.py: python train.py config/sonify_projector.py config/sonify_attention.py.
# The toy PixArt is the teacher: given its own hidden states, each block's cross-attention learns,
# with the audio projector, to take from a row's sound what the generator's takes from the row's
# concepts. Then the fine-tune, 3000 iterations (11 minutes on 2 cores of a Xeon with AMX):
# python train.py config/sonify.py config/sonify_a11.py --init_from=out/toyav_sonify_attention
# --max_iters=3000 --out_dir=out/toyav_sonify_ours
out_dir = 'out/toyav_sonify_attention'
model_args = dict(shape=(4, 16, 16), target='ae_image_latent', audio='ast_audio_tokens',
                  stage='projector', align='attention',
                  text='clip_text_tokens', text_dim=128, generator='out/toyav_pixart',
                  net_args=dict(input_size=16, patch_size=2, in_channels=4, hidden_size=128,
                                depth=6, num_heads=4,
                                ctx_dim=128, learn_sigma=False, adaln='single'))
batch_size = 32
max_iters = 3000
