# V2A-Mapper (Wang et al. 2024) on toyav: diffusion prior with an MLP (DALL-E 2 style: x0, cosine,
# CFG dropout 0.1) Needs python prepare.py toyav --features toy; sample with generate(emb, steps,
# cfg).
out_dir = 'out/toyav_v2a_prior_mlp'
method = 'v2a'
model_args = dict(kind='mlp', prior=True, in_dim=128, out_dim=128, width=256, n_layer=4,
                  p_uncond=0.1)
batch_size = 256
max_iters = 2000
warmup_iters = 100
ema_decay = 0.999
eval_interval = 500
