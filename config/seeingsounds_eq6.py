# SeeingSounds with the loss of paper Eq. 6 alone, over the main config:
#   python train.py config/seeingsounds.py config/seeingsounds_eq6.py
# only each dry clip with its class caption: no transformed or mixed rows reach the loss
out_dir = 'out/toyav_seeingsounds_eq6'
model_args = dict(in_dim=128, token_dim=128, n_tokens=16, vec_dim=128, pooling='attention',
                  branches=('t', 'v'), terms=('plain',))
