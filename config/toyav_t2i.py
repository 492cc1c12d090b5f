# A PixArt/Flux-like text-to-image DiT at toy scale, on 32x32 pixels in 4x4 patches: cross-attention on the toy
# CLIP text tokens, the pooled CLIP text vector joined to the timestep, learned nulls for guidance.
out_dir = 'out/toyav_t2i'
method = 'ldm'
model_args = dict(net='dit', shape=(3, 32, 32), target='image', ctx='clip_text_tokens', vec='clip_text_emb',
                  net_args=dict(input_size=32, patch_size=4, in_channels=3, hidden_size=128, depth=4, num_heads=4,
                                ctx_dim=128, vec_dim=128, learn_sigma=False))
batch_size = 32
max_iters = 2500
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 100
ema_decay = 0.999
eval_interval = 500
