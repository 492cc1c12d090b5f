"""audiocaps_maa: sound-caption pairs (AudioCaps style), each caption split into a text part and a
visual part, and a picture rendered from the visual part alone.

    python prepare.py audiocaps_maa --src DIR --renderer mymodule:text_to_image --image_size 224
    python prepare.py audiocaps_maa --features hf --encoders imagebind,maa_text --maa_text <folder>

DIR holds pairs.csv (columns file, caption and, optionally, split: train, val or test) and the
sound files under DIR/audio/. Without a split column --val_fraction of the pairs (every n-th) is
the val split and there is no test split (the paper's 494 pairs: 20 % for validation). Each
caption is split as toyav_maa splits toyav's (the rule, or --splitter module:function: a language
model) and checked the same way; a caption with no visual part (no place said) is skipped, one line
each. Every picture comes from --renderer module:function, (visual part, side, rng) -> uint8
picture (side, side, 3): a text-to-image model; no picture is rendered without one. Each sound is
--duration s at --sample_rate (its loudest window; shorter audio is zero-padded).
Reference: the complementary captions and pictures of Make-An-Audio conditioned on ImageBind;
AudioCaps: Kim et al. 2019.
"""
import csv
import os

import numpy as np
from tqdm import tqdm

from data import toyav_maa
from encoders import MediaError, WordTokenizer, fit_length, load_audio

OPTIONS = dict(
    val_fraction="share of the pairs in the val split when pairs.csv has no split column",
    splitter=toyav_maa.OPTIONS['splitter'],
    renderer="module:function rendering a visual part as a picture (a text-to-image model)",
)
COLUMNS = ('file', 'caption')
SPLITS = ('train', 'val', 'test')


def read_pairs(path, val_fraction):
    """(row number, file, caption, split) of every row of pairs.csv."""
    with open(path, newline='', encoding='utf-8-sig') as f:
        reader = csv.DictReader(f)
        if not set(COLUMNS) <= set(reader.fieldnames or ()):
            raise MediaError(f"{path}: no {', '.join(COLUMNS)} columns")
        lines = list(reader)
    every = round(1 / val_fraction) if val_fraction else 0       # every n-th pair is val
    rows = []
    for i, r in enumerate(lines):
        split = r.get('split') or ('val' if every and i % every == every - 1 else 'train')
        if split not in SPLITS:
            raise MediaError(f"{path} row {i + 2}: split {split!r} is none of {SPLITS}")
        rows.append((i + 2, r['file'], r['caption'], split))
    return rows


def read(src, *, seed, image_size, sample_rate, duration, val_fraction=0.2, splitter='',
         renderer=''):
    """Every pair that loads and splits -> dict(splits, schema, meta, skipped, missing)."""
    if not src:
        raise ValueError("audiocaps_maa: --src DIR: a folder holding pairs.csv and audio/")
    if not renderer:
        raise ValueError("audiocaps_maa: --renderer module:function: a real place needs a "
                         "text-to-image model to be pictured")
    split_fn = toyav_maa.load_hook(splitter, toyav_maa.split_caption)
    render_fn = toyav_maa.load_hook(renderer, None)
    rng = np.random.default_rng(seed)                # the renderer's draws
    n = int(duration * sample_rate)
    splits = {split: [] for split in SPLITS}
    skipped = []
    missing = []
    for i, name, full, split in tqdm(read_pairs(os.path.join(src, 'pairs.csv'), val_fraction),
                                     desc='audiocaps_maa'):
        path = os.path.join(src, 'audio', name)
        if not os.path.isfile(path):
            missing.append(f"row {i} {name}")
            continue
        text, visual = split_fn(full)
        if not toyav_maa.content_words(visual):
            skipped.append(f"row {i} {name}: {full!r} says no place")
            continue
        toyav_maa.check_split(full, text, visual)
        try:
            wave = fit_length(load_audio(path, sample_rate), n)                     # (n,)
        except MediaError as e:
            skipped.append(f"{e} (csv row {i})")
            continue
        splits[split].append(dict(wave=wave, image=render_fn(visual, image_size, rng),
                                  caption=dict(caption=full, text=text, visual=visual),
                                  file=os.path.join('audio', name)))
    captions = [row['caption']['caption'] for rows in splits.values() for row in rows]
    schema = dict(image=((image_size, image_size, 3), 'uint8'), wave=((n,), 'float32'))
    meta = dict(vocab=WordTokenizer.vocabulary(captions), classes={}, texts=toyav_maa.TEXTS,
                splitter=splitter or 'rule', renderer=renderer, src=os.path.abspath(src))
    return dict(splits=splits, schema=schema, meta=meta, skipped=skipped,
                missing=(f"file not found in {os.path.join(src, 'audio')}", missing))
