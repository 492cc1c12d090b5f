# V2A-Mapper's "w/o mapper" baseline on toyav: the toy CLIP image vector straight into the CLAP-conditioned generator
out_dir = 'out/toyav_v2a_eval/wo_mapper'
ckpt = 'out/toyav_t2a'
i2a_route = 'clip'
tasks = 'i2a'
steps = 25
cfg_scale = 3.0
