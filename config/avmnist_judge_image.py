# Image judge for avmnist: the handwritten digit (sources, one-hot: one choice, cross-entropy)
# from a picture
out_dir = 'out/avmnist_judge_image'
dataset = 'avmnist'
method = 'judge'
model_args = dict(modality='image', heads=(('sources', 10),), multilabel=(), width=128,
                  n_layer=2, n_down=2)
batch_size = 128
max_iters = 800
learning_rate = 2e-3
eval_interval = 400
