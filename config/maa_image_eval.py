# Baseline of Make-An-Audio + ImageBind: the picture of the place alone through Experiment B's map
# (no words), judged on the full labels of the toyav_maa test split
out_dir = 'out/toyav_maa/eval_image'
ckpt = 'out/toyav_maa'
dataset = 'toyav_maa'
tasks = 'ti2a'
caption = 'text'
options = dict(route='image')
