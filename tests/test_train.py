"""The training loop, checkpoints, resume, DDP, frozen encoders and cache staleness, tiny models."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import prepare
from data import open_split
from encoders import StaleCache
import train
from methods import NETWORKS, echoes
from configurator import configure
from conftest import TINY_ECHOES, tiny_config, tiny_v2a

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_overrides_are_type_checked_and_unknown_keys_refused(tmp_path):
    cfg = train.default_config()
    configure(cfg, ['--batch_size=7', '--learning_rate=1', '--model_args.width=16'])
    assert cfg['batch_size'] == 7
    assert cfg['learning_rate'] == 1.0
    assert cfg['model_args'] == {'width': 16}
    with pytest.raises(SystemExit, match='unknown config key'):
        configure(cfg, ['--no_such_key=1'])
    with pytest.raises(SystemExit, match='expected int'):
        configure(cfg, ['--batch_size=0.5'])
    bad = tmp_path / 'bad.py'
    bad.write_text("batch_sise = 3\n")
    with pytest.raises(SystemExit, match='batch_sise'):
        configure(cfg, [str(bad)])


def test_lr_schedule_endpoints():
    cfg = dict(train.default_config(), warmup_iters=10, max_iters=100, learning_rate=1.0,
               min_lr=0.1)
    lrs = [train.get_lr(it, cfg) for it in range(101)]
    assert lrs[0] < lrs[9] < lrs[10] == pytest.approx(1.0)
    assert lrs[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_prepare_writes_everything_atomically(tiny):
    root = tiny / 'data' / 'toyav'
    meta = json.loads((root / 'meta.json').read_text())
    assert meta['counts'] == dict(train=48, val=16, test=16)
    assert not list(root.glob('*.tmp'))
    assert not (tiny / 'data' / 'toyav.tmp').exists()
    for split, n in meta['counts'].items():
        for field, spec in meta['fields'].items():
            a = np.load(root / f"{split}_{field}.npy", mmap_mode='r')
            assert a.shape == (n, *spec['shape'])
            assert str(a.dtype) == spec['dtype']


def test_loss_falls_when_overfitting_one_batch(tiny):
    cfg = tiny_config(tiny, 'clip', max_iters=1)
    cls = NETWORKS['contrastive']
    meta = open_split(cfg['data_dir'], 'toyav', 'train', [])[1]
    model = cls(**{**train.data_args(cls, meta), **cfg['model_args']})    # as train.py builds it
    data, _ = open_split(cfg['data_dir'], 'toyav', 'train', model.fields)
    batch = train.get_batch(data, 16, torch.Generator().manual_seed(0), 'cpu')
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model(batch).item()
    for _ in range(40):
        loss = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


@pytest.mark.parametrize('optimizer', ['adamw', 'muon'])
def test_resume_after_a_crash_continues_exactly(tiny, monkeypatch, optimizer):
    kw = dict(max_iters=12, eval_interval=6, optimizer=optimizer)
    straight_cfg = tiny_config(tiny, 'clip', out_dir=str(tiny / f'straight_{optimizer}'), **kw)
    straight = train.train(straight_cfg)
    cfg = tiny_config(tiny, 'clip', out_dir=str(tiny / f'crashed_{optimizer}'), **kw)
    calls = []
    real_get_batch = train.get_batch

    def crash_at_iter_9(*args):
        calls.append(1)
        # 9 training batches + the eval batches at iter 6
        if len(calls) > 9 + 2 * cfg['eval_iters']:
            raise KeyboardInterrupt
        return real_get_batch(*args)

    monkeypatch.setattr(train, 'get_batch', crash_at_iter_9)
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg)
    monkeypatch.setattr(train, 'get_batch', real_get_batch)
    crashed = os.path.join(cfg['out_dir'], 'ckpt.pt')
    assert torch.load(crashed, weights_only=True)['iter_num'] == 6
    resumed = train.train(dict(cfg, init_from='resume'))
    a = torch.load(straight, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    assert b['iter_num'] == 12
    for k in a['model']:
        torch.testing.assert_close(a['model'][k], b['model'][k], rtol=0, atol=1e-6)
    assert len(a['optimizer']) == (2 if optimizer == 'muon' else 1)
    for oa, ob in zip(a['optimizer'], b['optimizer']):
        for sa, sb in zip(oa['state'].values(), ob['state'].values()):
            for k in sa:
                torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-6)


def test_an_unknown_optimizer_is_refused(tiny):
    with pytest.raises(SystemExit, match="optimizer='sgd'"):
        train.train(tiny_config(tiny, 'clip', out_dir=str(tiny / 'sgd'), optimizer='sgd'))


def test_resume_refuses_a_checkpoint_of_another_model(tiny):
    cfg = tiny_config(tiny, 'clip', init_from='resume')
    cfg['model_args'] = dict(cfg['model_args'], width=64)
    with pytest.raises(SystemExit, match='does not match'):
        train.train(cfg)
    with pytest.raises(SystemExit, match="optimizer state is not that of optimizer='muon'"):
        train.train(tiny_config(tiny, 'clip', init_from='resume', optimizer='muon'))


def test_two_process_ddp_trains(tiny):
    out = tiny / 'ddp'
    overrides = {**tiny_config(tiny, 'clip', out_dir=str(out), max_iters=3, eval_interval=3)}
    passed = ('out_dir', 'data_dir', 'batch_size', 'max_iters', 'eval_interval', 'eval_iters',
              'method')
    args = []
    for k, v in overrides.items():
        if k in passed:
            args.append(f"--{k}={v!r}" if isinstance(v, str) else f"--{k}={v}")
    args.append("--model_args=" + repr(overrides['model_args']))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
    cmd = torchrun + ['train.py'] + args
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    head = run.stderr[:3000]                      # a rank's own error comes first, torchrun's last
    assert run.returncode == 0, head + ' [...] ' + run.stderr[-1500:]
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 3
    assert len(ckpt['rng']) == 2
    assert not torch.equal(ckpt['rng'][0], ckpt['rng'][1])   # each rank draws its own batches


def test_training_leaves_the_frozen_tokenizers_unchanged(tiny, monkeypatch):
    """train.py's frozen parts stay in eval mode without gradients, their parameters and buffers
    (the VQ codebook's EMA) as loaded.

    The frozen parts: the tokenizers code_init reads, the one augment=True re-tokenizes training
    log-mels with.
    """
    loaded = []

    def recording_load_toy(name, *args):
        frozen = real_load_toy(name, *args)
        loaded.append((name, frozen, {k: v.clone() for k, v in frozen.state_dict().items()}))
        return frozen

    real_load_toy = echoes.load_toy
    monkeypatch.setattr(echoes, 'load_toy', recording_load_toy)
    cfg = tiny_config(tiny, 'clip', method='echoes', augment=True,
                      out_dir=str(tiny / 'out' / 'echoes_frozen'), max_iters=2, eval_interval=2,
                      model_args=dict(TINY_ECHOES, code_init=True))
    assert torch.load(train.train(cfg), weights_only=True)['iter_num'] == 2
    # code_init's two, augment's one
    assert sorted(name for name, _, _ in loaded) == ['vq_audio', 'vq_audio', 'vq_image']
    for name, frozen, before in loaded:
        assert not any(m.training for m in frozen.modules()), name
        assert not any(p.requires_grad for p in frozen.parameters()), name
        after = frozen.state_dict()
        assert after.keys() == before.keys()
        assert 'net.quantizer.ema_count' in after
        for k, v in after.items():
            assert torch.equal(v, before[k]), (name, k)
        frozen.train()                          # nor can a caller's train() unfreeze it
        assert not any(m.training for m in frozen.modules()), name


def test_stale_feature_caches_are_refused(tiny, tmp_path):
    data = tiny / 'data'
    out = str(tiny / 'out')
    fields, _ = open_split(str(data), 'toyav', 'train', ['clip_image_emb', 'vq_audio_ids'],
                           out_dir=out)
    assert fields['clip_image_emb'].shape == (48, 32)
    assert fields['vq_audio_ids'].shape == (48, 256)
    ckpt = tiny / 'out' / 'toyav_clip' / 'ckpt.pt'
    original = ckpt.read_bytes()
    try:
        # new weights, cache not redone
        train.train(tiny_config(tiny, 'clip', max_iters=5, eval_interval=5))
        with pytest.raises(StaleCache, match='clip checkpoint'):
            open_split(str(data), 'toyav', 'train', ['clip_image_emb'], out_dir=out)
        open_split(str(data), 'toyav', 'train', ['vq_audio_ids'], out_dir=out)   # others still fine
    finally:
        ckpt.write_bytes(original)
    other = tmp_path / 'data'
    prepare.main(['toyav', '--data_dir', str(other), '--n_train', '8', '--n_val', '4',
                  '--n_test', '4', '--hop', '200'])
    for f in (tiny / 'data' / 'toyav').glob('*_clip_*.npy'):
        (other / 'toyav' / f.name).symlink_to(f)
    (other / 'toyav' / 'features.json').write_text((data / 'toyav' / 'features.json').read_text())
    with pytest.raises(StaleCache, match="'hop': 250"):
        open_split(str(other), 'toyav', 'train', ['clip_image_emb'], out_dir=out)
    with pytest.raises(SystemExit, match='mel settings'):
        prepare.main(['toyav', '--features', 'toy', '--data_dir', str(other), '--out_dir', out])


def test_mel_augmentation_keeps_each_clip_in_its_range_and_is_seeded():
    mel = torch.randn(6, 64, 64) - 6                                    # (B, n_mels, frames)
    seeded = lambda s: torch.Generator().manual_seed(s)
    same = train.augment_mel(mel, seeded(0), 0, 0, 0, 0, 0)
    torch.testing.assert_close(same, mel, atol=1e-4, rtol=0)  # no warp, shift or mask: the clip
    out = train.augment_mel(mel, seeded(1))
    torch.testing.assert_close(out, train.augment_mel(mel, seeded(1)))
    assert not torch.allclose(out, train.augment_mel(mel, seeded(2)))
    floor = mel.amin((1, 2), keepdim=True)                              # (B, 1, 1)
    top = mel.amax((1, 2), keepdim=True)
    assert (out >= floor - 1e-5).all()
    assert (out <= top + 1e-5).all()
    assert ((out - mel).abs().mean((1, 2)) > 0.1).all()                 # every clip is changed
    masked = train.augment_mel(mel, seeded(3), 0, 0, 0, 64, 0)          # one time mask only
    cols = (masked == floor).all(1)                                     # (B, frames) fully masked
    assert (cols.sum(1) < 64).all()
    assert cols.any()


def test_augment_changes_what_an_audio_model_learns(tiny):
    sums = []
    for augment in (False, True):
        cfg = tiny_config(tiny, 'judge_audio', augment=augment,
                          out_dir=str(tiny / 'out' / f"aug_{augment}"))
        ckpt = torch.load(train.train(cfg), weights_only=True)
        floats = [v for v in ckpt['model'].values() if v.is_floating_point()]
        sums.append(sum(v.double().sum() for v in floats))
    assert sums[0] != sums[1]


READ = {'judge': lambda net, m: net.forward_logits(m)['sources'],   # what each network hears
        'vq': lambda net, m: net.encode(m)}


@pytest.mark.parametrize('method, args, read',
                         [('judge', dict(n_head=2), READ['judge']),
                          ('vq', dict(codebook_size=16, code_dim=8), READ['vq'])])
def test_a_leveling_judge_or_tokenizer_hears_every_gain_alike(method, args, read):
    mel = torch.randn(4, 64, 64) - 6                                    # (B, n_mels, frames)
    for level in (False, True):
        torch.manual_seed(0)
        net = NETWORKS[method](modality='audio', width=32, mel_mean=-6.0, mel_std=2.0, level=level,
                               **args).eval()
        with torch.no_grad():
            a = read(net, mel).float()
            b = read(net, mel + 3.0).float()                    # +3 nats: about 13 dB louder
        assert torch.allclose(a, b, atol=1e-5) == level


def test_resume_refuses_a_missing_a_corrupt_or_a_stale_checkpoint(tiny, tmp_path):
    cfg = tiny_config(tiny, 'clip', init_from='resume', out_dir=str(tmp_path / 'none'))
    with pytest.raises(SystemExit, match='no checkpoint to resume'):
        train.train(cfg)
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'ckpt.pt').write_bytes(b'')
    with pytest.raises(SystemExit, match='not a readable checkpoint'):
        train.train(dict(cfg, out_dir=str(tmp_path / 'empty')))
    ckpt = torch.load(tiny / 'out' / 'toyav_clip' / 'ckpt.pt', weights_only=True)
    ckpt['data']['vocab'] = ckpt['data']['vocab'][:-1]      # a dataset prepared with other captions
    (tmp_path / 'stale').mkdir()
    torch.save(ckpt, tmp_path / 'stale' / 'ckpt.pt')
    with pytest.raises(SystemExit, match='another version of data/toyav'):
        train.train(dict(cfg, out_dir=str(tmp_path / 'stale')))


# the loop's contract for methods: init_from a run, freeze, parameter groups, best checkpoint,
# early stop

MAPPER = tiny_v2a(prior=False, n_layer=2)


def mapper_config(tiny, name, **overrides):
    """A tiny V2A mapper run on tiny's cached CLIP/CLAP pairs."""
    return tiny_config(tiny, 'clip', out_dir=str(tiny / 'out' / name), **{**MAPPER, **overrides})


def weights(path, key='model'):
    """A checkpoint's weights."""
    return torch.load(path, weights_only=True)[key]


def test_init_from_a_run_loads_its_weights_and_creates_only_the_named_ones(tiny):
    source = train.train(mapper_config(tiny, 'init_source', max_iters=2, eval_interval=2))
    cfg = mapper_config(tiny, 'init_target', init_from=str(tiny / 'out' / 'init_source'),
                        init_new=['head'])
    torch.manual_seed(cfg['seed'])
    fresh = NETWORKS['v2a'](**cfg['model_args'])
    torch.manual_seed(cfg['seed'])                          # as train.py builds it
    model = NETWORKS['v2a'](**cfg['model_args'])
    train.init_weights(model, cfg)
    loaded = model.state_dict()
    fresh_sd = fresh.state_dict()
    for k, v in weights(source).items():
        assert torch.equal(loaded[k], fresh_sd[k] if k.startswith('head.') else v), k
    wider = dict(cfg, model_args=dict(cfg['model_args'], out_dim=24))   # another head shape
    with pytest.raises(SystemExit, match=r"other shapes \['head.weight', 'head.bias'\]"):
        train.init_weights(NETWORKS['v2a'](**wider['model_args']), dict(wider, init_new=[]))
    # named in init_new: created afresh
    train.init_weights(NETWORKS['v2a'](**wider['model_args']), wider)
    with pytest.raises(SystemExit, match="name no parameter"):
        train.train(dict(cfg, init_new=['no_such_layer']))


def test_freeze_keeps_the_named_parameters_and_their_modules_in_eval_mode(tiny, monkeypatch):
    seen = []

    def recording_layer_norm(self, x):
        seen.append(self.training)
        return torch.nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias,
                                              self.eps)
    monkeypatch.setattr(torch.nn.LayerNorm, 'forward', recording_layer_norm)
    cfg = mapper_config(tiny, 'frozen_body', max_iters=3, eval_interval=3, freeze=['body', 'ln'])
    torch.manual_seed(cfg['seed'])
    start = NETWORKS['v2a'](**cfg['model_args']).state_dict()   # train.py seeds, then builds
    after = weights(train.train(cfg))
    for k, v in after.items():
        changed = not torch.equal(v, start[k])
        assert changed == k.startswith(('embed_c.', 'head.')), k    # only the unfrozen ones moved
    assert seen                                             # every LayerNorm ran in eval mode
    assert not any(seen)


def test_each_parameter_group_trains_at_its_own_rate(tiny, monkeypatch):
    class Grouped(NETWORKS['v2a']):
        def param_groups(self):
            return {'head': list(self.head.parameters()),
                    'input': list(self.embed_c.parameters())}
    monkeypatch.setitem(train.NETWORKS, 'v2a', Grouped)
    cfg = mapper_config(tiny, 'groups', max_iters=3, eval_interval=3,
                        lr_groups={'head': 0.0, 'input': 1e-2})
    torch.manual_seed(cfg['seed'])
    start = Grouped(**cfg['model_args']).state_dict()
    after = weights(train.train(cfg))
    head = [k for k in after if k.startswith('head.')]
    assert all(torch.equal(after[k], start[k]) for k in head)              # its rate is 0
    assert not torch.equal(after['embed_c.weight'], start['embed_c.weight'])
    assert not torch.equal(after['ln.weight'], start['ln.weight'])      # the rest: learning_rate
    undeclared = "lr_groups \\['tail'\\]: this model declares \\['head', 'input'\\]"
    with pytest.raises(SystemExit, match=undeclared):
        train.train(dict(cfg, lr_groups={'tail': 1e-3}))
    with pytest.raises(SystemExit, match='follow the schedule of learning_rate, which is 0.0'):
        train.train(dict(cfg, learning_rate=0.0))


def test_best_checkpoint_beside_the_last_and_early_stopping(tiny, capsys):
    # nothing moves: the val loss stays
    cfg = mapper_config(tiny, 'patience', max_iters=50, eval_interval=1, learning_rate=0.0,
                        min_lr=0.0, patience=2)
    last = torch.load(train.train(cfg), weights_only=True)
    best = torch.load(tiny / 'out' / 'patience' / 'best.pt', weights_only=True)
    assert last['iter_num'] == 3                            # stopped early
    assert last['bad_evals'] == 2
    assert best['iter_num'] == 1
    assert best['best_val_loss'] == last['best_val_loss']
    assert 'early stop' in capsys.readouterr().out
    no_patience = dict(cfg, out_dir=str(tiny / 'out' / 'no_patience'), patience=0, max_iters=6)
    full = torch.load(train.train(no_patience), weights_only=True)
    assert full['iter_num'] == 6
    with pytest.raises(SystemExit, match='every parameter is frozen'):
        train.train(dict(cfg, freeze=['embed_c', 'body', 'ln', 'head']))


def test_loss_history_is_kept_across_a_resume_and_drawn_as_curves(tiny):
    import eval as evaluate
    from PIL import Image
    cfg = mapper_config(tiny, 'history', max_iters=4, eval_interval=2)
    first = torch.load(train.train(cfg), weights_only=True)
    assert [h[0] for h in first['history']] == [2, 4]
    more = dict(cfg, init_from='resume', max_iters=6)
    last = torch.load(train.train(more), weights_only=True)
    assert [h[0] for h in last['history']] == [2, 4, 6]
    assert last['history'][:2] == first['history']
    assert all(np.isfinite(h[2]) for h in last['history'])
    run = cfg['out_dir']
    out = tiny / 'out' / 'curves'
    evaluate.evaluate(dict(evaluate.default_config(), data_dir=cfg['data_dir'],
                           ckpt_dir=str(tiny / 'out'), out_dir=str(out), tasks='',
                           curves=f'{run},{run}'))
    picture = np.asarray(Image.open(out / 'curves.png'))
    assert picture.shape == (200, 640, 3)                    # a 320-pixel panel per run
    blue = (picture[..., 2] > 200) & (picture[..., 0] < 80)
    assert blue[:, :320].any() and blue[:, 320:].any()     # each panel draws its val curve


def test_muon_matches_torch_in_bfloat16_and_runs_in_float32():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(48, 24, generator=g), torch.randn(16, 40, generator=g)]
    grads = [[torch.randn(p.shape, generator=g) for p in params] for _ in range(3)]
    runs = {}
    for name in ('torch', 'ours_bf16', 'ours_fp32'):
        ps = [torch.nn.Parameter(p.clone()) for p in params]
        if name == 'torch':
            opt = torch.optim.Muon(ps, lr=0.02, weight_decay=0.1, adjust_lr_fn='match_rms_adamw')
        else:
            dtype = torch.bfloat16 if name == 'ours_bf16' else torch.float32
            opt = train.Muon(ps, lr=0.02, weight_decay=0.1, ns_dtype=dtype)
        for step in grads:
            for p, grad in zip(ps, step):
                p.grad = grad.clone()
            opt.step()
        runs[name] = [p.detach() for p in ps]
    for a, b, c in zip(runs['torch'], runs['ours_bf16'], runs['ours_fp32']):
        assert torch.equal(a, b)                            # the same update, bit for bit
        assert not torch.equal(a, c)                        # float32: within bf16's rounding
        assert torch.allclose(a, c, atol=2e-3)
    ortho = train.orthogonalize(torch.randn(64, 32, generator=g), 5, torch.float32)
    singular = torch.linalg.svdvals(ortho)
    assert ortho.dtype == torch.float32
    assert singular.min() > 0.5                             # ~ U V^T
    assert singular.max() < 1.5


@pytest.mark.parametrize('amx,avx512_bf16,expected', [(False, False, 'float32'),
                                                       (True, False, 'bfloat16'),
                                                       (False, True, 'bfloat16')])
def test_auto_dtype_follows_the_cpu(monkeypatch, capsys, amx, avx512_bf16, expected):
    import configurator
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: amx)
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: avx512_bf16)
    assert configurator.resolve_dtype('auto', 'cpu') == expected
    assert capsys.readouterr().out.startswith(f"dtype auto -> {expected} (")
    assert configurator.resolve_dtype('float32', 'cpu') == 'float32'   # an explicit choice is kept


def test_auto_dtype_trains_muon_in_float32_without_native_bf16(tiny, monkeypatch):
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False)
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)
    built = []
    autocasts = []
    real_autocast = torch.autocast

    def recording_muon(*args, **kwargs):
        built.append(kwargs['ns_dtype'])
        return torch.optim.SGD(*args, lr=0)

    def recording_autocast(*args, **kwargs):
        autocasts.append(kwargs)
        return real_autocast(*args, **kwargs)
    monkeypatch.setattr(train, 'Muon', recording_muon)
    monkeypatch.setattr(torch, 'autocast', recording_autocast)
    cfg = mapper_config(tiny, 'muon_fp32', max_iters=1, eval_interval=1, optimizer='muon',
                        dtype='auto')
    train.train(cfg)
    assert built == [torch.float32]
    assert autocasts == []
