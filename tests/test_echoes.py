"""Visual Echoes: masking, the decoder as a pure function, off-the-shelf CFG, the whole model."""
import math

import numpy as np
import pytest
import torch

from data import open_split
import sample
import train
from conftest import TINY_ECHOES, tiny_config
from methods import echoes
from methods.echoes import JOINT_STEPS, MaskedAVTransformer, random_mask, truncated_normal
from model import cfg_logits, decode, joint_cfg_logits, mask_schedule

SMALL = dict(n_audio=12, n_image=6, audio_codes=20, image_codes=10, width=32, n_layer=1,
             n_dec_layer=1, n_head=2)


def test_mask_schedule_endpoints_and_monotone():
    assert mask_schedule(0.0) == 1.0
    assert mask_schedule(1.0) == pytest.approx(0.0, abs=1e-12)
    values = [mask_schedule(i / 10) for i in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_truncated_normal_stays_in_range_and_has_its_mean():
    x = truncated_normal((20000,), 0.55, 0.25, 0.2, 1.0, torch.Generator().manual_seed(0))
    assert x.min() >= 0.2
    assert x.max() <= 1.0
    assert abs(x.mean().item() - 0.57) < 0.02       # the mean of N(0.55, 0.25) cut to [0.2, 1]


def test_random_mask_hides_the_requested_count():
    m = random_mask(10, torch.tensor([0.0, 0.3, 1.0]), torch.Generator().manual_seed(0))
    assert m.sum(1).tolist() == [0, 3, 10]


def test_training_masks_include_whole_visible_and_whole_hidden_modalities():
    gen = torch.Generator().manual_seed(0)

    def ratios(p_cond, p_uncond):
        """The hidden share of the audio and of the image positions in 4000 training masks."""
        net = MaskedAVTransformer(**SMALL, p_cond=p_cond, p_uncond=p_uncond)
        mask = net.sample_masks(4000, gen)                                     # (4000, 18)
        return mask[:, :12].float().mean(1), mask[:, 12:].float().mean(1)

    audio, image = ratios(0.5, 0.2)
    visible = ((audio == 0) | (image == 0)).float().mean().item()
    audio_only = (audio == 1) & (image < 1)
    image_only = (image == 1) & (audio < 1)
    hidden = (audio_only | image_only).float().mean().item()
    assert abs(visible - 0.5) < 0.05
    assert hidden > 0.15
    audio, image = ratios(0.0, 0.0)
    assert min(audio.min(), image.min()) >= 2 / 12 - 1e-6  # co-training ratios stay above 0.2
    audio, image = ratios(1.0, 0.0)
    generated = torch.where(audio == 0, image, audio)
    assert ((audio == 0) ^ (image == 0)).all()
    mostly_hidden = (generated >= 11 / 12).float().mean().item()
    assert abs(mostly_hidden - 0.25) < 0.04                 # cos schedule: P(ratio > 0.92) = 0.25


def test_decode_fills_every_mask_and_never_changes_known_tokens():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (3, 20), generator=gen)
    known = torch.rand(3, 20, generator=gen) < 0.4
    calls = []

    def logits_fn(x, mask):
        calls.append(mask.sum().item())
        assert torch.equal(x[known], ids[known])
        return torch.randn(x.shape[0], x.shape[1], 7, generator=gen)

    out = decode(ids.masked_fill(~known, 0), known, logits_fn, steps=6, rng=gen)
    assert torch.equal(out[known], ids[known])
    assert out.shape == ids.shape
    assert out.min() >= 0
    assert out.max() < 7
    assert calls[0] == (~known).sum().item()
    assert calls == sorted(calls, reverse=True)
    assert len(calls) == 6


def test_decode_with_one_step_is_a_single_argmax_free_fill():
    logits = torch.full((1, 5, 3), -1e9)
    logits[..., 2] = 0                                          # only id 2 is possible
    start = torch.zeros(1, 5, dtype=torch.long)
    known = torch.zeros(1, 5, dtype=torch.bool)
    out = decode(start, known, lambda x, m: logits, steps=1)
    assert out.tolist() == [[2] * 5]


def test_sample_temperature_sharpens_the_token_samples_and_zero_is_the_argmax():
    logits = torch.zeros(1, 4000, 2)
    logits[..., 1] = 1.0                                        # p(id 1) = sigmoid(1 / T)
    start = torch.zeros(1, 4000, dtype=torch.long)
    known = torch.zeros(1, 4000, dtype=torch.bool)
    for T in (1.0, 0.5):
        out = decode(start, known, lambda x, m: logits, steps=1, sample_temperature=T,
                     rng=torch.Generator().manual_seed(0))
        p_one = torch.sigmoid(torch.tensor(1 / T)).item()
        assert abs(out.float().mean().item() - p_one) < 0.03
    assert decode(start, known, lambda x, m: logits, steps=1, sample_temperature=0).min() == 1


def test_cfg_scale_one_is_the_conditional_logits_and_other_scales_extrapolate():
    torch.manual_seed(0)
    model = MaskedAVTransformer(**SMALL, drop_ratio=0.0).eval()
    ids = torch.cat([torch.randint(0, 20, (2, 12)), torch.randint(0, 10, (2, 6))], 1)
    cond = torch.zeros(2, 18, dtype=torch.bool)
    cond[:, 12:] = True
    mask = ~cond
    fn = lambda x, m: model.logits(x, m)
    with torch.no_grad():
        torch.testing.assert_close(cfg_logits(fn, cond, 1.0)(ids, mask), fn(ids, mask))
        c = fn(ids, mask)
        u = fn(ids, mask | cond)
        g = cfg_logits(fn, cond, 3.0)(ids, mask)
    finite = torch.isfinite(c)
    torch.testing.assert_close(g[finite], (3 * c - 2 * u)[finite])
    assert torch.isinf(g[:, 12:, 10:]).all()   # image positions never predict beyond their codebook


def test_joint_cfg_guides_each_modality_by_the_other_decoded_so_far():
    torch.manual_seed(0)
    model = MaskedAVTransformer(**SMALL, drop_ratio=0.0).eval()
    ids = torch.cat([torch.randint(0, 20, (2, 12)), torch.randint(0, 10, (2, 6))], 1)
    mask = torch.rand(2, 18) < 0.5                          # part of each modality decoded
    audio = torch.arange(18) < 12                           # (N,)
    fn = lambda x, m: model.logits(x, m)
    with torch.no_grad():
        torch.testing.assert_close(joint_cfg_logits(fn, audio, 1.0)(ids, mask), fn(ids, mask))
        g = joint_cfg_logits(fn, audio, 3.0)(ids, mask)
        c = fn(ids, mask)
        no_image = fn(ids, mask | ~audio)
        no_audio = fn(ids, mask | audio)
    by_image = 3 * c - 2 * no_image                         # audio positions, guided by the image
    by_audio = 3 * c - 2 * no_audio                         # image positions, guided by the audio
    expect = torch.where(audio[:, None], by_image, by_audio)
    finite = torch.isfinite(c)
    torch.testing.assert_close(g[finite], expect[finite])
    finite_audio = finite[:, :12]
    assert not torch.allclose(g[:, :12][finite_audio], by_audio[:, :12][finite_audio])


def test_logits_are_dot_products_with_the_embedding_table():
    model = MaskedAVTransformer(**SMALL)
    assert model.out[0][0].weight.shape == (32, 32)
    assert not hasattr(model, 'head')
    ids = torch.zeros(1, 18, dtype=torch.long)
    mask = torch.ones(1, 18, dtype=torch.bool)
    with torch.no_grad():
        model.wte[0].weight.zero_()
        model.bias[0].fill_(0.5)
        logits = model.logits(ids, mask)
    assert torch.all(logits[0, :12, :20] == 0.5)


def test_code_init_starts_codes_that_decode_alike_alike():
    net = MaskedAVTransformer(**SMALL, code_init=True)
    mask_rows = [table.weight[-1].clone() for table in net.wte]
    books = [torch.randn(20, 4), torch.randn(10, 4)]
    books[0][1] = books[0][0] + 1e-3                        # two near-identical audio codes
    net.init_tokens(books, torch.Generator().manual_seed(0))
    audio = net.wte[0].weight                               # (21, C)
    dist = torch.cdist(audio[:20], audio[:20])              # (20, 20)
    assert dist[0, 1] < 0.01 * dist[0, 2:].min()
    for table, row in zip(net.wte, mask_rows):              # [MASK] as it was
        assert torch.equal(table.weight[-1], row)
    assert abs(audio[:20].std().item() - 0.02) < 0.005


def test_loss_only_counts_masked_positions():
    torch.manual_seed(0)
    model = MaskedAVTransformer(**SMALL)
    audio_ids = torch.randint(0, 20, (4, 12))
    image_ids = torch.randint(0, 10, (4, 6))
    batch = {'vq_audio_ids': audio_ids, 'vq_image_ids': image_ids}
    mask = model.sample_masks(4, torch.Generator().manual_seed(1))
    ids = torch.cat([audio_ids, image_ids], 1)
    logits = model.logits(ids, mask, torch.Generator().manual_seed(2))
    expected = torch.nn.functional.cross_entropy(logits[mask], ids[mask])
    model.sample_masks = lambda B, g=None: mask
    loss = model(batch, torch.Generator().manual_seed(2))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    every_position = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten())
    assert not math.isclose(expected.item(), every_position.item())


def test_echoes_trains_and_samples_every_task(tiny, tmp_path, monkeypatch):
    cfg = tiny_config(tiny, 'clip', method='echoes', out_dir=str(tiny / 'out' / 'toyav_echoes'),
                      max_iters=3, eval_interval=3, model_args=dict(TINY_ECHOES, code_init=True))
    path = train.train(cfg)
    model_args = torch.load(path, weights_only=True)['model_args']
    assert model_args['n_audio'] == 256
    assert model_args['audio_codes'] == 32
    base = ['--ckpt', cfg['out_dir'], '--ckpt_dir', str(tiny / 'out'),
            '--data_dir', str(tiny / 'data'), '--steps', '3']
    sample.main(base + ['--index', '0', '--out', str(tmp_path / 'x')])
    sample.main(base + ['--task', 'joint', '--out', str(tmp_path / 'j')])
    sample.main(base + ['--index', '1', '--task', 'inpaint', '--out', str(tmp_path / 'p')])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ['j.joint.png', 'j.joint.raw.png', 'j.joint.spec.png', 'j.joint.wav',
                     'p.inpaint.spec.png', 'p.inpaint.wav',
                     'x.a2i.png', 'x.a2i.raw.png', 'x.i2a.spec.png', 'x.i2a.wav']
    steps = []                                  # without --steps: 16 for one modality, 30 for joint

    def recording_decode(ids, known, fn, n, *args):
        steps.append(n)
        return decode(ids, known, fn, n, *args)
    monkeypatch.setattr(echoes, 'decode', recording_decode)
    sample.main(base[:-2] + ['--index', '0', '--out', str(tmp_path / 'd' / 'x')])
    sample.main(base[:-2] + ['--task', 'joint', '--out', str(tmp_path / 'd' / 'j')])
    assert steps == [16, 16, JOINT_STEPS]


def test_augment_reaches_echoes_through_the_frozen_tokenizer(tiny, monkeypatch):
    """augment=True: Echoes trains on the frozen tokenizer's ids of the augmented log-mels."""
    from encoders import load_toy
    seen = []
    loaded = []

    def recording_forward(self, batch):
        seen.append(batch)
        return sum(p.sum() for p in self.parameters()) * 0
    monkeypatch.setattr(MaskedAVTransformer, 'forward', recording_forward)

    def recording_load_toy(*args):
        frozen = load_toy(*args)
        loaded.append((frozen, {k: v.clone() for k, v in frozen.state_dict().items()}))
        return frozen
    monkeypatch.setattr(echoes, 'load_toy', recording_load_toy)
    cfg = tiny_config(tiny, 'clip', method='echoes', augment=True,
                      out_dir=str(tiny / 'out' / 'echoes_aug'), max_iters=2, eval_interval=2,
                      model_args=TINY_ECHOES)
    train.train(cfg)
    tokenizer = load_toy('vq_audio', out_dir=str(tiny / 'out'))
    batch = seen[0]                                         # the first training batch
    assert torch.equal(batch['vq_audio_ids'], tokenizer.encode(batch['mel']))
    rows = open_split(str(tiny / 'data'), 'toyav', 'train', ['vq_audio_ids'], str(tiny / 'out'))[0]
    cached = torch.from_numpy(np.array(rows['vq_audio_ids'])).long()           # (N, T)
    assert not (cached == batch['vq_audio_ids'][0]).all(1).any()               # not a cached row
    (used, before), = loaded                    # the tokenizer train.py re-tokenized with
    for k, v in used.state_dict().items():      # its parameters and buffers as loaded
        assert torch.equal(v, before[k]), k


def test_eval_judges_every_echoes_task(tiny, tmp_path, monkeypatch):
    import eval as evaluation
    cfg = dict(evaluation.default_config(), out_dir=str(tmp_path), data_dir=str(tiny / 'data'),
               ckpt_dir=str(tiny / 'out'), ckpt=str(tiny / 'out' / 'toyav_echoes'),
               tasks='i2a,a2i,joint,inpaint', n_eval=8, n_diverse=2, n_outputs=2,
               options=dict(steps=None), batch_size=4)
    steps = {}                          # decode's steps, by whether both modalities are unknown

    def recording_decode(ids, known, fn, n, *args):
        both_unknown = bool((~known).all())
        steps.setdefault(both_unknown, set()).add(n)
        return decode(ids, known, fn, n, *args)
    monkeypatch.setattr(echoes, 'decode', recording_decode)
    if not (tiny / 'out' / 'toyav_echoes' / 'ckpt.pt').exists():
        train.train(tiny_config(tiny, 'clip', method='echoes', out_dir=cfg['ckpt'], max_iters=2,
                                eval_interval=2, model_args=TINY_ECHOES))
    m = evaluation.evaluate(cfg)
    expected_keys = ('i2a.source_acc', 'i2a.env_acc', 'i2a.loudness_rho', 'i2a.mix_recall',
                     'i2a.fd', 'i2a.fd_floor', 'i2a.diversity', 'i2a.cs', 'i2a.sec_per_sample',
                     'a2i.size_rho', 'a2i.fd', 'joint.source_acc', 'joint.audio_fd',
                     'joint.image_fd', 'inpaint.source_acc', 'inpaint.real_span_source_acc')
    for key in expected_keys:
        assert key in m, key
    assert all(0 <= m[k] <= 1 for k in m if k.endswith('_acc') or k.endswith('recall'))
    assert all(math.isfinite(v) for v in m.values()), m
    assert steps == {True: {JOINT_STEPS}, False: {16}}      # each task's default number of steps
    assert (tmp_path / 'samples.png').stat().st_size > 0
    rows = open_split(cfg['data_dir'], 'toyav', 'test', ['image', 'mel'])[0]
    real = {'audio': torch.tensor(np.array(rows['mel'])),
            'image': torch.tensor(np.array(rows['image']))}
    index = {}                                  # modality -> media bytes -> test row
    for modality, media in real.items():
        index[modality] = {x.numpy().tobytes(): i for i, x in enumerate(media)}

    def oracle_generate(self, task, cond, rng=None, n=1):
        """The real counterpart of each test input."""
        given, = self.tasks[task][0]            # cond may hold the raw 'wave' beside 'audio'
        rows = [index[given][x.numpy().tobytes()] for x in cond[given]]
        return {m: real[m][rows] for m in self.tasks[task][1]}
    monkeypatch.setattr(echoes.Pipeline, 'generate', oracle_generate)
    oracle = evaluation.evaluate(dict(cfg, tasks='i2a,a2i'))
    for k in ('i2a.fd', 'a2i.fd', 'i2a.diversity'):
        assert oracle[k] == pytest.approx(0, abs=1e-4), k
        assert m[k] > 0.01, k                   # Echoes' outputs are not the test media
    # val vs test media, whatever the generator
    assert oracle['i2a.fd_floor'] == pytest.approx(m['i2a.fd_floor'])


def test_span_tiled_repeats_the_span_over_the_clip():
    from eval import span_tiled
    mels = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)
    out = span_tiled(mels, (0.25, 0.75))                    # frames 2..5, then again 2..5
    assert out.shape == mels.shape
    torch.testing.assert_close(out[..., :4], mels[..., 2:6])
    torch.testing.assert_close(out[..., 4:], mels[..., 2:6])
    torch.testing.assert_close(span_tiled(mels, (0, 1)), mels)
