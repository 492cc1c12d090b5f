"""Time nanoAV's networks on this CPU, beside reference implementations at identical configurations.

The matmul peak first (1024x1024 matmuls in float32, and bfloat16 where the CPU has bf16 units),
then a training step (forward, backward, AdamW) and a sampling call (one no-grad network call, as a
sampler makes per step) of each network at its toyav config and a full-scale size, in float32 and
bf16 autocast, torch.compile off and on (full sizes: off unless --compile_full). A reference row
follows ours at the same config and parameter count; ref/ours is its time over ours (> 1: ours is
faster).

    python bench.py                          # ours, and timm-block Echoes if timm is installed
    python bench.py --dit_ref ../DiT         # + the official DiT beside model.DiT
    python bench.py --nets dit --sizes full --dtypes bfloat16 --compile off --batch 8

On a machine shared with other jobs, OMP_WAIT_POLICY=passive keeps waiting OpenMP threads from
spinning (beside other jobs here, a compiled toy DiT step took 5.4 s without, 0.25 s with).

References: nanoGPT's bench.py (Karpathy); DiT (Peebles & Xie 2023), facebookresearch/DiT models.py;
timm's ViT Block (Wightman); FLOPs by torch.utils.flop_counter.FlopCounterMode.
"""
import argparse
import importlib.util
import itertools
import logging
import os
import sys
import time
import types
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils import flop_counter

from configurator import HelpFormatter
from methods.echoes import MaskedAVTransformer
from methods.v2a import V2AMapper
from model import DiT, DiT_models, LatentDiffusion

SIDE = 1024                # side of the square matmuls that measure the peak
NO_DIT_REF = 'no --dit_ref: the DiT rows time ours alone (--help says where the official DiT is)'
NO_TIMM = 'no timm (--no_timm, or pip install --no-deps timm): the Echoes rows time ours alone'
TORCHVISION = ('', '.ops', '.ops.misc', '.transforms', '.transforms.functional', '.datasets')
COLUMNS = ('net', 'size', 'impl', 'B', 'dtype', 'compile', 'mode', 'params', 'ms', 'samples/s',
           'tok/s', 'MiB', 'GFLOP', 'GFLOP/s', '%peak', 'ref/ours')
WIDTHS = (6, 19, 15, 4, 8, 7, 6, 7, 8, 9, 8, 6, 7, 8, 5, 8)

# -----------------------------------------------------------------------------
# the machine, and the reference implementations from outside the repository


def bf16_native():
    """True when the CPU has bf16 matmul units (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def matmul_peak(dtype, seconds=1.0, n=SIDE):
    """GFLOP/s of a loop of n x n matmuls in dtype for about `seconds`, after one warm-up call."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        calls += 1
    return 2 * n ** 3 * calls / (time.perf_counter() - start) / 1e9


class _Empty(type):
    """An empty class whose every attribute is another empty class."""

    def __getattr__(cls, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _Empty(name, (), {})


class _Standin(types.ModuleType):
    """A torchvision module for timm's import, which reads names its ViT blocks never use
    (ops.misc.FrozenBatchNorm2d, transforms.InterpolationMode, datasets): each an empty class."""

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return sys.modules.get(f'{self.__name__}.{name}') or _Empty(name, (), {})


def import_timm():
    """timm.models.vision_transformer (None without timm); without torchvision, stand-ins are in
    sys.modules while timm imports, and gone afterwards."""
    if importlib.util.find_spec('timm') is None:
        return None
    missing = importlib.util.find_spec('torchvision') is None
    names = ['torchvision' + m for m in TORCHVISION] if missing else []
    standins = {name: _Standin(name) for name in names}
    sys.modules.update(standins)
    try:
        import timm.models.vision_transformer as vit
    finally:
        for name in standins:
            del sys.modules[name]
    return vit


def import_dit_ref(folder):
    """The official DiT's models.py from `folder` (it imports timm's PatchEmbed, Attention, Mlp)."""
    import_timm()
    spec = importlib.util.spec_from_file_location('dit_ref_models', Path(folder) / 'models.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module                 # torch.compile imports it by name
    spec.loader.exec_module(module)
    return module


class TimmTransformer(nn.Module):
    """timm ViT blocks and a final LayerNorm, called as model.Transformer is."""

    def __init__(self, block, dim, n_layer, n_head):
        super().__init__()
        self.blocks = nn.ModuleList([block(dim, n_head) for _ in range(n_layer)])
        self.ln = nn.LayerNorm(dim)

    def forward(self, x, mask=None):
        """x (B, N, dim), mask (B, N) true where a token is real -> (B, N, dim)."""
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, N)
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return self.ln(x)


def echoes_ref(args, block):
    """Echoes' reference: its encoder and decoder made of timm ViT blocks, the rest ours."""
    model = MaskedAVTransformer(**args)
    model.encoder = TimmTransformer(block, args['width'], args['n_layer'], args['n_head'])
    model.decoder = TimmTransformer(block, args['width'], args['n_dec_layer'], args['n_head'])
    return model

# -----------------------------------------------------------------------------
# the networks, their inputs and their calls


@dataclass
class Case:
    """One network at one size: how to build it, its inputs, its sampling call, its loss."""
    net: str
    size: str
    full: bool                      # a full-scale size (else a toyav config)
    batch: int
    build: Callable                 # () -> nn.Module
    inputs: Callable                # batch size -> dict of tensors
    sample: Callable                # (module, inputs) -> tensor
    loss: Callable = lambda model, b: model(b)   # (module, inputs) -> scalar
    tokens: int = 0                 # tokens per sample (0: not a token model)
    ref: Callable = None            # () -> the reference module at the same configuration
    ref_name: str = ''


def randn_inputs(shapes, ids=None):
    """Inputs {name: (B, *shape)}: Gaussian for shapes, ints below n for ids {name: (shape, n)}."""
    def inputs(B):
        integers = {k: torch.randint(0, n, (B, *shape)) for k, (shape, n) in (ids or {}).items()}
        return {**{k: torch.randn(B, *shape) for k, shape in shapes.items()}, **integers}
    return inputs


def dit_sample(net, b):
    """One class-conditional denoiser call."""
    return net(b['x'], b['t'], b['y'])


def dit_loss(net, b):
    """Denoiser MSE of a class-conditional DiT (a learned variance is not trained)."""
    return F.mse_loss(dit_sample(net, b)[:, :4], b['noise'])


def ldm_sample(model, b):
    """One conditional denoiser call of LatentDiffusion."""
    keep = torch.zeros(len(b['target']), dtype=torch.bool)
    inputs = {k: b[f] for k, f in model.roles.items()}
    cond = model.conditions(inputs, {k: keep for k in model.roles})
    return model.net(b['target'], torch.randint(0, 1000, (len(keep),)), **cond)


def echoes_sample(model, b):
    """One unmasking step of audio -> image: logits with every image token hidden."""
    ids = torch.cat([b['vq_audio_ids'], b['vq_image_ids']], 1)          # (B, N)
    hidden = torch.zeros_like(ids, dtype=torch.bool)
    hidden[:, b['vq_audio_ids'].shape[1]:] = True
    return model.logits(ids, hidden)


def v2a_sample(model, b):
    """One call of the mapper's network: the regression, or one denoiser call of the prior."""
    cond = model.condition(b[model.fields[0]])
    if not model.prior:
        return model.predict(None, None, cond)
    t = torch.randint(0, 1000, (len(cond),))
    return model.predict(model.scaled(b[model.fields[1]]), t, cond)


def cases(timm_vit=None, dit_ref=None):
    """Every network at its toyav config and a full-scale size, beside the references given."""
    t2i = dict(input_size=16, patch_size=2, in_channels=4, hidden_size=128, depth=6, num_heads=4,
               ctx_dim=128, vec_dim=128, learn_sigma=False)   # the official DiT has no text input
    out = [Case('dit', 'toyav t2i', False, 32,
                lambda: LatentDiffusion('dit', t2i, (4, 16, 16), 'target', vec='pool', ctx='text'),
                randn_inputs(dict(target=(4, 16, 16), text=(16, 128), pool=(128,))), ldm_sample,
                tokens=64)]
    toy = dict(input_size=16, patch_size=2, hidden_size=128, depth=6, num_heads=4, num_classes=10)
    s4 = dict(input_size=32, num_classes=1000, **DiT_models['DiT-S/4'])
    for size, a, full in (('toyav size, classes', toy, False), ('DiT-S/4', s4, True)):
        a = dict(a, in_channels=4, learn_sigma=full)
        x = (4, a['input_size'], a['input_size'])
        inputs = randn_inputs(dict(x=x, noise=x), dict(t=((), 1000), y=((), a['num_classes'])))
        out.append(Case('dit', size, full, 32, lambda a=a: DiT(**a), inputs, dit_sample, dit_loss,
                        (a['input_size'] // a['patch_size']) ** 2,
                        dit_ref and (lambda a=a: dit_ref.DiT(**a)), 'official DiT'))
    toy_av = dict(n_audio=64, n_image=64, audio_codes=128, image_codes=256, width=128, n_layer=3,
                  n_dec_layer=1, n_head=4)
    full_av = dict(n_audio=256, n_image=256, audio_codes=1024, image_codes=1024, width=768,
                   n_layer=8, n_dec_layer=4, n_head=12)
    for size, a, full, batch in (('toyav', toy_av, False, 64), ('768 wide, 8+4', full_av, True, 1)):
        ids = dict(vq_audio_ids=((a['n_audio'],), a['audio_codes']),
                   vq_image_ids=((a['n_image'],), a['image_codes']))
        out.append(Case('echoes', size, full, batch, lambda a=a: MaskedAVTransformer(**a),
                        randn_inputs({}, ids), echoes_sample, tokens=a['n_audio'] + a['n_image'],
                        ref=timm_vit and (lambda a=a: echoes_ref(a, timm_vit.Block)),
                        ref_name='timm ViT blocks'))
    toy_unet = dict(in_ch=4, out_ch=4, channels=(64, 128), layers=1, attn=(False, True), heads=4,
                    groups=16, vec_dim=128)
    audioldm_s = dict(in_ch=8, out_ch=8, channels=(128, 256, 384, 640), layers=2,
                      attn=(False, True, True, True), heads=8, vec_dim=512)
    for size, a, x, full, batch in (('toyav t2a', toy_unet, (4, 16, 16), False, 32),
                                    ('AudioLDM-S, 10 s', audioldm_s, (8, 256, 16), True, 1)):
        out.append(Case('unet', size, full, batch,
                        lambda a=a, x=x: LatentDiffusion('unet', a, x, 'target', vec='clap'),
                        randn_inputs(dict(target=x, clap=(a['vec_dim'],))), ldm_sample))
    mlp = dict(kind='mlp', in_dim=128, out_dim=128, width=256, n_layer=2)
    prior = dict(source='clip_frames_emb', kind='transformer', prior=True, in_dim=512, out_dim=512,
                 width=512, n_layer=6, n_head=8, normalize=True, frames='mean')
    for size, a, source, full, batch in (('toyav mlp', mlp, (128,), False, 256),
                                         ('vggsound prior', prior, (10, 512), True, 64)):
        shapes = {a.get('source', 'clip_image_emb'): source, 'clap_audio_emb': (a['out_dim'],)}
        out.append(Case('v2a', size, full, batch, lambda a=a: V2AMapper(**a), randn_inputs(shapes),
                        v2a_sample))
    return out

# -----------------------------------------------------------------------------
# one call: its step function, FLOPs, memory and time

# FLOPs of the CPU flash-attention kernel and its backward, which FlopCounterMode does not count
SDPA_CPU = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *args, **kwargs: flop_counter.sdpa_flop_count(q, k, v),
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda g, q, k, v, *args, **kwargs: flop_counter.sdpa_backward_flop_count(g, q, k, v)}


def make_step(model, case, mode, dtype='float32', compiled=False, opt=None):
    """step(i): a training step (forward, backward, `opt` or a new AdamW) or a sampling call, the
    RNG seeded by i so that ours and the reference draw the same masks and label drops."""
    ctx = torch.autocast('cpu', torch.bfloat16) if dtype == 'bfloat16' else nullcontext()
    inputs = case.inputs(case.batch)
    train = mode == 'train'
    call = case.loss if train else case.sample
    call = torch.compile(call) if compiled else call
    opt = opt or torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(i):
        """One call."""
        torch.manual_seed(i)
        model.train(train)
        with ctx, torch.set_grad_enabled(train):
            out = call(model, inputs)
        if train:
            out.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return out
    return step


def count_flops(step):
    """FLOPs of one call of step(): matmuls, convolutions and attention, not elementwise work."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=SDPA_CPU) as counter:
        step(0)
    return counter.get_total_flops()


@contextmanager
def quiet_stderr():
    """File descriptor 2 to /dev/null (the profiler logs its start and stop there)."""
    saved = os.dup(2)
    with open(os.devnull, 'w') as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(step, i=0):
    """Peak bytes of the tensors allocated during step(i) and not yet freed, above those live before
    it (weights, AdamW state, inputs): torch.profiler's allocation events, summed in order."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with quiet_stderr(), torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        step(i)
    events = sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns())
    sizes = [e.nbytes() for e in events if e.name() == '[memory]']
    return max(itertools.accumulate(sizes, initial=0))


def time_steps(steps, warmup=1, iters=3):
    """Peak memory and fastest seconds of each step function: `warmup` untimed calls, the last one
    profiled for memory, then `iters` timed calls in turns (ours, ref, ours, ...), so that a change
    in the machine's load hits each alike; the fastest call is the one least slowed by other work
    on a shared machine (as Python's timeit advises)."""
    peaks = []
    for step in steps:
        for i in range(warmup - 1):
            step(i)
        peaks.append(peak_memory(step, warmup - 1))
    times = [[] for _ in steps]
    for i, (step, ts) in itertools.product(range(iters), list(zip(steps, times))):
        start = time.perf_counter()
        step(warmup + i)
        ts.append(time.perf_counter() - start)
    return peaks, [min(ts) for ts in times]

# -----------------------------------------------------------------------------
# the table


def row(values):
    """One line of the table, values left-aligned in their columns."""
    return ' '.join(str(v).ljust(w) for v, w in zip(values, WIDTHS)).rstrip()


def bench_case(case, dtypes, compiles, modes, peaks, warmup=1, iters=3):
    """Print and return the rows of one case: ours, then the reference, per dtype, compile, mode."""
    torch.manual_seed(0)
    models = {'ours': case.build()}
    if case.ref:
        torch.manual_seed(0)
        models[case.ref_name] = case.ref()
    trained = {k: [p for p in m.parameters() if p.requires_grad] for k, m in models.items()}
    params = {k: sum(p.numel() for p in ps) for k, ps in trained.items()}
    if len(set(params.values())) > 1:
        print(f'{case.net} {case.size}: parameter counts differ, {params}')
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}  # state: once
    flops = {(k, mode): count_flops(make_step(m, case, mode, opt=opts[k]))
             for k, m in models.items() for mode in modes}
    rows = []
    for dtype, compiled, mode in itertools.product(dtypes, compiles, modes):
        torch._dynamo.reset()                        # a fresh compile cache: no recompile limit hit
        steps = [make_step(m, case, mode, dtype, compiled, opts[k]) for k, m in models.items()]
        try:
            memory, seconds = time_steps(steps, warmup + compiled, iters)
        except Exception as err:  # torch.compile fails in many ways: say how in one line, go on
            first = (str(err).splitlines() or [''])[0][:60]
            print(f'{case.net} {case.size} {dtype} {mode} compiled: skipped ({type(err).__name__}: '
                  f'{first})')
            continue
        for name, mem, sec in zip(models, memory, seconds):
            gflop = flops[name, mode] / 1e9
            tokens = f'{case.batch * case.tokens / sec:.0f}' if case.tokens else '-'
            ratio = f'{sec / seconds[0]:.2f}' if name != 'ours' else ''
            values = (case.net, case.size, name, case.batch, dtype, 'on' if compiled else 'off',
                      mode, f'{params[name] / 1e6:.1f}M', f'{sec * 1e3:.1f}',
                      f'{case.batch / sec:.1f}', tokens, f'{mem / 2 ** 20:.0f}', f'{gflop:.2f}',
                      f'{gflop / sec:.1f}', f'{100 * gflop / sec / peaks[dtype]:.0f}', ratio)
            print(row(values), flush=True)
            rows.append(dict(zip(COLUMNS, values)))
    return rows


def main(argv=None):
    """Print the machine, its matmul peak and the table; return the table's rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--nets', default='dit,echoes,unet,v2a', help='networks, comma-separated')
    parser.add_argument('--sizes', default='toy,full', help='toy (toyav configs) and/or full')
    parser.add_argument('--dtypes', default='float32,bfloat16',
                        help='float32 and/or bfloat16 (autocast, where the CPU has bf16 units)')
    parser.add_argument('--compile', default='off,on', help='torch.compile off and/or on')
    parser.add_argument('--compile_full', action='store_true',
                        help='compile the full sizes too (minutes per compile on 2 cores)')
    parser.add_argument('--modes', default='train,sample',
                        help='train (forward, backward, AdamW step) and/or sample (a no-grad call)')
    parser.add_argument('--batch', type=int, default=0, help="every case's batch size (0: its own)")
    parser.add_argument('--dit_ref', default='', help='a folder with the official DiT models.py: '
                        'git clone https://github.com/facebookresearch/DiT (needs timm)')
    parser.add_argument('--no_timm', action='store_true', help='no timm-block reference for Echoes')
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls first (+1 compiled)')
    parser.add_argument('--iters', type=int, default=3, help='timed calls; the fastest is printed')
    parser.add_argument('--peak_seconds', type=float, default=1.0, help='seconds of matmuls a peak')
    args = parser.parse_args(argv)
    torch._logging.set_logs(dynamo=logging.ERROR)   # graph breaks (Echoes' token drop) are expected
    lines = Path('/proc/cpuinfo').read_text().splitlines() if Path('/proc/cpuinfo').exists() else []
    cpu = next((x.split(':', 1)[1].strip() for x in lines if x.startswith('model name')), 'a CPU')
    native = bf16_native()
    print(f'CPU: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, '
          f'AVX512-BF16 {torch.cpu._is_avx512_bf16_supported()}, '
          f'AMX {torch.cpu._is_amx_tile_supported()}: bf16 {"native" if native else "emulated"}, '
          f'OMP_WAIT_POLICY {os.environ.get("OMP_WAIT_POLICY", "unset")}')
    dtypes = [d for d in args.dtypes.split(',') if d == 'float32' or native]
    if len(dtypes) < len(args.dtypes.split(',')):
        print('bfloat16 skipped: this CPU has no bf16 units, autocast would time an emulation')
    peaks = {dtype: matmul_peak(getattr(torch, dtype), args.peak_seconds) for dtype in dtypes}
    for dtype, peak in peaks.items():
        print(f'matmul peak {dtype}: {peak:.1f} GFLOP/s ({SIDE}x{SIDE} matmuls)')
    timm_vit = None if args.no_timm else import_timm()
    dit_ref = import_dit_ref(args.dit_ref) if args.dit_ref else None
    nets, sizes, compiles = args.nets.split(','), args.sizes.split(','), args.compile.split(',')
    for net, ref, note in (('dit', dit_ref, NO_DIT_REF), ('echoes', timm_vit, NO_TIMM)):
        if net in nets and not ref:
            print(note)
    if 'on' in compiles and 'full' in sizes and not args.compile_full:
        print('full sizes: compile off (--compile_full compiles them too)')
    print(row(COLUMNS))
    rows = []
    for case in cases(timm_vit, dit_ref):
        if case.net in nets and ('full' if case.full else 'toy') in sizes:
            on = [c == 'on' for c in compiles if c == 'off' or args.compile_full or not case.full]
            case.batch = args.batch or case.batch
            rows += bench_case(case, dtypes, on, args.modes.split(','), peaks, args.warmup,
                               args.iters)
    return rows


if __name__ == '__main__':
    main()
