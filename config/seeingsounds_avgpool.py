# SeeingSounds ablation "w/o attention pooling" (paper Table 4), over the main config:
#   python train.py config/seeingsounds.py config/seeingsounds_avgpool.py
# adaptive average pooling m -> l for the text-token branch, mean pooling for the pooled vector
out_dir = 'out/toyav_seeingsounds_avgpool'
model_args = dict(in_dim=128, token_dim=128, n_tokens=16, vec_dim=128, pooling='average',
                  branches=('t', 'v'), terms=('plain', 'transform', 'mix'))
