# Visual Echoes on toyav: one masked transformer over [audio VQ ids, image VQ ids] (needs prepare.py --features toy)
# Muon on the linear layers and bf16 autocast: 5000 iterations in 14.7 min on 2 CPU cores with AMX-BF16
# (a CPU without bf16 units runs autocast slower: there --dtype=float32, which took 2500 iterations in 14.7 min here)
out_dir = 'out/toyav_echoes'
method = 'echoes'
model_args = dict(width=128, n_layer=3, n_dec_layer=1, n_head=4, mask_mean=0.55)
batch_size = 64
max_iters = 5000
dtype = 'bfloat16'
optimizer = 'muon'
learning_rate = 4e-3
min_lr = 1e-4
warmup_iters = 100
weight_decay = 0.05
eval_interval = 500
