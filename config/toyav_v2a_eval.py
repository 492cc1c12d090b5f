# Evaluate V2A-Mapper on toyav test images: image -> toy CLIP -> mapper -> toy CLAP vector -> toyav_t2a -> sound.
# Rows of the paper's table: --ckpt=out/toyav_v2a_{mlp,transformer,prior_mlp,prior_transformer}; its baselines run
# the generator alone: --ckpt=out/toyav_t2a --i2a_route=clip (w/o mapper) or --i2a_route=caption (vision-text-audio).
out_dir = 'out/toyav_v2a_eval'
ckpt = 'out/toyav_v2a_prior_mlp'
tasks = 'i2a'
steps = 25
cfg_scale = 3.0
