# Evaluate the toy Make-An-Audio-style generator (CLAP text tokens) on toyav test captions: text ->
# audio, 25-step DDIM, CFG s = 3
out_dir = 'out/toyav_t2a_tokens/eval'
ckpt = 'out/toyav_t2a_tokens'
tasks = 't2a'
