"""The cache contract of data/<dataset>/: atomic writes, splits as memmaps, stale caches refused.

Layout: data/<ds>/{split}_{field}.npy memmaps + captions.json + meta.json (+ files.json: the source
file of every sample of a real dataset); features add {split}_{encoder}_{field}.npy + features.json,
which records the hash of meta.json and of every encoder checkpoint behind the cached fields.
`open_split` memory-maps the fields a network reads and refuses (StaleCache, one line naming the
file) a cache made from another version of the dataset or by other encoder weights. One module per
dataset beside this one reads its raw media.
"""
import hashlib
import importlib
import json
import os

import numpy as np

from encoders import HF_SUITE, TOY_ENCODERS, StaleCache, file_hash, parts_of, toy_checkpoint

SPLITS = ('train', 'val', 'test')


def write_json(path, obj):
    """Write JSON atomically."""
    with open(path + '.tmp', 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(path + '.tmp', path)


def read_json(path):
    """The JSON object in a file."""
    with open(path) as f:
        return json.load(f)


def json_hash(obj):
    """Short sha256 of an object as canonical JSON: the identity of a config in cache metadata."""
    canonical = json.dumps(obj, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def class_captions(dataset):
    """One caption per class of data/<dataset>.py: its class_captions(), else each class's first
    zero-shot prompt."""
    module = importlib.import_module(f"data.{dataset}")
    if hasattr(module, 'class_captions'):
        return module.class_captions()
    return [texts[0] for texts in prompts(dataset)]


def prompts(dataset):
    """Zero-shot prompts of data/<dataset>.py (per class, its captions); ValueError if none."""
    module = importlib.import_module(f"data.{dataset}")
    if not hasattr(module, 'prompts'):
        raise ValueError(f"dataset {dataset}: no zero-shot prompts "
                         f"(data/{dataset}.py has no prompts())")
    return module.prompts()


def unique_rows(path, rows, key, split):
    """Csv rows (row number first) with each key once (first kept), and a line counting repeats."""
    first = {}
    kept = []
    repeats = []
    leaks = {}
    for row in rows:
        k = key(row)
        if k not in first:
            first[k] = row
            kept.append(row)
        elif split(row) == split(first[k]):
            repeats.append(row[0])
        else:
            leaks.setdefault(k, [first[k]]).append(row)
    if leaks:                                   # the same clip in two splits: refuse, naming it
        shown = [f"{k} (" + ', '.join(f"row {r[0]} {split(r)}" for r in rs) + ')'
                 for k, rs in leaks.items()]
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ''
        raise ValueError(f"{path}: listed in two splits, a leak between them ({len(shown)}): "
                         f"{'; '.join(shown[:5])}{more}; list each in one split only")
    if not repeats:
        return kept, []
    rows_shown = ', '.join(map(str, repeats[:10]))
    if len(repeats) > 10:
        rows_shown += ' ...'
    return kept, [f"{path}: {len(repeats)} repeated rows dropped (the clip and split of an "
                  f"earlier row): rows {rows_shown}"]


def check_mel(name, mel, meta):
    """Refuse (StaleCache) a frozen network `name` trained on mel settings unlike the dataset's."""
    if mel != meta['mel']:
        raise StaleCache(f"{name}: trained with mel settings {mel} but data/{meta['dataset']} has "
                         f"{meta['mel']}; retrain it on this dataset")


def open_split(data_dir, dataset, split, fields, out_dir='out'):
    """Memory-map the requested fields of a split, refusing stale or mismatched feature caches."""
    root = os.path.join(data_dir, dataset)
    meta_path = os.path.join(root, 'meta.json')
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"{meta_path}: no prepared dataset; "
                                f"run python prepare.py {dataset}")
    meta = read_json(meta_path)
    feature_fields = [f for f in fields if f not in meta['fields']]
    encoder_prefixes = tuple(name + '_' for name in (*TOY_ENCODERS, *HF_SUITE))
    absent = [f for f in feature_fields if not f.startswith(encoder_prefixes)]
    if absent:
        raise FileNotFoundError(f"{root}: no field {', '.join(absent)} "
                                f"(it has {', '.join(meta['fields'])})")
    if feature_fields:
        meta['features'] = check_features(root, meta, feature_fields, out_dir)
    elif os.path.exists(os.path.join(root, 'features.json')):
        # what the cache holds, checked when a field is opened
        meta['features'] = read_json(os.path.join(root, 'features.json'))
    arrays = {}
    for f in fields:
        arrays[f] = np.load(os.path.join(root, f"{split}_{f}.npy"), mmap_mode='r')
    return arrays, meta


def check_features(root, meta, fields, out_dir):
    """features.json, checked against meta.json and the current encoder checkpoints (StaleCache)."""
    path = os.path.join(root, 'features.json')
    redo = f"rerun python prepare.py {meta['dataset']} --features toy"
    if not os.path.exists(path):
        raise StaleCache(f"{path}: no feature cache for {fields}; {redo}")
    feats = read_json(path)
    redo = f"rerun python prepare.py {meta['dataset']} --features {feats['suite']}"
    if feats['meta'] != json_hash(meta):
        raise StaleCache(f"{path}: features were computed on another version of "
                         f"data/{meta['dataset']} (mel {feats['mel']} vs now {meta['mel']}); "
                         f"{redo}")
    for f in fields:
        if f not in feats['fields']:
            raise StaleCache(f"{path}: no cached field {f!r} "
                             f"(cached: {sorted(feats['fields'])}); {redo}")
        if feats['suite'] == 'hf':
            continue    # published weights named in feats['encoders']: nothing here to go stale
        name = next(n for n in feats['encoders'] if f.startswith(n + '_'))
        ckpt = toy_checkpoint(name, parts_of(meta), out_dir)
        now = file_hash(ckpt) if os.path.exists(ckpt) else 'missing'
        if now != feats['encoders'][name]:
            raise StaleCache(f"{path}: {f} was made by {name} checkpoint "
                             f"{feats['encoders'][name]}, but {ckpt} is now {now}; {redo}")
    return feats
