# V2A-Mapper (Wang et al. 2024) on VGGSound with the hf suite, one GPU: diffusion-prior transformer
# from the CLIP (openai/clip-vit-base-patch32) image embedding to the CLAP (laion/clap-htsat-
# unfused) audio embedding, 512 -> 512. Needs the cached embedding pairs: python prepare.py vggsound
# --src DIR --image_size 224, then
# python prepare.py vggsound --features hf --device cuda. The ten frame embeddings (N, 10, 512) of
# a clip (clip_frames_emb) are reduced by aggregate_frames(`frames`); embeddings are L2-normalised
# and scaled by √512. Sample: python sample.py --ckpt out/vggsound_v2a --video clip.mp4
# --generator <a download of cvssp/audioldm-s-full-v2>
out_dir = 'out/vggsound_v2a'
method = 'v2a'
dataset = 'vggsound'
model_args = dict(source='clip_frames_emb', kind='transformer', prior=True, in_dim=512,
                  out_dim=512, width=512, n_layer=6, n_head=8,
                  p_uncond=0.1, normalize=True, frames='mean')
batch_size = 448
max_iters = 50000
learning_rate = 1.1e-4
min_lr = 1.1e-5
warmup_iters = 500
weight_decay = 0.01
ema_decay = 0.9999
eval_interval = 2000
device = 'cuda'
