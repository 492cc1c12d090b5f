# Evaluate the toy PixArt (config/ldm_pixart.py) on toyav test captions: text -> image, 25-step
# DDIM, CFG s = 3
out_dir = 'out/toyav_pixart/eval'
ckpt = 'out/toyav_pixart'
tasks = 't2i'
