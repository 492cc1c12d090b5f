"""Raw media -> data/<dataset>/ caches; frozen-encoder features -> .npy memmaps.

    python prepare.py toyav                    # generate the embedded world (seconds)
    python prepare.py avmnist --src ../shared/data   # spoken + handwritten digits (or downloads)
    python prepare.py vggsound                 # data/raw/vggsound/: vggsound.csv + video/*.mp4
    python prepare.py esc50                    # data/raw/esc50/: esc50.csv + audio/*.wav (audio)
    python prepare.py imagehear                # data/raw/imagehear/<class>/*.jpg|png (images, test)
    python prepare.py vggsound --src DIR       # the same layout under DIR
    python prepare.py toyav --features toy     # cache the toy encoders' features (once trained)
    python prepare.py vggsound --features hf   # cache the published CLIP and CLAP embeddings
    python prepare.py vggsound --features hf --encoders ast,flux_t5,flux_clip   # AST + Flux text
    python prepare.py sonify --features hf --encoders ast,sd_vae   # AST + PixArt's VAE latents

Layout: data/<ds>/{split}_{field}.npy memmaps + captions.json + meta.json (+ files.json: the
source file of every sample of a real dataset); features add {split}_{encoder}_{field}.npy +
features.json. Every dataset is read by data/<ds>.py, `read(src, **options)`: the options its
OPTIONS declares (listed under "<ds> options" below; an option of another dataset is refused)
and the shared settings it names. Real datasets give the fields toyav gives where they have the
media (image (N, S, S, 3) uint8, wave (N, T) float32, mel (N, n_mels, frames), caption_ids,
sources (N, K) multi-hot), so every toy config trains on them with --dataset=<ds>. Unusable files
are reported one line each, csv rows without a file in one line; silent clips and an empty val
(or test) split are warned about; no usable file at all is an error. A dataset is read whole before
anything is written, then written under a temporary name and renamed when complete; a cache
whose settings or encoder checkpoints changed is refused by `open_split` with a message naming
the mismatch.
"""
import argparse
import importlib
import inspect
import os
import shutil
import sys

import numpy as np
import torch
from tqdm import tqdm

from configurator import HelpFormatter
from data import SPLITS, check_mel, json_hash, read_json, write_json
from encoders import (IMAGEBIND_CLIP, PIXART_VAE, MelConfig, StaleCache, WordTokenizer,
                      load_toy, log_mel, parts_of, toy_checkpoint, TOY_ENCODERS)

# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------

READERS = {name: importlib.import_module(f"data.{name}")
           for name in ('toyav', 'toyav_ctrl', 'toyav_maa', 'sonify', 'avmnist', 'vggsound',
                        'esc50', 'imagehear', 'audiocaps_maa')}
SHARED = ('data_dir', 'out_dir', 'device', 'seed', 'image_size', 'sample_rate',
          'duration')                                    # settings a reader names
SILENT = 1e-4          # peak amplitude under which a clip is silent (-80 dBFS)
SHOWN = 5              # ids a summary line shows


def reader_options(reader):
    """{name: (default, help)} of a reader's own options: OPTIONS' help texts, read()'s defaults."""
    params = inspect.signature(reader.read).parameters
    return {name: (params[name].default, text) for name, text in reader.OPTIONS.items()}


def given_options(args):
    """The dataset options given on the command line; one of another dataset is a ValueError."""
    given = {}
    for reader in READERS.values():
        for name in reader.OPTIONS:
            if hasattr(args, name):                      # not given: absent (SUPPRESS)
                given[name] = getattr(args, name)
    own = READERS[args.dataset].OPTIONS
    for name in given:
        if args.features:
            raise ValueError(f"--{name} is an option of reading {args.dataset}'s media; "
                             f"--features caches the features of the prepared "
                             f"data/{args.dataset} and takes none")
        if name not in own:
            owner = next(d for d, reader in READERS.items() if name in reader.OPTIONS)
            mine = ', '.join(f"--{o}" for o in own) or 'none'
            raise ValueError(f"--{name} is an option of {owner}, not of {args.dataset} "
                             f"(its options: {mine})")
    return given


def mel_config(args):
    """The MelConfig the mel options ask for."""
    return MelConfig(sample_rate=args.sample_rate, hop=args.hop, n_mels=args.n_mels,
                     frames=args.frames)


def log_mels(waves, cfg, batch_size=256):
    """Log-mels of waves (N, T) -> float32 (N, n_mels, frames), a batch at a time."""
    out = np.zeros((len(waves), cfg.n_mels, cfg.frames), np.float32)
    for i in range(0, len(waves), batch_size):
        batch = torch.from_numpy(waves[i:i + batch_size])                      # (B, T)
        out[i:i + batch_size] = log_mel(batch, cfg).numpy()                    # (B, n_mels, frames)
    return out


def stack(samples, schema):
    """Samples (dicts) -> {field: array (N, *shape)} for each field of schema; none: (0, *shape)."""
    arrays = {}
    for k, (shape, dtype) in schema.items():
        column = np.array([x[k] for x in samples], dtype)
        arrays[k] = column.reshape(len(samples), *shape)                      # (N, *shape)
    return arrays


def summary(ids):
    """The first few of many ids in one line."""
    more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ''
    return ', '.join(ids[:SHOWN]) + more


def silent_clips(splits):
    """The files (or split and index) of every clip whose wave stays under SILENT."""
    silent = []
    for split, (arrays, _, files) in splits.items():
        if 'wave' not in arrays:
            continue
        peaks = np.abs(arrays['wave']).max(1) if len(arrays['wave']) else []          # (N,)
        names = files or [f"{split} sample {i}" for i in range(len(peaks))]
        silent += [name for name, peak in zip(names, peaks) if peak < SILENT]
    return silent


def report(out, splits, list_missing):
    """Print what a reader skipped, its csv rows without a file, its warnings and silent clips."""
    for line in out.get('skipped', []):
        print(f"skipped {line}", file=sys.stderr)
    reason, missing = out.get('missing', ('', []))
    if list_missing:
        for row in missing:
            print(f"skipped {row}: {reason}", file=sys.stderr)
    elif missing:
        print(f"skipped {len(missing)} of the csv's rows, {reason}: {summary(missing)} "
              f"(--list_missing lists them all)", file=sys.stderr)
    for line in out.get('warnings', []):
        print(f"warning: {line}", file=sys.stderr)
    silent = silent_clips(splits)
    if silent:
        print(f"warning: {len(silent)} silent clips (peak under {SILENT:g}: all zeros, or stereo "
              f"channels that cancel in the mono mix), cached as they are: {summary(silent)}",
              file=sys.stderr)


def read_dataset(args):
    """Read and report on args.dataset -> ({split: (arrays, captions, files)}, info)."""
    reader = READERS[args.dataset]
    options = given_options(args)
    params = inspect.signature(reader.read).parameters
    settings = {k: getattr(args, k) for k in SHARED if k in params}
    out = reader.read(args.src, **settings, **options)
    samples = {split: out['splits'].get(split, []) for split in SPLITS}
    if not any(samples.values()):
        raise ValueError(f"{args.dataset}: no usable sample")
    splits = {}
    for split, xs in samples.items():
        files = None if any('file' not in x for x in xs) else [x['file'] for x in xs]
        splits[split] = (stack(xs, out['schema']), [x['caption'] for x in xs], files)
    report(out, splits, args.list_missing)
    info = dict(out['meta'])
    if 'skipped' in out:
        info['skipped'] = len(out['skipped']) + len(out.get('missing', ('', []))[1])
    return splits, info


def write_dataset(args, dest, splits, info):
    """Save each split's (arrays, captions, files) in dest with log-mels and caption ids -> meta."""
    mel = mel_config(args)
    tokenizer = WordTokenizer(info['vocab'], args.max_len)
    fields = {}
    captions = {}
    files = {}
    counts = {}
    mel_mean = 0.0    # without training audio the judges' mel normalisation is the identity
    mel_std = 1.0
    for split, (arrays, caps, names) in splits.items():
        if 'wave' in arrays:
            arrays['mel'] = log_mels(arrays['wave'], mel)                    # (N, n_mels, frames)
        arrays['caption_ids'] = tokenizer([c['caption'] for c in caps]).numpy()
        for name, array in arrays.items():
            np.save(os.path.join(dest, f"{split}_{name}.npy"), array)
            fields[name] = dict(shape=list(array.shape[1:]), dtype=str(array.dtype))
        captions[split] = caps
        files[split] = names
        counts[split] = len(caps)
        if split == 'train' and len(arrays.get('mel', ())):
            mel_mean = float(arrays['mel'].mean())
            mel_std = float(arrays['mel'].std())
    write_json(os.path.join(dest, 'captions.json'), captions)
    if all(v is not None for v in files.values()):
        write_json(os.path.join(dest, 'files.json'), files)
    return dict(dataset=args.dataset, seed=args.seed, counts=counts, image_size=args.image_size,
                duration=args.duration, mel=mel.dict(), max_len=args.max_len, fields=fields,
                mel_mean=mel_mean, mel_std=mel_std, **info)


def prepare(args):
    """Read the dataset whole, write data/<dataset>/ in a temporary directory, then swap it in."""
    splits, info = read_dataset(args)            # a reader that fails leaves nothing on disk
    final = os.path.join(args.data_dir, args.dataset)
    tmp = final + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        meta = write_dataset(args, tmp, splits, info)
        write_json(os.path.join(tmp, 'meta.json'), meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)   # nothing half-written stays behind
        raise
    old = final + '.old'                         # the previous dataset stays whole until then
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    skipped = f" ({meta['skipped']} skipped)" if meta.get('skipped') else ''
    counts = ', '.join(f"{k} {v}" for k, v in meta['counts'].items())
    print(f"wrote {final}: {counts}{skipped}")


# ---------------------------------------------------------------------------------------------
# feature caches
# ---------------------------------------------------------------------------------------------

# hf suite: the published encoders prepare.py runs -> the media fields each needs (text: captions)
HF_MEDIA = {'clip': ('image',), 'clap': ('wave',), 'ast': ('wave',), 'flux_t5': (),
            'flux_clip': (), 'imagebind': ('image',), 'maa_text': (), 'sd_vae': ('image',)}
HF_TOKENS = ('ast', 'flux_t5', 'maa_text')   # hf encoders whose tokens are cached too (float16)


def encoder_features(encoder, batch, captions, sample_rate, tokens=False, texts=None):
    """Every feature an encoder gives a batch: {field: array (B, ...)}; with tokens, its tokens;
    texts {name: B texts}: other texts of the rows (meta 'texts'), their embeddings as name_emb."""
    if hasattr(encoder, 'decode'):                         # a toy tokenizer or autoencoder
        media = batch['image'] if encoder.modality == 'image' else batch['mel']
        codes = encoder.encode(media).numpy()
        if hasattr(encoder, 'codebook_size'):
            return {'ids': codes.astype(np.int16)}
        return {'latent': codes}
    # toy encoders give pooled embeddings and token sequences; hf ones (no .roles) pooled
    # embeddings, from images and raw waves, and token sequences when asked
    hf = not hasattr(encoder, 'roles')
    tokens = tokens or not hf

    def encode_audio():
        if hf:
            return encoder.encode_audio(batch['wave'], sample_rate)
        return encoder.encode_mel(batch['mel'])

    roles = [('image', lambda: encoder.encode_image(batch['image'])),
             ('audio', encode_audio),
             ('text', lambda: encoder.encode_text(captions))]
    out = {}

    for role, run in roles:
        if role in getattr(encoder, 'roles', ()) or hf and hasattr(encoder, f"encode_{role}"):
            f = run()
            out[f"{role}_emb"] = f.emb.float().cpu().numpy()
            if tokens:
                out[f"{role}_tokens"] = f.tokens.float().cpu().numpy().astype(np.float16)
    if 'text_emb' in out:                        # other texts: their pooled embeddings alone
        for name, others in (texts or {}).items():
            out[f"{name}_emb"] = encoder.encode_text(others).emb.float().cpu().numpy()
    if hf and 'frames' in batch and hasattr(encoder, 'encode_image'):
        frames = batch['frames']                                       # a video's (B, F, H, W, 3)
        emb = encoder.encode_image(frames.flatten(0, 1)).emb           # (B * F, D)
        emb = emb.unflatten(0, frames.shape[:2])                       # (B, F, D)
        out['frames_emb'] = emb.float().cpu().numpy()
    return out


def hf_roles(args):
    """The hf encoders --encoders names, in its order; an unknown one is a ValueError."""
    roles = [r for r in args.encoders.split(',') if r]
    unknown = [r for r in roles if r not in HF_MEDIA]
    if unknown:
        raise ValueError(f"--encoders {','.join(unknown)}: not an hf encoder prepare.py runs "
                         f"({', '.join(HF_MEDIA)})")
    return roles


def hf_encoders(args, media):
    """The published encoders --encoders names whose media the dataset has, on --device."""
    from encoders import load_hf
    encoders = {}
    for name in hf_roles(args):
        if set(HF_MEDIA[name]) <= set(media):
            encoders[name] = load_hf(name, getattr(args, name)).to(args.device)
    return encoders


def cache_features(args):
    """Run every frozen encoder of a suite over every split; write memmaps and features.json."""
    root = os.path.join(args.data_dir, args.dataset)
    meta = read_json(os.path.join(root, 'meta.json'))
    captions = read_json(os.path.join(root, 'captions.json'))
    if args.features == 'hf':
        media = [f for f in ('image', 'frames', 'wave') if f in meta['fields']]
        encoders = hf_encoders(args, media)
        stamps = {name: getattr(args, name) for name in hf_roles(args)}
    else:
        media = [f for f in ('image', 'mel') if f in meta['fields']]
        encoders = toy_encoders(args, meta, media)
        stamps = {name: enc.checkpoint_hash for name, enc in encoders.items()}
    stamp = os.path.join(root, 'features.json')
    if os.path.exists(stamp):
        os.remove(stamp)          # the old cache is invalid from the first overwritten file on
    sample_rate = meta['mel']['sample_rate']
    try:
        written = write_features(args, root, encoders, captions, media, sample_rate,
                                 meta.get('texts', {}))
    finally:
        for f in os.listdir(root):
            if f.endswith('.tmp'):
                os.remove(os.path.join(root, f))
    tokenizers = {}
    for name, enc in encoders.items():
        if hasattr(enc, 'codebook_size'):
            tokenizers[name] = dict(codebook_size=enc.codebook_size, n_tokens=enc.n_tokens)
    write_json(stamp, dict(suite=args.features, meta=json_hash(meta), mel=meta['mel'],
                           fields=written, encoders=stamps, tokenizers=tokenizers))


def toy_encoders(args, meta, media):
    """The toy encoders and tokenizers trained on this dataset (out/<ds>_<name>/), mel checked."""
    # an encoder whose media the dataset lacks cannot be trained on it
    names = [name for name, needs in TOY_ENCODERS.items() if set(needs) <= set(media)]
    if len(names) < len(TOY_ENCODERS):
        absent = ', '.join(n for n in TOY_ENCODERS if n not in names)
        print(f"data/{args.dataset} has only {media}: no {absent} features")
    untrained = []
    for name in names:
        if not os.path.exists(toy_checkpoint(name, parts_of(meta), args.out_dir)):
            untrained.append(name)
    if untrained:
        print(f"not trained yet, no features: {', '.join(untrained)}")
    trained = [name for name in names if name not in untrained]
    encoders = {name: load_toy(name, parts_of(meta), args.out_dir) for name in trained}
    for name, enc in encoders.items():
        check_mel(name, enc.mel_config.dict(), meta)
    return encoders


def open_tmp(prefix, field, dtype, shape):
    """A new memmap {prefix}{field}.npy.tmp, renamed to .npy by write_features once complete."""
    return np.lib.format.open_memmap(f"{prefix}{field}.npy.tmp", 'w+', dtype, shape)


def write_features(args, root, encoders, captions, media, sample_rate, texts):
    """Every encoder's features of every split as {split}_{encoder}_{field}.npy -> {field: meta};
    texts {caption key: name}: the other texts of each row a text encoder embeds."""
    written = {}                                  # {encoder_field: dict(shape, dtype)}
    # empty splits last: they take the others' shapes
    for split in sorted(SPLITS, key=lambda s: not captions[s]):
        data = {}
        for k in media:
            data[k] = np.load(os.path.join(root, f"{split}_{k}.npy"), mmap_mode='r')
        n = len(captions[split])
        for name, enc in encoders.items():
            prefix = os.path.join(root, f"{split}_{name}_")
            arrays = {}
            if not n:                             # (0, ...) arrays shaped like earlier splits'
                for field, v in written.items():
                    if field.startswith(name + '_'):
                        k = field[len(name) + 1:]
                        arrays[k] = open_tmp(prefix, k, v['dtype'], (0, *v['shape']))
            for i in tqdm(range(0, n, args.batch_size), desc=f"{split} {name}", leave=False):
                rows = slice(i, i + args.batch_size)
                batch = {k: torch.from_numpy(np.array(v[rows])) for k, v in data.items()}
                caps = [c['caption'] for c in captions[split][rows]]
                others = {}
                for key, text_name in texts.items():
                    others[text_name] = [c[key] for c in captions[split][rows]]
                feats = encoder_features(enc, batch, caps, sample_rate, name in HF_TOKENS, others)
                if i == 0:
                    for k, v in feats.items():
                        arrays[k] = open_tmp(prefix, k, v.dtype, (n,) + v.shape[1:])
                for k, v in feats.items():
                    arrays[k][i:i + len(v)] = v
            for k, a in arrays.items():
                a.flush()
                os.replace(f"{prefix}{k}.npy.tmp", f"{prefix}{k}.npy")
                written[f"{name}_{k}"] = dict(shape=list(a.shape[1:]), dtype=str(a.dtype))
            shapes = ', '.join(f"{k} {tuple(a.shape)}" for k, a in arrays.items())
            print(f"{split} {name}: {shapes}")
    return written


def add_reader_options(parser):
    """One argument group per dataset with the options its reader declares (absent unless given)."""
    declared = set()
    for dataset, reader in READERS.items():
        group = parser.add_argument_group(f"{dataset} options")
        for name, (default, text) in reader_options(reader).items():
            if name in declared:               # shared with an earlier dataset's
                continue
            declared.add(name)
            kind = type(default) if default is not None else str
            how = dict(action=argparse.BooleanOptionalAction) if kind is bool else dict(type=kind)
            shown = '' if default is None else f" (default: {default})"
            group.add_argument(f"--{name}", default=argparse.SUPPRESS,
                               help=text.replace('%', '%%') + shown, **how)


def main(argv=None):
    """Command line: prepare a dataset, or with --features its feature cache; one-line errors."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('dataset', choices=list(READERS), help='which dataset to prepare')
    parser.add_argument('--features', choices=['toy', 'hf'],
                        help="instead of media, cache an encoder suite's features: toy (the "
                             "encoders trained here, out/<dataset>_<name>) or hf (the published "
                             "encoders --encoders names: pooled embeddings, and the tokens of "
                             f"{' and '.join(HF_TOKENS)}; store images at --image_size 224 for "
                             "CLIP)")
    parser.add_argument('--encoders', default='clip,clap',
                        help='hf suite: the published encoders to run, comma-separated, of '
                             f"{', '.join(HF_MEDIA)} (SeeingSounds with FLUX.1: "
                             "ast,flux_t5,flux_clip; Make-An-Audio + ImageBind: "
                             "imagebind,maa_text; Seeing Sound with PixArt: ast,sd_vae)")
    parser.add_argument('--clip', default='openai/clip-vit-base-patch32',
                        help='hf suite: CLIP model id or folder')
    parser.add_argument('--clap', default='laion/clap-htsat-unfused',
                        help='hf suite: CLAP model id or folder (for V2A-Mapper, the CLAP whose '
                             'space the generator was trained in)')
    parser.add_argument('--ast', default='MIT/ast-finetuned-audioset-10-10-0.4593',
                        help='hf suite: AST model id or folder (audio tokens, 1214 x 768 a clip)')
    parser.add_argument('--flux_t5', default='google/t5-v1_1-xxl',
                        help="hf suite: the T5 encoder FLUX.1 reads, id or folder (512 tokens as "
                             "its pipeline pads them, 512 x 4096 a caption)")
    parser.add_argument('--flux_clip', default='openai/clip-vit-large-patch14',
                        help='hf suite: the CLIP text tower FLUX.1 reads, id or folder (its '
                             'pooled output, 768)')
    parser.add_argument('--imagebind', default=IMAGEBIND_CLIP,
                        help="hf suite: ImageBind's image and text towers (OpenCLIP ViT-H/14 in "
                             "transformers), id or folder")
    parser.add_argument('--maa_text', default='useful_ckpts',
                        help="hf suite: Make-An-Audio's text encoder, the tokens its U-Net reads: "
                             "its checkpoint maa1_full.ckpt or the folder holding it (bert/ beside "
                             "it, else bert-base-uncased from the hub)")
    parser.add_argument('--sd_vae', default=PIXART_VAE,
                        help="hf suite: the picture autoencoder whose scaled latents a DiT reads "
                             "(PixArt-alpha's sd-vae-ft-ema): a diffusers AutoencoderKL folder, a "
                             "pipeline folder with vae/, or a hub id of one")
    parser.add_argument('--device', default='cpu',
                        help="hf suite: where the encoders run ('cpu' or 'cuda')")
    parser.add_argument('--data_dir', default='data', help='where datasets live (data/<dataset>/)')
    parser.add_argument('--out_dir', default='out',
                        help='where trained toy encoders live (out/<dataset>_<name>/)')
    parser.add_argument('--batch_size', type=int, default=256,
                        help='batch size for feature extraction')
    parser.add_argument('--src', help='folder of the raw dataset, laid out as its reader says '
                                      '(above); by default vggsound, esc50 and imagehear read '
                                      '<data_dir>/raw/<dataset>/, avmnist downloads FSDD and MNIST '
                                      'into <data_dir>/downloads/avmnist/, toyav reads none')
    parser.add_argument('--list_missing', action='store_true',
                        help='vggsound, esc50: list every csv row whose media file is missing, one '
                             'line each (by default one line counts them)')
    parser.add_argument('--seed', type=int, default=1337,
                        help='toyav: seed of the world (split i uses seed + i); avmnist: image '
                             'pairing; vggsound: choice of val clips')
    parser.add_argument('--image_size', type=int, default=32,
                        help='image side in pixels (real images: shorter side scaled to it, then '
                             'center crop)')
    parser.add_argument('--sample_rate', type=int, default=16000,
                        help='audio sample rate (Hz), real audio resampled')
    parser.add_argument('--duration', type=float, default=1.0,
                        help='clip length (s; 1 s fills 64 mel frames of hop 250 at 16 kHz); '
                             'longer real audio keeps its loudest window, shorter is zero-padded')
    parser.add_argument('--hop', type=int, default=250, help='mel hop length (samples)')
    parser.add_argument('--n_mels', type=int, default=64, help='mel bands')
    parser.add_argument('--frames', type=int, default=64, help='mel frames kept per clip')
    parser.add_argument('--max_len', type=int, default=16, help='caption length in words')
    add_reader_options(parser)
    args = parser.parse_args(argv)
    try:
        if args.features:
            given_options(args)                  # refuses any dataset option
            cache_features(args)
        else:
            prepare(args)
    except (StaleCache, FileNotFoundError, ConnectionError, ValueError) as e:   # MediaError too
        sys.exit(f"error: {e}")


if __name__ == '__main__':
    main()
