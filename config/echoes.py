# Visual Echoes on toyav: one masked transformer over [audio VQ ids, image VQ ids] (needs prepare.py
# --features toy) Muon on the linear layers; bf16 autocast where the CPU has native bf16 (dtype
# 'auto'), float32 elsewhere. Iterations were sized in bf16: on a 2-core AVX512-BF16 EPYC an
# iteration takes 0.24 s in bf16 and 0.45 s in float32 (the Quick start's 800: 3.2 vs 5.6 min; i2a /
# a2i source 0.72 / 0.76 vs 0.80 / 0.56 on 100 test pairs); 5000 in float32 take about 38 min there.
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
