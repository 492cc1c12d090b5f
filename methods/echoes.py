"""Visual Echoes: one masked transformer over image and audio tokens, for every direction at once.

A picture and a sound are each tokenized by a frozen VQ tokenizer (an 8x8 grid of image codes, an
8x8 grid of log-mel codes). One bidirectional transformer reads the concatenated [audio ids, image
ids] with some positions replaced by a [MASK] id and predicts the hidden ones. What is hidden
decides the task: the audio (image->audio), the picture (audio->image), both (joint generation) or a
time span of the audio (inpainting, guided by the picture). At inference MaskGIT's iterative
unmasking fills the hidden positions (model.decode) and classifier-free guidance comes off the
shelf: the same network with the condition masked whole is the unconditional branch
(model.cfg_logits).

    python train.py config/echoes.py
    python sample.py --ckpt out/toyav_echoes --image cat.png     # image -> sound

References:
1) Visual Echoes: Yang et al. 2024, "Visual Echoes: A Simple Unified Transformer for Audio-Visual
   Generation"
2) MAGE (Li et al. 2023): the encoder drops masked tokens, the decoder fills them with a shared pad
3) MaskGIT (Chang et al. 2022): cosine mask schedule, confidence-ordered unmasking
4) VQ tokenizers: VQ-VAE (van den Oord et al. 2017), SpecVQGAN for log-mels (Iashin & Rahtu 2021)
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from encoders import load_toy, parts_of
from model import CHOICE_TEMPERATURE, Transformer, cfg_logits, decode, joint_cfg_logits

STEPS = 16  # unmasking steps that fill one modality (image->audio, audio->image, inpainting)
JOINT_STEPS = 30           # unmasking steps of joint generation, which fills both modalities


#################################################################################
#                         Training masks (Sec. 3.2)                             #
#################################################################################

def truncated_normal(shape, mean, std, low, high, rng=None):
    """Samples of N(mean, std) truncated to [low, high] by inverse-CDF sampling."""
    normal = torch.distributions.Normal(mean, std)
    lo = normal.cdf(torch.tensor(low))
    hi = normal.cdf(torch.tensor(high))
    u = lo + (hi - lo) * torch.rand(shape, generator=rng)
    return normal.icdf(u).clamp(low, high)


def random_mask(n_tokens, ratios, rng=None):
    """Per-row random masks (B, n_tokens) with round(ratio * n_tokens) True entries per row."""
    scores = torch.rand(len(ratios), n_tokens, generator=rng)                   # (B, N)
    counts = (ratios * n_tokens).round().long().clamp(0, n_tokens)              # (B,)
    order = scores.argsort(1)  # (B, N) positions by score
    ranks = order.argsort(1)  # (B, N) rank of each position
    return ranks < counts[:, None]


#################################################################################
#                 The masked audio-visual transformer (Sec. 3.1)                #
#################################################################################

class MaskedAVTransformer(nn.Module):
    """Bidirectional MAGE-style encoder/decoder over [audio ids, image ids], a [MASK] id each."""

    def __init__(self, n_audio=256, n_image=64, audio_codes=256, image_codes=256, width=256,
                 n_layer=4, n_dec_layer=2, n_head=8, drop_ratio=0.5, mask_mean=0.55, mask_std=0.25,
                 mask_min=0.2, p_cond=0.5, p_uncond=0.1, code_init=False):
        super().__init__()
        self.sizes = (n_audio, n_image)
        self.codes = (audio_codes, image_codes)
        self.code_init = code_init
        self.drop_ratio = drop_ratio
        self.mask_mean = mask_mean
        self.mask_std = mask_std
        self.mask_min = mask_min
        self.p_cond = p_cond
        self.p_uncond = p_uncond
        n_tokens = n_audio + n_image
        # last id: [MASK]
        self.wte = nn.ModuleList([nn.Embedding(k + 1, width) for k in self.codes])
        self.pos = nn.Parameter(torch.randn(1, n_tokens, width) * 0.02)
        self.dec_pos = nn.Parameter(torch.randn(1, n_tokens, width) * 0.02)
        self.modality = nn.Parameter(torch.randn(2, width) * 0.02)
        self.pad = nn.Parameter(torch.randn(1, 1, width) * 0.02)    # shared pad for dropped tokens
        self.encoder = Transformer(width, n_layer, n_head)
        self.decoder = Transformer(width, n_dec_layer, n_head)
        head = lambda: nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.out = nn.ModuleList([head() for _ in self.codes])
        self.bias = nn.ParameterList([nn.Parameter(torch.zeros(k)) for k in self.codes])
        for table in self.wte:
            # small, as in GPT: logits are dot products with it
            nn.init.normal_(table.weight, std=0.02)
        self.fields = ['vq_audio_ids', 'vq_image_ids']

    def embed(self, ids, mask):
        """ids (B, N) over [audio, image], mask (B, N) True where hidden -> embeddings (B, N, C)."""
        parts = []
        for i, hidden, k, wte, mod in zip(ids.split(self.sizes, 1), mask.split(self.sizes, 1),
                                          self.codes, self.wte, self.modality):
            shown = torch.where(hidden, k, i)  # (B, n) hidden ids become [MASK]
            parts.append(wte(shown) + mod)                           # (B, n, C)
        return torch.cat(parts, 1) + self.pos                        # (B, N, C)

    def drop_tokens(self, mask, rng=None):
        """MAGE's token drop: the positions the encoder reads, a share of each row's masks dropped.

        Returns keep (B, L), the positions the encoder reads, kept ones first and in order, and
        real (B, L), True where a slot holds a kept token (rows that drop fewer are padded)."""
        B, N = mask.shape
        n_drop = (mask.sum(1) * self.drop_ratio).long()                          # (B,)
        score = torch.rand(B, N, generator=rng).to(mask.device)                  # (B, N) in [0, 1)
        score = score + (~mask).float()                                          # masked ones first
        order = score.argsort(1)                                                 # (B, N) by score
        drop_rank = order.argsort(1)                                   # (B, N) 0: dropped first
        dropped = drop_rank < n_drop[:, None]                                    # (B, N)
        L = N - int(n_drop.min())
        in_order = torch.linspace(0, 0.5, N, device=mask.device)  # ties broken by position
        keep = (dropped.float() + in_order).argsort(1)[:, :L]                    # (B, L)
        real = torch.arange(L, device=mask.device) < (N - n_drop)[:, None]       # (B, L)
        return keep, real

    def logits(self, ids, mask, rng=None):
        """Logits (B, N, V) for every position, V the larger codebook (-inf past a modality's own).
        """
        B, N = ids.shape
        x = self.embed(ids, mask)                                                # (B, N, C)
        C = x.shape[-1]
        keep, real = self.drop_tokens(mask, rng)                                 # (B, L) each
        kept = torch.gather(x, 1, keep[..., None].expand(-1, -1, C))             # (B, L, C)
        h = self.encoder(kept, mask=real)                                        # (B, L, C)
        h = torch.where(real[..., None], h, self.pad.to(h.dtype))  # padding slots -> pad
        full = self.pad.expand(B, N, -1).clone().to(h.dtype)                     # (B, N, C)
        full.scatter_(1, keep[..., None].expand(-1, -1, C), h)  # dropped stay the pad
        h = self.decoder(full + self.dec_pos)                                    # (B, N, C)
        V = max(self.codes)
        out = []
        for m, (hm, k) in enumerate(zip(h.split(self.sizes, 1), self.codes)):
            table = self.wte[m].weight[:k]  # (k, C) without [MASK]
            logit = self.out[m](hm) @ table.T + self.bias[m]                     # (B, n, k)
            out.append(F.pad(logit, (0, V - k), value=float('-inf')))            # (B, n, V)
        return torch.cat(out, 1)                                                 # (B, N, V)

    def sample_masks(self, B, rng=None):
        """Training masks (B, N): per-modality truncated-Gaussian ratios (co-training rows); with
        p_cond one modality is whole and the other masked at a ratio of the decoding schedule, as
        image->audio and audio->image start at inference; with p_uncond one modality is hidden
        whole (the unconditional branch of guidance)."""
        spread = (self.mask_mean, self.mask_std, self.mask_min, 1.0)     # N(mean, std) in [min, 1]
        ratios = [truncated_normal((B,), *spread, rng) for _ in self.sizes]         # (B,) each
        ratios = torch.stack(ratios, 1)                                          # (B, 2)
        task = torch.rand(B, generator=rng)  # (B,) which kind of row
        side = (torch.rand(B, generator=rng) < 0.5).long()  # (B,) which modality
        progress = torch.rand(B, generator=rng)  # (B,) a decoding step
        scheduled = torch.cos(math.pi / 2 * progress).clamp(min=self.mask_min)
        cond = task < self.p_cond
        uncond = (task >= self.p_cond) & (task < self.p_cond + self.p_uncond)
        rows = torch.arange(B)
        ratios[rows[cond], side[cond]] = 0.0
        ratios[rows[cond], 1 - side[cond]] = scheduled[cond]
        ratios[rows[uncond], side[uncond]] = 1.0
        masks = [random_mask(n, ratios[:, m], rng) for m, n in enumerate(self.sizes)]
        return torch.cat(masks, 1)                                               # (B, N)

    def forward(self, batch, rng=None):
        """Training loss: cross-entropy on the masked positions of [audio ids, image ids]."""
        ids = torch.cat([batch['vq_audio_ids'], batch['vq_image_ids']], 1).long()  # (B, N)
        mask = self.sample_masks(len(ids), rng).to(ids.device)
        logits = self.logits(ids, mask, rng)                                     # (B, N, V)
        return F.cross_entropy(logits[mask].float(), ids[mask])

    # hooks of train.py's loop

    @torch.no_grad()
    def init_tokens(self, codebooks, rng=None):
        """Start each token table as a random projection of its tokenizer's centred codes (K, D), at
        the table's std, so that codes which decode alike start alike."""
        for table, book in zip(self.wte, codebooks):
            book = book.float()
            proj = torch.randn(book.shape[1], table.weight.shape[1], generator=rng)  # (D, C)
            emb = (book - book.mean(0)) @ proj                                      # (K, C)
            table.weight[:len(book)] = emb * (table.weight.std() / emb.std())

    def setup(self, run):
        """Before training from scratch: with code_init, token tables from the tokenizers' codes."""
        if not self.code_init:
            return
        names = ('vq_audio', 'vq_image')
        tokenizers = [load_toy(name, run['parts'], run['ckpt_dir']) for name in names]
        books = [tokenizer.net.quantizer.codebook for tokenizer in tokenizers]
        self.init_tokens(books, torch.Generator().manual_seed(run['seed']))

    def transform(self, run):
        """With augment=True the loop warps the training log-mels; the frozen tokenizer that made
        the cache re-tokenizes them every step (the cached ids cannot follow the warp)."""
        if not run['augment']:
            return None
        tokenizer = load_toy('vq_audio', run['parts'], run['ckpt_dir'], run['device'])

        def retokenize(batch, rng):
            batch['vq_audio_ids'] = tokenizer.encode(batch['mel'])                  # (B, n_audio)
            return batch
        return retokenize


Model = MaskedAVTransformer


#################################################################################
#                    Inference: tasks as known-token masks (Sec. 3.3)           #
#################################################################################

class Pipeline:
    """Visual Echoes at inference: the frozen tokenizers around the transformer, a task per mask."""

    TASKS = {'i2a': (('image',), ('audio',)), 'a2i': (('audio',), ('image',)),
             'joint': ((), ('audio', 'image')), 'inpaint': (('audio', 'image'), ('audio',))}
    OPTIONS = dict(
        steps=(None, f"unmasking steps (None: {STEPS}, joint {JOINT_STEPS})"),
        cfg_scale=(3.0, "guidance scale s: s*logits(x|c) + (1-s)*logits(x|c hidden); joint "
                        "generation guides each modality by the other's tokens decoded so far"),
        temperature=(CHOICE_TEMPERATURE, "Gumbel temperature of the unmasking confidence "
                                         "(MaskGIT's; annealed to 0 over the steps)"),
        sample_temperature=(1.0, "temperature of the token samples (1: categorical, below 1 "
                                 "sharper, 0: the argmax)"),
        span=((0.25, 0.75), "inpainting: the audio time span to regenerate, fractions of the clip"))

    def __init__(self, model, ckpt, ckpt_dir='out', device='cpu', **options):
        data = ckpt['data']
        self.model = model
        self.device = device
        self.options = options
        self.tasks = self.TASKS
        self.audio_tok = load_toy('vq_audio', parts_of(data), ckpt_dir, device, ckpt)
        self.image_tok = load_toy('vq_image', parts_of(data), ckpt_dir, device, ckpt)
        self.mel_config = self.audio_tok.mel_config
        self.n_audio, self.n_image = model.sizes
        self.time_steps = self.audio_tok.net.grid[1]          # audio tokens are (freq, time)

    def known(self, task, B):
        """Known-mask (B, N) of a task: True where a token is given."""
        audio_known = torch.full((B, self.n_audio), task in ('a2i', 'inpaint'))
        if task == 'inpaint':
            lo, hi = self.options['span']
            t = torch.arange(self.n_audio) % self.time_steps  # time index of each token
            inside = (t >= lo * self.time_steps) & (t < hi * self.time_steps)
            audio_known = ~inside.expand(B, -1)
        image_known = torch.full((B, self.n_image), task in ('i2a', 'inpaint'))
        return torch.cat([audio_known, image_known], 1)                    # (B, N)

    @torch.no_grad()
    def fill(self, ids, known, steps, rng):
        """Fill the unknown positions of [audio ids, image ids] (B, N) by guided unmasking."""
        opts = self.options
        net = lambda x, m: self.model.logits(x, m, rng)
        if known.any():
            logits_fn = cfg_logits(net, known, opts['cfg_scale'])
        else:
            first = torch.arange(ids.shape[1], device=self.device) < self.n_audio  # audio positions
            logits_fn = joint_cfg_logits(net, first, opts['cfg_scale'])
        temperatures = (opts['temperature'], opts['sample_temperature'])
        return decode(ids, known, logits_fn, steps, *temperatures, rng)

    def generate(self, task, cond, rng=None, n=1):
        """{image uint8 (B, H, W, 3), audio log-mel (B, n_mels, frames)} -> {audio, image} media."""
        B = len(next(iter(cond.values()))) if cond else n
        audio_ids = torch.zeros(B, self.n_audio, dtype=torch.long)
        image_ids = torch.zeros(B, self.n_image, dtype=torch.long)
        if 'audio' in cond:
            audio_ids = self.audio_tok.encode(cond['audio']).long()               # (B, n_audio)
        if 'image' in cond:
            image_ids = self.image_tok.encode(cond['image']).long()               # (B, n_image)
        ids = torch.cat([audio_ids, image_ids], 1).to(self.device)               # (B, N)
        known = self.known(task, B).to(self.device)
        steps = self.options['steps'] or (JOINT_STEPS if task == 'joint' else STEPS)
        out = self.fill(ids, known, steps, rng)
        audio = self.audio_tok.decode(out[:, :self.n_audio])  # (B, n_mels, frames)
        image = self.image_tok.decode(out[:, self.n_audio:])                      # (B, H, W, 3)
        outputs = self.tasks[task][1]
        return {m: media for m, media in (('audio', audio), ('image', image)) if m in outputs}
