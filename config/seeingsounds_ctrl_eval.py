# SeeingSounds' controllability task: toyav_ctrl's test split, labels the edited ones (a gain sweep
# of held-out dry clips, each room on the same clip, sums of two); metrics also per kind
# (a2i.gain.*, ...)
out_dir = 'out/toyav_seeingsounds/eval_ctrl'
ckpt = 'out/toyav_seeingsounds'
dataset = 'toyav_ctrl'
tasks = 'a2i'
