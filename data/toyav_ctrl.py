"""toyav_ctrl: SeeingSounds' controllable training set, made by the toyav world with its own seed.

    python prepare.py toyav_ctrl                     # after toyav's toy parts: it uses theirs
    python prepare.py toyav_ctrl --features toy

Every row starts from a dry clip (one source, outdoors, loud) and is one of four kinds, each with
the caption of what it sounds like (paper Eq. 7): `plain` (the clip and its class caption), `gain`
(the clip scaled by alpha uniform in [0.1, 1]; the caption's loudness word is the toyav level
nearest 20 log10 alpha dB), `room` (the clip in a hall or a tunnel; the caption's place edited) and
`mix` (the sum of two clips of different sources; the fused caption). With --compose (the default)
a gain, room or mix row draws the other two transforms too (any gain, any room), its caption edited
for all: the terms stay apart, and the rows cover toyav's combinations of level, room and mixture,
which transforms learnt one at a time did not reach (toyav test a2i: source 0.70, size 0.50, mixture
recall 0.53 with --no-compose). The picture of each row is
rendered for its labels, so the test split is a controllability task with the edited labels: for
each held-out dry clip a gain sweep (alpha 0.1, 0.3, 1.0), each room, and sums of two held-out
clips.

The captions come from toyav's templates (f and g of the paper); --captioner module:function names
a callable (caption of the dry clip, kind, edit) -> caption that replaces them (a language model).
--holdout names sources left out of training (zero-shot): no train or val row holds them.
The frozen parts are toyav's (meta 'parts'): its toy encoders make this set's features.
Reference: SeeingSounds (2025), Eq. 6 (clip -> class caption) and Eq. 7 (transforms and mixtures).
"""
import importlib

import numpy as np
from scipy.signal import fftconvolve
from tqdm import tqdm

from data import toyav

OPTIONS = dict(
    rows='training rows (the four kinds in turn)',
    val_rows='validation rows',
    clips='held-out dry clips of the test split: 3 gains, 3 rooms and a sum each',
    holdout="sources left out of training and validation, comma-separated ('' = none)",
    captioner="module:function replacing the caption templates ('' = the templates)",
    compose='a gain, room or mix row also draws the other two transforms at random, its caption '
            'edited for all (False: each transform alone)',
)
KINDS = ['plain', 'gain', 'room', 'mix']
LOUD = len(toyav.LOUDNESS) - 1           # dry clips are loud
SWEEP = (0.1, 0.3, 1.0)                  # the test split's gains


def dry_clip(source, sr, n, rng):
    """One source at the reference level with its onset and pitch jitter, before any room (n,)."""
    onset = int(rng.uniform(0, 0.15) * sr)
    dry = toyav.synth(source, sr, n - onset, rng.uniform(0.96, 1.04), rng)
    clip = np.zeros(n)
    clip[onset:] = dry / (np.sqrt(np.mean(dry ** 2)) + 1e-8) * toyav.REF_RMS
    return clip


def heard(clip, env, gain, sr, rng):
    """A clip in a room (env), scaled by gain, over toyav's noise floor -> float32 wave (n,)."""
    n = len(clip)
    wet = fftconvolve(clip, toyav.impulse_response(env, sr, rng))[:n]
    noise = toyav.NOISE_FLOOR * rng.standard_normal(n)
    return np.clip(wet * gain + noise, -1, 1).astype(np.float32)


def nearest_level(gain):
    """The toyav loudness class whose level (GAIN_DB) is nearest a gain factor."""
    db = 20 * np.log10(gain)
    return int(np.argmin([abs(db - level) for level in toyav.GAIN_DB]))


def templates(caption, kind, edit):
    """The paper's f and g as toyav's caption templates: (sources, env, loud) of the edited row."""
    return toyav.caption(*edit)[0]


def load_captioner(spec):
    """'module:function' -> that callable; '' -> the templates."""
    if not spec:
        return templates
    module, _, name = spec.partition(':')
    return getattr(importlib.import_module(module), name)


def row(sources, env, loud, gain, clips, kind, captioner, sr, size, rng):
    """One sample: the clips summed in a room at a gain, its picture, labels and caption."""
    wave = heard(sum(clips), env, gain, sr, rng)
    dry_caption = toyav.caption(sources[:1], 0, LOUD)[0]
    full = captioner(dry_caption, KINDS[kind], (sorted(sources), env, loud))
    _, text, visual = toyav.caption(sorted(sources), env, loud)
    return dict(wave=wave, image=toyav.render(sorted(sources), env, loud, size, rng),
                sources=np.isin(np.arange(len(toyav.SOURCES)), sources).astype(np.uint8),
                n_sources=len(sources), env=env, loud=loud, kind=kind, alpha=np.float32(gain),
                caption=dict(caption=full, text=text, visual=visual))


def training_rows(n, allowed, captioner, compose, sr, length, size, rng):
    """n rows of the four kinds in turn, each from fresh dry clips of the allowed sources."""
    rows = []
    for i in range(n):
        kind = i % len(KINDS)
        source = int(rng.choice(allowed))
        clip = dry_clip(source, sr, length, rng)
        sources = [source]
        clips = [clip]
        env = 0
        loud = LOUD
        gain = 1.0
        if KINDS[kind] == 'mix':
            partner = int(rng.choice([s for s in allowed if s != source]))
            sources.append(partner)
            clips.append(dry_clip(partner, sr, length, rng))
        # a transformed row's other transforms are drawn too when composing (caption edited alike)
        if KINDS[kind] == 'gain' or compose and kind > 0:
            gain = rng.uniform(0.1, 1.0)
            loud = nearest_level(gain)
        if KINDS[kind] == 'room':
            env = int(rng.integers(1, len(toyav.ENVS)))
        elif compose and kind > 0:
            env = int(rng.integers(len(toyav.ENVS)))
        rows.append(row(sources, env, loud, gain, clips, kind, captioner, sr, size, rng))
    return rows


def test_rows(n_clips, captioner, sr, length, size, rng):
    """The controllability task: a gain sweep and every room per held-out clip, and sums."""
    rows = []
    n_sources = len(toyav.SOURCES)
    for i in range(n_clips):
        source = i % n_sources
        clip = dry_clip(source, sr, length, rng)
        for gain in SWEEP:
            kind = KINDS.index('gain')
            rows.append(row([source], 0, nearest_level(gain), gain, [clip], kind, captioner, sr,
                            size, rng))
        for env in range(len(toyav.ENVS)):
            kind = KINDS.index('room')
            rows.append(row([source], env, LOUD, 1.0, [clip], kind, captioner, sr, size, rng))
        partner = (source + 1 + int(rng.integers(n_sources - 1))) % n_sources
        clips = [clip, dry_clip(partner, sr, length, rng)]
        kind = KINDS.index('mix')
        rows.append(row([source, partner], 0, LOUD, 1.0, clips, kind, captioner, sr, size, rng))
    return rows


def read(src, *, seed, image_size, sample_rate, duration, rows=12000, val_rows=400, clips=60,
         holdout='', captioner='', compose=True):
    """The rows of every split, split i from seed + 100 + i -> dict(splits, schema, meta)."""
    if src is not None:
        raise ValueError(f"toyav_ctrl: --src {src}: the set is generated from --seed, not read")
    names = [s[0] for s in toyav.SOURCES]
    held = [h for h in holdout.split(',') if h]
    unknown = [h for h in held if h not in names]
    if unknown:
        raise ValueError(f"toyav_ctrl: --holdout {unknown}: not toyav sources ({', '.join(names)})")
    allowed = [i for i, name in enumerate(names) if name not in held]
    caption_fn = load_captioner(captioner)
    length = int(duration * sample_rate)
    splits = {}
    for i, split in enumerate(tqdm(('train', 'val', 'test'), desc='toyav_ctrl')):
        rng = np.random.default_rng(seed + 100 + i)
        if split == 'test':
            splits[split] = test_rows(clips, caption_fn, sample_rate, length, image_size, rng)
        else:
            n = rows if split == 'train' else val_rows
            splits[split] = training_rows(n, allowed, caption_fn, compose, sample_rate, length,
                                          image_size, rng)
    s = image_size
    schema = dict(image=((s, s, 3), 'uint8'), wave=((length,), 'float32'),
                  sources=((len(names),), 'uint8'), n_sources=((), 'int64'), env=((), 'int64'),
                  loud=((), 'int64'), kind=((), 'int64'), alpha=((), 'float32'))
    classes = dict(sources=names, env=[e[0] for e in toyav.ENVS], loud=toyav.LOUDNESS, kind=KINDS)
    meta = dict(vocab=toyav.vocabulary(), classes=classes, parts='toyav', holdout=held)
    return dict(splits=splits, schema=schema, meta=meta)


def prompts():
    """Zero-shot prompts: toyav's."""
    return toyav.prompts()
