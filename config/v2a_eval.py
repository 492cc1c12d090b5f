# Evaluate V2A-Mapper on toyav test images: image -> toy CLIP -> mapper -> toy CLAP vector ->
# toyav_t2a -> sound (generator: 25 DDIM steps, s = 3; a prior mapper: 25 steps, no guidance). The
# paper's table is the four mappers:
# --ckpt=out/toyav_v2a{,_transformer,_prior_mlp,_prior_transformer}
# --out_dir=out/toyav_v2a_eval/<row>; its baselines are config/v2a_wo_mapper_eval.py and
# config/v2a_vta_eval.py.
out_dir = 'out/toyav_v2a_eval/mlp'
ckpt = 'out/toyav_v2a'
tasks = 'i2a'
