# CLIP-like image<->text encoder for toyav (the toy suite's "clip")
out_dir = 'out/toyav_clip'
method = 'contrastive'
model_args = dict(modalities=('image', 'text'), pairs=(('image', 'text'),), embed_dim=128,
                  width=128, n_layer=2)
batch_size = 128
max_iters = 400
learning_rate = 2e-3
eval_interval = 200
