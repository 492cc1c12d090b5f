"""Run a trained model on an input file (or a test sample of its dataset) and write wav / png outputs.

    python sample.py --ckpt out/toyav_vq_audio --audio dog.wav     # tokenize and rebuild a sound
    python sample.py --ckpt out/toyav_vq_image --image cat.jpg     # tokenize and rebuild a picture
    python sample.py --ckpt out/toyav_vq_audio --index 3           # the 4th test sample of the dataset

What a checkpoint does with its input depends on its method; outputs go next to --out as
<name>.wav + <name>.spec.png for sound and <name>.png for pictures, each written atomically.
"""
import argparse
import os
import sys

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from encoders import GriffinLim, MediaError, MelConfig, load_audio, load_checkpoint, load_image, log_mel
from prepare import open_split


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


def write_audio(stem, mel, mel_cfg):
    """Vocode a log-mel with Griffin-Lim; write <stem>.wav and <stem>.spec.png."""
    wave = GriffinLim(mel_cfg)(torch.as_tensor(mel)[None])[0].numpy()
    save_wav(stem + '.wav', wave, mel_cfg.sample_rate)
    save_png(stem + '.spec.png', spectrogram_picture(np.asarray(mel)))
    return [stem + '.wav', stem + '.spec.png']


def run_tokenizer(model, ckpt, inputs, stem):
    """A VQ tokenizer: media -> ids -> media; the round trip shows what the tokens keep."""
    mel_cfg = MelConfig(**ckpt['data']['mel'])
    with torch.no_grad():
        if model.modality == 'image':
            ids = model.encode(torch.as_tensor(inputs['image'])[None])
            save_png(stem + '.png', model.decode(ids)[0].numpy())
            return [stem + '.png']
        ids = model.encode(torch.as_tensor(inputs['mel'])[None])                  # (1, N)
        return write_audio(stem, model.decode(ids)[0].numpy(), mel_cfg)


RUNNERS = {'vq': run_tokenizer}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ckpt', required=True, help='a training run directory (out/<exp>) or its ckpt.pt')
    parser.add_argument('--audio', help='input sound: any audio file, or a video whose sound is used')
    parser.add_argument('--image', help='input picture: any image file')
    parser.add_argument('--index', type=int, help='use this test-split sample of the checkpoint\'s dataset as input')
    parser.add_argument('--data_dir', default='data', help='where datasets live (for --index)')
    parser.add_argument('--out', default=None, help='output stem (default: out/samples/<input name>)')
    parser.add_argument('--seed', type=int, default=1337, help='seed of any sampling')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    args = parser.parse_args(argv)
    if sum(x is not None for x in (args.audio, args.image, args.index)) != 1:
        parser.error('give exactly one input: --audio, --image or --index')
    torch.manual_seed(args.seed)
    path = args.ckpt if args.ckpt.endswith('.pt') else os.path.join(args.ckpt, 'ckpt.pt')
    try:
        model, ckpt = load_checkpoint(path, args.device)
        data, mel_cfg = ckpt['data'], MelConfig(**ckpt['data']['mel'])
        if args.index is not None:
            split, meta = open_split(args.data_dir, data['dataset'], 'test', ['image', 'mel'])
            inputs, name = {k: np.array(v[args.index]) for k, v in split.items()}, f"{data['dataset']}_test{args.index}"
        elif args.audio:
            wave = load_audio(args.audio, mel_cfg.sample_rate)
            inputs, name = {'mel': log_mel(torch.from_numpy(wave)[None], mel_cfg)[0].numpy()}, os.path.basename(args.audio)
        else:
            size = None if model.modality != 'image' else ckpt['model_args'].get('image_size', 32)
            inputs, name = {'image': load_image(args.image, size)}, os.path.basename(args.image)
    except (MediaError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    stem = args.out or os.path.join('out', 'samples', f"{os.path.splitext(name)[0]}.{os.path.basename(os.path.dirname(path))}")
    os.makedirs(os.path.dirname(stem) or '.', exist_ok=True)
    for f in RUNNERS[ckpt['method']](model, ckpt, inputs, stem):
        print(f"wrote {f}")


if __name__ == '__main__':
    main()
