# Evaluate the toy PixArt/Flux-style DiT on toyav test captions: text -> image, 25-step DDIM, CFG s
# = 3
out_dir = 'out/toyav_t2i/eval'
ckpt = 'out/toyav_t2i'
tasks = 't2i'
