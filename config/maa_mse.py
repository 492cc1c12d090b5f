# Make-An-Audio + ImageBind, Experiment B with the MSE alone (lambda2 = 0), over the main config:
#   python train.py config/maa.py config/maa_mse.py
out_dir = 'out/toyav_maa_mse'
model_args = dict(experiment='b', fusion='average', emb_dim=128, n_tokens=16, token_dim=128,
                  width=256, n_layer=2, n_head=4, mse_weight=1.0, cos_weight=0.0)
