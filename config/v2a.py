# V2A-Mapper (Wang et al. 2024) on toyav: regression MLP, toy CLIP image emb -> toy CLAP audio emb
# (MSE). Needs python prepare.py toyav --features toy. The paper's "w/o mapper" baseline needs no
# training: the CLIP vector goes straight into the CLAP-conditioned generator.
out_dir = 'out/toyav_v2a'
method = 'v2a'
model_args = dict(kind='mlp', prior=False, in_dim=128, out_dim=128, width=256, n_layer=2)
batch_size = 256
max_iters = 2000
warmup_iters = 100
eval_interval = 500
