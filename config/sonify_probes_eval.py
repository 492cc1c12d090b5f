# The paper's section 4.5 probes on Seeing Sound (data/sonify.py's test split): two sounds summed
# (mix), the second at a gain 0.1 or 0.3 inside the mix (interp_*), one after the other (sequence),
# one dry sound in each room (room); eval.py reports each kind apart and draws the first rows in
# samples.png
out_dir = 'out/toyav_sonify/probes'
dataset = 'sonify'
ckpt = 'out/toyav_sonify'
tasks = 'a2i'
n_grid = 14
