"""bench.py on tiny configs: FLOP counts against their formulas, peak memory, the table's rows, the
notes."""
import importlib.util
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bench

B, IN, OUT = 4, 8, 3


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    # tiny ops on a shared 2-core machine: a second thread only adds synchronisation cost
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def linear_case(ref=None):
    """A Linear(IN, OUT) at batch B as a bench case, with an optional reference builder."""
    inputs = bench.randn_inputs(dict(x=(IN,)))
    sample = lambda m, b: m(b['x'])
    loss = lambda m, b: m(b['x']).square().mean()
    return bench.Case('lin', 'tiny', False, B, lambda: nn.Linear(IN, OUT), inputs, sample, loss,
                      ref=ref, ref_name='ref')


def test_flops_of_a_linear_follow_the_formula():
    case = linear_case()
    lin = case.build()
    # forward: one (B, IN) x (IN, OUT) matmul of 2 B IN OUT FLOPs;
    # backward: the weight's gradient only
    assert bench.count_flops(bench.make_step(lin, case, 'sample')) == 2 * B * IN * OUT
    assert bench.count_flops(bench.make_step(lin, case, 'train')) == 2 * 2 * B * IN * OUT


def test_cpu_attention_kernel_is_counted_like_the_plain_product():
    q = torch.randn(2, 3, 5, 4)
    plain = bench.count_flops(lambda i: (q @ q.transpose(-2, -1)).softmax(-1) @ q)
    fused = bench.count_flops(lambda i: F.scaled_dot_product_attention(q, q, q))
    assert fused == plain == 2 * (2 * 2 * 3 * 5 * 5 * 4)  # QK^T and (softmax) V, 2 B H N N D each
    q.requires_grad_(True)
    backward = bench.count_flops(lambda i: F.scaled_dot_product_attention(q, q, q).sum().backward())
    assert backward > fused


def test_peak_memory_sees_an_allocation_freed_before_the_end():
    mib = 2 ** 20
    peak = bench.peak_memory(lambda i: torch.ones(mib // 4).sum())  # 1 MiB of float32, then freed
    assert mib <= peak < 2 * mib


def test_table_has_a_row_per_impl_dtype_compile_and_mode(capsys):
    rows = bench.bench_case(linear_case(ref=lambda: nn.Linear(IN, OUT)), ['float32'], [False],
                            ['train', 'sample'], {'float32': 1.0}, warmup=0, iters=1)
    assert [(r['impl'], r['mode']) for r in rows] == [('ours', 'train'), ('ref', 'train'),
                                                      ('ours', 'sample'), ('ref', 'sample')]
    assert all(r['params'] == f'{(IN * OUT + OUT) / 1e6:.1f}M' for r in rows)
    assert [bool(r['ref/ours']) for r in rows] == [False, True, False, True]
    assert 'parameter counts differ' not in capsys.readouterr().out


def test_a_reference_of_another_size_is_reported(capsys):
    case = linear_case(ref=lambda: nn.Linear(IN, OUT + 1))
    bench.bench_case(case, ['float32'], [False], ['sample'], {'float32': 1.0}, warmup=0, iters=1)
    assert 'parameter counts differ' in capsys.readouterr().out


def test_without_references_one_line_says_so_and_ours_is_timed(capsys):
    rows = bench.main(['--nets', 'dit,echoes', '--sizes', 'toy', '--dtypes', 'float32',
                       '--compile', 'off', '--modes', 'sample', '--batch', '1', '--warmup', '0',
                       '--iters', '1',
                       '--peak_seconds', '0.01', '--no_timm'])
    out = capsys.readouterr().out
    assert out.count(bench.NO_DIT_REF) == 1 and out.count(bench.NO_TIMM) == 1
    assert [(r['net'], r['impl']) for r in rows] == [('dit', 'ours')] * 2 + [('echoes', 'ours')]
    assert 'matmul peak float32' in out and 'CPU: ' in out


@pytest.mark.skipif(importlib.util.find_spec('timm') is None, reason='timm is not installed')
def test_timm_reference_has_our_parameter_count_and_leaves_no_torchvision():
    vit = bench.import_timm()
    assert importlib.util.find_spec('torchvision') or 'torchvision' not in sys.modules
    args = dict(n_audio=6, n_image=4, audio_codes=10, image_codes=12, width=16, n_layer=2,
                n_dec_layer=1, n_head=2)
    ours, ref = bench.MaskedAVTransformer(**args), bench.echoes_ref(args, vit.Block)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(ours) == count(ref)
    ids = torch.randint(0, 10, (3, 10))
    mask = torch.rand(3, 10) < 0.5
    assert ours.logits(ids, mask).shape == ref.logits(ids, mask).shape == (3, 10, 12)


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(['--help'])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    for option in ('--nets', '--sizes', '--dtypes', '--compile', '--modes', '--batch', '--dit_ref',
                   '--no_timm', '--warmup', '--iters', '--peak_seconds'):
        assert option in out
    assert 'git clone' in out and '(default: ' in out
