# Make-An-Audio + ImageBind, Experiment B with the weighted fusion, alpha (on the text part) learned
# from 0.5, over the main config:
#   python train.py config/maa.py config/maa_weighted.py
# alpha fixed instead: --model_args.learn_alpha=False --model_args.alpha=0.7
out_dir = 'out/toyav_maa_weighted'
model_args = dict(experiment='b', fusion='weighted', alpha=0.5, learn_alpha=True, emb_dim=128,
                  n_tokens=16, token_dim=128, width=256, n_layer=2, n_head=4, mse_weight=2.0,
                  cos_weight=1.0)
