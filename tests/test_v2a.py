"""V2A-Mapper: regression and diffusion-prior mappers, guidance, condition dropout, frame
aggregation, training."""
import glob
import os

import numpy as np
import pytest
import torch

from data import open_split
import train
from configurator import configure
from conftest import tiny_config
from methods import NETWORKS
from methods.v2a import V2AMapper, aggregate_frames
from model import guided

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = [('mlp', False), ('transformer', False), ('mlp', True), ('transformer', True)]


def tiny_mapper(kind='mlp', prior=True, **kw):
    torch.manual_seed(0)
    return V2AMapper(kind=kind, prior=prior, in_dim=12, out_dim=8, width=32, n_layer=2, n_head=2,
                     **kw)


def pairs(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, 12, generator=g)
    audio = torch.randn(n, 8, generator=g)
    return {'clip_image_emb': image, 'clap_audio_emb': audio}


@pytest.mark.parametrize('kind,prior', VARIANTS)
def test_each_variant_overfits_a_tiny_batch(kind, prior):
    model = tiny_mapper(kind, prior, p_uncond=0.0)
    batch = pairs()
    # the same timesteps and noise
    fixed = lambda: model(batch, rng=torch.Generator().manual_seed(1)).item()
    first = fixed()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert fixed() < 0.1 * first


@pytest.mark.parametrize('kind', ['mlp', 'transformer'])
def test_prior_samples_for_any_number_of_steps(kind):
    """`steps` guided network calls, one per timestep from T - 1 down to T / steps - 1.

    The chain ends clean, so an x0-predicting prior's sample is its last guided estimate.
    """
    model = tiny_mapper(kind).eval()
    cond = pairs(5)['clip_image_emb']
    with torch.no_grad():
        model.null.normal_()  # a null unlike any condition: guidance moves the estimate
    calls = []
    predict = model.predict

    def recording_predict(x, t, cond):
        calls.append((t, predict(x, t, cond)))
        return calls[-1][1]
    model.predict = recording_predict
    for steps in (1, 4, 25):
        for sampler in ('ddim', 'ddpm'):
            calls.clear()
            out = model.generate(cond, steps=steps, cfg=2.0, sampler=sampler,
                                 rng=torch.Generator().manual_seed(0))
            ts = [t.unique().tolist() for t, _ in calls]   # (2B,) t: conditional and null halves
            expected = [[1000 // steps * (steps - i) - 1] for i in range(steps)]   # T = 1000
            assert ts == expected, (steps, sampler)
            c, u = calls[-1][1].chunk(2)                    # (B, 8) each
            torch.testing.assert_close(out, u + 2.0 * (c - u), rtol=0, atol=0)


def test_prior_sampling_with_an_exact_denoiser_recovers_the_target_distribution():
    """With the posterior mean of a Gaussian target N(c, 0.3²) as the network, samples have its
    mean and spread."""
    model = tiny_mapper().eval()
    std = 0.3

    def exact(x, t, cond):  # E[x0 | x_t] for x0 ~ N(mu, std²), mu = the condition's first entry
        a = model.diffusion._ab(t, x)
        mu = cond[:, :1]
        return mu + a.sqrt() * std ** 2 / (a * std ** 2 + 1 - a) * (x - a.sqrt() * mu)
    model.predict = exact
    cond = torch.full((500, 12), 2.0)
    for steps, sampler in ((25, 'ddim'), (50, 'ddpm')):
        g = torch.Generator().manual_seed(0)
        out = model.generate(cond, steps=steps, sampler=sampler, rng=g)
        assert abs(out.mean().item() - 2.0) < 0.01, (sampler, out.std())
        assert abs(out.std().item() - std) < 0.04, (sampler, out.std())


def test_same_seed_same_samples_and_regression_is_deterministic():
    model = tiny_mapper().eval()
    cond = pairs(6)['clip_image_emb']

    def sample(seed, sampler):
        g = torch.Generator().manual_seed(seed)
        return model.generate(cond, steps=4, rng=g, sampler=sampler)
    for sampler in ('ddim', 'ddpm'):
        torch.testing.assert_close(sample(0, sampler), sample(0, sampler), rtol=0, atol=0)
        assert not torch.allclose(sample(0, sampler), sample(1, sampler))
    reg = tiny_mapper(prior=False).eval()
    a, b = (reg.generate(cond, rng=torch.Generator().manual_seed(s)) for s in (0, 1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cfg_scale_one_is_the_conditional_prediction_and_zero_the_unconditional():
    model = tiny_mapper().eval()
    cond = pairs(4)['clip_image_emb']
    with torch.no_grad():
        model.null.normal_()  # a null unlike any condition
    x = torch.randn(4, 8)
    t = torch.tensor([0, 10, 500, 999])
    null = dict(cond=model.null.expand_as(cond))
    with torch.no_grad():
        c = model.predict(x, t, cond)
        u = model.predict(x, t, model.null.expand_as(cond))
        torch.testing.assert_close(guided(model.predict, 1.0, null)(x, t, cond=cond), c)
        torch.testing.assert_close(guided(model.predict, 0.0, null)(x, t, cond=cond), u)
        assert not torch.allclose(c, u, atol=1e-3)
        x_T = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
        unguided = guided(model.predict, 1.0, null)
        through_guided = model.diffusion.sample(unguided, x_T, dict(cond=cond), steps=4)
    sample = lambda cfg: model.generate(cond, steps=4, cfg=cfg,
                                        rng=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sample(1.0), through_guided)
    assert not torch.allclose(sample(3.0), through_guided)


def test_condition_dropout_replaces_the_condition_by_the_null():
    model = tiny_mapper(p_uncond=1.0)
    batch = pairs()
    other = dict(batch, clip_image_emb=torch.randn(16, 12))
    loss = lambda b: model(b, rng=torch.Generator().manual_seed(3))
    # every condition dropped: the source cannot matter
    assert loss(batch).item() == loss(other).item()
    loss(batch).backward()
    assert model.null.grad is not None
    assert model.null.grad.abs().sum() > 0
    kept = tiny_mapper(p_uncond=0.0)
    kept(batch).backward()
    assert kept.null.grad is None or kept.null.grad.abs().sum() == 0
    dropped = loss(batch).item()
    kept_loss = tiny_mapper(p_uncond=0.0)(batch, rng=torch.Generator().manual_seed(3))
    assert dropped != kept_loss.item()
    fixed = tiny_mapper(learn_null=False, p_uncond=0.1)
    assert torch.equal(fixed.null, torch.zeros(12))
    assert 'null' in dict(fixed.named_buffers())
    assert not any(n == 'null' for n, _ in fixed.named_parameters())


def test_aggregate_frames():
    emb = torch.randn(64, 5, 3)
    torch.testing.assert_close(aggregate_frames(emb, 'middle'), emb[:, 2])
    # F // 2 for an even count too
    assert torch.equal(aggregate_frames(emb[:, :4], 'middle'), emb[:, 2])
    torch.testing.assert_close(aggregate_frames(emb, 'mean'), emb.mean(1))
    pick = lambda seed: aggregate_frames(emb, 'random', torch.Generator().manual_seed(seed))
    assert torch.equal(pick(0), pick(0))
    assert not torch.equal(pick(0), pick(1))
    chosen = (pick(0)[:, None] == emb).all(-1)  # (B, F) which frame each row came from
    assert (chosen.sum(1) == 1).all()
    assert len(chosen.float().argmax(1).unique()) > 1
    with pytest.raises(ValueError, match='frame aggregation'):
        aggregate_frames(emb, 'first')


def test_video_frames_are_aggregated_before_mapping():
    frames = torch.randn(3, 7, 12)
    for how in ('middle', 'mean'):
        model = tiny_mapper(prior=False, frames=how).eval()
        one_frame = aggregate_frames(frames, how)
        torch.testing.assert_close(model.generate(frames), model.generate(one_frame))


def test_normalize_maps_unit_vectors_to_unit_vectors():
    model = tiny_mapper(normalize=True).eval()
    batch = pairs(4)
    scaled = model.scaled(batch['clip_image_emb'])
    torch.testing.assert_close(scaled.norm(dim=-1), torch.full((4,), 12 ** 0.5))
    g = torch.Generator().manual_seed(0)
    out = model.generate(batch['clip_image_emb'], steps=4, rng=g)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))


def test_configs_build_their_mapper():
    configs = sorted(glob.glob(os.path.join(ROOT, 'config', '*v2a*.py')))
    paths = [p for p in configs if not p.endswith('_eval.py')]
    assert len(paths) == 5
    for path in paths:
        cfg = configure(train.default_config(), [path])
        model = NETWORKS[cfg['method']](**cfg['model_args'])
        video = 'vggsound' in path          # VGGSound maps the embeddings of a clip's ten frames
        visual = 'clip_frames_emb' if video else 'clip_image_emb'
        assert model.fields == [visual, 'clap_audio_emb'], path
        emb = torch.randn(2, *[10] * video, model.embed_c.in_features)
        assert model.generate(emb, steps=2).shape == (2, model.head.out_features)


@pytest.mark.parametrize('kind,prior', [('mlp', False), ('transformer', True)])
def test_train_py_trains_a_mapper_on_cached_features(tiny, kind, prior):
    """Six steps of train.py on the cached CLIP/CLAP pairs.

    The EMA mapper fits the test split's pairs far better than the initialisation train.py starts
    from.
    """
    args = dict(kind=kind, prior=prior, in_dim=32, out_dim=32, width=32, n_layer=1, n_head=2)
    cfg = tiny_config(tiny, 'clip', method='v2a', model_args=args,
                      out_dir=str(tiny / 'out' / f'v2a_{kind}_{prior}'), max_iters=6,
                      eval_interval=3, ema_decay=0.9)
    ckpt = torch.load(train.train(cfg), weights_only=True)
    assert ckpt['iter_num'] == 6
    assert ckpt['method'] == 'v2a'
    torch.manual_seed(cfg['seed'])
    start = V2AMapper(**ckpt['model_args'])                 # train.py seeds, then builds
    model = V2AMapper(**ckpt['model_args'])
    model.load_state_dict(ckpt['ema'])
    data, _ = open_split(cfg['data_dir'], 'toyav', 'test', model.fields, cfg['ckpt_dir'])
    batch = {k: torch.from_numpy(np.array(v)) for k, v in data.items()}   # (16, 32) each
    with torch.no_grad():
        # the same timesteps and noise
        loss = lambda net: net(batch, rng=torch.Generator().manual_seed(0)).item()
        assert loss(model) < 0.5 * loss(start)
