# Make-An-Audio + ImageBind, Experiment B at the paper's scale: 494 pairs (395 training, 99 = 20 %
# validation), batch 4, an evaluation per epoch (99 steps), 30 epochs, over config/maa.py:
#   python prepare.py toyav_maa --data_dir data/paper --n_train 395 --n_val 99
#   python prepare.py toyav_maa --data_dir data/paper --features toy
#   python train.py config/maa.py config/maa_paper.py
# Experiment A at the same scale: python train.py config/maa_a.py config/maa_paper.py
#   config/maa_a_paper.py
out_dir = 'out/toyav_maa_paper'
data_dir = 'data/paper'
batch_size = 4
max_iters = 2970
eval_interval = 99
eval_iters = 25
warmup_iters = 20
patience = 0
