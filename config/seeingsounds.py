# SeeingSounds on toyav (paper Eq. 7): toy AST tokens -> adapters + attention pooling -> the toy
# CLIP text tokens and pooled vector the toy text-to-image DiT (config/ldm_t2i.py) reads. Trains on
# toyav_ctrl's rows (python prepare.py toyav_ctrl && python prepare.py toyav_ctrl --features toy,
# after toyav's toy parts and config/toyav_ast.py); the generator stays frozen and is only sampled.
out_dir = 'out/toyav_seeingsounds'
method = 'seeingsounds'
dataset = 'toyav_ctrl'
model_args = dict(in_dim=128, token_dim=128, n_tokens=16, vec_dim=128, pooling='attention',
                  branches=('t', 'v'), terms=('plain', 'transform', 'mix'))
batch_size = 128
max_iters = 6000
learning_rate = 1e-3
min_lr = 1e-4
lr_groups = dict(t=1e-3, v=1e-3)
warmup_iters = 100
eval_interval = 100
patience = 6
