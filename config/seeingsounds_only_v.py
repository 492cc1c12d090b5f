# SeeingSounds ablation "only CLIP" (paper Table 4), over the main config:
#   python train.py config/seeingsounds.py config/seeingsounds_only_v.py
# the pooled-vector branch alone; the generator gets its learned null for the text tokens
out_dir = 'out/toyav_seeingsounds_only_v'
model_args = dict(in_dim=128, token_dim=128, n_tokens=16, vec_dim=128, pooling='attention',
                  branches=('v',), terms=('plain', 'transform', 'mix'))
lr_groups = dict(v=1e-3)
