"""VGGSound: 10-s YouTube clips with a sound label, read from a mirror's folder and the official csv.

    python prepare.py vggsound --src DIR   # DIR/vggsound.csv (youtube_id,start_seconds,label,split), DIR/video/

Mirrors name a clip <id>_<start:06d>.mp4 (start in s) or <id>_<start_ms>_<end_ms>.mp4; both are matched by id
and start. Per clip: --n_frames frames uniformly over the clip (`frames`) and the middle one of them
(`image`), all --image_size square; --duration s of the audio at --sample_rate (its loudest window; shorter
audio is zero-padded) as `wave` and `mel`; `label` and `sources` over the csv's sorted label set. The csv's
test rows are the test split; a seeded hash of id and start sends --val_fraction of its train rows to val,
so a clip's split does not depend on which other clips a mirror has. Rows without a clip, clips without
audio and clips that fail to decode are reported one line each and skipped.
Reference: Chen et al. 2020, VGGSound: A Large-scale Audio-Visual Dataset.
"""
import csv
import os
import re
import zlib

import numpy as np
from tqdm import tqdm

from encoders import MediaError, WordTokenizer, fit_length, load_audio, load_video_frames, resize_image

NAMES = ((re.compile(r'(.+)_(\d{6})'), 1000), (re.compile(r'(.+)_(\d+)_\d+'), 1))   # (<id>_<start>, ms per unit)
VIDEO_EXTS = ('.mp4', '.mkv', '.webm')


def index_clips(folder):
    """{(youtube_id, start in ms): path} of every video in folder, under each naming convention its name fits."""
    index = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        for pattern, ms in NAMES:
            m = pattern.fullmatch(stem)
            if ext in VIDEO_EXTS and m:
                index.setdefault((m[1], int(m[2]) * ms), os.path.join(folder, name))
    return index


def read_csv(path, skipped):
    """(row number, youtube_id, start in ms, label, split) of every usable csv row; the others go to skipped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found (VGGSound's csv: youtube_id,start_seconds,label,split)")
    rows = []
    with open(path, newline='') as f:
        for i, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            try:
                yid, start, label, split = (x.strip() for x in row)
                start_ms = round(float(start) * 1000)
            except ValueError:
                skipped.append(f"{path} row {i}: not youtube_id,start_seconds,label,split ({','.join(row)})")
                continue
            if split not in ('train', 'test'):
                skipped.append(f"{path} row {i}: split {split!r} is neither train nor test")
                continue
            rows.append((i, yid, start_ms, label, split))
    return rows


def caption(label):
    """A VGGSound label -> its caption ('the sound of ...')."""
    return f"the sound of {label}"


def read(args):
    """Every csv row whose clip decodes -> dict(splits, schema, meta, skipped)."""
    if not args.src:
        raise FileNotFoundError('vggsound: pass --src DIR, the folder holding vggsound.csv and video/')
    csv_path, folder = os.path.join(args.src, 'vggsound.csv'), os.path.join(args.src, 'video')
    skipped = []
    rows = read_csv(csv_path, skipped)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not found (the clips <id>_<start>.mp4)")
    clips = index_clips(folder)
    classes = sorted({label for *_, label, _ in rows})
    index = {label: k for k, label in enumerate(classes)}
    n, s = int(args.duration * args.sample_rate), args.image_size
    splits = {'train': [], 'val': [], 'test': []}
    for i, yid, start, label, split in tqdm(rows, desc='vggsound'):
        path = clips.get((yid, start))
        if path is None:
            skipped.append(f"{csv_path} row {i}: no clip {yid}_{start // 1000:06d}.mp4 or {yid}_{start}_<end>.mp4 "
                           f"in {folder}")
            continue
        try:
            wave = fit_length(load_audio(path, args.sample_rate), n)                                 # (n,)
            frames = np.stack([resize_image(f, s) for f in load_video_frames(path, args.n_frames)])   # (F, S, S, 3)
        except MediaError as e:
            skipped.append(f"{e} (csv row {i})")
            continue
        if split == 'train' and zlib.crc32(f"{args.seed}_{yid}_{start}".encode()) < args.val_fraction * 2 ** 32:
            split = 'val'
        k = index[label]
        splits[split].append(dict(frames=frames, image=frames[args.n_frames // 2], wave=wave, label=k,
                                  sources=np.eye(len(classes), dtype=np.uint8)[k], caption=dict(caption=caption(label)),
                                  file=os.path.relpath(path, args.src)))
    schema = dict(frames=((args.n_frames, s, s, 3), 'uint8'), image=((s, s, 3), 'uint8'), wave=((n,), 'float32'),
                  label=((), 'int64'), sources=((len(classes),), 'uint8'))
    meta = dict(vocab=WordTokenizer.vocabulary(map(caption, classes)), classes=dict(sources=classes, label=classes),
                src=os.path.abspath(args.src), n_frames=args.n_frames, val_fraction=args.val_fraction)
    return dict(splits=splits, schema=schema, meta=meta, skipped=skipped)
