# Image judge for eval.py: sources (multi-label), background (env) and object size (loud) from a
# picture
out_dir = 'out/toyav_judge_image'
method = 'judge'
model_args = dict(modality='image', heads=(('sources', 10), ('env', 3), ('loud', 3)),
                  multilabel=('sources',),
                  width=128, n_layer=2, n_down=2)
batch_size = 128
max_iters = 800
learning_rate = 2e-3
eval_interval = 400
