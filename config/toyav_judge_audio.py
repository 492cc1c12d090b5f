# Audio judge for eval.py: sources (multi-label), environment (reverb) and loudness from a log-mel
out_dir = 'out/toyav_judge_audio'
method = 'judge'
model_args = dict(modality='audio', heads=(('sources', 10), ('env', 3), ('loud', 3)),
                  multilabel=('sources',), width=128)
batch_size = 128
max_iters = 800
learning_rate = 2e-3
eval_interval = 400
