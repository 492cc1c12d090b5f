# Evaluate Make-An-Audio + ImageBind (Experiment B) on the toyav_maa test split: each row's text
# part and the picture of its place alone -> sound, judged on the row's full labels (sources,
# environment, loudness, mixtures); 25 DDIM steps of the toy generator, guidance 3. Experiment A or
# an ablation: --ckpt=out/<its run> --out_dir=out/<its run>/eval
out_dir = 'out/toyav_maa/eval'
ckpt = 'out/toyav_maa'
dataset = 'toyav_maa'
tasks = 'ti2a'
caption = 'text'
