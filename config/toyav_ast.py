# A toy Audio Spectrogram Transformer for toyav (the toy suite's "ast"): 8x8 log-mel patches -> 64
# tokens, trained to tag sources (multi-label) and environment, not loudness (AudioSet has no
# loudness class)
out_dir = 'out/toyav_ast'
method = 'tagger'
model_args = dict(heads=(('sources', 10), ('env', 3)), multilabel=('sources',), patch=8, width=128,
                  n_layer=3, n_head=4)
batch_size = 128
max_iters = 800
learning_rate = 2e-3
eval_interval = 400
