# Make-An-Audio + ImageBind, Experiment B, at the paper's scale on AudioCaps-style pairs for one GPU
# (not run here: no GPU, no weights). pairs.csv + audio/ under DIR (data/audiocaps_maa.py), each
# caption split by the rule or a language model (--splitter), each place pictured by a text-to-image
# model (--renderer); ImageBind's image and text towers (OpenCLIP ViT-H/14, 1024) embed the pictures
# and the text parts; the targets are the 77 tokens (1024 wide) Make-An-Audio's own text encoder
# gives each whole caption, cached from its checkpoint; the paper's 494 pairs, 20 % for validation,
# batch 4. Sampling runs Make-An-Audio's U-Net and VAE (generators.MakeAnAudio); its BigVGAN
# vocoder is not ported, so sample.py voices the mels by Griffin-Lim.
#   python prepare.py audiocaps_maa --src DIR --image_size 224 --duration 10 --renderer <mod:fn>
#   python prepare.py audiocaps_maa --features hf --encoders imagebind,maa_text --device cuda \
#       --maa_text <Make-An-Audio folder: maa1_full.ckpt, txt2audio_args.yaml>
#   python train.py config/audiocaps_maa.py
#   python sample.py --ckpt out/audiocaps_maa --text "a dog barking" --image park.jpg \
#       --generator=<Make-An-Audio folder> --device cuda
out_dir = 'out/audiocaps_maa'
method = 'maa'
dataset = 'audiocaps_maa'
model_args = dict(experiment='b', text='imagebind_part_emb', image='imagebind_image_emb',
                  tokens='maa_text_text_tokens', emb_dim=1024, n_tokens=77, token_dim=1024,
                  fusion='average', width=1024, n_layer=4, n_head=16, mse_weight=2.0,
                  cos_weight=1.0)
batch_size = 4
max_iters = 1000
learning_rate = 1e-4
min_lr = 1e-5
warmup_iters = 50
eval_interval = 100
eval_iters = 25
patience = 3
device = 'cuda'
