# Visual Echoes on toyav: one masked transformer over [audio VQ ids, image VQ ids] (needs prepare.py --features toy)
# Muon on the linear layers; bf16 autocast where the CPU has native bf16 (dtype 'auto'), float32 elsewhere.
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
