# V2A-Mapper's "w/o mapper" baseline on toyav: the toy CLIP image vector straight into the CLAP-
# conditioned generator (trains nothing)
out_dir = 'out/toyav_v2a_eval/wo_mapper'
ckpt = 'out/toyav_t2a'
method = 'v2a'
options = dict(route='clip')
tasks = 'i2a'
