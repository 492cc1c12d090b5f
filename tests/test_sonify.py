"""Seeing Sound: the sonified dataset (Algorithm 1, loudness, standardisation, concepts, probes)."""
import json

import numpy as np
import pyloudnorm as pyln
import pytest
import soundfile as sf
import torch

import prepare
from data import sonify, toyav
from encoders import resample_waves


def test_the_square_root_widens_the_chosen_set():
    # cosines of one concept with six clips: a clear best, then a spread
    cosines = torch.tensor([0.9, 0.41, 0.35, 0.02, 0.0, -0.4])
    text = torch.tensor([[1.0, 0.0]])
    audio = torch.stack([cosines, (1 - cosines ** 2).sqrt()], 1)             # unit, cos to text
    plain, = sonify.candidates(text, audio, top_k=4, sqrt=False)
    rooted, = sonify.candidates(text, audio, top_k=4, sqrt=True)
    assert plain[0].tolist() == [0]                  # only the best is above the mean of the top 4
    assert rooted[0].tolist() == [0, 1, 2]           # the root flattens the top: two more pass
    assert np.isclose(plain[2], (0.9 + 0.41 + 0.35 + 0.02) / 4, atol=1e-6)
    assert np.allclose(rooted[1], np.sqrt(cosines[:3].numpy()), atol=1e-6)
    top1, = sonify.candidates(text, audio, top_k=1)
    assert top1[0].tolist() == [0]                   # k = 1: top-1 retrieval
    negative, = sonify.candidates(-text, audio, top_k=2)
    assert negative[0].tolist() == [5]               # the best clip always stays a candidate


def test_batched_retrieval_equals_one_concept_at_a_time(monkeypatch):
    g = torch.Generator().manual_seed(0)
    text = torch.randn(7, 16, generator=g)
    audio = torch.randn(300, 16, generator=g)
    monkeypatch.setattr(sonify, 'QUERY_BLOCK', 300 * 3)                     # blocks of 3 concepts
    batched = sonify.candidates(text, audio, top_k=5)
    for q, (clips, scores, threshold) in enumerate(batched):
        alone, = sonify.candidates(text[q:q + 1], audio, top_k=5)
        assert clips.tolist() == alone[0].tolist()
        assert np.allclose(scores, alone[1], atol=1e-6) and np.isclose(threshold, alone[2])
        cos = torch.nn.functional.cosine_similarity(text[q:q + 1], audio)   # (300,)
        root = cos.sign() * cos.abs().sqrt()
        assert np.isclose(threshold, root.topk(5).values.mean().item(), atol=1e-6)
        assert set(clips.tolist()) == set((root >= threshold).nonzero()[:, 0].tolist())


def test_the_choice_among_candidates_is_uniform():
    found = (np.array([3, 8, 11, 40]), np.array([0.9, 0.8, 0.85, 0.8]), 0.8)
    rng = np.random.default_rng(0)
    draws = [sonify.choose(found, rng)[0] for _ in range(8000)]
    counts = np.array([draws.count(c) for c in found[0]])
    assert counts.sum() == 8000
    assert np.abs(counts / 8000 - 0.25).max() < 0.02     # 4 standard errors of 1/4 at n = 8000
    clip, score = sonify.choose(found, rng)
    assert score == found[1][list(found[0]).index(clip)]


def test_retrieval_timing_on_random_embeddings():
    seconds = sonify.retrieval_seconds(2000, n_concepts=8, dim=32)
    assert 0 < seconds < 60


@pytest.mark.parametrize('target', [-25.0, -21.0, -23.4])
def test_each_clip_is_normalised_within_a_tenth_of_a_lu(target):
    rng = np.random.default_rng(1)
    meter = pyln.Meter(16000)
    pool, _ = sonify.toy_pool(4, 2.5, 22050, 16000, 1.0, seed=3)
    for clip in pool:
        loud, before = sonify.normalise(clip, target, meter)
        assert abs(meter.integrated_loudness(loud) - target) < 0.1, before
    silent, lufs = sonify.normalise(np.zeros(16000, np.float32), target, meter)
    assert lufs == -np.inf and not silent.any()
    targets = rng.uniform(-25, -21, size=2)
    wave, measured = sonify.mix(pool[:2], targets, meter)
    alone = [sonify.normalise(c, t, meter)[0] for c, t in zip(pool[:2], targets)]
    assert np.allclose(wave, np.clip(alone[0] + alone[1], -1, 1), atol=1e-6)
    before = [meter.integrated_loudness(c.astype(np.float64)) for c in pool[:2]]
    assert np.allclose(measured, before)


def test_pool_recordings_are_standardised_to_mono_chunks_with_a_padded_tail():
    rng = np.random.default_rng(0)
    recording = sonify.pool_recording(2, 1, 2, 2.5, 22050, rng)              # (2, 2.5 s)
    assert recording.shape == (2, 55125)
    assert not np.allclose(recording[0], recording[1])                      # two channels
    chunks = sonify.standardise(recording, 22050, 16000, 1.0)
    assert chunks.shape == (3, 16000)
    mono = resample_waves(recording.mean(0)[None], 22050, 16000)[0]          # (40000,)
    assert np.allclose(chunks.reshape(-1)[:40000], mono, atol=1e-6)
    assert not chunks[2, 8000:].any() and chunks[2, :8000].any()             # the tail padded


def test_the_esc50_clips_are_standardised(real_data):
    files = sorted((real_data / 'esc50' / 'audio').glob('*.wav'))[:4]
    assert files
    for path in files:
        raw, rate = sf.read(path, dtype='float32', always_2d=True)            # (T, channels)
        assert rate == 44100
        seconds = len(raw) / rate
        one = sonify.standardise(raw.T, rate, 16000, 1.0)
        assert one.shape == (int(np.ceil(seconds)), 16000)
        three = sonify.standardise(raw.T, rate, 16000, 3.0)                  # 5 s -> 3 s + 2 s
        assert three.shape == (2, 48000) and not three[1, 32000:].any()
        expected = resample_waves(raw.mean(1)[None], rate, 16000)[0]
        assert np.allclose(three.reshape(-1)[:len(expected)], expected, atol=1e-6)
    chunks, labels, skipped = sonify.folder_pool(str(real_data / 'esc50' / 'audio'), 16000, 5.0)
    assert chunks.shape[1] == 80000 and not skipped
    assert len(labels['file']) == len(chunks) == len(set(labels['recording']))   # 5 s each: one


def test_the_oracle_reads_the_captions_and_a_vlm_answer_is_parsed():
    caption = dict(zip(('caption', 'text', 'visual'), toyav.caption([0, 9], 2, 1)))
    assert sonify.oracle(caption) == ['bell: ringing in a tunnel', 'dog: barking in a tunnel']
    assert sonify.oracle(dict(caption='outdoors', text='', visual='outdoors')) == []
    answer = "Sure.\n1. Dog: barking.\n2. **Church bell**: ringing\nCar: honking\n3. a: b\n4. c: d"
    assert sonify.parse_concepts(answer) == ['dog: barking', 'church bell: ringing', 'a: b']
    assert 'numbered list' in sonify.PROMPT


def test_the_probes_of_section_4_5():
    rows = sonify.probe_rows(2, 16000, 16000, 32, np.random.default_rng(0))
    kinds = [sonify.KINDS[r['kind']] for r in rows]
    assert kinds[:7] == ['mix', 'interp_0.1', 'interp_0.3', 'sequence', 'room', 'room', 'room']
    assert [r['env'] for r in rows[4:7]] == [0, 1, 2]
    assert all(r['n_sources'] == 2 for r in rows[:4]) and rows[4]['n_sources'] == 1
    assert rows[0]['sources'].sum() == 2 and rows[0]['image'].shape == (32, 32, 3)
    sequence = rows[3]['wave']
    first, second = sequence[:8000], sequence[8000:]
    assert first.std() > 0.01 and second.std() > 0.01                       # one, then the other


@pytest.fixture(scope='module')
def sonified(tiny):
    """The tiny toyav's training images sonified with every offline VLM, and prepared."""
    data = str(tiny / 'data')
    prepare.main(['sonify', '--data_dir', data, '--out_dir', str(tiny / 'out'),
                  '--vlms', 'clip,imagebind,oracle', '--recordings', '6', '--backgrounds', '4',
                  '--val_images', '8', '--probes', '2', '--top_k', '3'])
    return tiny / 'data' / 'sonify'


def test_the_dataset_pairs_toyav_training_images_with_pool_clips(tiny, sonified):
    meta = json.loads((sonified / 'meta.json').read_text())
    assert meta['parts'] == 'toyav' and meta['vlms'] == ['clip', 'imagebind', 'oracle']
    assert meta['counts']['test'] == 14 and meta['pool']['clips'] == 18     # 6 x 2.5 s -> 3 each
    train_images = np.load(tiny / 'data' / 'toyav' / 'train_image.npy')
    images = np.load(sonified / 'train_image.npy')
    ids = np.load(sonified / 'train_image_id.npy')
    vlm = np.load(sonified / 'train_vlm.npy')
    toyav_rows = ids < len(train_images)
    assert np.array_equal(images[toyav_rows], train_images[ids[toyav_rows]])
    oracle = vlm == 2
    assert (ids[oracle] < len(train_images)).all()              # no background has a concept
    clips = np.load(sonified / 'train_clips.npy')
    lufs = np.load(sonified / 'train_lufs.npy')
    n_concepts = (clips >= 0).sum(1)
    assert (n_concepts >= 1).all() and (n_concepts <= 3).all()
    assert np.array_equal(np.isnan(lufs), clips < 0)
    assert ((lufs[clips >= 0] >= -25) & (lufs[clips >= 0] <= -21)).all()
    sources = np.load(sonified / 'train_sources.npy')
    assert (sources[oracle].sum(1) == n_concepts[oracle]).all()     # the oracle names each source
    captions = json.loads((sonified / 'captions.json').read_text())['train']
    assert all(len(c['concepts']) == k for c, k in zip(captions, n_concepts))
    for vlm_name, report in meta['retrieval'].items():
        assert 0 <= report['source_precision'] <= 1 and 0 < report['diversity'] <= 1, vlm_name
    assert meta['concepts']['oracle']['source_precision'] == 1.0
    assert meta['concepts']['oracle']['backgrounds_kept'] == 0
    kinds = np.load(sonified / 'test_kind.npy')
    assert sorted(set(kinds.tolist())) == [1, 2, 3, 4, 5]
    assert (np.load(sonified / 'train_kind.npy') == 0).all()


def test_every_pairing_can_be_rebuilt_from_the_seed(sonified):
    """A row's wave is the mix of its clips at its loudness targets, the pool rebuilt."""
    meta = json.loads((sonified / 'meta.json').read_text())
    pool_meta = meta['pool']
    pool, labels = sonify.toy_pool(pool_meta['recordings'], pool_meta['seconds'],
                                   pool_meta['rate'], 16000, 1.0, pool_meta['seed'])
    assert labels['source'] == pool_meta['source']
    waves = np.load(sonified / 'train_wave.npy')
    clips = np.load(sonified / 'train_clips.npy')
    lufs = np.load(sonified / 'train_lufs.npy')
    meter = pyln.Meter(16000)
    for i in range(0, len(waves), max(1, len(waves) // 5)):
        kept = clips[i] >= 0
        wave, _ = sonify.mix(pool[clips[i][kept]], lufs[i][kept], meter)
        assert np.allclose(wave, waves[i], atol=1e-5)
