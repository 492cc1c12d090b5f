# Make-An-Audio + ImageBind, Experiment A, stage 2: from stage 1's weights, the generator unfrozen
# and trained at 1e-5 beside the fusion and map at 1e-4, over the stage-1 config:
#   python train.py config/maa_a.py && python train.py config/maa_a.py config/maa_a2.py
out_dir = 'out/toyav_maa_a2'
init_from = 'out/toyav_maa_a'
freeze = []
lr_groups = dict(map=1e-4, generator=1e-5)
