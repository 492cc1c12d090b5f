"""One training loop for every method of nanoAV: a method is a network whose forward(batch) is its loss.

    python train.py config/toyav_clip.py
    python train.py config/toyav_clip.py --max_iters=100 --batch_size=32
    torchrun --standalone --nproc_per_node=2 train.py config/toyav_clip.py     # DDP

Iterations, not epochs; warmup + cosine LR; AdamW, or Muon for the linear layers' weights; gradient accumulation;
EMA when ema_decay > 0; bf16 autocast when dtype='bfloat16'; augment=True warps, shifts and masks training
log-mels (networks on audio token ids get the augmented log-mels re-tokenized by the frozen tokenizer of the
cache); eval every eval_interval iterations on a fixed RNG state; atomic checkpoints of the uncompiled module
with model_args and config; init_from='resume' continues at the exact iteration with the optimizer, EMA and
data-sampler state.
References: nanoGPT (Karpathy) for the loop; MMAudio (Cheng et al. 2025) for the fixed eval RNG; VTLP (Jaitly &
Hinton 2013) and SpecAugment (Park et al. 2019) for the log-mel augmentation; Muon (Jordan et al. 2024) as
torch.optim.Muon.
"""
import copy
import inspect
import math
import os
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from configurator import configure
from encoders import MediaError, load_toy, read_checkpoint
from model import MODELS, ema_update
from data import open_split
from encoders import StaleCache

# -----------------------------------------------------------------------------
out_dir = 'out/toyav_clip'         # checkpoint directory
method = 'contrastive'             # a key of model.MODELS
model_args = {}                    # constructor arguments of the method's network (dataset sizes are added)
dataset = 'toyav'                  # data/<dataset>/ made by prepare.py
data_dir = 'data'                  # where datasets live
ckpt_dir = 'out'                   # where the frozen encoders behind cached features live (out/<dataset>_<name>/)
init_from = 'scratch'              # 'scratch' or 'resume' (from out_dir/ckpt.pt)
batch_size = 64                    # samples per micro-batch (per process)
grad_accum = 1                     # micro-batches per optimizer step
max_iters = 1000                   # optimizer steps
learning_rate = 1e-3               # peak learning rate
min_lr = 1e-4                      # final learning rate of the cosine
warmup_iters = 50                  # linear warmup steps
decay_lr = True                    # cosine decay to min_lr at max_iters
weight_decay = 0.05                # AdamW weight decay on matrices
beta1 = 0.9                        # AdamW beta1
beta2 = 0.99                       # AdamW beta2
optimizer = 'adamw'                # 'adamw', or 'muon': Muon for the weights of linear layers, AdamW for the rest
grad_clip = 1.0                    # clip the gradient norm at this value (0 = off)
augment = False                    # training log-mels: band warp, time stretch and shift, time and band masks (audio ids re-made)
ema_decay = 0.0                    # EMA of the weights (0 = off); the EMA is what gets sampled
eval_interval = 250                # evaluate and checkpoint every this many steps
eval_iters = 10                    # batches per split in an evaluation
log_interval = 50                  # print a log line every this many steps
seed = 1337                        # one seed for initialisation, batches, masking and noise
device = 'cpu'                     # 'cpu', 'cuda', 'cuda:0', 'mps'
dtype = 'float32'                  # 'float32' or 'bfloat16' (autocast)
compile = False                    # torch.compile the network
threads = 0                        # torch CPU threads (0 = torch's default)
# -----------------------------------------------------------------------------
CONFIG_KEYS = [k for k, v in globals().items() if not k.startswith('_') and k.islower() and isinstance(v, (int, float, bool, str, dict))]


def default_config():
    """The defaults above as a fresh dict."""
    return {k: copy.deepcopy(globals()[k]) for k in CONFIG_KEYS}


def get_lr(it, cfg):
    """Linear warmup, then cosine decay from learning_rate to min_lr at max_iters."""
    if it < cfg['warmup_iters']:
        return cfg['learning_rate'] * (it + 1) / (cfg['warmup_iters'] + 1)
    if not cfg['decay_lr'] or it >= cfg['max_iters']:
        return cfg['learning_rate'] if not cfg['decay_lr'] else cfg['min_lr']
    ratio = (it - cfg['warmup_iters']) / max(1, cfg['max_iters'] - cfg['warmup_iters'])
    return cfg['min_lr'] + 0.5 * (1 + math.cos(math.pi * ratio)) * (cfg['learning_rate'] - cfg['min_lr'])


def data_args(cls, meta):
    """Constructor arguments a network takes from the dataset's meta.json (sizes, vocabulary, mel stats, tokenizers)."""
    known = dict(vocab_size=len(meta['vocab']) + 2, max_len=meta['max_len'], image_size=meta['image_size'],
                 n_mels=meta['mel']['n_mels'], frames=meta['mel']['frames'], mel_mean=meta['mel_mean'],
                 mel_std=meta['mel_std'])
    for role, tok in (('audio', 'vq_audio'), ('image', 'vq_image')):
        if tok in meta.get('features', {}).get('tokenizers', {}):
            info = meta['features']['tokenizers'][tok]
            known.update({f"n_{role}": info['n_tokens'], f"{role}_codes": info['codebook_size']})
    params = inspect.signature(cls).parameters
    return {k: v for k, v in known.items() if k in params}


def get_batch(data, n, gen, device):
    """A random batch of n samples from memmapped fields -> dict of tensors."""
    size = len(next(iter(data.values())))
    idx = np.sort(torch.randint(size, (n,), generator=gen).numpy())
    return {k: torch.from_numpy(np.ascontiguousarray(v[idx])).to(device) for k, v in data.items()}


def augment_mel(mel, gen, warp=0.15, stretch=0.25, shift=0.25, time_mask=10, band_mask=8):
    """Log-mels (B, n_mels, frames) with each clip's bands scaled by up to 1 +- warp (a vocal tract of another
    length), time by up to 1 +- stretch and moved by up to +-shift of its length (empty places at the clip's floor),
    then one run of < time_mask frames and one of < band_mask bands set to the floor."""
    B, H, W = mel.shape
    sym = lambda: 2 * torch.rand(B, 1, 1, generator=gen) - 1                                   # (B, 1, 1) in [-1, 1]
    ys = torch.linspace(-1, 1, H)[None, :, None] / (1 + warp * sym())                          # (B, H, 1)
    xs = torch.linspace(-1, 1, W)[None, None, :] / (1 + stretch * sym()) - 2 * shift * sym()   # (B, 1, W)
    grid = torch.stack(torch.broadcast_tensors(xs, ys), -1).to(mel.device)                     # (B, H, W, 2)
    floor = mel.amin((1, 2), keepdim=True)                                                     # (B, 1, 1)
    out = F.grid_sample((mel - floor)[:, None], grid, align_corners=True)[:, 0] + floor       # (B, H, W)
    for size, pos in ((time_mask, torch.arange(W).view(1, 1, W)), (band_mask, torch.arange(H).view(1, H, 1))):
        start = torch.randint(pos.numel(), (B, 1, 1), generator=gen)
        width = torch.randint(max(1, size), (B, 1, 1), generator=gen)
        out = torch.where(((pos >= start) & (pos < start + width)).to(mel.device), floor, out)
    return out


def audio_retokenizer(model, cfg, meta, dev):
    """With augment=True, a network that reads cached audio token ids sees its augmented log-mels through the
    frozen toy tokenizer that made the cache (None when the network reads no audio ids or augment is off)."""
    if not cfg['augment'] or 'vq_audio_ids' not in model.fields:
        return None
    if meta.get('features', {}).get('suite') != 'toy':
        raise SystemExit(f"augment=True re-tokenizes log-mels with a toy tokenizer; data/{cfg['dataset']} holds "
                         f"{meta.get('features', {}).get('suite')} features")
    return load_toy('vq_audio', cfg['dataset'], cfg['ckpt_dir'], dev)


def save_checkpoint(path, state):
    """torch.save to a temporary file, then rename."""
    torch.save(state, path + '.tmp')
    os.replace(path + '.tmp', path)


def train(cfg):
    """Train cfg['method'] as configured; returns the final checkpoint path."""
    ddp = int(os.environ.get('RANK', -1)) != -1
    rank, world = (int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])) if ddp else (0, 1)
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
    ctx = nullcontext() if cfg['dtype'] == 'float32' else torch.autocast(dev.split(':')[0], dtype=torch.bfloat16)
    path = os.path.join(cfg['out_dir'], 'ckpt.pt')

    cls = MODELS[cfg['method']]
    _, meta = open_split(cfg['data_dir'], cfg['dataset'], 'train', [])
    args = {**data_args(cls, meta), **cfg['model_args']}
    stamp = dict(mel=meta['mel'], vocab=meta['vocab'], max_len=meta['max_len'], image_size=meta['image_size'],
                 dataset=meta['dataset'], classes=meta.get('classes'),
                 features={k: meta['features'][k] for k in ('suite', 'encoders')} if 'features' in meta else None)
    model = cls(**args)
    if getattr(model, 'code_init', False) and cfg['init_from'] == 'scratch':
        model.init_tokens([load_toy(name, cfg['dataset'], cfg['ckpt_dir']).net.quantizer.codebook
                           for name in ('vq_audio', 'vq_image')], torch.Generator().manual_seed(cfg['seed']))
    data = {s: open_split(cfg['data_dir'], cfg['dataset'], s, model.fields, cfg['ckpt_dir'])[0] for s in ('train', 'val')}
    tokenizer = audio_retokenizer(model, cfg, meta, dev)
    if tokenizer is not None:                                  # only training batches are augmented
        data['train']['mel'] = open_split(cfg['data_dir'], cfg['dataset'], 'train', ['mel'])[0]['mel']
    empty = [s for s, d in data.items() if not len(d[model.fields[0]])]
    if empty:
        raise SystemExit(f"data/{cfg['dataset']}: the {' and '.join(empty)} split has no samples; "
                         "prepare it with more data")
    model.to(dev)
    if cfg['optimizer'] not in ('adamw', 'muon'):
        raise SystemExit(f"optimizer={cfg['optimizer']!r}: expected 'adamw' or 'muon'")
    matrices = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear) and cfg['optimizer'] == 'muon'}
    muon = [p for p in model.parameters() if id(p) in matrices]
    decay = [p for p in model.parameters() if p.dim() >= 2 and id(p) not in matrices]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizers = [torch.optim.AdamW([{'params': decay, 'weight_decay': cfg['weight_decay']},
                                     {'params': no_decay, 'weight_decay': 0.0}],
                                    lr=cfg['learning_rate'], betas=(cfg['beta1'], cfg['beta2']))]
    if muon:
        optimizers.append(torch.optim.Muon(muon, lr=cfg['learning_rate'], weight_decay=cfg['weight_decay'],
                                           adjust_lr_fn='match_rms_adamw'))
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg['ema_decay'] > 0 else None
    gen = torch.Generator().manual_seed(cfg['seed'] + rank)
    it, best_val = 0, float('inf')
    if cfg['init_from'] == 'resume':
        if not os.path.exists(path):
            raise SystemExit(f"{path}: no checkpoint to resume; train with --init_from=scratch first")
        try:
            ckpt = read_checkpoint(path, dev)
        except MediaError as e:                                 # truncated, empty or not a checkpoint at all
            raise SystemExit(str(e)) from e
        if ckpt['model_args'] != args or ckpt['method'] != cfg['method']:
            raise SystemExit(f"{path}: checkpoint of {ckpt['method']} {ckpt['model_args']} does not match this config")
        compared = [k for k in stamp if k != 'features' or any(f not in meta['fields'] for f in model.fields)]
        if any(ckpt['data'].get(k) != stamp[k] for k in compared):                 # features: if the model reads them
            raise SystemExit(f"{path}: trained on another version of data/{cfg['dataset']} (mel settings, vocabulary, "
                             f"classes or feature encoders differ); train from scratch")
        if not isinstance(ckpt['optimizer'], list) or len(ckpt['optimizer']) != len(optimizers):
            raise SystemExit(f"{path}: its optimizer state is not that of optimizer={cfg['optimizer']!r}")
        model.load_state_dict(ckpt['model'])
        for opt, state in zip(optimizers, ckpt['optimizer']):
            opt.load_state_dict(state)
        if ema is not None:
            ema.load_state_dict(ckpt['ema'])
        gen.set_state(ckpt['rng'][rank] if rank < len(ckpt['rng']) else ckpt['rng'][0])
        it, best_val = ckpt['iter_num'], ckpt['best_val_loss']
    raw = model
    if cfg['compile']:
        model = torch.compile(model)
    if ddp:
        model = DDP(model)

    @torch.no_grad()
    def estimate_loss():
        """Mean loss over eval_iters batches per split, on a fixed RNG so numbers compare across runs."""
        out = {}
        model.eval()
        for split, d in data.items():
            eval_gen = torch.Generator().manual_seed(cfg['seed'] + 999)
            losses = []
            for _ in range(cfg['eval_iters']):
                torch.manual_seed(cfg['seed'] + 999 + len(losses))
                with ctx:
                    losses.append(raw(get_batch(d, cfg['batch_size'], eval_gen, dev)).item())
            out[split] = float(np.mean(losses))
        model.train()
        return out

    def checkpoint():
        """Save model, optimizers, EMA, every rank's generator state and the data stamp (master only, atomically)."""
        rng = [gen.get_state()]
        if ddp:
            rng = [None] * world
            dist.all_gather_object(rng, gen.get_state())
        if master:
            os.makedirs(cfg['out_dir'], exist_ok=True)
            save_checkpoint(path, dict(model=raw.state_dict(), optimizer=[opt.state_dict() for opt in optimizers],
                                       model_args=args, method=cfg['method'], iter_num=it, best_val_loss=best_val, config=cfg,
                                       ema=ema.state_dict() if ema is not None else None, rng=rng, data=stamp))

    model.train()
    t0 = time.time()
    while it < cfg['max_iters']:
        lr = get_lr(it, cfg)
        for group in (g for opt in optimizers for g in opt.param_groups):
            group['lr'] = lr
        for micro in range(cfg['grad_accum']):
            if ddp:
                model.require_backward_grad_sync = micro == cfg['grad_accum'] - 1
            batch = get_batch(data['train'], cfg['batch_size'], gen, dev)
            if cfg['augment'] and 'mel' in batch:
                batch['mel'] = augment_mel(batch['mel'], gen)
                if tokenizer is not None:
                    batch['vq_audio_ids'] = tokenizer.encode(batch['mel'])                   # (B, n_audio)
            with ctx:
                loss = model(batch) / cfg['grad_accum']
            if not torch.isfinite(loss):
                raise SystemExit(f"non-finite loss {loss.item()} at iter {it}: lower learning_rate or use dtype=float32")
            loss.backward()
        if cfg['grad_clip']:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg['grad_clip'])
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema_update(ema, raw, min(cfg['ema_decay'], (1 + it) / (10 + it)))   # warmup: early weights fade fast
        it += 1
        if master and (it % cfg['log_interval'] == 0 or it == 1):
            dt = (time.time() - t0) / (cfg['log_interval'] if it > 1 else 1)
            t0 = time.time()
            print(f"iter {it}: loss {loss.item() * cfg['grad_accum']:.4f}, lr {lr:.2e}, {dt * 1000:.1f}ms/iter", flush=True)
        if it % cfg['eval_interval'] == 0 or it == cfg['max_iters']:
            losses = estimate_loss()
            best_val = min(best_val, losses['val'])
            if master:
                print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)
            checkpoint()
    if ddp:
        dist.barrier()                    # no rank tears gloo down while another still talks to it
        dist.destroy_process_group()
    return path


if __name__ == '__main__':
    try:
        train(configure(default_config(), script=__file__))
    except (StaleCache, MediaError, FileNotFoundError) as e:   # one line naming the file, no traceback
        sys.exit(f"error: {e}")
