# Make-An-Audio + ImageBind on toyav, Experiment A (projection), stage 1: the same fusion and token
# map as Experiment B (config/maa.py), its tokens conditioning the toy Make-An-Audio generator
# inside the model, trained by the generator's diffusion loss on the toy autoencoder's latents with
# the generator frozen (its weights from out/toyav_t2a_tokens, config/ldm_tokens.py, whose
# model_args `generator` repeats); AdamW 1e-4, cosine schedule. Stage 2: config/maa_a2.py.
out_dir = 'out/toyav_maa_a'
method = 'maa'
dataset = 'toyav_maa'
model_args = dict(experiment='a', fusion='average', emb_dim=128, n_tokens=16, token_dim=128,
                  width=256, n_layer=2, n_head=4,
                  generator=dict(net='unet', shape=(4, 16, 16), target='ae_audio_latent',
                                 ctx='clap_text_tokens',
                                 net_args=dict(in_ch=4, out_ch=4, channels=(64, 128), layers=1,
                                               attn=(False, True), heads=4, groups=16,
                                               ctx_dim=128)))
freeze = ['generator']
batch_size = 32
max_iters = 800
learning_rate = 1e-4
min_lr = 1e-5
warmup_iters = 100
eval_interval = 100
patience = 6
