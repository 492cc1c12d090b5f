"""SeeingSounds at full scale, offline: tiny random AST, FLUX.1's T5 and CLIP text towers and a
FLUX.1 pipeline folder driven by the same prepare / train / sample commands as toyav, and one
batch of Eq. 7 rows made from real ESC-50 clips."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import eval as evaluation
import prepare
import sample
import train
from conftest import (save_hf, tiny_config, tiny_flux_pipeline, tiny_hf_ast, tiny_hf_flux_clip,
                      tiny_hf_flux_t5)
from data import esc50, toyav
from encoders import fit_length, load_audio, load_hf
from generators import Flux
from methods import load_checkpoint
from methods.seeingsounds import SeeingSounds, controllable_rows

diffusers = pytest.importorskip('diffusers')
pytestmark = pytest.mark.usefixtures('one_thread')
AST_DIM = 32          # the tiny AST's width
T5_DIM = 16           # the tiny T5's width: FLUX.1's token space here (4096 published)
CLIP_DIM = 32         # the tiny CLIP text tower's width: FLUX.1's pooled space (768 published)
T5_TOKENS = 512       # FLUX.1-dev's caption length, as HFFluxT5 pads
FULL_SCALE = dict(audio='ast_audio_tokens', tokens='flux_t5_text_tokens',
                  pooled='flux_clip_text_emb', in_dim=AST_DIM, token_dim=T5_DIM,
                  n_tokens=T5_TOKENS, vec_dim=CLIP_DIM, heads=2)
SIZE = 16             # picture side: 8 x 8 latents of the tiny VAE, 16 packed tokens


@pytest.fixture(scope='module')
def encoder_dirs(tmp_path_factory):
    """The tiny hf AST, T5 and CLIP text tower saved as folders their from_pretrained reads."""
    root = tmp_path_factory.mktemp('hf')
    return {'ast': save_hf(tiny_hf_ast(), root / 'ast'),
            'flux_t5': save_hf(tiny_hf_flux_t5(), root / 'flux_t5'),
            'flux_clip': save_hf(tiny_hf_flux_clip(), root / 'flux_clip')}


@pytest.fixture(scope='module')
def flux_dir(tmp_path_factory):
    """A tiny FLUX.1-dev pipeline folder reading the tiny T5's tokens and CLIP's vector."""
    path = tmp_path_factory.mktemp('flux')
    tiny_flux_pipeline(guidance=True, ctx_dim=T5_DIM, vec_dim=CLIP_DIM).save_pretrained(path)
    return path


def test_the_same_commands_run_seeingsounds_on_flux(encoder_dirs, flux_dir, tmp_path):
    """prepare.py --features hf, train.py on its cache, sample.py --generator <FLUX.1 folder>.

    Each step's output equals running the published pieces by hand.
    """
    data = tmp_path / 'data'
    root = data / 'toyav_ctrl'
    prepare.main(['toyav_ctrl', '--data_dir', str(data), '--rows', '16', '--val_rows', '4',
                  '--clips', '1'])
    flags = [f"--{name}={path}" for name, path in encoder_dirs.items()]
    prepare.main(['toyav_ctrl', '--features', 'hf', '--encoders', 'ast,flux_t5,flux_clip',
                  *flags, '--data_dir', str(data), '--batch_size', '8'])
    feats = json.loads((root / 'features.json').read_text())
    assert feats['encoders'] == encoder_dirs
    assert sorted(feats['fields']) == ['ast_audio_emb', 'ast_audio_tokens', 'flux_clip_text_emb',
                                       'flux_t5_text_emb', 'flux_t5_text_tokens']
    ast = load_hf('ast', encoder_dirs['ast'])
    t5 = load_hf('flux_t5', encoder_dirs['flux_t5'])
    clip = load_hf('flux_clip', encoder_dirs['flux_clip'])
    waves = np.load(root / 'test_wave.npy')                                 # (7, 16000)
    captions = [c['caption'] for c in json.loads((root / 'captions.json').read_text())['test']]
    cached = np.load(root / 'test_ast_audio_tokens.npy')                     # float16
    assert cached.shape == (7, 9, AST_DIM)
    np.testing.assert_allclose(cached, ast.encode_audio(waves).tokens, atol=1e-2, rtol=1e-2)
    cached = np.load(root / 'test_flux_t5_text_tokens.npy')
    assert cached.shape == (7, T5_TOKENS, T5_DIM)
    np.testing.assert_allclose(cached, t5.encode_text(captions).tokens, atol=1e-2, rtol=1e-2)
    np.testing.assert_allclose(np.load(root / 'test_flux_clip_text_emb.npy'),
                               clip.encode_text(captions).emb, atol=1e-5)

    run = tmp_path / 'out' / 'toyav_ctrl_seeingsounds'
    train.train(tiny_config(tmp_path, 'clip', method='seeingsounds', dataset='toyav_ctrl',
                            out_dir=str(run), data_dir=str(data), model_args=FULL_SCALE,
                            lr_groups=dict(t=1e-3, v=1e-4)))
    model, ckpt = load_checkpoint(str(run / 'ckpt.pt'))
    assert ckpt['data']['features'] == {'suite': 'hf', 'encoders': encoder_dirs}

    tone = tmp_path / 'tone.wav'
    sf.write(tone, 0.3 * np.sin(np.arange(12000) / 3), 16000)       # shorter than a clip: padded
    stem = str(tmp_path / 'tone')
    common = ['--ckpt', str(run), '--generator', str(flux_dir), '--steps', '2', '--size',
              str(SIZE), '--dtype', 'float32']
    sample.main(common + ['--audio', str(tone), '--out', stem])
    sample.main(common + ['--index', '0', '--data_dir', str(data), '--out', stem + '_index'])
    flux = Flux.from_pretrained(str(flux_dir))
    wave = fit_length(load_audio(str(tone), 16000), 16000)[None]            # (1, 16000)
    for path, sound in ((stem, wave), (stem + '_index', waves[:1])):
        condition = model.predict(ast.encode_audio(sound).tokens)
        rng = torch.Generator().manual_seed(1337)
        expected = flux.generate(condition, 2, 3.0, rng, SIZE, SIZE)[0]      # (16, 16, 3)
        picture = np.asarray(Image.open(f"{path}.a2i.raw.png"))
        assert picture.shape == (SIZE, SIZE, 3)
        np.testing.assert_array_equal(picture, expected.numpy())


def test_a_toy_run_is_refused_by_flux(flux_dir, tiny, tmp_path):
    """A run predicting other widths than FLUX.1 reads is refused in one line, not mid-sampling."""
    run = tmp_path / 'toy_run'
    toy = dict(in_dim=32, token_dim=32, n_tokens=16, vec_dim=32, heads=2, kind='')  # plain rows
    train.train(tiny_config(tiny, 'clip', method='seeingsounds', out_dir=str(run), max_iters=1,
                            eval_interval=1, model_args=toy))
    with pytest.raises(SystemExit, match='FLUX.1 reads'):
        sample.main(['--ckpt', str(run), '--ckpt_dir', str(tiny / 'out'), '--generator',
                     str(flux_dir), '--index', '0', '--data_dir', str(tiny / 'data')])


def test_eval_hands_the_raw_wave_beside_the_log_mels():
    rows = {'mel': np.zeros((2, 4, 8), np.float32), 'wave': np.ones((2, 100), np.float32)}
    cond = evaluation.conditions(rows, ['a', 'b'], ('audio',))
    assert set(cond) == {'audio', 'wave'}
    assert cond['wave'].shape == (2, 100)
    assert set(evaluation.conditions({'mel': rows['mel']}, ['a', 'b'], ('audio',))) == {'audio'}


def distinct_clips(rows, n):
    """The first n rows of n different captions."""
    chosen = {}
    for row in rows:
        chosen.setdefault(row['caption']['caption'], row)
    return list(chosen.values())[:n]


def test_an_eq7_batch_of_real_esc50_clips(real_data):
    """ESC-50 clips plain, quieter, in a hall and summed, captions edited, encoded by the hf
    suite: the loss is finite and reaches both branches."""
    out = esc50.read(str(real_data / 'esc50'), data_dir='', sample_rate=16000, duration=1.0)
    recordings = [row for split in out['splits'].values() for row in split]   # any fold
    clips = distinct_clips(recordings, 3)
    waves = np.stack([clip['wave'] for clip in clips])                          # (3, 16000)
    captions = [clip['caption']['caption'] for clip in clips]
    rows, texts, kinds = controllable_rows(waves, captions, 16000, np.random.default_rng(0))
    assert rows.shape == (12, 16000)
    assert kinds.tolist() == [0, 1, 2, 3] * 3
    for i, caption in enumerate(captions):
        plain, quiet, hall, mix = rows[4 * i:4 * i + 4]
        phrase = caption[len('the sound of '):]
        np.testing.assert_array_equal(plain, waves[i])
        alpha = np.linalg.norm(quiet) / np.linalg.norm(plain)
        assert 0.1 <= alpha <= 0.5
        np.testing.assert_allclose(quiet, alpha * plain, atol=1e-6)
        volume = 'low-volume' if alpha < 0.3 else 'medium-volume'
        assert texts[4 * i:4 * i + 3] == [caption, f"the {volume} sound of {phrase}",
                                          f"the sound of {phrase} {toyav.ENVS[1][1]}"]
        assert np.abs(hall - plain).max() > 0.01                    # a room, not the dry clip
        other = next(j for j, w in enumerate(waves) if np.allclose(mix, plain + w))
        assert other != i
        assert texts[4 * i + 3] == f"the sound of {phrase} and {captions[other][13:]}"
    ast = tiny_hf_ast()
    batch = {'ast_audio_tokens': ast.encode_audio(rows, 16000).tokens,
             'flux_t5_text_tokens': tiny_hf_flux_t5().encode_text(texts).tokens,
             'flux_clip_text_emb': tiny_hf_flux_clip().encode_text(texts).emb,
             'kind': torch.from_numpy(kinds)}
    pooled = batch['flux_clip_text_emb'].view(3, 4, CLIP_DIM)
    edits = (pooled[:, 1:] - pooled[:, :1]).abs().amax(-1)                       # (3, 3)
    assert edits.min() > 1e-4                                   # every edit reaches the target
    torch.manual_seed(0)
    model = SeeingSounds(**FULL_SCALE)
    loss = model(batch)
    assert torch.isfinite(loss)
    loss.backward()
    for branch in (model.branch_t, model.branch_v):
        grads = [p.grad for p in branch.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert all(g.abs().sum() > 0 for g in grads)
