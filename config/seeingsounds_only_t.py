# SeeingSounds ablation "only T5" (paper Table 4), over the main config:
#   python train.py config/seeingsounds.py config/seeingsounds_only_t.py
# the text-token branch alone; the generator gets its learned null for the pooled vector
out_dir = 'out/toyav_seeingsounds_only_t'
model_args = dict(in_dim=128, token_dim=128, n_tokens=16, vec_dim=128, pooling='attention',
                  branches=('t',), terms=('plain', 'transform', 'mix'))
lr_groups = dict(t=1e-3)
