# Make-An-Audio + ImageBind, Experiment A (stage 1) at the paper's scale: over config/maa_a.py, the
# data, batch and epochs of config/maa_paper.py, and a run directory of its own
#   python train.py config/maa_a.py config/maa_paper.py config/maa_a_paper.py
out_dir = 'out/toyav_maa_a_paper'
