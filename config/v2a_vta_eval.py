# V2A-Mapper's "vision-text-audio" baseline on toyav: the nearest training caption by toy CLIP
# image->text retrieval, its toy CLAP text vector into the CLAP-conditioned generator (trains
# nothing)
out_dir = 'out/toyav_v2a_eval/vision_text_audio'
ckpt = 'out/toyav_t2a'
method = 'v2a'
options = dict(route='caption')
tasks = 'i2a'
