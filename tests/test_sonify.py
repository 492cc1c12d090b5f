"""Seeing Sound: the sonified dataset (Algorithm 1, loudness, standardisation, concepts, probes)."""
import json
from types import SimpleNamespace

import numpy as np
import pyloudnorm as pyln
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image

import eval as evaluation
import prepare
import sample
import train
from conftest import randomize, tiny_config
from data import open_split, sonify, toyav
from encoders import MelConfig, log_mel, resample_waves
from generators import load_generator, pixart_config
from methods.sonify import Pipeline, Sonify


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


def test_an_image_with_two_concepts_is_mixed_mix_draws_times():
    g = torch.Generator().manual_seed(0)
    pool = np.random.default_rng(0).standard_normal((40, 16000)).astype(np.float32) * 0.05
    audio_emb = torch.randn(40, 8, generator=g)
    clap = SimpleNamespace(encode_text=lambda texts: SimpleNamespace(
        emb=torch.randn(len(texts), 8, generator=g)))
    concepts = [['a: x'], [], ['a: x', 'b: y'], ['b: y', 'c: z', 'a: x']]
    meter = pyln.Meter(16000)
    rows, _ = sonify.sonify(concepts, clap, pool, audio_emb, 4, True, (-25, -21),
                            np.random.default_rng(0), meter, mix_draws=3)
    assert [r['image_id'] for r in rows] == [0, 2, 2, 2, 3, 3, 3]    # no concept: no row
    mixes = [r['clips'][:2].tolist() + r['lufs'][:2].tolist() for r in rows[1:4]]
    assert len({tuple(m) for m in mixes}) == 3                       # each draw a mix of its own
    for r in rows:
        kept = r['clips'] >= 0
        wave, _ = sonify.mix(pool[r['clips'][kept]], r['lufs'][kept], meter)
        assert np.allclose(wave, r['wave'])                          # each rebuilt from its row


def test_quiet_clips_are_never_retrieved():
    g = torch.Generator().manual_seed(0)
    pool = np.random.default_rng(0).standard_normal((40, 16000)).astype(np.float32) * 0.05
    pool[::2] *= 0.01                                                        # 40 dB quieter
    meter = pyln.Meter(16000)
    levels = sonify.loudness(pool, meter)                                    # (40,)
    usable = levels >= levels.max() - 20
    assert usable.sum() == 20
    audio_emb = torch.randn(40, 8, generator=g)
    clap = SimpleNamespace(encode_text=lambda texts: SimpleNamespace(
        emb=audio_emb[:len(texts)] + 0.1 * torch.randn(len(texts), 8, generator=g)))
    concepts = [['a: x'], ['b: y'], ['a: x', 'b: y']] * 20
    args = (concepts, clap, pool, audio_emb, 4, True, (-25, -21))
    every, _ = sonify.sonify(*args, np.random.default_rng(0), meter)
    loud, _ = sonify.sonify(*args, np.random.default_rng(0), meter, usable=usable)
    picked = lambda rows: {c for r in rows for c in r['clips'] if c >= 0}
    assert {0} <= picked(every)                       # concept 'a' is clip 0's own embedding
    assert picked(loud) and all(usable[c] for c in picked(loud))
    for r in loud:                                    # indices into the whole pool, rebuilt
        kept = r['clips'] >= 0
        assert np.allclose(sonify.mix(pool[r['clips'][kept]], r['lufs'][kept], meter)[0],
                           r['wave'])


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


def test_keep_level_balances_the_clips_at_their_recorded_loudness():
    meter = pyln.Meter(16000)
    pool, _ = sonify.toy_pool(2, 2.5, 22050, 16000, 1.0, seed=3)
    clips = np.stack([sonify.normalise(pool[0], -30.0, meter)[0],
                      sonify.normalise(pool[3], -40.0, meter)[0]]).astype(np.float32)
    targets = np.array([-24.0, -22.0])
    wave, measured = sonify.mix(clips, targets, meter, keep_level=True)
    assert np.allclose(measured, [-30.0, -40.0], atol=0.1)
    shift_db = np.mean(measured - targets)                                   # about -12 dB
    alone = [sonify.normalise(c, t + shift_db, meter)[0] for c, t in zip(clips, targets)]
    assert np.allclose(wave, alone[0] + alone[1], atol=1e-6)                 # -36 and -34 LUFS
    one, _ = sonify.mix(clips[:1], targets[:1], meter, keep_level=True)
    assert np.allclose(one, clips[0], atol=1e-6)                             # as recorded
    with_silence = np.stack([clips[0], np.zeros_like(clips[0])])
    kept, _ = sonify.mix(with_silence, targets, meter, keep_level=True)
    assert np.allclose(kept, clips[0], atol=1e-6)                            # silence: no level


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
    pool = sonify.FolderPool(str(real_data / 'esc50' / 'audio'), 16000, 5.0)
    meter = pyln.Meter(16000)
    emb, levels, skipped = pool.scan(lambda chunks: torch.from_numpy(chunks[:, :4]),
                                     lambda chunks: sonify.loudness(chunks, meter))  # (N, 4), (N,)
    assert not skipped and len(pool) == len(emb) == len(levels) == len(pool.files)  # 5 s: one
    assert np.allclose(levels, sonify.loudness(pool[range(len(pool))], meter))
    assert set(pool.counts.values()) == {1}
    second = pool[[1]]                                                       # read back: (1, T)
    assert second.shape == (1, 80000) and np.array_equal(second[0, :4], emb[1].numpy())
    expected = resample_waves(sf.read(files[1], dtype='float32')[0][None], 44100, 16000)[0]
    assert np.allclose(second[0, :len(expected)], expected, atol=1e-6)


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


# ---- the model: a PixArt-style DiT with an audio projector ----

NET = dict(input_size=32, patch_size=8, in_channels=3, hidden_size=32, depth=1, num_heads=2,
           learn_sigma=False, adaln='single')
# a raw-picture toy PixArt reading the tiny toy CLIP's text tokens (width 32), no pooled vector
TINY_PIXART = dict(method='ldm', model_args=dict(
    net='dit', shape=(3, 32, 32), target='image', ctx='clip_text_tokens',
    net_args=dict(NET, ctx_dim=32)))
# Seeing Sound on it: the tiny toy AST's tokens (width 32) through a fresh projector
SONIFY_ARGS = dict(shape=(3, 32, 32), target='image', net_args=dict(NET, ctx_dim=32))


@pytest.fixture(scope='module')
def pixart(tiny, sonified):
    """sonify's toy features and a tiny toy PixArt trained on toyav."""
    prepare.main(['sonify', '--features', 'toy', '--data_dir', str(tiny / 'data'),
                  '--out_dir', str(tiny / 'out'), '--batch_size', '16'])
    run = tiny / 'out' / 'toyav_pixart'
    train.train(tiny_config(tiny, 'clip', out_dir=str(run), **TINY_PIXART))
    return run


def sonify_config(tiny, pixart, name, **overrides):
    """A tiny Seeing Sound run on the sonified set, from the tiny PixArt, projector re-created."""
    cfg = dict(method='sonify', dataset='sonify', init_from=str(pixart),
               init_new=['net.ctx_embedder'], model_args=SONIFY_ARGS, weight_decay=3e-2)
    cfg.update(overrides)
    return tiny_config(tiny, 'clip', out_dir=str(tiny / 'out' / name), **cfg)


def test_fine_tuning_starts_from_the_pixart_but_its_caption_projection(tiny, pixart):
    cfg = sonify_config(tiny, pixart, 'toyav_sonify')
    _, meta = open_split(cfg['data_dir'], 'sonify', 'train', [])
    model = Sonify(**SONIFY_ARGS)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    train.init_weights(model, cfg)
    generator = torch.load(pixart / 'ckpt.pt', weights_only=True)
    generator = generator['ema'] or generator['model']
    for k, v in model.state_dict().items():
        if k.startswith('net.ctx_embedder.'):
            assert torch.equal(v, fresh[k]) and not torch.equal(v, generator[k]), k
        else:
            assert torch.equal(v, generator[k]), k
    assert meta['parts'] == 'toyav'


def test_the_summary_token_leads_the_audio_tokens():
    torch.manual_seed(0)
    tokens = torch.randn(3, 5, 32)                                              # (B, m, d_a)
    drop = {'ctx': torch.tensor([False, True, False])}
    plain = Sonify(**SONIFY_ARGS).conditions({'ctx': tokens}, drop)
    led = Sonify(**SONIFY_ARGS, summary_token=True).conditions({'ctx': tokens}, drop)
    assert torch.equal(plain['ctx'], tokens) and led['ctx'].shape == (3, 6, 32)
    assert torch.allclose(led['ctx'][:, 0], tokens.mean(1))
    assert torch.equal(led['ctx'][:, 1:], tokens)
    assert torch.equal(led['drop_ctx'], drop['ctx'])


def test_the_pooled_vector_is_the_tokens_mean_and_starts_silent():
    torch.manual_seed(0)
    tokens = torch.randn(3, 5, 32)                                              # (B, m, d_a)
    drop = {'ctx': torch.tensor([False, True, False])}
    plain = randomize(Sonify(**SONIFY_ARGS))      # no zero-initialised layer hides the vector
    pooled = Sonify(**SONIFY_ARGS, pooled=True).eval()
    missing, unexpected = pooled.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and {k.split('.')[1] for k in missing} == {'vec_embedder', 'null_vec'}
    cond = pooled.conditions({'ctx': tokens}, drop)
    assert torch.allclose(cond['vec'], F.normalize(tokens.mean(1), dim=-1))
    assert torch.equal(cond['drop_vec'], drop['ctx'])
    x = torch.randn(3, 3, 32, 32)                                               # (B, C, H, W)
    t = torch.tensor([10, 500, 900])
    before = plain.net(x, t, **plain.conditions({'ctx': tokens}, drop))
    assert torch.equal(pooled.net(x, t, **cond), before)        # a fresh vector path adds nothing
    torch.nn.init.normal_(pooled.net.vec_embedder[-1].weight)
    assert not torch.allclose(pooled.net(x, t, **cond), before)
    fresh = {id(p) for p in pooled.param_groups()['projector']}
    assert all(id(p) in fresh for p in pooled.net.vec_embedder.parameters())


def test_token_dropout_keeps_a_random_share_of_each_rows_tokens_in_training_alone():
    torch.manual_seed(0)
    tokens = torch.randn(3, 10, 32)                                             # (B, m, d_a)
    drop = {'ctx': torch.zeros(3, dtype=torch.bool)}
    model = Sonify(**SONIFY_ARGS, token_keep=0.4)
    kept = model.train().conditions({'ctx': tokens}, drop)['ctx']               # (B, 4, d_a)
    assert kept.shape == (3, 4, 32)
    chosen = []
    for row, some in zip(tokens, kept):   # each kept token is one of its own row's, none twice
        index = [(row == token).all(1).nonzero().item() for token in some]
        assert len(set(index)) == 4
        chosen.append(sorted(index))
    assert chosen[0] != chosen[1] or chosen[1] != chosen[2]
    assert torch.equal(model.eval().conditions({'ctx': tokens}, drop)['ctx'], tokens)


def test_one_fine_tuning_run_trains_the_whole_dit_and_draws_from_a_sound(tiny, pixart, tmp_path):
    run = tiny / 'out' / 'toyav_sonify'
    train.train(sonify_config(tiny, pixart, 'toyav_sonify', max_iters=3, eval_interval=3))
    ckpt = torch.load(run / 'ckpt.pt', weights_only=True)
    generator = torch.load(pixart / 'ckpt.pt', weights_only=True)['model']
    assert ckpt['method'] == 'sonify' and ckpt['data']['parts'] == 'toyav'
    assert not torch.equal(ckpt['model']['net.blocks.0.fc1.weight'],
                           generator['net.blocks.0.fc1.weight'])            # the DiT trained too
    tone = tmp_path / 'tone.wav'
    other = tmp_path / 'other.wav'
    sf.write(tone, 0.3 * np.sin(np.arange(16000) / 3), 16000)
    sf.write(other, 0.3 * np.sin(np.arange(16000) / 9), 16000)
    common = ['--ckpt', str(run), '--ckpt_dir', str(tiny / 'out'), '--steps=2', '--dtype',
              'float32', '--audio', str(tone)]
    sample.main(common + ['--out', str(tmp_path / 'mixed'), '--mix', str(other), '--mix_gain',
                          '0.3'])
    sample.main(common + ['--out', str(tmp_path / 'separate'), '--mix', str(other),
                          '--sequence', '--reverb', 'hall'])
    picture = np.asarray(Image.open(tmp_path / 'mixed.a2i.raw.png'))
    assert picture.shape == (32, 32, 3) and (tmp_path / 'separate.a2i.png').exists()


def test_the_pipeline_can_bring_each_input_sound_to_one_loudness():
    cfg = MelConfig()
    wave = 0.1 * np.random.default_rng(0).standard_normal(cfg.hop * cfg.frames)     # (T,)
    cond = {'audio': None, 'wave': np.stack([wave, 0.25 * wave])}     # one sound, 12 dB apart
    pipeline = SimpleNamespace(mel_config=cfg)
    out = Pipeline.at_loudness(pipeline, cond, -23.0)
    meter = pyln.Meter(cfg.sample_rate)
    for w in out['wave'].double().numpy():
        assert abs(meter.integrated_loudness(w) + 23.0) < 0.1
    assert torch.allclose(out['audio'][0], out['audio'][1], atol=1e-3)     # the same log-mels
    assert torch.equal(out['audio'], log_mel(out['wave'], cfg))
    assert Pipeline.OPTIONS['lufs'][0] == 0.0                                # off unless asked
    with pytest.raises(ValueError, match='wave'):
        Pipeline.at_loudness(pipeline, {'audio': out['audio']}, -23.0)


def test_frozen_parts_stay_as_loaded_through_a_training_step(tiny, pixart):
    frozen = ['net.blocks', 'net.t_block']
    run = tiny / 'out' / 'toyav_sonify_frozen'
    train.train(sonify_config(tiny, pixart, run.name, max_iters=1, eval_interval=1,
                              freeze=frozen))
    after = torch.load(run / 'ckpt.pt', weights_only=True)['model']
    generator = torch.load(pixart / 'ckpt.pt', weights_only=True)
    generator = generator['ema'] or generator['model']
    for k, v in after.items():
        if k.startswith(tuple(f + '.' for f in frozen)):
            assert torch.equal(v, generator[k]), k
    for k in ('net.ctx_embedder.0.weight', 'net.final_linear.weight'):     # the rest trains
        assert not torch.equal(after[k], generator[k]), k


def test_eval_judges_real_toyav_audio_and_each_probe_apart(tiny, pixart, tmp_path):
    run = tiny / 'out' / 'toyav_sonify_eval'
    train.train(sonify_config(tiny, pixart, run.name, max_iters=1, eval_interval=1))
    base = dict(evaluation.default_config(), data_dir=str(tiny / 'data'),
                ckpt_dir=str(tiny / 'out'), ckpt=str(run), tasks='a2i', n_eval=8,
                n_diverse=0, batch_size=8, options=dict(steps=2), dtype='float32')
    real = evaluation.evaluate(dict(base, out_dir=str(tmp_path / 'real')))
    for key in ('source_acc', 'env_acc', 'size_rho', 'mix_recall', 'fd', 'fd_floor', 'iis', 'cs'):
        assert f"a2i.{key}" in real, key
    probes = evaluation.evaluate(dict(base, dataset='sonify', n_eval=14,
                                      out_dir=str(tmp_path / 'probes')))
    for kind in ('mix', 'interp_0.1', 'interp_0.3', 'sequence'):
        assert f"a2i.{kind}.mix_recall" in probes, kind
    assert 'a2i.room.env_acc' in probes


def test_a11_pretrains_the_projector_alone_and_the_fine_tune_starts_from_it(tiny, pixart):
    text = dict(text='clip_text_tokens', text_dim=32)
    stage = dict(SONIFY_ARGS, stage='projector', generator=str(pixart), **text)
    cfg = sonify_config(tiny, pixart, 'toyav_sonify_projector', init_from='scratch', init_new=[],
                        model_args=stage, max_iters=2, eval_interval=2, batch_size=16)
    train.train(cfg)
    after_path = tiny / 'out' / 'toyav_sonify_projector' / 'ckpt.pt'
    after = torch.load(after_path, weights_only=True)['model']
    generator = torch.load(pixart / 'ckpt.pt', weights_only=True)
    generator = generator['ema'] or generator['model']
    for k, v in after.items():
        if k.startswith('net.ctx_embedder.'):                     # the only part that trains
            assert not torch.equal(v, generator[k]), k
        elif k.startswith('text_projector.'):                     # the caption projection, frozen
            assert torch.equal(v, generator['net.ctx_embedder.' + k[len('text_projector.'):]]), k
        elif k.startswith('net.'):                                # the DiT, loaded and unused
            assert torch.equal(v, generator[k]), k
    model = Sonify(**stage)
    batch = {'ast_audio_tokens': torch.randn(4, 5, 32), 'clip_text_tokens': torch.randn(4, 3, 32),
             'caption_ids': torch.tensor([[1, 2], [1, 2], [3, 4], [5, 6]])}
    loss = model(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.text_projector[0].weight.grad is None
    assert model.net.ctx_embedder[0].weight.grad.abs().sum() > 0
    assert model.net.blocks[0].fc1.weight.grad is None
    train.train(sonify_config(tiny, pixart, 'toyav_sonify_a11', max_iters=1, eval_interval=1,
                              init_from=str(tiny / 'out' / 'toyav_sonify_projector'),
                              init_new=[], model_args=dict(SONIFY_ARGS, **text)))
    a11 = torch.load(tiny / 'out' / 'toyav_sonify_a11' / 'ckpt.pt', weights_only=True)
    assert a11['iter_num'] == 1 and 'text_projector.0.weight' in a11['model']   # keys as saved
    with pytest.raises(ValueError, match='draws nothing'):
        Pipeline(Sonify(**stage), None)


@pytest.mark.parametrize('align', ['distill', 'attention'])
def test_distill_makes_the_frozen_dit_read_a_sound_as_it_reads_its_text(tiny, pixart, align):
    text = dict(text='clip_text_tokens', text_dim=32)
    stage = dict(SONIFY_ARGS, stage='projector', align=align, generator=str(pixart), **text)
    out = f'toyav_sonify_{align}'
    train.train(sonify_config(tiny, pixart, out, init_from='scratch', init_new=[],
                              model_args=stage, max_iters=2, eval_interval=2, batch_size=16))
    after = torch.load(tiny / 'out' / out / 'ckpt.pt', weights_only=True)
    generator = torch.load(pixart / 'ckpt.pt', weights_only=True)
    generator = generator['ema'] or generator['model']
    trained = ('net.ctx_embedder.',) + (('.cross.',) if align == 'attention' else ())
    changed = set()
    for k, v in after['model'].items():
        if k.startswith('text_projector.'):
            assert torch.equal(v, generator['net.ctx_embedder.' + k[len('text_projector.'):]]), k
        elif k.startswith('net.') and not torch.equal(v, generator[k]):
            changed.add(k)
    assert changed and all(any(part in k for part in trained) for k in changed), changed
    assert any('.cross.' in k for k in changed) == (align == 'attention')
    model = Sonify(**stage)
    model.setup({})
    model.train()
    assert not model.net.training and model.net.ctx_embedder.training
    assert model.net.blocks[0].cross.training == (align == 'attention')
    assert not model.text_projector.training
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 4, 32, generator=g)                                     # (B, L, 32)
    batch = {'image': torch.randint(0, 256, (3, 32, 32, 3), generator=g, dtype=torch.uint8),
             'ast_audio_tokens': tokens, 'clip_text_tokens': tokens}
    loss = model(batch)
    loss.backward()
    assert loss > 0 and model.net.ctx_embedder[0].weight.grad.abs().sum() > 0
    assert model.net.blocks[0].fc1.weight.grad is None and model.net.null_ctx.grad is None
    cross_grad = model.net.blocks[0].cross.qkv.weight.grad
    assert (cross_grad is not None) == (align == 'attention')
    model.net.ctx_embedder.load_state_dict(model.text_projector.state_dict())
    assert model(batch) == 0            # the sound projected as its text: the teacher's output


def test_one_step_of_a_tiny_published_pixart_with_its_caption_projection_replaced(tmp_path):
    import diffusers
    folder = tmp_path / 'transformer'
    randomize(diffusers.PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=8, num_layers=2,
        sample_size=8, patch_size=2, caption_channels=10, cross_attention_dim=24)).save_pretrained(
        folder)
    published = load_generator('pixart', str(folder))
    config = json.loads((folder / 'config.json').read_text())
    net_args = dict(pixart_config(config), ctx_dim=6, learn_null=True)      # AST width 6
    model = Sonify(net_args=net_args, shape=(4, 8, 8), target='latent', text='t5_tokens',
                   text_dim=10, generator=str(folder))
    fresh = model.net.ctx_embedder[0].weight.clone()
    model.setup({})
    own = model.net.state_dict()
    for k, v in published.state_dict().items():
        if k.startswith('ctx_embedder.'):
            assert torch.equal(model.text_projector.state_dict()[k[len('ctx_embedder.'):]], v)
        else:
            assert torch.equal(own[k], v), k
    assert torch.equal(model.net.ctx_embedder[0].weight, fresh)            # re-created: 6 -> 24
    assert model.net.ctx_embedder[0].weight.shape == (24, 6)
    g = torch.Generator().manual_seed(0)
    batch = {'latent': torch.randn(2, 4, 8, 8, generator=g),
             'ast_audio_tokens': torch.randn(2, 7, 6, generator=g)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3.16e-5,
                            weight_decay=3e-2)
    torch.manual_seed(0)
    loss = model(batch)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert 'net.ctx_embedder.0.weight' in changed and 'net.blocks.1.fc2.weight' in changed
    assert not any(k.startswith('text_projector.') for k in changed)
