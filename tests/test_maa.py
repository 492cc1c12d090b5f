"""Make-An-Audio + ImageBind: the complementary toyav captions and pictures, the fusions, the losses
of Experiments A and B, frozen parts left unchanged, ti2a through sample.py and eval.py."""
import itertools
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image

import eval as evaluation
import sample
import train
from conftest import TINY_UNET, prepare_derived, tiny_config
from data import audiocaps_maa, open_split, toyav, toyav_maa
from encoders import file_hash, save_png
from methods import load_checkpoint
from methods.maa import Fusion, MakeAnAudioBind, Pipeline, token_loss

# the toy Make-An-Audio route at tiny size: a U-Net cross-attending to the tiny toy CLAP's tokens
TINY_T2A_TOKENS = dict(method='ldm', model_args=dict(
    net='unet', shape=(2, 32, 32), target='ae_audio_latent', ctx='clap_text_tokens',
    net_args=dict(TINY_UNET, ctx_dim=32)))
MAP = dict(emb_dim=32, n_tokens=16, token_dim=32, width=16, n_layer=1, n_head=2)
TINY_B = dict(method='maa', dataset='toyav_maa', model_args=dict(experiment='b', **MAP))
TINY_A = dict(method='maa', dataset='toyav_maa', freeze=['generator'],
              model_args=dict(experiment='a', generator=TINY_T2A_TOKENS['model_args'], **MAP))
SMALL = dict(emb_dim=8, n_tokens=3, token_dim=6, width=16, n_layer=1, n_head=2)


def every_caption():
    """Every toyav caption: each source or pair of sources in each place at each loudness."""
    n = len(toyav.SOURCES)
    sets = [[s] for s in range(n)] + [list(p) for p in itertools.combinations(range(n), 2)]
    settings = itertools.product(sets, range(len(toyav.ENVS)), range(len(toyav.LOUDNESS)))
    return [toyav.caption(sources, env, loud) for sources, env, loud in settings]


def small_read(**options):
    """A few toyav_maa rows."""
    return toyav_maa.read(None, seed=5, image_size=32, sample_rate=16000, duration=1.0, n_train=8,
                          n_val=4, n_test=4, **options)


# ----------------------------------------------------------------------------- data


def test_the_rule_splits_every_caption_into_toyavs_exclusive_parts():
    for full, text, visual in every_caption():
        got = toyav_maa.split_caption(full)
        assert got == (text, visual), full
        toyav_maa.check_split(full, *got)
        assert not toyav_maa.content_words(got[0]) & toyav_maa.content_words(got[1])
        assert toyav_maa.content_words(got[1])                     # a place is always said
        assert not set(got[1].split()) & {w for s in toyav.SOURCES for w in s[:2]}


@pytest.mark.parametrize('text, visual, why', [
    ('a loud bell ringing in a hall', 'in a large hall', 'both say hall'),
    ('a loud bell', 'in a large hall', 'loses ringing'),
])
def test_a_split_that_shares_or_loses_a_content_word_is_refused(text, visual, why):
    with pytest.raises(ValueError, match=why):
        toyav_maa.check_split('a loud bell ringing in a large hall', text, visual)


def test_the_place_picture_is_the_background_alone():
    out = small_read()
    world = toyav.read(None, seed=5, image_size=32, sample_rate=16000, duration=1.0, n_train=8,
                       n_val=4, n_test=4)
    for i, split in enumerate(('train', 'val', 'test')):
        rng = np.random.default_rng(5 + toyav_maa.SEED_OFFSET + i)
        for row, same in zip(out['splits'][split], world['splits'][split]):
            assert np.array_equal(row['wave'], same['wave'])           # toyav's rows
            assert row['caption']['caption'] == same['caption']['caption']
            background = toyav.background(row['env'], 32, rng).astype(np.uint8)
            assert np.array_equal(row['image'], background)          # no object pixel
            assert len(np.unique(row['image'].reshape(-1, 3), axis=0)) <= 2   # two tones
            scene = len(np.unique(same['image'].reshape(-1, 3), axis=0))
            assert scene > 2                                          # toyav's has its objects
    assert out['meta']['parts'] == 'toyav' and out['meta']['texts'] == {'text': 'part'}


def test_a_visual_part_naming_no_place_is_refused():
    with pytest.raises(ValueError, match='names no toyav place'):
        toyav_maa.place_picture('in a kitchen', 32, np.random.default_rng(0))


def test_splitter_and_renderer_hooks_replace_the_rule_and_the_backgrounds(monkeypatch):
    def splitter(caption):
        words = caption.split()
        return ' '.join(words[:-1]), words[-1]                      # only the last word seen

    def renderer(visual, size, rng):
        return np.full((size, size, 3), len(visual), np.uint8)
    module = type('Module', (), {'split': staticmethod(splitter), 'draw': staticmethod(renderer)})
    importer = type('Importer', (), {'import_module': staticmethod(lambda name: module)})
    monkeypatch.setattr(toyav_maa, 'importlib', importer)
    out = small_read(splitter='lm:split', renderer='t2i:draw')
    row = out['splits']['train'][0]
    assert row['caption']['visual'] == row['caption']['caption'].split()[-1]
    assert (row['image'] == len(row['caption']['visual'])).all()
    assert out['meta']['splitter'] == 'lm:split'
    module.split = staticmethod(lambda caption: (caption, caption.split()[-1]))
    with pytest.raises(ValueError, match='both say'):
        small_read(splitter='lm:split')


def test_sound_caption_pairs_are_split_and_pictured_by_the_hooks(tmp_path, monkeypatch):
    (tmp_path / 'audio').mkdir()
    for name in ('a.wav', 'b.wav', 'c.wav'):
        sf.write(tmp_path / 'audio' / name, 0.1 * np.ones(8000, np.float32), 16000)
    rows = ['file,caption', 'a.wav,a dog barks in a park', 'c.wav,rain falls on a tin roof',
            'b.wav,a man speaks then a dog barks', 'gone.wav,a bell rings in a church']
    (tmp_path / 'pairs.csv').write_text('\n'.join(rows) + '\n')

    def renderer(visual, size, rng):
        return np.full((size, size, 3), len(visual), np.uint8)
    module = type('Module', (), {'draw': staticmethod(renderer)})
    importer = type('Importer', (), {'import_module': staticmethod(lambda name: module)})
    monkeypatch.setattr(toyav_maa, 'importlib', importer)
    common = dict(seed=0, image_size=8, sample_rate=16000, duration=1.0)
    with pytest.raises(ValueError, match='--renderer'):
        audiocaps_maa.read(str(tmp_path), **common)
    out = audiocaps_maa.read(str(tmp_path), renderer='t2i:draw', val_fraction=0.5, **common)
    train_rows, val_rows = out['splits']['train'], out['splits']['val']
    parts = [(r['caption']['text'], r['caption']['visual']) for r in train_rows + val_rows]
    assert parts == [('a dog barks', 'in a park'), ('rain falls', 'on a tin roof')]
    assert len(val_rows) == 1 and val_rows[0]['file'] == 'audio/c.wav'
    assert (train_rows[0]['image'] == len('in a park')).all()
    assert train_rows[0]['wave'].shape == (16000,)
    assert len(out['skipped']) == 1 and 'says no place' in out['skipped'][0]
    assert out['missing'][1] == ['row 5 gone.wav']


# ----------------------------------------------------------------------------- fusion, losses


@pytest.mark.parametrize('kind', ['average', 'weighted', 'attention'])
def test_each_fusion_makes_one_embedding_of_two(kind):
    torch.manual_seed(0)
    text = torch.randn(5, 8)
    image = torch.randn(5, 8)
    fusion = Fusion(kind, 8, alpha=0.3)
    fused = fusion(text, image)
    assert fused.shape == (5, 8)
    both = torch.stack([F.normalize(text, dim=-1), F.normalize(image, dim=-1)], 1)   # (5, 2, 8)
    weights = fusion.weights(both)
    assert weights.shape == (5, 2)
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    torch.testing.assert_close(fused, (weights[..., None] * both).sum(1))
    expected = {'average': [0.5, 0.5], 'weighted': [0.3, 0.7]}
    if kind in expected:
        torch.testing.assert_close(weights, torch.tensor([expected[kind]]).expand(5, 2))
    else:
        assert weights.std(0).max() > 0                             # its own weights per row


def test_learned_weights_get_gradients_and_fixed_ones_have_none():
    text = torch.randn(4, 8)
    image = torch.randn(4, 8)
    learned = Fusion('weighted', 8, learn_alpha=True)
    learned(text, image).pow(2).sum().backward()
    assert learned.alpha_logit.requires_grad and learned.alpha_logit.grad.abs() > 0
    assert list(Fusion('weighted', 8).parameters()) == []            # alpha fixed: a buffer
    attention = Fusion('attention', 8)
    attention(text, image).pow(2).sum().backward()
    grads = [p.grad for p in attention.parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_experiment_b_loss_is_two_mse_plus_one_minus_cosine():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(4, 3, 6, generator=g)
    target = torch.randn(4, 3, 6, generator=g)
    mse = ((pred - target) ** 2).mean()
    cos = (pred * target).sum(-1) / (pred.norm(dim=-1) * target.norm(dim=-1))          # (4, 3)
    torch.testing.assert_close(token_loss(pred, target), 2 * mse + 1 - cos.mean())
    torch.testing.assert_close(token_loss(pred, target, 1.0, 0.0), mse)
    assert token_loss(target, target).abs() < 1e-6
    model = MakeAnAudioBind(**SMALL)
    batch = {'imagebind_part_emb': torch.randn(4, 8, generator=g),
             'imagebind_image_emb': torch.randn(4, 8, generator=g), 'clap_text_tokens': target}
    tokens = model.predict(batch['imagebind_part_emb'], batch['imagebind_image_emb'])
    assert tokens.shape == (4, 3, 6)
    torch.testing.assert_close(model(batch), token_loss(tokens, target))
    assert model.generator is None and set(model.param_groups()) == {'map'}


def test_one_embedding_alone_is_the_baselines_input():
    model = MakeAnAudioBind(**SMALL, fusion='attention')
    image = torch.randn(2, 8)
    torch.testing.assert_close(model.fuse(None, image), F.normalize(image, dim=-1))
    assert model.predict(image=image).shape == (2, 3, 6)


def test_experiment_a_holds_the_generator_and_b_does_not():
    with pytest.raises(AssertionError, match='only A'):
        MakeAnAudioBind(experiment='a', **SMALL)
    with pytest.raises(AssertionError, match='only A'):
        MakeAnAudioBind(experiment='b', generator=TINY_T2A_TOKENS['model_args'], **SMALL)


def test_experiment_as_generator_is_the_toy_make_an_audio_config():
    def config(path):
        scope = {}
        exec(open(path).read(), {}, scope)
        return scope
    generator = config('config/maa_a.py')['model_args']['generator']
    assert generator == config('config/ldm_tokens.py')['model_args']


# ----------------------------------------------------------------------------- tiny runs


@pytest.fixture(scope='module')
def maa(tiny):
    """toyav_maa made with tiny's parts, a tiny generator reading CLAP tokens and a B run."""
    prepare_derived(tiny, 'toyav_maa', '--n_train', '48', '--n_val', '16', '--n_test', '16')
    generator = tiny / 'out' / 'toyav_t2a_tokens'
    train.train(tiny_config(tiny, 'clip', out_dir=str(generator), **TINY_T2A_TOKENS))
    run = tiny / 'out' / 'toyav_maa'
    train.train(tiny_config(tiny, 'clip', out_dir=str(run), **TINY_B))
    return run


def frozen_hashes(tiny):
    """The file hashes of the frozen parts a run stands on."""
    names = ('imagebind', 'clap', 'ae_audio', 't2a_tokens')
    return {n: file_hash(tiny / 'out' / f"toyav_{n}" / 'ckpt.pt') for n in names}


def test_the_cache_holds_the_text_parts_and_the_place_pictures_encodings(tiny, maa):
    root = tiny / 'data' / 'toyav_maa'
    fields = json.loads((root / 'features.json').read_text())['fields']
    assert {'imagebind_part_emb', 'imagebind_image_emb', 'clap_text_tokens'} <= set(fields)
    captions = json.loads((root / 'captions.json').read_text())['train']
    part = np.load(root / 'train_imagebind_part_emb.npy')
    whole = np.load(root / 'train_imagebind_text_emb.npy')
    assert part.shape == whole.shape and not np.allclose(part, whole)
    ckpt = torch.load(maa / 'ckpt.pt', weights_only=True)
    assert ckpt['data']['parts'] == 'toyav' and ckpt['method'] == 'maa'
    assert captions[0]['text'] + ' ' + captions[0]['visual'] == captions[0]['caption']


def test_b_trains_without_touching_the_generator_or_the_encoders(tiny, maa, tmp_path):
    before = frozen_hashes(tiny)
    run = tmp_path / 'b'
    train.train(tiny_config(tiny, 'clip', out_dir=str(run), **TINY_B))
    assert frozen_hashes(tiny) == before
    ckpt = torch.load(run / 'ckpt.pt', weights_only=True)
    assert not any(k.startswith('generator.') for k in ckpt['model'])
    model, _ = load_checkpoint(str(run))                   # the val metric, measured again
    data, _ = open_split(str(tiny / 'data'), 'toyav_maa', 'val', model.fields, str(tiny / 'out'))
    batch = {f: torch.as_tensor(np.array(data[f][:8])) for f in model.fields}
    with torch.no_grad():
        tokens = model.predict(batch[model.fields[0]], batch[model.fields[1]])
    cos = F.cosine_similarity(tokens, batch['clap_text_tokens'].float(), dim=-1).mean()
    assert model.metrics(batch) == pytest.approx({'token_cos': cos.item()}, abs=1e-6)
    assert set(ckpt['val_metrics']) == {'token_cos'}
    assert -1 <= ckpt['val_metrics']['token_cos'] <= 1


def test_a_trains_through_the_frozen_generator_then_stage_2_moves_it(tiny, maa, tmp_path,
                                                                      monkeypatch):
    before = frozen_hashes(tiny)
    seen = []
    forward = MakeAnAudioBind.forward

    def spy(self, batch):
        if self.training:                                    # training steps, not evaluations
            grads = any(p.requires_grad for p in self.generator.parameters())
            seen.append((self.generator.training, grads))
        return forward(self, batch)
    monkeypatch.setattr(MakeAnAudioBind, 'forward', spy)
    stage1 = tmp_path / 'a'
    train.train(tiny_config(tiny, 'clip', out_dir=str(stage1), **TINY_A))
    assert seen and set(seen) == {(False, False)}             # eval mode, no gradients
    assert frozen_hashes(tiny) == before
    generator, _ = load_checkpoint(str(tiny / 'out' / 'toyav_t2a_tokens'))
    a, _ = load_checkpoint(str(stage1))
    mine = a.generator.state_dict()
    assert all(torch.equal(v, mine[k]) for k, v in generator.state_dict().items())
    seen.clear()
    stage2 = tmp_path / 'a2'
    train.train(tiny_config(tiny, 'clip', out_dir=str(stage2), init_from=str(stage1),
                            lr_groups=dict(generator=1e-5), **dict(TINY_A, freeze=[])))
    assert set(seen) == {(True, True)}
    a2, _ = load_checkpoint(str(stage2))
    moved = a2.generator.state_dict()
    assert any(not torch.equal(v, moved[k]) for k, v in mine.items())
    out = tmp_path / 'sample'
    sample.main(['--ckpt', str(stage2), '--ckpt_dir', str(tiny / 'out'), '--text', 'a loud dog',
                 '--image', str(place_png(tmp_path)), '--steps=2', '--out', str(out),
                 '--dtype', 'float32'])
    assert (tmp_path / 'sample.ti2a.wav').exists()


def test_a_refuses_a_generator_run_of_other_arguments(tiny, maa):
    other = dict(TINY_T2A_TOKENS['model_args'], shape=(2, 16, 16))
    model = MakeAnAudioBind(experiment='a', generator=other, **MAP)
    with pytest.raises(ValueError, match="model_args\\['generator'\\] asks for"):
        model.setup(dict(ckpt_dir=str(tiny / 'out'), parts='toyav'))


def place_png(tmp_path, visual='in a tunnel'):
    """A picture of a toyav place alone, written as a png."""
    path = tmp_path / 'place.png'
    save_png(str(path), toyav_maa.place_picture(visual, 32, np.random.default_rng(0)))
    return path


def test_ti2a_runs_from_words_and_a_picture_through_sample_py(tiny, maa, tmp_path):
    argv = ['--ckpt', str(maa), '--ckpt_dir', str(tiny / 'out'), '--text', 'a loud dog barking',
            '--image', str(place_png(tmp_path)), '--steps=2', '--dtype', 'float32']
    sample.main(argv + ['--out', str(tmp_path / 'dog')])
    wave, rate = sf.read(tmp_path / 'dog.ti2a.wav')
    assert rate == 16000 and len(wave) > 0 and np.isfinite(wave).all()
    spec = np.asarray(Image.open(tmp_path / 'dog.ti2a.spec.png'))
    assert spec.ndim == 3
    sample.main(argv + ['--route=image', '--out', str(tmp_path / 'alone')])
    assert (tmp_path / 'alone.ti2a.wav').exists()


def test_a_generator_reading_a_vector_is_refused(tiny, maa, tmp_path):
    model, ckpt = load_checkpoint(str(maa))
    vec = tmp_path / 't2a'
    options = dict(steps=2, cfg_scale=3.0, route='fused', generator=str(vec))
    spec = dict(method='ldm', model_args=dict(
        net='unet', shape=(2, 32, 32), target='ae_audio_latent', vec='clap_audio_emb',
        net_args=dict(TINY_UNET, vec_dim=32)))
    train.train(tiny_config(tiny, 'clip', out_dir=str(vec), max_iters=1, eval_interval=1, **spec))
    with pytest.raises(ValueError, match='reading tokens alone'):
        Pipeline(model, ckpt, str(tiny / 'out'), **options)


def test_eval_judges_ti2a_on_the_text_part_and_the_baselines(tiny, maa, tmp_path):
    base = dict(evaluation.default_config(), data_dir=str(tiny / 'data'), dataset='toyav_maa',
                ckpt_dir=str(tiny / 'out'), ckpt=str(maa), tasks='ti2a', caption='text',
                n_eval=8, n_diverse=0, batch_size=8, options=dict(steps=2), dtype='float32')
    fused = evaluation.evaluate(dict(base, out_dir=str(tmp_path / 'fused')))
    for key in ('source_acc', 'env_acc', 'loudness_rho', 'fd', 'fd_floor', 'sec_per_sample'):
        assert f"ti2a.{key}" in fused, key
    image = evaluation.evaluate(dict(base, options=dict(steps=2, route='image'),
                                     out_dir=str(tmp_path / 'image')))
    assert 'ti2a.env_acc' in image
    generator = str(tiny / 'out' / 'toyav_t2a_tokens')
    text = evaluation.evaluate(dict(base, ckpt=generator, tasks='t2a', options=dict(steps=2),
                                    out_dir=str(tmp_path / 'text')))
    assert 't2a.env_acc' in text
    with pytest.raises(ValueError, match="caption='place'"):
        evaluation.evaluate(dict(base, caption='place', out_dir=str(tmp_path / 'bad')))
