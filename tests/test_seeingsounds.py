"""SeeingSounds: the branches and their loss (Eq. 6, 7), the controllable toyav rows, the pipeline.
"""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

import eval as evaluation
import sample
import train
from conftest import prepare_derived, tiny_config
from data import toyav, toyav_ctrl
from methods.seeingsounds import TERMS, AttentionPool, Branch, SeeingSounds

SMALL = dict(in_dim=12, token_dim=8, n_tokens=5, vec_dim=6, heads=2)
# a raw-picture DiT reading the tiny toy CLIP's text tokens and pooled vector (width 32)
TINY_T2I = dict(method='ldm', model_args=dict(
    net='dit', shape=(3, 32, 32), target='image', ctx='clip_text_tokens', vec='clip_text_emb',
    net_args=dict(input_size=32, patch_size=8, in_channels=3, hidden_size=32, depth=1,
                  num_heads=2, ctx_dim=32, vec_dim=32, learn_sigma=False)))
TINY_SS = dict(method='seeingsounds', dataset='toyav_ctrl',
               model_args=dict(in_dim=32, token_dim=32, n_tokens=16, vec_dim=32, heads=2))


def batch(n=8, kinds=(0, 1, 2, 3)):
    """Random audio tokens (m = 7), targets and kinds."""
    g = torch.Generator().manual_seed(0)
    return {'ast_audio_tokens': torch.randn(n, 7, 12, generator=g),
            'clip_text_tokens': torch.randn(n, 5, 8, generator=g),
            'clip_text_emb': torch.randn(n, 6, generator=g),
            'kind': torch.tensor([kinds[i % len(kinds)] for i in range(n)])}


def test_attention_pooling_and_average_pooling_give_the_target_counts():
    tokens = torch.randn(3, 7, 8)
    assert AttentionPool(8, 5, 2)(tokens).shape == (3, 5, 8)
    average = Branch(12, 8, 5, 'average', 2)
    assert average.pool is None
    assert average(torch.randn(3, 7, 12)).shape == (3, 5, 8)
    shifted = torch.randn(3, 7, 12)
    pooled = Branch(12, 8, 1, 'average', 2)
    expected = pooled.adapter(shifted).mean(1, keepdim=True)               # mean pooling for V
    torch.testing.assert_close(pooled(shifted), expected)


def test_eq7_averages_each_term_apart_and_eq6_reads_plain_rows_only():
    torch.manual_seed(0)
    model = SeeingSounds(**SMALL)
    b = batch(8, kinds=(0, 0, 0, 0, 0, 1, 2, 3))
    pred = model.predict(b['ast_audio_tokens'])
    per_row = ((pred['ctx'] - b['clip_text_tokens']).pow(2).mean((1, 2))
               + (pred['vec'] - b['clip_text_emb']).pow(2).mean(1))           # (8,)
    kind = b['kind']
    terms = [per_row[torch.isin(kind, torch.tensor(k))].mean() for k in TERMS.values()]
    torch.testing.assert_close(model(b), torch.stack(terms).mean())
    assert not torch.allclose(model(b), per_row.mean())                     # not one mean of rows
    eq6 = SeeingSounds(**SMALL, terms=('plain',))
    eq6.load_state_dict(model.state_dict())
    torch.testing.assert_close(eq6(b), per_row[kind == 0].mean())


def test_single_branch_models_predict_zeros_for_the_other_role_and_name_it_null():
    only_t = SeeingSounds(**SMALL, branches=('t',))
    only_v = SeeingSounds(**SMALL, branches=('v',))
    x = torch.randn(2, 7, 12)
    assert only_t.nulls() == ('vec',) and only_v.nulls() == ('ctx',)
    assert torch.equal(only_t.predict(x)['vec'], torch.zeros(2, 6))
    assert torch.equal(only_v.predict(x)['ctx'], torch.zeros(2, 5, 8))
    assert set(only_t.param_groups()) == {'t'}
    assert set(SeeingSounds(**SMALL).param_groups()) == {'t', 'v'}
    only_v(batch()).backward()
    grads = [p.grad for p in only_v.parameters()]
    assert only_v.branch_t is None and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_controllable_rows_say_what_they_sound_like(tmp_path):
    out = toyav_ctrl.read(None, seed=3, image_size=32, sample_rate=16000, duration=1.0, rows=8,
                          val_rows=4, clips=2, holdout='frog,dog')
    train_rows = out['splits']['train']
    assert [r['kind'] for r in train_rows] == [0, 1, 2, 3] * 2
    frog, dog = (toyav.SOURCES.index(s) for s in toyav.SOURCES if s[0] in ('frog', 'dog'))
    for r in train_rows + out['splits']['val']:                              # zero-shot: held out
        assert not r['sources'][[8, 9]].any()
        words = r['caption']['caption'].split()
        assert toyav.LOUDNESS[r['loud']] in words
        assert r['n_sources'] == r['sources'].sum() == (2 if r['kind'] == 3 else 1)
    gain = next(r for r in train_rows if r['kind'] == 1)
    assert gain['loud'] == toyav_ctrl.nearest_level(gain['alpha'])
    rms = np.sqrt((gain['wave'] ** 2).mean())
    assert rms < 0.11 * max(gain['alpha'], 0.2)                             # scaled down
    room = next(r for r in train_rows if r['kind'] == 2)
    assert room['env'] > 0 and toyav.ENVS[room['env']][1] in room['caption']['caption']
    test = out['splits']['test']
    assert len(test) == 2 * 7
    sweep = [r for r in test[:7] if r['kind'] == 1]
    assert [r['loud'] for r in sweep] == [0, 1, 2]                          # alpha 0.1, 0.3, 1.0
    rooms = [r for r in test[:7] if r['kind'] == 2]
    assert [r['env'] for r in rooms] == [0, 1, 2]
    quiet = sweep[0]['wave'][:1000]
    loud = sweep[2]['wave'][:1000]
    assert np.allclose(loud * 0.1, quiet, atol=5e-3)                    # the same clip
    assert out['meta']['parts'] == 'toyav'


def test_a_captioner_hook_replaces_the_templates(tmp_path, monkeypatch):
    calls = []

    def captioner(dry, kind, edit):
        calls.append((dry, kind))
        return f"custom {kind}"
    module = type('Module', (), {'lm': staticmethod(captioner)})
    importer = type('Importer', (), {'import_module': staticmethod(lambda name: module)})
    monkeypatch.setattr(toyav_ctrl, 'importlib', importer)
    out = toyav_ctrl.read(None, seed=3, image_size=32, sample_rate=16000, duration=1.0, rows=4,
                          val_rows=0, clips=0, captioner='mymodule:lm')
    assert [r['caption']['caption'] for r in out['splits']['train']] == [
        'custom plain', 'custom gain', 'custom room', 'custom mix']
    assert calls[0][0].startswith('a loud ') and calls[0][0].endswith('outdoors')


@pytest.fixture(scope='module')
def seeing(tiny):
    """toyav_ctrl made with tiny's parts, a tiny text-to-image DiT and a SeeingSounds run."""
    prepare_derived(tiny, 'toyav_ctrl', '--rows', '32', '--val_rows', '8', '--clips', '2')
    train.train(tiny_config(tiny, 'clip', out_dir=str(tiny / 'out' / 'toyav_t2i'), **TINY_T2I))
    run = tiny / 'out' / 'toyav_seeingsounds'
    train.train(tiny_config(tiny, 'clip', out_dir=str(run), max_iters=6, eval_interval=3,
                            lr_groups=dict(t=1e-3, v=1e-4), **TINY_SS))
    return run


def test_training_reads_the_features_of_toyavs_parts_and_samples_a_picture(tiny, seeing, tmp_path):
    meta = json.loads((tiny / 'data' / 'toyav_ctrl' / 'features.json').read_text())
    assert {'ast_audio_tokens', 'clip_text_tokens', 'clip_text_emb'} <= set(meta['fields'])
    ckpt = torch.load(seeing / 'ckpt.pt', weights_only=True)
    assert ckpt['data']['parts'] == 'toyav' and ckpt['iter_num'] == 6
    assert (seeing / 'best.pt').exists()
    clip = tmp_path / 'tone.wav'
    sf.write(clip, 0.3 * np.sin(np.arange(16000) / 3), 16000)
    common = ['--ckpt', str(seeing), '--ckpt_dir', str(tiny / 'out'), '--steps=2',
              '--dtype', 'float32']
    sample.main(common + ['--audio', str(clip), '--out', str(tmp_path / 'dry')])
    sample.main(common + ['--audio', str(clip), '--reverb', 'hall', '--gain', '0.2',
                          '--out', str(tmp_path / 'hall')])
    dry = np.asarray(__import__('PIL.Image').Image.open(tmp_path / 'dry.a2i.raw.png'))
    assert dry.shape == (32, 32, 3)
    assert (tmp_path / 'hall.a2i.png').exists()


def test_eval_judges_real_test_audio_and_the_controllability_kinds(tiny, seeing, tmp_path):
    base = dict(evaluation.default_config(), data_dir=str(tiny / 'data'),
                ckpt_dir=str(tiny / 'out'), ckpt=str(seeing), tasks='a2i', n_eval=8,
                n_diverse=0, batch_size=8, options=dict(steps=2), dtype='float32')
    real = evaluation.evaluate(dict(base, out_dir=str(tmp_path / 'real')))
    for key in ('source_acc', 'env_acc', 'size_rho', 'fd', 'fd_floor', 'iis', 'r_at_5', 'cs',
                'sec_per_sample'):
        assert f"a2i.{key}" in real, key
    assert 0 <= real['a2i.r_at_5'] <= 1 and -1 <= real['a2i.iis'] <= 1
    ctrl = evaluation.evaluate(dict(base, dataset='toyav_ctrl', out_dir=str(tmp_path / 'ctrl')))
    for kind in ('gain', 'room', 'mix'):
        assert f"a2i.{kind}.source_acc" in ctrl, kind
    assert 'a2i.gain.size_rho' in ctrl and 'a2i.mix.mix_recall' in ctrl
    caption = dict(base, ckpt=str(tiny / 'out' / 'toyav_t2i'), method='seeingsounds',
                   options=dict(steps=2, route='caption'), out_dir=str(tmp_path / 'caption'))
    baseline = evaluation.evaluate(caption)
    assert 'a2i.source_acc' in baseline


def test_zero_shot_rows_are_the_rows_holding_a_held_out_source():
    meta = {'classes': {'sources': ['bell', 'frog', 'dog']}}
    data = {'sources': np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [1, 0, 0]])}
    cfg = dict(evaluation.default_config(), sources='frog,dog')
    assert evaluation.chosen_rows(cfg, meta, data).tolist() == [1, 2]
    assert evaluation.chosen_rows(dict(cfg, sources=''), meta, data).tolist() == [0, 1, 2, 3]


def test_a_linear_probe_reads_a_linear_label_and_not_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g)
    y = (x[:, 2] > 0).long().numpy()                                       # linear in one feature
    assert evaluation.linear_probe(x[:300], y[:300], x[300:], y[300:]) > 0.9
    noise = torch.randint(0, 2, (400,), generator=g).numpy()
    assert evaluation.linear_probe(x[:300], noise[:300], x[300:], noise[300:]) < 0.7
