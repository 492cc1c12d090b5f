# Evaluate Visual Echoes on toyav test conditions: image->audio, audio->image, joint, inpainting
# (CFG s = 3)
out_dir = 'out/toyav_echoes/eval'
ckpt = 'out/toyav_echoes'
tasks = 'i2a,a2i,joint,inpaint'
