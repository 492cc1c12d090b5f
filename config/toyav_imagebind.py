# ImageBind-like encoder for toyav: image, text and audio in one space, bound through the image
out_dir = 'out/toyav_imagebind'
method = 'contrastive'
model_args = dict(modalities=('image', 'text', 'audio'),
                  pairs=(('image', 'text'), ('image', 'audio')),
                  embed_dim=128, width=128, n_layer=2)
batch_size = 128
max_iters = 400
learning_rate = 2e-3
eval_interval = 200
