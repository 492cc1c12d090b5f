# V2A-Mapper (Wang et al. 2024) on toyav: diffusion prior transformer over [timestep, noisy target,
# condition, query] Needs python prepare.py toyav --features toy; sample with generate(emb, steps,
# cfg).
out_dir = 'out/toyav_v2a_prior_transformer'
method = 'v2a'
model_args = dict(kind='transformer', prior=True, in_dim=128, out_dim=128, width=128, n_layer=4,
                  n_head=4, p_uncond=0.1)
batch_size = 128
max_iters = 2500
warmup_iters = 100
ema_decay = 0.999
eval_interval = 500
