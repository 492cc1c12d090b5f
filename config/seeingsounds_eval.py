# Evaluate SeeingSounds on the real toyav test audio (its full labels: sources, environment, size,
# mixtures): sound -> picture through the frozen toy DiT, 10 DDIM steps, guidance 3
out_dir = 'out/toyav_seeingsounds/eval'
ckpt = 'out/toyav_seeingsounds'
tasks = 'a2i'
