"""Run a trained model on an input file (or a test sample of its dataset) and write wav / png outputs.

    python sample.py --ckpt out/toyav_vq_audio --audio dog.wav     # tokenize and rebuild a sound
    python sample.py --ckpt out/toyav_vq_image --image cat.jpg     # tokenize and rebuild a picture
    python sample.py --ckpt out/toyav_vq_audio --index 3           # the 4th test sample of the dataset
    python sample.py --ckpt out/toyav_t2a --text "a loud dog barking in a tunnel" --n 4   # text -> sound
    python sample.py --ckpt out/toyav_t2i --text "a quiet bell ringing in a large hall"    # text -> picture
    python sample.py --ckpt out/toyav_v2a_prior_mlp --image cat.jpg --n 3                # V2A-Mapper: picture -> sound
    python sample.py --ckpt out/toyav_v2a_mlp --video clip.mp4 --frames mean --interp "a quiet bird" --alpha 0.5
    python sample.py --ckpt out/vggsound_v2a --image cat.jpg --generator audioldm-s-full-v2/  # the paper's full system

What a checkpoint does with its input depends on its method; outputs go next to --out as
<name>.wav + <name>.spec.png for sound and <name>.png for pictures, each written atomically.
A toy encoder, tokenizer or latent decoder (under --ckpt_dir) whose checkpoint is not the one whose
features the model was trained on is refused.
"""
import argparse
import os
import sys

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from encoders import (GriffinLim, MediaError, MelConfig, fit_length, load_audio, load_checkpoint,
                      load_encoder, load_image, load_latent_decoder, load_toy, load_video_frames, log_mel, resize_image)
from generators import AudioLDM, is_pipeline
from model import CHOICE_TEMPERATURE, JOINT_STEPS, STEPS, cfg_logits, decode, joint_cfg_logits
from configurator import HelpFormatter
from data import open_split
from encoders import StaleCache

VIDEO_FRAMES = 10   # frames taken uniformly from a --video, as prepare.py vggsound does


def save_wav(path, wave, sample_rate):
    """Write a mono float wave as 16-bit PCM, atomically."""
    tmp = path[:-4] + '.tmp.wav'
    sf.write(tmp, np.clip(np.asarray(wave, dtype=np.float32), -1, 1), sample_rate, subtype='PCM_16')
    os.replace(tmp, path)


def save_png(path, image):
    """Write a uint8 (H, W, 3) or (H, W) picture, atomically."""
    tmp = path[:-4] + '.tmp.png'
    Image.fromarray(np.asarray(image)).save(tmp)
    os.replace(tmp, path)


def spectrogram_picture(mel, scale=4):
    """Log-mel (n_mels, frames) -> uint8 picture, low frequencies at the bottom, contrast over 80 dB."""
    db = mel * 20 / np.log(10)                                                  # natural log -> dB
    x = np.clip((db - db.max() + 80) / 80, 0, 1)[::-1]
    pic = np.stack([x ** 0.5, x ** 1.5, x * 0.3 + 0.7 * x ** 3], -1)           # a dark-to-warm colour ramp
    return np.kron((pic * 255).astype(np.uint8), np.ones((scale, scale, 1), np.uint8))


def write_audio(stem, mel, mel_cfg, wave=None):
    """Write <stem>.wav (the wave, or the log-mel vocoded with Griffin-Lim) and <stem>.spec.png (the log-mel)."""
    if wave is None:
        wave = GriffinLim(mel_cfg)(torch.as_tensor(mel)[None])[0].numpy()
    save_wav(stem + '.wav', wave, mel_cfg.sample_rate)
    save_png(stem + '.spec.png', spectrogram_picture(np.asarray(mel)))
    return [stem + '.wav', stem + '.spec.png']


def in_batches(sample_fn, cond, generator, args):
    """sample_fn(a batch of conditions, generator) over conditions {role: (n, ...)} in --batch_size batches -> (n, ...)."""
    n = len(next(iter(cond.values())))
    return torch.cat([sample_fn({k: v[i:i + args.batch_size].to(args.device) for k, v in cond.items()}, generator)
                      for i in tqdm(range(0, n, args.batch_size), desc='sampling', disable=n <= args.batch_size)])


def run_audioldm(pipe, vec, stem, args):
    """The published AudioLDM on CLAP vectors (n, D) in batches -> <stem>[.j].wav at its rate + its mel's picture."""
    mels = in_batches(lambda c, g: pipe.sample_mel(c, args.steps or 25, args.cfg, generator=g), {'vec': vec},
                      torch.Generator().manual_seed(args.seed), args)                # (n, n_mels, frames)
    waves, mel_cfg, n = pipe.vocode(mels).cpu().numpy(), pipe.vocoder.mel_config, len(mels)
    mels = mels.float().cpu().numpy()
    return [f for j in range(n) for f in write_audio(stem if n == 1 else f"{stem}.{j}", mels[j], mel_cfg, waves[j])]


def run_tokenizer(model, ckpt, inputs, stem, args):
    """A VQ tokenizer: media -> ids -> media; the round trip shows what the tokens keep."""
    mel_cfg = MelConfig(**ckpt['data']['mel'])
    field, flag = ('image', '--image') if model.modality == 'image' else ('mel', '--audio')
    if field not in inputs:
        sys.exit(f"error: {args.ckpt} is an {model.modality} tokenizer: it takes {flag} or --index")
    with torch.no_grad():
        if model.modality == 'image':
            save_png(stem + '.png', model.decode(model.encode(torch.as_tensor(inputs['image'])[None]))[0].numpy())
            return [stem + '.png']
        ids = model.encode(torch.as_tensor(inputs['mel'])[None])                  # (1, N)
        return write_audio(stem, model.decode(ids)[0].numpy(), mel_cfg)


class Echoes:
    """Visual Echoes at inference: toy VQ tokenizers around the masked AV transformer, tasks on ids or media."""

    def __init__(self, model, ckpt, ckpt_dir='out', device='cpu'):
        data = ckpt['data']
        self.model, self.device = model, device
        self.audio_tok = load_toy('vq_audio', data['dataset'], ckpt_dir, device, ckpt)
        self.image_tok = load_toy('vq_image', data['dataset'], ckpt_dir, device, ckpt)
        self.n_audio, self.n_image = model.sizes
        self.time_steps = self.audio_tok.net.grid[1]                               # audio tokens are (freq, time)

    @torch.no_grad()
    def generate(self, audio_ids, image_ids, known, steps=STEPS, temperature=CHOICE_TEMPERATURE, sample_temperature=1.0,
                 cfg=1.0, generator=None):
        """Fill the unknown positions of [audio ids, image ids] (B, N) by iterative unmasking with CFG (by the known
        tokens, or with nothing known by each modality's tokens decoded so far)."""
        ids = torch.cat([audio_ids, image_ids], 1).long().to(self.device)          # (B, N)
        known = known.to(self.device)
        net = lambda x, m: self.model.logits(x, m, generator)
        first = torch.arange(ids.shape[1], device=self.device) < self.n_audio   # (N,) the audio positions
        logits_fn = cfg_logits(net, known, cfg) if known.any() else joint_cfg_logits(net, first, cfg)
        out = decode(ids, known, logits_fn, steps, temperature, sample_temperature, generator)
        return out[:, :self.n_audio], out[:, self.n_audio:]

    def known(self, B, audio=False, image=False, span=None):
        """Known-mask (B, N): whole modalities, or the audio outside a time span (fractions of the clip)."""
        audio_known = torch.full((B, self.n_audio), audio)
        if span is not None:
            t = torch.arange(self.n_audio) % self.time_steps                       # time index of each audio token
            inside = (t >= span[0] * self.time_steps) & (t < span[1] * self.time_steps)
            audio_known = ~inside.expand(B, -1)
        return torch.cat([audio_known, torch.full((B, self.n_image), image)], 1)

    def run(self, task, audio_ids=None, image_ids=None, steps=None, **kw):
        """task in i2a, a2i, joint, inpaint -> (audio ids, image ids) with the task's unknown part generated in `steps`
        iterations (default STEPS, joint JOINT_STEPS: it fills both modalities)."""
        given = [x for x in (audio_ids, image_ids) if x is not None]
        B = len(given[0]) if given else 1
        audio_ids = torch.zeros(B, self.n_audio, dtype=torch.long) if audio_ids is None else torch.as_tensor(audio_ids).long()
        image_ids = torch.zeros(B, self.n_image, dtype=torch.long) if image_ids is None else torch.as_tensor(image_ids).long()
        span = kw.pop('span', (0.25, 0.75))
        known = {'i2a': self.known(B, image=True), 'a2i': self.known(B, audio=True), 'joint': self.known(B),
                 'inpaint': self.known(B, image=True, span=span)}[task]
        return self.generate(audio_ids, image_ids, known, steps or (JOINT_STEPS if task == 'joint' else STEPS), **kw)


def default_tasks(inputs, from_dataset):
    """What to generate when --task is not given: both directions for a dataset sample, else by the inputs."""
    if from_dataset:
        return ['i2a', 'a2i']
    if 'mel' in inputs and 'image' in inputs:
        return ['inpaint']
    return ['i2a'] if 'image' in inputs else ['a2i'] if 'mel' in inputs else ['joint']


def run_echoes(model, ckpt, inputs, stem, args):
    """Visual Echoes: image->audio, audio->image, joint generation or image-guided audio inpainting."""
    echoes = Echoes(model, ckpt, args.ckpt_dir, args.device)
    mel_cfg = MelConfig(**ckpt['data']['mel'])
    audio_ids = echoes.audio_tok.encode(inputs['mel'][None]) if 'mel' in inputs else None
    image_ids = echoes.image_tok.encode(inputs['image'][None]) if 'image' in inputs else None
    tasks = [args.task] if args.task else default_tasks(inputs, args.index is not None)
    gen = torch.Generator().manual_seed(args.seed)
    written = []
    for task in tasks:
        a, i = echoes.run(task, audio_ids, image_ids, steps=args.steps, temperature=args.temperature,
                          sample_temperature=args.sample_temperature, cfg=args.cfg, generator=gen, span=args.span)
        if task != 'a2i':
            written += write_audio(f"{stem}.{task}", echoes.audio_tok.decode(a)[0].numpy(), mel_cfg)
        if task in ('a2i', 'joint'):
            save_png(f"{stem}.{task}.png", echoes.image_tok.decode(i)[0].numpy())
            written.append(f"{stem}.{task}.png")
    return written


def run_diffusion(model, ckpt, cond, stem, args):
    """Sample a diffusion generator on conditions {role: (n, ...)} in batches; decode latents; write every output."""
    ae = load_latent_decoder(model, ckpt, args.ckpt_dir, args.device)

    def sample(c, g):
        out = model.generate(c, args.steps or 25, args.cfg, generator=g)
        return ae.decode(out) if ae else out
    outs = in_batches(sample, cond, torch.Generator(args.device).manual_seed(args.seed), args).cpu().numpy()
    written, n = [], len(outs)
    for j, media in enumerate(outs):
        name = stem if n == 1 else f"{stem}.{j}"
        if model.modality == 'image':
            save_png(name + '.png', media)
            written.append(name + '.png')
        else:
            written += write_audio(name, media, MelConfig(**ckpt['data']['mel']))
    return written


def run_ldm(model, ckpt, inputs, stem, args):
    """A text-conditioned diffusion generator: --text through the toy encoder it was trained with -> sound or picture.
    A model trained on audio embeddings (AudioLDM's recipe) is given the same encoder's text embedding."""
    if not args.text:
        sys.exit(f"error: {args.ckpt} generates from text; give --text \"...\"")
    encoder = load_encoder(next(iter(model.roles.values())).split('_')[0], ckpt, args.ckpt_dir, args.device)
    feats = encoder.encode_text([args.text] * args.n)
    cond = {role: feats.emb if field.endswith('_emb') else feats.tokens for role, field in model.roles.items()}
    return run_diffusion(model, ckpt, cond, stem, args)


def run_v2a(mapper, ckpt, inputs, stem, args):
    """V2A-Mapper: picture (or video frames) -> CLIP -> mapper -> CLAP vector (optionally moved towards a
    caption's, --interp/--alpha) -> the CLAP-conditioned generator -> sound. CLIP and CLAP are the encoders of the
    mapper's training features (toy or hf); the generator is a toy one or a published AudioLDM pipeline folder."""
    data = ckpt['data']
    if 'image' not in inputs:
        sys.exit(f"error: {args.ckpt} turns a picture into sound; give --image, --video or --index")
    path = args.generator or os.path.join(args.ckpt_dir, f"{data['dataset']}_t2a")
    frames = torch.as_tensor(inputs['image'])
    clip = load_encoder('clip', ckpt, args.ckpt_dir, args.device)
    emb = clip.encode_image(frames.reshape(-1, *frames.shape[-3:])).emb
    emb = emb[None] if frames.dim() == 4 else emb                              # (1, F, D) for a video, (1, D) for a picture
    emb = emb.expand(args.n, *emb.shape[1:])                                   # (n, [F,] D)
    mapper.frames = args.frames or mapper.frames
    vec = F.normalize(mapper.generate(emb, args.steps or 25, args.mapper_cfg, generator=torch.Generator().manual_seed(args.seed)), dim=-1)
    if args.interp:
        clap = load_encoder('clap', ckpt, args.ckpt_dir, args.device)
        text = F.normalize(clap.encode_text([args.interp]).emb, dim=-1)                               # (1, D)
        vec = (1 - args.alpha) * vec + args.alpha * text
    if is_pipeline(path):
        return run_audioldm(AudioLDM.from_pretrained(path).to(args.device), vec, stem, args)
    model, gen_ckpt = load_checkpoint(os.path.join(path, 'ckpt.pt'), args.device)
    return run_diffusion(model, gen_ckpt, {'vec': vec}, stem, args)


RUNNERS = {'vq': run_tokenizer, 'echoes': run_echoes, 'ldm': run_ldm, 'v2a': run_v2a}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--ckpt', required=True, help='a training run directory (out/<exp>) or its ckpt.pt')
    parser.add_argument('--audio', help='input sound: any audio file, or a video whose sound is used')
    parser.add_argument('--image', help='input picture: any image file')
    parser.add_argument('--index', type=int, help='use this test-split sample of the checkpoint\'s dataset as input')
    parser.add_argument('--text', help='input caption, for a text-conditioned generator ("a loud dog barking in a tunnel")')
    parser.add_argument('--n', type=int, default=1, help='samples to generate for the input (different noise each)')
    parser.add_argument('--batch_size', type=int, default=32, help='samples generated per batch')
    parser.add_argument('--video', help='input video: V2A-Mapper embeds its frames and aggregates them (--frames)')
    parser.add_argument('--frames', choices=['random', 'middle', 'mean'], help='V2A-Mapper video frame aggregation '
                        '(default %(default)s: the checkpoint\'s)')
    parser.add_argument('--interp', help='V2A-Mapper: a caption whose CLAP vector the image\'s is moved towards')
    parser.add_argument('--alpha', type=float, default=0.5, help='V2A-Mapper: weight of the --interp caption (0: image only)')
    parser.add_argument('--generator', help='V2A-Mapper: the CLAP-conditioned generator, a run directory (default '
                        '%(default)s: out/<dataset>_t2a) or a diffusers AudioLDM pipeline folder (e.g. a download of '
                        'cvssp/audioldm-s-full-v2)')
    parser.add_argument('--mapper_cfg', type=float, default=1.0, help='V2A-Mapper: guidance scale of a diffusion prior')
    parser.add_argument('--task', choices=['i2a', 'a2i', 'joint', 'inpaint'], help='what to generate (default '
                        '%(default)s: from the inputs; image -> i2a, audio -> a2i, both -> inpaint, none -> joint, '
                        '--index -> i2a and a2i)')
    parser.add_argument('--steps', type=int, default=None, help='iterative-unmasking steps (default '
                        f'%(default)s: {STEPS}, joint {JOINT_STEPS}) or DDIM steps (25)')
    parser.add_argument('--temperature', type=float, default=CHOICE_TEMPERATURE, help='Gumbel temperature of the '
                        'unmasking confidence (MaskGIT\'s choice temperature; annealed to 0 over the steps)')
    parser.add_argument('--sample_temperature', type=float, default=1.0, help='temperature of the token samples of '
                        'masked decoding (1: MaskGIT\'s categorical sampling, below 1 sharper, 0: the argmax)')
    parser.add_argument('--cfg', type=float, default=3.0, help='classifier-free guidance scale (1 = off); in Echoes '
                        'joint generation each modality is guided by the other\'s tokens decoded so far')
    parser.add_argument('--span', type=lambda v: tuple(float(x) for x in v.split(',')), default='0.25,0.75',
                        help='inpainting: the audio time span to regenerate, as fractions "start,end"')
    parser.add_argument('--ckpt_dir', default='out', help='where the frozen toy tokenizers live (out/<dataset>_vq_*)')
    parser.add_argument('--data_dir', default='data', help='where datasets live (for --index)')
    parser.add_argument('--out', default=None, help='output stem (default %(default)s: out/samples/<input name>)')
    parser.add_argument('--seed', type=int, default=1337, help='seed of any sampling')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    args = parser.parse_args(argv)
    if args.index is not None and (args.audio or args.image or args.video):
        parser.error('give --index or --audio/--image/--video, not both')
    torch.manual_seed(args.seed)
    path = args.ckpt if args.ckpt.endswith('.pt') else os.path.join(args.ckpt, 'ckpt.pt')
    try:
        model, ckpt = load_checkpoint(path, args.device)
        data, mel_cfg = ckpt['data'], MelConfig(**ckpt['data']['mel'])
        if args.video and ckpt['method'] != 'v2a':
            sys.exit(f"error: --video: {path} is a {ckpt['method']} checkpoint; only a V2A-Mapper (v2a) takes a video "
                     "(--audio takes a video's sound)")
        inputs, names = {}, []
        if args.index is not None:
            split, _ = open_split(args.data_dir, data['dataset'], 'test', ['image', 'mel'])
            n = len(split['mel'])
            if not 0 <= args.index < n:
                sys.exit(f"error: --index {args.index}: the test split of {os.path.join(args.data_dir, data['dataset'])} "
                         f"has {n} samples")
            inputs, names = {k: np.array(v[args.index]) for k, v in split.items()}, [f"{data['dataset']}_test{args.index}"]
        if args.audio:
            wave = load_audio(args.audio, mel_cfg.sample_rate)
            wave = fit_length(wave, mel_cfg.hop * mel_cfg.frames)      # (T,) one clip, cut or padded as prepare.py does
            inputs['mel'] = log_mel(torch.from_numpy(wave)[None], mel_cfg)[0].numpy()
            names.append(os.path.basename(args.audio))
        if args.image:
            inputs['image'] = load_image(args.image, data['image_size'])
            names.append(os.path.basename(args.image))
        if args.video:
            frames = load_video_frames(args.video, VIDEO_FRAMES)                    # (F, H, W, 3)
            inputs['image'] = np.stack([resize_image(f, data['image_size']) for f in frames])
            names.append(os.path.basename(args.video))
        name = os.path.splitext(names[0])[0] if names else '_'.join(args.text.split()[:6]) if args.text else 'joint'
        stem = args.out or os.path.join('out', 'samples', f"{name}.{os.path.basename(os.path.dirname(path))}")
        os.makedirs(os.path.dirname(stem) or '.', exist_ok=True)
        for f in RUNNERS[ckpt['method']](model, ckpt, inputs, stem, args):   # may load more checkpoints
            print(f"wrote {f}")
    except (MediaError, FileNotFoundError, StaleCache) as e:
        sys.exit(f"error: {e}")


if __name__ == '__main__':
    main()
