"""The embedded world: deterministic, and its factors really bind the two modalities."""
import numpy as np
import pytest

from data import toyav


@pytest.fixture(scope='module')
def world():
    return toyav.generate(240, seed=7)


def test_same_seed_same_world_other_seed_other_world(world):
    arrays, captions = world
    again, captions_again = toyav.generate(240, seed=7)
    other, _ = toyav.generate(240, seed=8)
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], again[k])
    assert captions == captions_again
    assert not np.array_equal(arrays['wave'], other['wave'])


def test_loudness_follows_the_loudness_class(world):
    arrays, _ = world
    rms_db = 20 * np.log10(np.sqrt((arrays['wave'] ** 2).mean(1)))
    means = [rms_db[arrays['loud'] == c].mean() for c in range(3)]
    assert means[0] + 6 < means[1]
    assert means[1] + 6 < means[2]


def test_object_area_follows_the_loudness_class():
    """Bigger objects for louder sounds: count object pixels on a plain background."""
    rng = np.random.default_rng(0)
    areas = []
    for loud in range(3):
        img = toyav.render([0], 0, loud, 32, rng).astype(int)
        bg = toyav.background(0, 32, np.random.default_rng(0)).astype(int)
        areas.append((np.abs(img - bg).sum(-1) > 60).sum())
    assert areas[0] < areas[1] < areas[2]


def test_reverberation_follows_the_environment():
    """The hall's and tunnel's impulse responses keep energy long after the outdoor one has none."""
    rng = np.random.default_rng(0)
    tails = []
    for env in range(3):
        h = toyav.impulse_response(env, 16000, rng)
        tails.append((h[int(0.05 * 16000):] ** 2).sum())
    assert tails[0] == 0
    assert tails[1] > 0.2
    assert tails[2] > 0.2


def test_captions_and_their_split_match_the_labels(world):
    arrays, captions = world
    for i, c in enumerate(captions):
        assert c['caption'] == f"{c['text']} {c['visual']}"
        names = [toyav.SOURCES[s][0] for s in np.flatnonzero(arrays['sources'][i])]
        assert all(n in c['text'] for n in names)
        assert not any(n in c['visual'] for n in names)
        assert toyav.LOUDNESS[arrays['loud'][i]] in c['text']
        assert c['visual'] == toyav.ENVS[arrays['env'][i]][1]
    assert set(arrays['n_sources']) == {1, 2}
    np.testing.assert_array_equal(arrays['sources'].sum(1), arrays['n_sources'])


def test_every_caption_word_is_in_the_vocabulary(world):
    _, captions = world
    vocab = set(toyav.vocabulary())
    assert all(set(c['caption'].split()) <= vocab for c in captions)
    assert all(set(p.split()) <= vocab for ps in toyav.prompts() for p in ps)
