# Visual Echoes at VGGSound scale, for one GPU: a ViT-L-sized masked transformer (width 1024, 24 + 8
# layers, 16 heads) over 10 s of audio tokens and 128x128 image tokens. Not run here (no GPU); the
# data and tokenizers come first:
#   python prepare.py vggsound --src /path/to/vggsound --duration 10 --frames 640 --image_size 128
#   python train.py config/toyav_vq_audio.py --dataset=vggsound --out_dir=out/vggsound_vq_audio \
#       --max_iters=20000
#   python train.py config/toyav_vq_image.py --dataset=vggsound --out_dir=out/vggsound_vq_image \
#       --max_iters=20000 --model_args.n_down=3 --model_args.codebook_size=1024
#   python prepare.py vggsound --features toy
# giving 8 x 80 = 640 audio tokens and 16 x 16 = 256 image tokens per clip.
out_dir = 'out/vggsound_echoes'
method = 'echoes'
dataset = 'vggsound'
model_args = dict(width=1024, n_layer=24, n_dec_layer=8, n_head=16, mask_mean=0.55)
batch_size = 64
grad_accum = 4
max_iters = 200000
learning_rate = 1.5e-4
min_lr = 1.5e-5
warmup_iters = 5000
weight_decay = 0.05
beta2 = 0.95
ema_decay = 0.9999
eval_interval = 5000
device = 'cuda'
compile = True
