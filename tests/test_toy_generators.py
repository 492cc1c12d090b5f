"""The toy generators: a media autoencoder, latent diffusion with UNet or DiT, their eval tasks
and sample.py --text."""
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import eval as evaluation
import sample
import train
from conftest import TINY_T2A, TINY_UNET, tiny_config, tiny_v2a
from encoders import load_toy
from model import LatentDiffusion, MediaAutoencoder

DIT = dict(input_size=32, patch_size=8, in_channels=3, hidden_size=16, depth=1, num_heads=2,
           ctx_dim=32, vec_dim=32, learn_sigma=False)
T2I = dict(method='ldm', model_args=dict(net='dit', shape=(3, 32, 32), target='image',
                                         ctx='clip_text_tokens', vec='clip_text_emb', net_args=DIT))


def test_autoencoder_measures_its_latent_scale_and_round_trips_shapes():
    torch.manual_seed(0)
    ae = MediaAutoencoder('audio', channels=(8, 16, 16), latent=3, groups=4, mel_mean=-5.0,
                          mel_std=2.0)
    mels = torch.randn(4, 64, 64) * 2 - 5
    assert ae.encode(mels).shape == (4, *ae.shape) == (4, 3, 16, 16)
    assert ae.decode(ae.encode(mels)).shape == mels.shape
    before = ae.latent_std.clone()
    ae(dict(mel=mels)).backward()
    assert ae.latent_std != before                       # the running std moves in training ...
    trained = ae.latent_std.clone()
    ae.eval()(dict(mel=mels))
    assert torch.equal(trained, ae.latent_std)           # ... and not in evaluation


def test_dropped_conditions_are_the_null_and_vectors_are_unit():
    unet = LatentDiffusion('unet', dict(TINY_UNET, vec_dim=4), (2, 8, 8), vec='v')
    dit = LatentDiffusion('dit', DIT, (3, 32, 32), target='image', ctx='c')
    cond = {'vec': torch.randn(3, 4) * 5}
    drop = torch.tensor([False, True, False])
    c = unet.conditions(cond, {'vec': drop})['vec']
    assert torch.equal(c[1], torch.zeros(4))
    assert torch.allclose(c[[0, 2]].norm(dim=-1), torch.ones(2))
    d = dit.conditions({'ctx': torch.randn(3, 5, 32)}, {'ctx': drop})
    assert torch.equal(d['drop_ctx'], drop)
    assert d['ctx'].shape == (3, 5, 32)
    assert 'drop_vec' not in d


def test_generate_is_seeded_and_guidance_changes_the_sample():
    torch.manual_seed(0)
    ldm = LatentDiffusion('unet', dict(TINY_UNET, vec_dim=4), (2, 8, 8), vec='v').eval()
    for p in ldm.net.conv_out.parameters():
        torch.nn.init.normal_(p, std=0.1)                # a non-zero network, as after training
    cond = {'vec': torch.randn(2, 4)}
    run = lambda s: ldm.generate(cond, steps=3, cfg=s, rng=torch.Generator().manual_seed(1))
    a = run(1.0)
    b = run(1.0)
    assert a.shape == (2, 2, 8, 8)
    assert torch.equal(a, b)
    assert not torch.allclose(run(3.0), a)


def test_toy_generators_train_sample_and_evaluate(tiny, tmp_path):
    for name, spec in (('t2a', TINY_T2A), ('t2i', T2I)):
        cfg = tiny_config(tiny, 'clip', out_dir=str(tmp_path / name), **spec)
        train.train(cfg)
    ae = load_toy('ae_audio', out_dir=str(tiny / 'out'))
    assert not ae.training
    assert not any(p.requires_grad for p in ae.parameters())
    sample.main(['--ckpt', str(tmp_path / 't2a'), '--text', 'a loud dog barking in a tunnel',
                 '--n', '3', '--steps', '2', '--ckpt_dir', str(tiny / 'out'),
                 '--out', str(tmp_path / 'dog')])
    for j in range(3):
        wave, sr = sf.read(tmp_path / f'dog.t2a.{j}.wav')
        assert sr == 16000
        assert len(wave) > 15000
        assert (tmp_path / f'dog.t2a.{j}.spec.png').exists()
    sample.main(['--ckpt', str(tmp_path / 't2i'), '--text', 'a quiet bell ringing', '--steps', '2',
                 '--ckpt_dir', str(tiny / 'out'), '--out', str(tmp_path / 'bell')])
    assert np.asarray(Image.open(tmp_path / 'bell.t2i.raw.png')).shape == (32, 32, 3)
    assert np.asarray(Image.open(tmp_path / 'bell.t2i.png')).shape == (256, 256, 3)
    with pytest.raises(SystemExit, match='--text'):
        sample.main(['--ckpt', str(tmp_path / 't2i'), '--ckpt_dir', str(tiny / 'out'),
                     '--out', str(tmp_path / 'x')])
    for task in ('t2a', 't2i'):
        cfg = dict(evaluation.default_config(), out_dir=str(tmp_path / f'eval_{task}'),
                   data_dir=str(tiny / 'data'), ckpt_dir=str(tiny / 'out'),
                   ckpt=str(tmp_path / task), tasks=task, options=dict(steps=2), n_diverse=2,
                   n_outputs=2, batch_size=8)
        m = evaluation.evaluate(cfg)
        rank_key = 'loudness_rho' if task == 't2a' else 'size_rho'
        keys = ('source_acc', 'env_acc', 'fd', 'fd_floor', 'cs', 'diversity', 'sec_per_sample',
                'sec_per_sample_b32', rank_key)
        for key in keys:
            assert f'{task}.{key}' in m, key
        assert 0 <= m[f'{task}.source_acc'] <= 1
        assert m[f'{task}.fd'] > 0


def test_v2a_mapper_drives_the_generator_from_pictures_videos_and_baselines(tiny, real_data,
                                                                           tmp_path):
    for name, spec in (('t2a', TINY_T2A), ('v2a', tiny_v2a(prior=True))):
        train.train(tiny_config(tiny, 'clip', out_dir=str(tmp_path / name), **spec))
    mapper = str(tmp_path / 'v2a')
    common = ['--ckpt_dir', str(tiny / 'out'), '--generator', str(tmp_path / 't2a'), '--steps', '2']
    rgba = tmp_path / 'cat.png'
    Image.new('RGBA', (40, 30), (0, 200, 0, 100)).save(rgba)
    sample.main(['--ckpt', mapper, '--image', str(rgba), '--n', '2',
                 '--out', str(tmp_path / 'cat')] + common)
    a, b = (sf.read(tmp_path / f'cat.i2a.{j}.wav')[0] for j in range(2))
    assert len(a) > 15000
    assert not np.allclose(a, b)                            # two prior samples, two sounds
    video = next((real_data / 'vggsound' / 'video').glob('*.mp4'))
    for frames in ('middle', 'mean'):
        sample.main(['--ckpt', mapper, '--video', str(video), '--frames', frames,
                     '--interp', 'a quiet bird', '--alpha', '0.5',
                     '--out', str(tmp_path / f'clip_{frames}')] + common)
        assert sf.info(str(tmp_path / f'clip_{frames}.i2a.wav')).samplerate == 16000
    with pytest.raises(SystemExit, match='--image'):
        sample.main(['--ckpt', mapper, '--text', 'a dog', '--out', str(tmp_path / 'x')] + common)
    base = dict(evaluation.default_config(), data_dir=str(tiny / 'data'),
                ckpt_dir=str(tiny / 'out'), tasks='i2a', n_diverse=2, n_outputs=2, batch_size=8,
                method='v2a')
    options = dict(steps=2, generator=str(tmp_path / 't2a'),
                   captions=str(tiny / 'data' / 'toyav' / 'captions.json'))
    rows = {'mapper': dict(ckpt=mapper, options=options),
            'clip': dict(ckpt=str(tmp_path / 't2a'), options=dict(options, route='clip')),
            'caption': dict(ckpt=str(tmp_path / 't2a'), options=dict(options, route='caption'))}
    results = {}
    for k, v in rows.items():
        results[k] = evaluation.evaluate(dict(base, out_dir=str(tmp_path / k), **v))
    for m in results.values():
        assert {'i2a.source_acc', 'i2a.env_acc', 'i2a.loudness_rho', 'i2a.fd', 'i2a.fd_floor',
                'i2a.diversity', 'i2a.cs', 'i2a.sec_per_sample'} <= set(m)
    # the routes condition differently
    assert results['clip']['i2a.fd'] != results['caption']['i2a.fd']
