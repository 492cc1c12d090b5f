"""ESC-50: 5-s environmental recordings in 50 classes; audio only, split by the dataset's five folds.

    python prepare.py esc50 --src DIR   # DIR/esc50.csv (or DIR/meta/esc50.csv) and DIR/audio/*.wav

--test_fold is the test split, --val_fold val, the other folds train. Each recording becomes --duration s at
--sample_rate (its loudest window; shorter audio is zero-padded) as `wave` and `mel`; `label` and `sources`
index the csv's classes in target order; captions name the sound ("the sound of a dog barking").
Reference: Piczak 2015, ESC: Dataset for Environmental Sound Classification.
"""
import csv
import os

import numpy as np
from tqdm import tqdm

from encoders import MediaError, WordTokenizer, fit_length, load_audio

PHRASES = {  # category -> what makes the sound, for "the sound of <phrase>"
    'dog': 'a dog barking', 'rooster': 'a rooster crowing', 'pig': 'a pig oinking', 'cow': 'a cow mooing',
    'frog': 'a frog croaking', 'cat': 'a cat meowing', 'hen': 'a hen clucking', 'insects': 'insects buzzing',
    'sheep': 'a sheep bleating', 'crow': 'a crow cawing', 'rain': 'rain falling', 'sea_waves': 'sea waves crashing',
    'crackling_fire': 'a fire crackling', 'crickets': 'crickets chirping', 'chirping_birds': 'birds chirping',
    'water_drops': 'water dripping', 'wind': 'wind blowing', 'pouring_water': 'water pouring',
    'toilet_flush': 'a toilet flushing', 'thunderstorm': 'a thunderstorm', 'crying_baby': 'a baby crying',
    'sneezing': 'a person sneezing', 'clapping': 'people clapping', 'breathing': 'a person breathing',
    'coughing': 'a person coughing', 'footsteps': 'footsteps', 'laughing': 'a person laughing',
    'brushing_teeth': 'a person brushing teeth', 'snoring': 'a person snoring',
    'drinking_sipping': 'a person sipping a drink', 'door_wood_knock': 'a knock on a wooden door',
    'mouse_click': 'a mouse clicking', 'keyboard_typing': 'typing on a keyboard',
    'door_wood_creaks': 'a wooden door creaking', 'can_opening': 'a can opening',
    'washing_machine': 'a washing machine', 'vacuum_cleaner': 'a vacuum cleaner', 'clock_alarm': 'an alarm clock ringing', 'clock_tick': 'a clock ticking',
    'glass_breaking': 'glass breaking', 'helicopter': 'a helicopter flying', 'chainsaw': 'a chainsaw cutting',
    'siren': 'a siren wailing', 'car_horn': 'a car horn honking', 'engine': 'an engine running',
    'train': 'a train passing', 'church_bells': 'church bells ringing', 'airplane': 'an airplane flying',
    'fireworks': 'fireworks exploding', 'hand_saw': 'a hand saw sawing',
}


def caption(category):
    """'the sound of a dog barking' for 'dog'; a category without a phrase is named as it is."""
    return f"the sound of {PHRASES.get(category, category.replace('_', ' '))}"


def read_csv(path, skipped):
    """(row number, filename, fold, target, category) of every usable row of ESC-50's csv; the others go to skipped."""
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        if not {'filename', 'fold', 'target', 'category'} <= set(reader.fieldnames or ()):
            raise MediaError(f"{path}: not ESC-50's csv (no filename, fold, target, category columns)")
        rows = []
        for i, r in enumerate(reader, 2):
            try:
                rows.append((i, r['filename'], int(r['fold']), int(r['target']), r['category']))
            except (TypeError, ValueError):
                skipped.append(f"{path} row {i}: fold and target must be integers ({r})")
    return rows


def read(args):
    """Every recording of the csv that loads -> dict(splits, schema, meta, skipped)."""
    if not args.src:
        raise FileNotFoundError('esc50: pass --src DIR, the folder holding esc50.csv and audio/')
    candidates = [os.path.join(args.src, 'esc50.csv'), os.path.join(args.src, 'meta', 'esc50.csv')]
    csv_path = next((p for p in candidates if os.path.isfile(p)), None)
    if csv_path is None:
        raise FileNotFoundError(f"{candidates[0]}: not found (ESC-50's csv: filename,fold,target,category,...)")
    skipped = []
    rows = read_csv(csv_path, skipped)
    classes = [c for _, c in sorted({(target, category) for *_, target, category in rows})]
    index = {c: k for k, c in enumerate(classes)}
    n = int(args.duration * args.sample_rate)
    splits = {'train': [], 'val': [], 'test': []}
    for i, name, fold, _, category in tqdm(rows, desc='esc50'):
        try:
            wave = fit_length(load_audio(os.path.join(args.src, 'audio', name), args.sample_rate), n)   # (n,)
        except MediaError as e:
            skipped.append(f"{e} (csv row {i})")
            continue
        split = 'test' if fold == args.test_fold else 'val' if fold == args.val_fold else 'train'
        k = index[category]
        splits[split].append(dict(wave=wave, label=k, sources=np.eye(len(classes), dtype=np.uint8)[k], fold=fold,
                                  caption=dict(caption=caption(category)), file=os.path.join('audio', name)))
    schema = dict(wave=((n,), 'float32'), label=((), 'int64'), sources=((len(classes),), 'uint8'), fold=((), 'int64'))
    meta = dict(vocab=WordTokenizer.vocabulary(map(caption, classes)), classes=dict(sources=classes, label=classes),
                src=os.path.abspath(args.src), test_fold=args.test_fold, val_fold=args.val_fold)
    return dict(splits=splits, schema=schema, meta=meta, skipped=skipped)
