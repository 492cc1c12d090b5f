"""Raw media -> data/<dataset>/ caches; frozen-encoder features -> .npy memmaps.

    python prepare.py toyav                          # generate the embedded world (seconds)
    python prepare.py avmnist --src ../shared/data   # spoken + handwritten digits (downloads without --src)
    python prepare.py vggsound --src DIR             # DIR/vggsound.csv + DIR/video/*.mp4
    python prepare.py esc50 --src DIR                # DIR/esc50.csv + DIR/audio/*.wav (audio only)
    python prepare.py imagehear --src DIR            # DIR/<class>/*.jpg|png (image only, test split)
    python prepare.py toyav --features toy           # cache the toy encoders' features (after training them)
    python prepare.py vggsound --features hf         # cache the published CLIP and CLAP embeddings (GPU: --device cuda)

Layout: data/<ds>/{split}_{field}.npy memmaps + captions.json + meta.json (+ files.json: the source file
of every sample of a real dataset); features add {split}_{encoder}_{field}.npy + features.json.
Real datasets are read by data/<ds>.py; every one gives the fields toyav gives where it has the media
(image (N, S, S, 3) uint8, wave (N, T) float32, mel (N, n_mels, frames), caption_ids, sources (N, K)
multi-hot), so every toy config trains on it with --dataset=<ds>. Files that cannot be used are reported
one line each and skipped. Everything is written under a temporary name and renamed when complete; a
cache whose settings or encoder checkpoints changed is refused by `open_split` with a message naming
the mismatch.
"""
import argparse
import importlib
import os
import shutil
import sys

import numpy as np
import torch
from tqdm import tqdm

from configurator import HelpFormatter
from data import SPLITS, check_mel, json_hash, read_json, write_json
from encoders import MelConfig, StaleCache, WordTokenizer, load_toy, log_mel, TOY_ENCODERS

# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------

def mel_config(args):
    """The MelConfig the mel options ask for."""
    return MelConfig(sample_rate=args.sample_rate, hop=args.hop, n_mels=args.n_mels, frames=args.frames)


def log_mels(waves, cfg, batch_size=256):
    """Log-mels of waves (N, T) -> float32 (N, n_mels, frames), a batch at a time."""
    out = np.zeros((len(waves), cfg.n_mels, cfg.frames), np.float32)
    for i in range(0, len(waves), batch_size):
        out[i:i + batch_size] = log_mel(torch.from_numpy(waves[i:i + batch_size]), cfg).numpy()
    return out


def stack(samples, schema):
    """Samples (dicts) -> {field: array (N, *shape)} for every field of schema; no samples give (0, *shape)."""
    return {k: np.array([x[k] for x in samples], dtype).reshape(len(samples), *shape)
            for k, (shape, dtype) in schema.items()}


def write_dataset(args, dest, splits, info):
    """Save each split's (arrays, captions, files) in dest with log-mels and caption ids; returns the meta."""
    mel = mel_config(args)
    tokenizer = WordTokenizer(info['vocab'], args.max_len)
    fields, captions, files, counts = {}, {}, {}, {}
    mel_mean, mel_std = 0.0, 1.0    # without training audio the judges' mel normalisation is the identity
    for split, (arrays, caps, names) in splits.items():
        if 'wave' in arrays:
            arrays['mel'] = log_mels(arrays['wave'], mel)                    # (N, n_mels, frames)
        arrays['caption_ids'] = tokenizer([c['caption'] for c in caps]).numpy()
        for name, array in arrays.items():
            np.save(os.path.join(dest, f"{split}_{name}.npy"), array)
            fields[name] = dict(shape=list(array.shape[1:]), dtype=str(array.dtype))
        captions[split], files[split], counts[split] = caps, names, len(caps)
        if split == 'train' and len(arrays.get('mel', ())):
            mel_mean, mel_std = float(arrays['mel'].mean()), float(arrays['mel'].std())
    write_json(os.path.join(dest, 'captions.json'), captions)
    if all(v is not None for v in files.values()):
        write_json(os.path.join(dest, 'files.json'), files)
    return dict(dataset=args.dataset, seed=args.seed, counts=counts, image_size=args.image_size, duration=args.duration,
                mel=mel.dict(), max_len=args.max_len, fields=fields, mel_mean=mel_mean, mel_std=mel_std, **info)


def prepare_toyav(args, dest):
    """Generate the toyav world into the directory dest: media, labels, captions, meta."""
    from data import toyav
    counts = dict(train=args.n_train, val=args.n_val, test=args.n_test)
    splits = {}
    for i, split in enumerate(tqdm(SPLITS, desc='toyav')):
        arrays, caps = toyav.generate(counts[split], args.seed + i, args.image_size, args.sample_rate, args.duration, args.p_mix)
        splits[split] = (arrays, caps, None)
    classes = dict(sources=[s[0] for s in toyav.SOURCES], env=[e[0] for e in toyav.ENVS], loud=toyav.LOUDNESS)
    return write_dataset(args, dest, splits, dict(vocab=toyav.vocabulary(), p_mix=args.p_mix, classes=classes))


def prepare_real(args, dest):
    """Read a real dataset with data/<dataset>.py into dest, reporting what it skipped; returns meta.json's content."""
    out = importlib.import_module(f"data.{args.dataset}").read(args)
    for line in out['skipped']:
        print(f"skipped {line}", file=sys.stderr)
    samples = {split: out['splits'].get(split, []) for split in SPLITS}
    splits = {split: (stack(xs, out['schema']), [x['caption'] for x in xs], [x['file'] for x in xs])
              for split, xs in samples.items()}
    return write_dataset(args, dest, splits, dict(out['meta'], skipped=len(out['skipped'])))


DATASETS = {'toyav': prepare_toyav, **{name: prepare_real for name in ('avmnist', 'vggsound', 'esc50', 'imagehear')}}


def prepare(args):
    """Build data/<dataset>/ in a temporary directory, then swap it in whole."""
    final = os.path.join(args.data_dir, args.dataset)
    tmp = final + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        meta = DATASETS[args.dataset](args, tmp)
        write_json(os.path.join(tmp, 'meta.json'), meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)   # nothing half-written stays behind
        raise
    old = final + '.old'                         # the previous dataset stays whole until the new one is in place
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    skipped = f" ({meta['skipped']} skipped)" if meta.get('skipped') else ''
    print(f"wrote {final}: " + ', '.join(f"{k} {v}" for k, v in meta['counts'].items()) + skipped)


# ---------------------------------------------------------------------------------------------
# feature caches
# ---------------------------------------------------------------------------------------------

HF_MEDIA = {'clip': ('image',), 'clap': ('wave',)}   # hf suite: the published CLIP and CLAP, pooled embeddings only


def encoder_features(encoder, batch, captions, sample_rate):
    """Every feature an encoder gives for a batch of samples: {field: array (B, ...)}. Toy encoders give pooled
    embeddings and token sequences; hf ones (no .roles) pooled embeddings only, from images and raw waves."""
    if hasattr(encoder, 'decode'):
        codes = encoder.encode(batch['image'] if encoder.modality == 'image' else batch['mel']).numpy()
        return {'ids': codes.astype(np.int16)} if hasattr(encoder, 'codebook_size') else {'latent': codes}
    out, hf = {}, not hasattr(encoder, 'roles')
    roles = [('image', lambda: encoder.encode_image(batch['image'])),
             ('audio', lambda: encoder.encode_audio(batch['wave'], sample_rate) if hf else encoder.encode_mel(batch['mel'])),
             ('text', lambda: encoder.encode_text(captions))]
    for role, run in roles:
        if role in getattr(encoder, 'roles', ()) or hf and hasattr(encoder, f"encode_{role}"):
            f = run()
            out[f"{role}_emb"] = f.emb.float().cpu().numpy()
            if not hf:
                out[f"{role}_tokens"] = f.tokens.numpy().astype(np.float16)
    if hf and 'frames' in batch and hasattr(encoder, 'encode_image'):          # a video's frames (B, F, H, W, 3)
        frames = batch['frames']
        out['frames_emb'] = encoder.encode_image(frames.flatten(0, 1)).emb.unflatten(0, frames.shape[:2]).float().cpu().numpy()
    return out


def hf_encoders(args, media):
    """The published encoders (--clip, --clap) whose media the dataset has, on --device."""
    from encoders import load_hf
    names = {'clip': args.clip, 'clap': args.clap}
    return {name: load_hf(name, names[name]).to(args.device) for name, needs in HF_MEDIA.items() if set(needs) <= set(media)}


def cache_features(args):
    """Run every frozen encoder of a suite over every split; write memmaps and features.json."""
    root = os.path.join(args.data_dir, args.dataset)
    meta = read_json(os.path.join(root, 'meta.json'))
    captions = read_json(os.path.join(root, 'captions.json'))
    if args.features == 'hf':
        media = [f for f in ('image', 'frames', 'wave') if f in meta['fields']]
        encoders = hf_encoders(args, media)
        stamps = {'clip': args.clip, 'clap': args.clap}
    else:
        media = [f for f in ('image', 'mel') if f in meta['fields']]
        encoders = toy_encoders(args, meta, media)
        stamps = {name: enc.checkpoint_hash for name, enc in encoders.items()}
    stamp = os.path.join(root, 'features.json')
    if os.path.exists(stamp):
        os.remove(stamp)                          # the old cache is invalid from the first overwritten file on
    try:
        written = write_features(args, root, encoders, captions, media, meta['mel']['sample_rate'])
    finally:
        for f in os.listdir(root):
            if f.endswith('.tmp'):
                os.remove(os.path.join(root, f))
    write_json(stamp, dict(
        suite=args.features, meta=json_hash(meta), mel=meta['mel'], fields=written, encoders=stamps,
        tokenizers={name: dict(codebook_size=enc.codebook_size, n_tokens=enc.n_tokens)
                    for name, enc in encoders.items() if hasattr(enc, 'codebook_size')}))


def toy_encoders(args, meta, media):
    """The toy encoders and tokenizers trained on this dataset (out/<dataset>_<name>/), checked against its mel."""
    names = [name for name, needs in TOY_ENCODERS.items() if set(needs) <= set(media)]   # others cannot be trained here
    if len(names) < len(TOY_ENCODERS):
        print(f"data/{args.dataset} has only {media}: no {', '.join(n for n in TOY_ENCODERS if n not in names)} features")
    untrained = [n for n in names if not os.path.exists(os.path.join(args.out_dir, f"{args.dataset}_{n}", 'ckpt.pt'))]
    if untrained:
        print(f"not trained yet, no features: {', '.join(untrained)}")
    encoders = {name: load_toy(name, args.dataset, args.out_dir) for name in names if name not in untrained}
    for name, enc in encoders.items():
        check_mel(name, enc.mel_config.dict(), meta)
    return encoders


def write_features(args, root, encoders, captions, media, sample_rate):
    """Every encoder's features for every split as {split}_{encoder}_{field}.npy; returns {field: shape, dtype}."""
    written = {}
    for split in sorted(SPLITS, key=lambda s: not captions[s]):   # empty splits last: they take the others' shapes
        data = {k: np.load(os.path.join(root, f"{split}_{k}.npy"), mmap_mode='r') for k in media}
        n = len(captions[split])
        for name, enc in encoders.items():
            prefix = os.path.join(root, f"{split}_{name}_")
            shapes = {f[len(name) + 1:]: v for f, v in written.items() if f.startswith(name + '_')}  # earlier splits'
            arrays = {} if n else {k: np.lib.format.open_memmap(f"{prefix}{k}.npy.tmp", 'w+', v['dtype'],
                                                                (0, *v['shape'])) for k, v in shapes.items()}
            for i in tqdm(range(0, n, args.batch_size), desc=f"{split} {name}", leave=False):
                batch = {k: torch.from_numpy(np.array(v[i:i + args.batch_size])) for k, v in data.items()}
                caps = [c['caption'] for c in captions[split][i:i + args.batch_size]]
                feats = encoder_features(enc, batch, caps, sample_rate)
                if i == 0:
                    arrays = {k: np.lib.format.open_memmap(f"{prefix}{k}.npy.tmp", 'w+', v.dtype, (n,) + v.shape[1:])
                              for k, v in feats.items()}
                for k, v in feats.items():
                    arrays[k][i:i + len(v)] = v
            for k, a in arrays.items():
                a.flush()
                os.replace(f"{prefix}{k}.npy.tmp", f"{prefix}{k}.npy")
                written[f"{name}_{k}"] = dict(shape=list(a.shape[1:]), dtype=str(a.dtype))
            print(f"{split} {name}: " + ', '.join(f"{k} {tuple(a.shape)}" for k, a in arrays.items()))
    return written


def main(argv=None):
    """Command line: prepare a dataset, or with --features its feature cache; one-line errors for bad input."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('dataset', choices=sorted(DATASETS), help='which dataset to prepare')
    parser.add_argument('--features', choices=['toy', 'hf'], help='instead of media, cache an encoder suite\'s features: '
                        'toy (the encoders trained here, out/<dataset>_<name>) or hf (the published CLIP and CLAP: '
                        'pooled embeddings; store images at --image_size 224 for them)')
    parser.add_argument('--clip', default='openai/clip-vit-base-patch32', help='hf suite: CLIP model id or folder')
    parser.add_argument('--clap', default='laion/clap-htsat-unfused', help='hf suite: CLAP model id or folder (for '
                        'V2A-Mapper, the CLAP whose space the generator was trained in)')
    parser.add_argument('--device', default='cpu', help="hf suite: where the encoders run ('cpu' or 'cuda')")
    parser.add_argument('--data_dir', default='data', help='where datasets live (data/<dataset>/)')
    parser.add_argument('--out_dir', default='out', help='where trained toy encoders live (out/<dataset>_<name>/)')
    parser.add_argument('--batch_size', type=int, default=256, help='batch size for feature extraction')
    parser.add_argument('--src', help='folder of the raw dataset (see above); avmnist without it downloads FSDD and '
                                      'MNIST into <data_dir>/downloads/avmnist/')
    parser.add_argument('--seed', type=int, default=1337, help='toyav: seed of the world (split i uses seed + i); '
                                                                'avmnist: image pairing; vggsound: choice of val clips')
    parser.add_argument('--n_train', type=int, default=5000, help='toyav: training samples')
    parser.add_argument('--n_val', type=int, default=500, help='toyav: validation samples')
    parser.add_argument('--n_test', type=int, default=500, help='toyav: test samples')
    parser.add_argument('--p_mix', type=float, default=0.3, help='toyav: probability that a sample has two sources')
    parser.add_argument('--test_speaker', default='george', help='avmnist: the FSDD speaker held out as the test split '
                                                                  '(val: recordings 0-4 of the others)')
    parser.add_argument('--copies', type=int, default=0, help='avmnist: speed-perturbed copies of every training '
                                                               'recording (0 = none)')
    parser.add_argument('--speed', type=float, default=0.15, help='avmnist: copies play at a speed, and a tempo, '
                                                                'each uniform in 1 +- this')
    parser.add_argument('--peak', type=float, default=0.0, help='avmnist: scale every recording to this peak amplitude '
                                                                '(0 = as recorded)')
    parser.add_argument('--val_fraction', type=float, default=0.05,
                        help='vggsound: share of the csv\'s train rows that become val (a seeded hash of id and start)')
    parser.add_argument('--n_frames', type=int, default=10,
                        help='vggsound: video frames kept per clip, uniformly spaced')
    parser.add_argument('--test_fold', type=int, default=5, help='esc50: the fold that is the test split')
    parser.add_argument('--val_fold', type=int, default=4, help='esc50: the fold that is the val split')
    parser.add_argument('--image_size', type=int, default=32, help='image side in pixels (real images: shorter side '
                                                                    'scaled to it, then center crop)')
    parser.add_argument('--sample_rate', type=int, default=16000, help='audio sample rate (Hz), real audio resampled')
    parser.add_argument('--duration', type=float, default=1.0, help='clip length (s; 1 s fills 64 mel frames of hop '
                                                                     '250 at 16 kHz); longer real audio keeps its '
                                                                     'loudest window, shorter is zero-padded')
    parser.add_argument('--hop', type=int, default=250, help='mel hop length (samples)')
    parser.add_argument('--n_mels', type=int, default=64, help='mel bands')
    parser.add_argument('--frames', type=int, default=64, help='mel frames kept per clip')
    parser.add_argument('--max_len', type=int, default=16, help='caption length in words')
    args = parser.parse_args(argv)
    try:
        cache_features(args) if args.features else prepare(args)
    except (StaleCache, FileNotFoundError, ConnectionError, ValueError) as e:   # MediaError is a ValueError
        sys.exit(f"error: {e}")


if __name__ == '__main__':
    main()
