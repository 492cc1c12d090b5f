# Visual Echoes on toyav: one masked transformer over [audio VQ ids, image VQ ids] (needs prepare.py
# --features toy) Muon on the linear layers; bf16 autocast where the CPU has native bf16 (dtype
# 'auto'), float32 elsewhere. Iterations were sized in bf16: an iteration takes 0.24 s in bf16 and
# 0.45 s in float32 on 2 cores of an AVX512-BF16 EPYC, 0.44 s and 0.59 s on 2 cores of an AMX Xeon
# (500 iterations: 219 s vs 293 s there); 5000 in float32 take 38 to 50 min on those CPUs.
out_dir = 'out/toyav_echoes'
method = 'echoes'
model_args = dict(width=128, n_layer=3, n_dec_layer=1, n_head=4, mask_mean=0.55)
batch_size = 64
max_iters = 5000
optimizer = 'muon'
learning_rate = 4e-3
min_lr = 1e-4
warmup_iters = 100
weight_decay = 0.05
eval_interval = 500
