"""One training loop for every method of nanoAV: a network whose forward(batch) is its loss.

    python train.py config/toyav_clip.py
    python train.py config/toyav_clip.py --max_iters=100 --batch_size=32
    torchrun --standalone --nproc_per_node=2 train.py config/toyav_clip.py     # DDP

Iterations, not epochs; warmup + cosine LR; AdamW, or Muon for the linear layers' weights; gradient
accumulation; EMA when ema_decay > 0; bf16 autocast where the device computes it natively
(dtype='auto'); augment=True warps, shifts and masks training log-mels; eval every eval_interval
iterations on a fixed RNG state, the last checkpoint (ckpt.pt) and the best on validation (best.pt)
written atomically, early stopping after `patience` evaluations without a better one;
init_from='resume' continues at the exact iteration, init_from=<run dir> starts from another run's
weights. The method's optional hooks (methods/__init__.py): setup, transform, param_groups.

References: nanoGPT (Karpathy) for the loop; MMAudio (Cheng et al. 2025) for the fixed eval RNG;
VTLP (Jaitly & Hinton 2013) and SpecAugment (Park et al. 2019) for the log-mel augmentation; Muon
(Jordan et al. 2024)."""
import copy
import inspect
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from configurator import config_keys, configure, defaults, resolve_dtype
from data import open_split
from encoders import MediaError, StaleCache, parts_of, read_checkpoint
from methods import NETWORKS, checkpoint_path
from model import ema_update

# -----------------------------------------------------------------------------
out_dir = 'out/toyav_clip'         # checkpoint directory
method = 'contrastive'             # a key of methods.NETWORKS
model_args = {}                    # the network's constructor arguments (dataset sizes are added)
dataset = 'toyav'                  # data/<dataset>/ made by prepare.py
data_dir = 'data'                  # where datasets live
ckpt_dir = 'out'  # where the frozen parts behind cached features live (out/<dataset>_<name>/)
init_from = 'scratch'  # 'scratch', 'resume' (out_dir/ckpt.pt) or another run's directory
init_new = []  # with init_from=<run>: parameter name prefixes created afresh, not loaded
freeze = []  # parameter name prefixes kept as initialised (eval mode, no gradients)
lr_groups = {}                     # learning rate of each parameter group the method declares
batch_size = 64                    # samples per micro-batch (per process)
grad_accum = 1                     # micro-batches per optimizer step
max_iters = 1000                   # optimizer steps
learning_rate = 1e-3               # peak learning rate
min_lr = 1e-4                      # final learning rate of the cosine
warmup_iters = 50                  # linear warmup steps
decay_lr = True                    # cosine decay to min_lr at max_iters
weight_decay = 0.05                # weight decay on matrices
beta1 = 0.9                        # AdamW beta1
beta2 = 0.99                       # AdamW beta2
optimizer = 'adamw'  # 'adamw', or 'muon': Muon for linear layers' weights, AdamW for the rest
grad_clip = 1.0                    # clip the gradient norm at this value (0 = off)
augment = False  # training log-mels: band warp, time stretch and shift, time and band masks
ema_decay = 0.0                    # EMA of the weights (0 = off); the EMA is what gets sampled
eval_interval = 250                # evaluate and checkpoint every this many steps
eval_iters = 10                    # batches per split in an evaluation
patience = 0  # stop after this many evaluations without a better val loss (0 = never)
log_interval = 50                  # print a log line every this many steps
seed = 1337                        # one seed for initialisation, batches, masking and noise
device = 'cpu'                     # 'cpu', 'cuda', 'cuda:0', 'mps'
dtype = 'auto'  # 'auto' (bfloat16 where native, else float32), 'float32', 'bfloat16'
compile = False                    # torch.compile the network
threads = 0                        # torch CPU threads (0 = torch's default)
# -----------------------------------------------------------------------------
CONFIG_KEYS = config_keys(globals())


def default_config():
    """The defaults above as a fresh dict."""
    return defaults(globals(), CONFIG_KEYS)


def get_lr(it, cfg):
    """Linear warmup, then cosine decay from learning_rate to min_lr at max_iters."""
    if it < cfg['warmup_iters']:
        return cfg['learning_rate'] * (it + 1) / (cfg['warmup_iters'] + 1)
    if not cfg['decay_lr']:
        return cfg['learning_rate']
    if it >= cfg['max_iters']:
        return cfg['min_lr']
    ratio = (it - cfg['warmup_iters']) / max(1, cfg['max_iters'] - cfg['warmup_iters'])
    coeff = 0.5 * (1 + math.cos(math.pi * ratio))                       # 1 -> 0
    return cfg['min_lr'] + coeff * (cfg['learning_rate'] - cfg['min_lr'])


def data_args(cls, meta):
    """Constructor arguments a network takes from the dataset's meta.json (sizes, vocabulary)."""
    mel = meta['mel']
    known = dict(vocab_size=len(meta['vocab']) + 2, max_len=meta['max_len'],
                 image_size=meta['image_size'], n_mels=mel['n_mels'], frames=mel['frames'],
                 mel_mean=meta['mel_mean'], mel_std=meta['mel_std'])
    tokenizers = meta.get('features', {}).get('tokenizers', {})
    for role, tok in (('audio', 'vq_audio'), ('image', 'vq_image')):
        if tok in tokenizers:
            known[f"n_{role}"] = tokenizers[tok]['n_tokens']
            known[f"{role}_codes"] = tokenizers[tok]['codebook_size']
    params = inspect.signature(cls).parameters
    return {k: v for k, v in known.items() if k in params}


def data_stamp(meta):
    """What a checkpoint records of its dataset, to refuse resuming on another version of it."""
    features = None
    if 'features' in meta:
        features = {k: meta['features'][k] for k in ('suite', 'encoders')}
    return dict(mel=meta['mel'], vocab=meta['vocab'], max_len=meta['max_len'],
                image_size=meta['image_size'], dataset=meta['dataset'], parts=parts_of(meta),
                classes=meta.get('classes'), features=features)


def get_batch(data, n, rng, device):
    """A random batch of n samples from memmapped fields -> dict of tensors."""
    size = len(next(iter(data.values())))
    idx = np.sort(torch.randint(size, (n,), generator=rng).numpy())
    return {k: torch.from_numpy(np.ascontiguousarray(v[idx])).to(device) for k, v in data.items()}


def augment_mel(mel, rng, warp=0.15, stretch=0.25, shift=0.25, time_mask=10, band_mask=8):
    """Log-mels (B, n_mels, frames), each clip's bands and time scaled by up to 1 +- warp and
    1 +- stretch, moved by up to +-shift of its length, then < time_mask frames and < band_mask
    bands set to the clip's floor (as are the places the shift empties)."""
    B, H, W = mel.shape
    sym = lambda: 2 * torch.rand(B, 1, 1, generator=rng) - 1  # (B, 1, 1) in [-1, 1]
    ys = torch.linspace(-1, 1, H)[None, :, None] / (1 + warp * sym())               # (B, H, 1)
    xs = torch.linspace(-1, 1, W)[None, None, :] / (1 + stretch * sym())            # (B, 1, W)
    xs = xs - 2 * shift * sym()
    grid = torch.stack(torch.broadcast_tensors(xs, ys), -1).to(mel.device)          # (B, H, W, 2)
    floor = mel.amin((1, 2), keepdim=True)                                          # (B, 1, 1)
    warped = F.grid_sample((mel - floor)[:, None], grid, align_corners=True)        # (B, 1, H, W)
    out = warped[:, 0] + floor                                                      # (B, H, W)
    frame = torch.arange(W).view(1, 1, W)
    band = torch.arange(H).view(1, H, 1)
    for size, pos in ((time_mask, frame), (band_mask, band)):
        start = torch.randint(pos.numel(), (B, 1, 1), generator=rng)
        width = torch.randint(max(1, size), (B, 1, 1), generator=rng)
        inside = ((pos >= start) & (pos < start + width)).to(mel.device)   # (B, 1, W) or (B, H, 1)
        out = torch.where(inside, floor, out)
    return out


NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)   # Muon's quintic Newton-Schulz coefficients


def orthogonalize(grad, steps, dtype, eps=1e-7):
    """Newton-Schulz iteration towards U V^T of a matrix's SVD (Muon's zeroth power), in dtype."""
    a, b, c = NS_COEFFICIENTS
    tall = grad.size(0) > grad.size(1)
    x = grad.to(dtype)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)                                     # spectral norm <= 1
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)           # b G + c G^2
        x = torch.addmm(x, poly, x, beta=a)                             # a X + (b G + c G^2) X
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update, orthogonalised in ns_dtype: torch's always runs it in bfloat16,
    which a CPU without native bf16 computes ~100x slower than float32."""

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, ns_steps=5,
                 ns_dtype=torch.bfloat16):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, ns_steps=ns_steps)
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self):
        """One update of every matrix with a gradient."""
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault('momentum_buffer', torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - group['momentum'])
                update = p.grad.lerp(buf, group['momentum'])                # Nesterov
                ortho = orthogonalize(update, group['ns_steps'], self.ns_dtype)
                rms_scale = 0.2 * math.sqrt(max(p.shape[:2]))               # 'match_rms_adamw'
                p.mul_(1 - group['lr'] * group['weight_decay'])
                p.add_(ortho, alpha=-group['lr'] * rms_scale)


def under(name, prefixes):
    """True when a parameter or module name is one of prefixes or inside one."""
    return any(name == p or name.startswith(p + '.') for p in prefixes)


def check_prefixes(model, key, prefixes):
    """Refuse prefixes of config `key` that name no parameter (a typo would otherwise be silent)."""
    names = [n for n, _ in model.named_parameters()]
    unknown = [p for p in prefixes if not any(under(n, [p]) for n in names)]
    if unknown:
        raise SystemExit(f"{key}={prefixes}: {unknown} name no parameter of this model")


def init_weights(model, cfg):
    """init_from=<run dir>: its weights (EMA when present) but init_new's; other misfits refused."""
    path = checkpoint_path(cfg['init_from'])
    src = read_checkpoint(path)
    weights = src.get('ema') or src['model']
    own = model.state_dict()
    fresh = [k for k in own if under(k, cfg['init_new'])]
    missing = [k for k in own if k not in weights and k not in fresh]
    unexpected = [k for k in weights if k not in own and not under(k, cfg['init_new'])]
    loaded = [k for k in own if k in weights and k not in fresh]
    reshaped = [k for k in loaded if weights[k].shape != own[k].shape]
    if missing or unexpected or reshaped:
        raise SystemExit(f"{path}: cannot start {cfg['method']} from it: missing {missing}, "
                         f"unexpected {unexpected}, other shapes {reshaped} (name the ones to "
                         "create in init_new)")
    own.update({k: weights[k] for k in loaded})              # the fresh ones stay as initialised
    model.load_state_dict(own)


def build_optimizers(model, cfg, ns_dtype):
    """AdamW (and Muon for linear weights) over the method's parameter groups, frozen ones left
    out; a group's 'scale' of the schedule is its lr_groups rate over learning_rate."""
    declared = model.param_groups() if hasattr(model, 'param_groups') else {}
    unknown = set(cfg['lr_groups']) - set(declared)
    if unknown:
        names = sorted(declared) or 'none'
        raise SystemExit(f"lr_groups {sorted(unknown)}: this model declares {names}")
    if cfg['lr_groups'] and cfg['learning_rate'] <= 0:
        raise SystemExit(f"lr_groups {cfg['lr_groups']} follow the schedule of learning_rate, "
                         f"which is {cfg['learning_rate']}: set it above 0 (or lr_groups={{}})")
    grouped = {id(p) for params in declared.values() for p in params}
    rest = [p for p in model.parameters() if id(p) not in grouped]
    groups = {**declared, 'rest': rest}
    linear = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    adamw = []
    muon = []
    for name, params in groups.items():
        scale = 1.0
        if name in cfg['lr_groups']:
            scale = cfg['lr_groups'][name] / cfg['learning_rate']
        params = [p for p in params if p.requires_grad]
        is_muon = [cfg['optimizer'] == 'muon' and id(p) in linear for p in params]
        muon_params = [p for p, m in zip(params, is_muon) if m]
        decay = [p for p, m in zip(params, is_muon) if not m and p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        adamw += [dict(params=decay, weight_decay=cfg['weight_decay'], scale=scale),
                  dict(params=no_decay, weight_decay=0.0, scale=scale)]
        if muon_params:
            muon.append(dict(params=muon_params, scale=scale))
    betas = (cfg['beta1'], cfg['beta2'])
    optimizers = [torch.optim.AdamW(adamw, lr=cfg['learning_rate'], betas=betas)]
    if muon:
        optimizers.append(Muon(muon, lr=cfg['learning_rate'], weight_decay=cfg['weight_decay'],
                               ns_dtype=ns_dtype))
    return optimizers


def launched_by_torchrun():
    """True in a process torchrun started: one rank of a DDP run."""
    return int(os.environ.get('RANK', -1)) != -1


def train(cfg):
    """Train cfg['method'] as configured; returns the final checkpoint path."""
    ddp = launched_by_torchrun()
    rank = int(os.environ['RANK']) if ddp else 0
    dev = cfg['device']
    if ddp:
        dist.init_process_group(backend='nccl' if dev.startswith('cuda') else 'gloo')
        if dev.startswith('cuda'):
            dev = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(dev)
    master = rank == 0
    if cfg['threads']:
        torch.set_num_threads(cfg['threads'])
    torch.manual_seed(cfg['seed'])
    dtype = resolve_dtype(cfg['dtype'], dev, verbose=master)
    bf16 = dtype == 'bfloat16'
    ctx = torch.autocast(dev.split(':')[0], dtype=torch.bfloat16) if bf16 else nullcontext()
    ns_dtype = torch.bfloat16 if bf16 else torch.float32
    path = os.path.join(cfg['out_dir'], 'ckpt.pt')
    best_path = os.path.join(cfg['out_dir'], 'best.pt')
    if cfg['method'] not in NETWORKS:
        raise SystemExit(f"method={cfg['method']!r}: expected one of {', '.join(NETWORKS)}")
    cls = NETWORKS[cfg['method']]
    _, meta = open_split(cfg['data_dir'], cfg['dataset'], 'train', [])
    args = {**data_args(cls, meta), **cfg['model_args']}
    stamp = data_stamp(meta)
    run = {**cfg, 'device': dev, 'parts': parts_of(meta)}  # what the method's hooks know of the run
    model = cls(**args)
    if cfg['init_from'] == 'scratch' and hasattr(model, 'setup'):
        model.setup(run)
    elif cfg['init_from'] not in ('scratch', 'resume'):
        init_weights(model, cfg)
    check_prefixes(model, 'init_new', cfg['init_new'])
    check_prefixes(model, 'freeze', cfg['freeze'])
    # augment warps the log-mels also for a model reading features of them (its transform re-makes)
    warp = cfg['augment'] and 'mel' in meta['fields'] and 'mel' not in model.fields
    fields = model.fields + (['mel'] if warp else [])
    train_data, _ = open_split(cfg['data_dir'], cfg['dataset'], 'train', fields, cfg['ckpt_dir'])
    val_data, _ = open_split(cfg['data_dir'], cfg['dataset'], 'val', model.fields, cfg['ckpt_dir'])
    data = {'train': train_data, 'val': val_data}
    empty = [s for s, d in data.items() if not len(d[model.fields[0]])]
    if empty:
        raise SystemExit(f"data/{cfg['dataset']}: the {' and '.join(empty)} split has no samples; "
                         "prepare it with more data")
    transform = model.transform(run) if hasattr(model, 'transform') else None
    model.to(dev)
    frozen = [m for n, m in model.named_modules() if under(n, cfg['freeze'])]
    for n, p in model.named_parameters():
        if under(n, cfg['freeze']):
            p.requires_grad_(False)
    if cfg['optimizer'] not in ('adamw', 'muon'):
        raise SystemExit(f"optimizer={cfg['optimizer']!r}: expected 'adamw' or 'muon'")
    if not any(p.requires_grad for p in model.parameters()):
        raise SystemExit(f"freeze={cfg['freeze']}: every parameter is frozen, nothing to train")
    optimizers = build_optimizers(model, cfg, ns_dtype)
    scales = [[group['scale'] for group in opt.param_groups] for opt in optimizers]
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg['ema_decay'] > 0 else None
    rng = torch.Generator().manual_seed(cfg['seed'] + rank)
    ckpt = dict(iter_num=0, best_val_loss=float('inf'), bad_evals=0, history=[])  # a fresh run
    if cfg['init_from'] == 'resume':
        if not os.path.exists(path):
            raise SystemExit(f"{path}: no checkpoint to resume; train with --init_from=scratch "
                             "first")
        try:
            ckpt = read_checkpoint(path, dev)
        except MediaError as e:  # truncated, empty or not a checkpoint at all
            raise SystemExit(str(e)) from e
        if ckpt['model_args'] != args or ckpt['method'] != cfg['method']:
            raise SystemExit(f"{path}: checkpoint of {ckpt['method']} {ckpt['model_args']} does "
                             "not match this config")
        reads_features = any(f not in meta['fields'] for f in model.fields)
        compared = [k for k in stamp if k != 'features' or reads_features]
        if any(ckpt['data'].get(k) != stamp[k] for k in compared):
            raise SystemExit(f"{path}: trained on another version of data/{cfg['dataset']} (mel "
                             "settings, vocabulary, classes or feature encoders differ); train "
                             "from scratch")
        if not isinstance(ckpt['optimizer'], list) or len(ckpt['optimizer']) != len(optimizers):
            raise SystemExit(f"{path}: its optimizer state is not that of "
                             f"optimizer={cfg['optimizer']!r}")
        model.load_state_dict(ckpt['model'])
        for opt, state in zip(optimizers, ckpt['optimizer']):
            opt.load_state_dict(state)
        if ema is not None:
            ema.load_state_dict(ckpt['ema'])
        rng_states = ckpt['rng']
        rng.set_state(rng_states[rank] if rank < len(rng_states) else rng_states[0])
    it = ckpt['iter_num']
    best_val = ckpt['best_val_loss']
    bad_evals = ckpt.get('bad_evals', 0)
    history = ckpt.get('history', [])   # (iteration, train loss, val loss) of every evaluation
    val_metrics = ckpt.get('val_metrics', {})      # the method's own metrics at the last one
    raw = model
    if cfg['compile']:
        model = torch.compile(model)
    if ddp:
        model = DDP(model)

    def set_train():
        """Training mode, frozen modules kept in eval mode."""
        model.train()
        for m in frozen:
            m.eval()

    @torch.no_grad()
    def estimate_loss():
        """Mean loss over eval_iters batches per split, on a fixed RNG so runs compare."""
        out = {}
        model.eval()
        for split, d in data.items():
            eval_gen = torch.Generator().manual_seed(cfg['seed'] + 999)
            losses = []
            measured = []                          # the method's own val metrics, if it has any
            for _ in range(cfg['eval_iters']):
                torch.manual_seed(cfg['seed'] + 999 + len(losses))
                batch = get_batch({f: d[f] for f in raw.fields}, cfg['batch_size'], eval_gen, dev)
                with ctx:
                    losses.append(raw(batch).item())
                    if split == 'val' and hasattr(raw, 'metrics'):
                        measured.append(raw.metrics(batch))
            out[split] = float(np.mean(losses))
            if measured:
                out['metrics'] = {k: float(np.mean([m[k] for m in measured])) for k in measured[0]}
        set_train()
        return out

    def checkpoint(improved):
        """Save the run and each rank's RNG state (master only, atomically); best.pt if improved."""
        states = [rng.get_state()]
        if ddp:
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, rng.get_state())
        if not master:
            return
        os.makedirs(cfg['out_dir'], exist_ok=True)
        optimizer_states = [opt.state_dict() for opt in optimizers]
        ema_state = ema.state_dict() if ema is not None else None
        state = dict(model=raw.state_dict(), optimizer=optimizer_states, model_args=args,
                     method=cfg['method'], iter_num=it, best_val_loss=best_val,
                     bad_evals=bad_evals, history=history, val_metrics=val_metrics, config=cfg,
                     ema=ema_state, rng=states, data=stamp)
        torch.save(state, path + '.tmp')
        os.replace(path + '.tmp', path)
        if improved:
            shutil.copyfile(path, best_path + '.tmp')
            os.replace(best_path + '.tmp', best_path)

    set_train()
    t0 = time.time()
    while it < cfg['max_iters']:
        lr = get_lr(it, cfg)
        for opt, opt_scales in zip(optimizers, scales):
            for group, scale in zip(opt.param_groups, opt_scales):
                group['lr'] = lr * scale
        for micro in range(cfg['grad_accum']):
            if ddp:
                model.require_backward_grad_sync = micro == cfg['grad_accum'] - 1
            batch = get_batch(data['train'], cfg['batch_size'], rng, dev)
            if cfg['augment'] and 'mel' in batch:
                batch['mel'] = augment_mel(batch['mel'], rng)
            if transform is not None:
                batch = transform(batch, rng)
            with ctx:
                loss = model(batch) / cfg['grad_accum']
            if not torch.isfinite(loss):
                raise SystemExit(f"non-finite loss {loss.item()} at iter {it}: lower learning_rate "
                                 "or use dtype=float32")
            loss.backward()
        if cfg['grad_clip']:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg['grad_clip'])
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if ema is not None:
            decay = min(cfg['ema_decay'], (1 + it) / (10 + it))      # early weights fade fast
            ema_update(ema, raw, decay)
        it += 1
        if master and (it % cfg['log_interval'] == 0 or it == 1):
            dt = (time.time() - t0) / (cfg['log_interval'] if it > 1 else 1)
            t0 = time.time()
            print(f"iter {it}: loss {loss.item() * cfg['grad_accum']:.4f}, lr {lr:.2e}, "
                  f"{dt * 1000:.1f}ms/iter", flush=True)
        if it % cfg['eval_interval'] == 0 or it == cfg['max_iters']:
            losses = estimate_loss()
            history.append((it, losses['train'], losses['val']))
            val_metrics = losses.get('metrics', {})
            improved = losses['val'] < best_val
            best_val = min(best_val, losses['val'])
            bad_evals = 0 if improved else bad_evals + 1
            if master:
                extra = ''.join(f", val {k} {v:.4f}" for k, v in losses.get('metrics', {}).items())
                print(f"step {it}: train loss {losses['train']:.4f}, "
                      f"val loss {losses['val']:.4f}{extra}", flush=True)
            checkpoint(improved)
            if cfg['patience'] and bad_evals >= cfg['patience']:
                if master:
                    print(f"early stop at step {it}: no better val loss in {bad_evals} evaluations "
                          f"(best {best_val:.4f}, {best_path})", flush=True)
                break
    if ddp:
        dist.barrier()                    # no rank tears gloo down while another still talks to it
        dist.destroy_process_group()
    return path


if __name__ == '__main__':
    try:
        train(configure(default_config(), script=__file__))
    except (StaleCache, MediaError, FileNotFoundError) as e:   # one line, no traceback
        sys.exit(f"error: {e}")
    if launched_by_torchrun():
        # gloo's worker threads free a finished collective's tensors when they get to it, and
        # freeing a tensor Python shares takes the GIL: once the interpreter is shutting down that
        # aborts the rank (SIGABRT, 2 runs in 79 of the DDP test). The checkpoint is written and
        # the process group destroyed, so the rank leaves without that shutdown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
