# Make-An-Audio + ImageBind, Experiment B with lambda1:lambda2 = 1:1 (MSE and 1 - cos weighed alike)
# instead of 2:1, over the main config:
#   python train.py config/maa.py config/maa_lambda_1to1.py
out_dir = 'out/toyav_maa_lambda_1to1'
model_args = dict(experiment='b', fusion='average', emb_dim=128, n_tokens=16, token_dim=128,
                  width=256, n_layer=2, n_head=4, mse_weight=1.0, cos_weight=1.0)
