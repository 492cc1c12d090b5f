"""toyav_maa: toyav's world with every caption split into what can be said and what can be seen.

    python prepare.py toyav_maa                      # after toyav's toy parts: it uses theirs
    python prepare.py toyav_maa --features toy

The rows are toyav's (the same seed gives the same sounds, labels and captions). Each caption is
split by rule into a text part, what only words can carry (loudness, sources and their action: "a
loud bell ringing"), and a visual part, the place ("in a large hall"); the two are checked to
share no content word and to say the whole caption between them. The picture of a row is rendered
from its visual part alone: toyav's background of that place with no object on it, so neither the
sources nor their size (toyav's loudness) can reach a model through the picture. `--splitter
module:function` names a callable caption -> (text part, visual part) that replaces the rule (a
language model at full scale); `--renderer module:function` a callable (visual part, side, rng) ->
uint8 picture (side, side, 3) that replaces the background renderer (a text-to-image model).
Besides each caption's encodings, the feature cache holds its text part's pooled embedding (meta
'texts': fields <encoder>_part_emb). The frozen parts are toyav's (meta 'parts').
Reference: the complementary captions and pictures of Make-An-Audio conditioned on ImageBind.
"""
import importlib

import numpy as np

from data import toyav

OPTIONS = dict(
    toyav.OPTIONS,
    splitter="module:function replacing the rule that splits a caption ('' = the rule)",
    renderer="module:function replacing the place renderer ('' = toyav's backgrounds)",
)
SEED_OFFSET = 200            # split i's pictures are drawn from seed + SEED_OFFSET + i
PLACE_WORDS = ('in', 'inside', 'at', 'on', 'near', 'under', 'outdoors', 'outside', 'indoors')
FUNCTION_WORDS = {'a', 'an', 'the', 'and', 'of', 'with', 'in', 'inside', 'at', 'on', 'near',
                  'under'}   # words that carry no content of their own
TEXTS = {'text': 'part'}     # caption key -> the name its cached encodings take


def words(text):
    """A text's words, lower case."""
    return text.lower().split()


def content_words(text):
    """The words of a text that carry content (FUNCTION_WORDS left out), as a set."""
    return set(words(text)) - FUNCTION_WORDS


def split_caption(caption):
    """The rule: the visual part starts at the caption's first place word -> (text, visual)."""
    ws = words(caption)
    starts = [i for i, w in enumerate(ws) if w in PLACE_WORDS]
    cut = starts[0] if starts else len(ws)
    return ' '.join(ws[:cut]), ' '.join(ws[cut:])


def check_split(caption, text, visual):
    """Refuse (ValueError) parts that share a content word or leave one of the caption's out."""
    shared = content_words(text) & content_words(visual)
    if shared:
        raise ValueError(f"{caption!r} split into {text!r} and {visual!r}: both say "
                         f"{', '.join(sorted(shared))}")
    lost = content_words(caption) - content_words(text) - content_words(visual)
    if lost:
        raise ValueError(f"{caption!r} split into {text!r} and {visual!r} loses "
                         f"{', '.join(sorted(lost))}")


def place_of(visual):
    """The toyav environment a visual part names (its content words are the place's)."""
    said = content_words(visual)
    for env, (_, phrase) in enumerate(toyav.ENVS):
        if content_words(phrase) == said:
            return env
    places = ', '.join(repr(phrase) for _, phrase in toyav.ENVS)
    raise ValueError(f"toyav_maa: the visual part {visual!r} names no toyav place ({places})")


def place_picture(visual, size, rng):
    """The picture of a visual part: the place's toyav background, no object -> uint8 (S, S, 3)."""
    img = toyav.background(place_of(visual), size, rng)                   # (S, S, 3) float
    return np.clip(img, 0, 255).astype(np.uint8)


def load_hook(spec, default):
    """'module:function' -> that callable; '' -> default."""
    if not spec:
        return default
    module, _, name = spec.partition(':')
    return getattr(importlib.import_module(module), name)


def read(src, *, seed, image_size, sample_rate, duration, n_train=5000, n_val=500, n_test=500,
         p_mix=0.3, splitter='', renderer=''):
    """toyav's rows, captions split, pictures of the place alone -> dict(splits, schema, meta)."""
    if src is not None:
        raise ValueError(f"toyav_maa: --src {src}: the set is made from toyav's --seed, not read")
    world = toyav.read(None, seed=seed, image_size=image_size, sample_rate=sample_rate,
                       duration=duration, n_train=n_train, n_val=n_val, n_test=n_test,
                       p_mix=p_mix)
    split_fn = load_hook(splitter, split_caption)
    render_fn = load_hook(renderer, place_picture)
    for i, rows in enumerate(world['splits'].values()):
        rng = np.random.default_rng(seed + SEED_OFFSET + i)
        for row in rows:
            full = row['caption']['caption']
            text, visual = split_fn(full)
            check_split(full, text, visual)
            row['caption'] = dict(caption=full, text=text, visual=visual)
            row['image'] = render_fn(visual, image_size, rng)
    meta = dict(world['meta'], parts='toyav', texts=TEXTS, splitter=splitter or 'rule',
                renderer=renderer or 'background')
    return dict(splits=world['splits'], schema=world['schema'], meta=meta)


def prompts():
    """Zero-shot prompts: toyav's."""
    return toyav.prompts()


def class_captions():
    """Each source's class caption: toyav's."""
    return toyav.class_captions()
