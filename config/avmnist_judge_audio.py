# Audio judge for avmnist: the spoken digit (sources, one-hot: one choice, cross-entropy) and the
# speaker from a log-mel; 5 speakers in the shared FSDD copy (a fresh download has 6: set heads to
# the length of meta.json's classes['speaker'])
out_dir = 'out/avmnist_judge_audio'
dataset = 'avmnist'
method = 'judge'
model_args = dict(modality='audio', heads=(('sources', 10), ('speaker', 5)),
                  multilabel=(), width=128)
batch_size = 128
max_iters = 800
learning_rate = 2e-3
eval_interval = 400
