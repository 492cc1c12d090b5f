# SeeingSounds (2025) on VGGSound for one GPU: the published AST's 1214 tokens (768 wide) through
# the adapters and pooling into the two spaces FLUX.1 reads, its 512 T5 tokens (4096) and CLIP-L's
# pooled vector (768). Not run here (no GPU, no weights). Eq. 6 on the reader's clips and class
# captions (kind='': every row plain); methods/seeingsounds.controllable_rows makes Eq. 7's rows of
# real clips. The caches hold float16 tokens per clip: 1.9 MB of AST and 4.2 MB of T5 a clip.
#   python prepare.py vggsound --src /path/to/vggsound --sample_rate 16000 --duration 10
#   python prepare.py vggsound --features hf --encoders ast,flux_t5,flux_clip --device cuda
#   python sample.py --ckpt out/vggsound_seeingsounds --audio dog.wav \
#       --generator <FLUX.1-dev folder>
# Learning rates per branch are the paper's (1e-5 for T, 1e-7 for V).
out_dir = 'out/vggsound_seeingsounds'
method = 'seeingsounds'
dataset = 'vggsound'
model_args = dict(audio='ast_audio_tokens', tokens='flux_t5_text_tokens',
                  pooled='flux_clip_text_emb', in_dim=768, token_dim=4096, n_tokens=512,
                  vec_dim=768, heads=8, kind='')
batch_size = 32
max_iters = 20000
learning_rate = 1e-5
min_lr = 1e-6
lr_groups = dict(t=1e-5, v=1e-7)
warmup_iters = 500
eval_interval = 1000
patience = 5
device = 'cuda'
