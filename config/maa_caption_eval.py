# Ceiling of Make-An-Audio + ImageBind: each test row's whole caption through the toy CLAP text
# tokens into the toy Make-An-Audio generator, on the toyav_maa test split (toyav's test rows)
out_dir = 'out/toyav_maa/eval_caption'
ckpt = 'out/toyav_t2a_tokens'
dataset = 'toyav_maa'
tasks = 't2a'
