# The in-sample reference of Seeing Sound on toyav: config/sonify.py's fine-tune of the toy PixArt, on toyav's real
# pairs (each picture with its own recording's toy AST tokens) instead of sonified ones; same projector, same rates.
# Needs python prepare.py toyav --features toy (after config/toyav_ast.py).
out_dir = 'out/toyav_sonify_insample'
method = 'sonify'
dataset = 'toyav'
init_from = 'out/toyav_pixart'
init_new = ['net.ctx_embedder']
model_args = dict(shape=(4, 16, 16), target='ae_image_latent', audio='ast_audio_tokens',
                  net_args=dict(input_size=16, patch_size=2, in_channels=4, hidden_size=128, depth=6, num_heads=4,
                                ctx_dim=128, learn_sigma=False, adaln='single'))
batch_size = 32
max_iters = 1500
learning_rate = 3e-4
min_lr = 3e-5
lr_groups = dict(projector=1e-3)
weight_decay = 3e-2
warmup_iters = 50
ema_decay = 0.999
eval_interval = 250
