# Evaluate the frozen toy parts of toyav: judges, zero-shot encoders, tokenizers, Fréchet floors
out_dir = 'out/toyav_eval'
dataset = 'toyav'
tasks = 'enc'
