# Evaluate Seeing Sound on the real toyav test audio (sources, environment, size, mixtures): sound
# -> picture through the fine-tuned toy PixArt, 25 DDIM steps, guidance 3
out_dir = 'out/toyav_sonify/eval'
ckpt = 'out/toyav_sonify'
tasks = 'a2i'
