# Baseline of Make-An-Audio + ImageBind: each test row's text part alone ("a loud bell ringing", no
# place) through the toy CLAP text tokens into the toy Make-An-Audio generator, judged on the full
# labels of the toyav_maa test split (its environment should sit near chance, 1/3)
out_dir = 'out/toyav_maa/eval_text'
ckpt = 'out/toyav_t2a_tokens'
dataset = 'toyav_maa'
tasks = 't2a'
caption = 'text'
