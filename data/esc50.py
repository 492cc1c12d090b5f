"""ESC-50: 5-s environmental recordings in 50 classes; audio only, split by its five folds.

    python prepare.py esc50            # data/raw/esc50/: https://github.com/karolpiczak/ESC-50
    python prepare.py esc50 --src DIR  # DIR/esc50.csv (or DIR/meta/esc50.csv) and DIR/audio/*.wav

--test_fold is the test split, --val_fold val, the other folds train. Each recording becomes
--duration s at --sample_rate (its loudest window; shorter audio is zero-padded) as `wave` and
`mel`; `label` and `sources` index the classes of the recordings read, in target order; captions
name the sound ("the sound of a dog barking"). The csv may carry a byte-order mark ("CSV UTF-8").
Rows whose file is not in audio/ are counted in one line (prepare.py --list_missing lists them),
unreadable files are reported one line each; a repeated row is read once; a file listed in two
splits is refused; a fold given that holds no recording is warned about.
Reference: Piczak 2015, ESC: Dataset for Environmental Sound Classification.
"""
import csv
import os

import numpy as np
from tqdm import tqdm

from data import unique_rows
from encoders import MediaError, WordTokenizer, fit_length, load_audio

RAW = os.path.join('raw', 'esc50')          # the default --src, under --data_dir
REPOSITORY = 'https://github.com/karolpiczak/ESC-50'
COLUMNS = ('filename', 'fold', 'target', 'category')
OPTIONS = dict(
    test_fold='the fold that is the test split',
    val_fold='the fold that is the val split',
)

PHRASES = {  # category -> what makes the sound, for "the sound of <phrase>"
    'dog': 'a dog barking', 'rooster': 'a rooster crowing', 'pig': 'a pig oinking',
    'cow': 'a cow mooing', 'frog': 'a frog croaking', 'cat': 'a cat meowing',
    'hen': 'a hen clucking', 'insects': 'insects buzzing', 'sheep': 'a sheep bleating',
    'crow': 'a crow cawing', 'rain': 'rain falling', 'sea_waves': 'sea waves crashing',
    'crackling_fire': 'a fire crackling', 'crickets': 'crickets chirping',
    'chirping_birds': 'birds chirping', 'water_drops': 'water dripping', 'wind': 'wind blowing',
    'pouring_water': 'water pouring', 'toilet_flush': 'a toilet flushing',
    'thunderstorm': 'a thunderstorm', 'crying_baby': 'a baby crying',
    'sneezing': 'a person sneezing', 'clapping': 'people clapping',
    'breathing': 'a person breathing', 'coughing': 'a person coughing', 'footsteps': 'footsteps',
    'laughing': 'a person laughing', 'brushing_teeth': 'a person brushing teeth',
    'snoring': 'a person snoring', 'drinking_sipping': 'a person sipping a drink',
    'door_wood_knock': 'a knock on a wooden door', 'mouse_click': 'a mouse clicking',
    'keyboard_typing': 'typing on a keyboard', 'door_wood_creaks': 'a wooden door creaking',
    'can_opening': 'a can opening', 'washing_machine': 'a washing machine',
    'vacuum_cleaner': 'a vacuum cleaner', 'clock_alarm': 'an alarm clock ringing',
    'clock_tick': 'a clock ticking', 'glass_breaking': 'glass breaking',
    'helicopter': 'a helicopter flying', 'chainsaw': 'a chainsaw cutting',
    'siren': 'a siren wailing', 'car_horn': 'a car horn honking', 'engine': 'an engine running',
    'train': 'a train passing', 'church_bells': 'church bells ringing',
    'airplane': 'an airplane flying', 'fireworks': 'fireworks exploding',
    'hand_saw': 'a hand saw sawing',
}


def caption(category):
    """'the sound of a dog barking' for 'dog'; a category without a phrase is named as it is."""
    return f"the sound of {PHRASES.get(category, category.replace('_', ' '))}"


def read_csv(path, skipped):
    """(row number, filename, fold, target, category) of every usable row; the others to skipped."""
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:   # a byte-order mark is not text
            reader = csv.DictReader(f)
            if not set(COLUMNS) <= set(reader.fieldnames or ()):
                raise MediaError(f"{path}: not ESC-50's csv (no {', '.join(COLUMNS)} columns)")
            lines = list(reader)
    except UnicodeDecodeError as e:
        raise MediaError(f"{path}: not UTF-8 text (byte {e.start}); save it as CSV UTF-8") from e
    rows = []
    for i, r in enumerate(lines, 2):
        try:
            rows.append((i, r['filename'], int(r['fold']), int(r['target']), r['category']))
        except (TypeError, ValueError):
            skipped.append(f"{path} row {i}: fold and target must be integers ({r})")
    return rows


def nothing_usable(folder, csv_path, rows, missing, failed):
    """Why no recording of the csv was usable, in one line: what folder holds, what was expected."""
    files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    nested = sum(os.path.dirname(f) != folder for f in files)
    first = f"; first failure: {failed[0]}" if failed else ''
    return (f"{folder}: none of the {len(rows)} recordings of {csv_path} is usable "
            f"({len(missing)} not found, {len(failed)} unreadable); it holds {len(files)} files "
            f"({nested} in subfolders) and should hold each csv filename directly, e.g. "
            f"{rows[0][1]}{first}")


def read(src, *, data_dir, sample_rate, duration, test_fold=5, val_fold=4):
    """Every recording of the csv that loads -> dict(splits, schema, meta, skipped, ...)."""
    src = src or os.path.join(data_dir, RAW)
    candidates = [os.path.join(src, 'esc50.csv'), os.path.join(src, 'meta', 'esc50.csv')]
    csv_path = next((p for p in candidates if os.path.isfile(p)), None)
    folder = os.path.join(src, 'audio')
    layout = (f"ESC-50 is read from {src} laid out as its repository {REPOSITORY} "
              f"(meta/esc50.csv or esc50.csv, and audio/*.wav); pass --src DIR for another folder")
    if csv_path is None:
        raise FileNotFoundError(f"{candidates[1]}: not found (nor {candidates[0]}); {layout}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not found; {layout}")

    def split_of(fold):
        """The split of a fold."""
        return 'test' if fold == test_fold else 'val' if fold == val_fold else 'train'

    skipped = []
    listed = read_csv(csv_path, skipped)
    if not listed:
        first = f" (first problem: {skipped[0]})" if skipped else ''
        raise ValueError(f"{csv_path}: no row of a recording{first}")
    rows, warnings = unique_rows(csv_path, listed, lambda r: r[1], lambda r: split_of(r[2]))
    n = int(duration * sample_rate)
    read_files = []
    missing = []
    failed = []
    for i, name, fold, target, category in tqdm(rows, desc='esc50'):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            missing.append(f"row {i} {name}")
            continue
        try:
            wave = fit_length(load_audio(path, sample_rate), n)                       # (n,)
        except MediaError as e:
            failed.append(f"{e} (csv row {i})")
            continue
        sample = dict(wave=wave, fold=fold, caption=dict(caption=caption(category)),
                      file=os.path.join('audio', name))
        read_files.append((split_of(fold), target, category, sample))
    if not read_files:
        raise ValueError(nothing_usable(folder, csv_path, rows, missing, failed))
    classes = [c for _, c in sorted({(target, c) for _, target, c, _ in read_files})]
    index = {c: k for k, c in enumerate(classes)}
    splits = {'train': [], 'val': [], 'test': []}
    for split, _, category, sample in read_files:
        k = index[category]
        sample.update(label=k, sources=np.eye(len(classes), dtype=np.uint8)[k])
        splits[split].append(sample)
    folds = ', '.join(map(str, sorted({sample['fold'] for *_, sample in read_files})))
    for split, fold in (('val', val_fold), ('test', test_fold)):
        if not splits[split]:
            warnings.append(f"esc50: the {split} split is empty (no recording of --{split}_fold "
                            f"{fold}; the folds read are {folds}); pass one of them as "
                            f"--{split}_fold")
    schema = dict(wave=((n,), 'float32'), label=((), 'int64'),
                  sources=((len(classes),), 'uint8'), fold=((), 'int64'))
    meta = dict(vocab=WordTokenizer.vocabulary(map(caption, classes)),
                classes=dict(sources=classes, label=classes), src=os.path.abspath(src),
                test_fold=test_fold, val_fold=val_fold)
    return dict(splits=splits, schema=schema, meta=meta, skipped=skipped + failed,
                missing=(f"file not found in {folder}", missing), warnings=warnings)
