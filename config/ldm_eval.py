# Evaluate the toy AudioLDM-style generator on toyav test captions: text -> audio, 25-step DDIM, CFG
# s = 3
out_dir = 'out/toyav_t2a/eval'
ckpt = 'out/toyav_t2a'
tasks = 't2a'
