"""VGGSound: 10-s YouTube clips with a sound label, read from a mirror's folder and the csv.

    python prepare.py vggsound            # data/raw/vggsound/: vggsound.csv + video/
    python prepare.py vggsound --src DIR  # DIR/vggsound.csv + DIR/video/

The csv is VGGSound's own, youtube_id,start_seconds,label,split without a header (published
at https://www.robots.ox.ac.uk/~vgg/data/vggsound/vggsound.csv; a spreadsheet's "CSV UTF-8"
reads too). Mirrors name a clip <id>_<start:06d>.mp4 (start in s) or <id>_<start_ms>_<end_ms>.mp4
(.mkv, .webm too), directly in video/; both are matched by id and start. Per clip: --n_frames
frames uniformly over the clip (`frames`) and the middle one of them (`image`), all --image_size
square; --duration s of the audio at --sample_rate (its loudest window; shorter audio is
zero-padded) as `wave` and `mel`; `label` and `sources` over the sorted labels of the clips read.
The csv's test rows are the test split; a seeded hash of id and start sends --val_fraction of its
train rows to val, so a clip's split does not depend on which other clips a mirror has. Rows
without a clip are counted in one line (prepare.py --list_missing lists them), clips without
audio or that fail to decode are reported one line each; a repeated row is read once; a clip
listed in both train and test is refused.
Reference: Chen et al. 2020, VGGSound: A Large-scale Audio-Visual Dataset.
"""
import csv
import os
import re
import zlib

import numpy as np
from tqdm import tqdm

from data import unique_rows
from encoders import (MediaError, WordTokenizer, fit_length, load_audio, load_video_frames,
                      resize_image)

RAW = os.path.join('raw', 'vggsound')       # the default --src, under --data_dir
CSV_URL = 'https://www.robots.ox.ac.uk/~vgg/data/vggsound/vggsound.csv'
NAMES = ((re.compile(r'(.+)_(\d{6})'), 1000),   # <id>_<start:06d>, seconds
         (re.compile(r'(.+)_(\d+)_\d+'), 1))     # <id>_<start_ms>_<end_ms>, milliseconds
NAMING = ('<youtube_id>_<start:06d>.mp4 or <youtube_id>_<start_ms>_<end_ms>.mp4 '
          '(or .mkv, .webm)')
VIDEO_EXTS = ('.mp4', '.mkv', '.webm')
OPTIONS = dict(
    val_fraction="share of the csv's train rows that become val (a seeded hash of id and start)",
    n_frames='video frames kept per clip, uniformly spaced',
)


def clip_keys(name):
    """Every (youtube_id, start in ms) a file name can mean under the mirrors' conventions."""
    stem, ext = os.path.splitext(name)
    if ext not in VIDEO_EXTS:
        return []
    matches = [(pattern.fullmatch(stem), ms) for pattern, ms in NAMES]
    return [(m[1], int(m[2]) * ms) for m, ms in matches if m]


def index_clips(folder):
    """{(youtube_id, start in ms): path} of every video directly in folder, under each key."""
    index = {}
    for name in sorted(os.listdir(folder)):
        for key in clip_keys(name):
            index.setdefault(key, os.path.join(folder, name))
    return index


def read_csv(path, skipped):
    """(row number, youtube_id, start in ms, label, split) of each usable row; others to skipped."""
    rows = []
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:   # a byte-order mark is not text
            lines = list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise MediaError(f"{path}: not UTF-8 text (byte {e.start}); save it as CSV UTF-8") from e
    for i, row in enumerate(lines, 1):
        if not row:
            continue
        try:
            yid, start, label, split = (x.strip() for x in row)
            start_ms = round(float(start) * 1000)
        except ValueError:
            if i > 1:                                               # row 1 may be a header
                skipped.append(f"{path} row {i}: not youtube_id,start_seconds,label,split "
                               f"({','.join(row)})")
            continue
        if split not in ('train', 'test'):
            skipped.append(f"{path} row {i}: split {split!r} is neither train nor test")
            continue
        rows.append((i, yid, start_ms, label, split))
    return rows


def clip_name(yid, start_ms):
    """The canonical name of a clip without its extension: <youtube_id>_<start:06d>."""
    return f"{yid}_{start_ms // 1000:06d}"


def nothing_usable(folder, csv_path, rows, failed):
    """Why no clip of folder was usable, in one line: what it holds and what was expected."""
    files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    top = [os.path.basename(f) for f in files if os.path.dirname(f) == folder]
    named = [f for f in top if clip_keys(f)]
    listed = {(yid, start) for _, yid, start, _, _ in rows}
    unlisted = [f for f in named if not listed & set(clip_keys(f))]
    counts = [(len(files) - len(top), 'in subfolders'),
              (len(top) - len(named), 'not named like a clip'),
              (len(unlisted), 'named like a clip but not in the csv'),
              (len(failed), 'unreadable')]
    why = ', '.join(f"{n} {what}" for n, what in counts if n) or 'none'
    first = f"; first failure: {failed[0]}" if failed else ''
    return (f"{folder}: no usable clip among its {len(files)} files ({why}); expected the "
            f"{len(rows)} clips of {csv_path} directly in it, named {NAMING}{first}")


def caption(label):
    """A VGGSound label -> its caption ('the sound of ...')."""
    return f"the sound of {label}"


def read(src, *, data_dir, seed, image_size, sample_rate, duration, val_fraction=0.05,
         n_frames=10):
    """Every csv row whose clip decodes -> dict(splits, schema, meta, skipped, missing, ...)."""
    src = src or os.path.join(data_dir, RAW)
    csv_path = os.path.join(src, 'vggsound.csv')
    folder = os.path.join(src, 'video')
    layout = (f"VGGSound is read from {src}/vggsound.csv (the official csv, {CSV_URL}) and the "
              f"clips {src}/video/{NAMING}; pass --src DIR for another folder")
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"{csv_path}: not found; {layout}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not found; {layout}")
    skipped = []
    listed = read_csv(csv_path, skipped)
    if not listed:
        first = f" (first problem: {skipped[0]})" if skipped else ''
        raise ValueError(f"{csv_path}: no row youtube_id,start_seconds,label,split{first}")
    rows, warnings = unique_rows(csv_path, listed, lambda r: clip_name(r[1], r[2]), lambda r: r[4])
    clips = index_clips(folder)
    n = int(duration * sample_rate)
    read_clips = []
    missing = []
    failed = []
    for i, yid, start, label, split in tqdm(rows, desc='vggsound'):
        path = clips.get((yid, start))
        if path is None:
            missing.append(f"row {i} {clip_name(yid, start)}")
            continue
        try:
            wave = fit_length(load_audio(path, sample_rate), n)                       # (n,)
            video = load_video_frames(path, n_frames)                                 # (F, H, W, 3)
        except MediaError as e:
            failed.append(f"{e} (csv row {i})")
            continue
        frames = np.stack([resize_image(f, image_size) for f in video])              # (F, S, S, 3)
        draw = zlib.crc32(f"{seed}_{yid}_{start}".encode()) / 2 ** 32         # uniform in [0, 1)
        if split == 'train' and draw < val_fraction:
            split = 'val'
        sample = dict(frames=frames, image=frames[n_frames // 2], wave=wave,
                      caption=dict(caption=caption(label)), file=os.path.relpath(path, src))
        read_clips.append((split, label, sample))
    if not read_clips:
        raise ValueError(nothing_usable(folder, csv_path, rows, failed))
    classes = sorted({label for _, label, _ in read_clips})           # only labels that have a clip
    index = {label: k for k, label in enumerate(classes)}
    splits = {'train': [], 'val': [], 'test': []}
    for split, label, sample in read_clips:
        k = index[label]
        sample.update(label=k, sources=np.eye(len(classes), dtype=np.uint8)[k])
        splits[split].append(sample)
    if splits['train'] and not splits['val']:
        warnings.append(f"vggsound: the val split is empty (--val_fraction {val_fraction} chose "
                        f"none of the {len(splits['train'])} train clips); pass a larger "
                        f"--val_fraction")
    if splits['train'] and not splits['test']:
        warnings.append("vggsound: the test split is empty (no usable clip of the csv's test rows)")
    s = image_size
    schema = dict(frames=((n_frames, s, s, 3), 'uint8'), image=((s, s, 3), 'uint8'),
                  wave=((n,), 'float32'), label=((), 'int64'), sources=((len(classes),), 'uint8'))
    meta = dict(vocab=WordTokenizer.vocabulary(map(caption, classes)),
                classes=dict(sources=classes, label=classes), src=os.path.abspath(src),
                n_frames=n_frames, val_fraction=val_fraction)
    return dict(splits=splits, schema=schema, meta=meta, skipped=skipped + failed,
                missing=(f"no clip {NAMING} in {folder}", missing), warnings=warnings)
