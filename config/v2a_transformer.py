# V2A-Mapper (Wang et al. 2024) on toyav: regression transformer over [condition, query] tokens
# (MSE). Needs python prepare.py toyav --features toy.
out_dir = 'out/toyav_v2a_transformer'
method = 'v2a'
model_args = dict(kind='transformer', prior=False, in_dim=128, out_dim=128, width=128, n_layer=4,
                  n_head=4)
batch_size = 256
max_iters = 2000
warmup_iters = 100
eval_interval = 500
