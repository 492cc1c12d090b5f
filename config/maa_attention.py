# Make-An-Audio + ImageBind, Experiment B with the attention fusion (learned weights per row over
# the text part and the picture), over the main config:
#   python train.py config/maa.py config/maa_attention.py
out_dir = 'out/toyav_maa_attention'
model_args = dict(experiment='b', fusion='attention', emb_dim=128, n_tokens=16, token_dim=128,
                  width=256, n_layer=2, n_head=4, mse_weight=2.0, cos_weight=1.0)
