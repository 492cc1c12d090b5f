"""Every trainable network of nanoAV and the generative processes that use them.

Networks only: no file I/O, no printing, no device choices. A network's forward(batch) returns its
training loss, so one loop in train.py trains them all; `MODELS` maps a method name to its class.

References:
- Transformer blocks: Vaswani et al. 2017; pre-LN as in GPT-2 / nanoGPT.
- Contrastive encoders: CLIP (Radford et al. 2021), CLAP (Wu et al. 2023), ImageBind (Girdhar et al. 2023).
- VQ-VAE with EMA codebook and dead-code restarts: van den Oord et al. 2017; Razavi et al. 2019; SpecVQGAN (Iashin & Rahtu 2021).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def ema_update(ema, model, decay):
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (buffers copied)."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def image_to_float(images):
    """uint8 images (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1


def float_to_image(x):
    """float (B, 3, H, W) in [-1, 1] -> uint8 images (B, H, W, 3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


#################################################################################
#                               Transformer parts                               #
#################################################################################

class MLP(nn.Module):
    """Two linear layers with a GELU between, 4x wide."""

    def __init__(self, dim, hidden=None, out=None):
        super().__init__()
        self.fc = nn.Linear(dim, hidden or 4 * dim)
        self.proj = nn.Linear(hidden or 4 * dim, out or dim)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Attention(nn.Module):
    """Multi-head attention: self-attention, or cross-attention when a context is given."""

    def __init__(self, dim, n_head, context_dim=None):
        super().__init__()
        self.n_head = n_head
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, context=None, mask=None):
        """x (B, T, C), context (B, S, Cc) or None, mask (B, S) bool True where a key is real."""
        B, T, C = x.shape
        context = x if context is None else context
        q = self.q(x).view(B, T, self.n_head, -1).transpose(1, 2)                         # (B, h, T, c)
        k, v = self.kv(context).view(B, context.shape[1], 2, self.n_head, -1).permute(2, 0, 3, 1, 4)  # (B, h, S, c)
        attn_mask = None if mask is None else mask[:, None, None, :]                     # (B, 1, 1, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)                 # (B, h, T, c)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-LN transformer block: self-attention, optional cross-attention, MLP."""

    def __init__(self, dim, n_head, context_dim=None):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim), Attention(dim, n_head)
        self.cross = None
        if context_dim:
            self.ln_c, self.cross = nn.LayerNorm(dim), Attention(dim, n_head, context_dim)
        self.ln2, self.mlp = nn.LayerNorm(dim), MLP(dim)

    def forward(self, x, mask=None, context=None, context_mask=None):
        x = x + self.attn(self.ln1(x), mask=mask)
        if self.cross is not None:
            x = x + self.cross(self.ln_c(x), context, context_mask)
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """A stack of blocks and a final LayerNorm."""

    def __init__(self, dim, n_layer, n_head, context_dim=None):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, n_head, context_dim) for _ in range(n_layer)])
        self.ln = nn.LayerNorm(dim)

    def forward(self, x, mask=None, context=None, context_mask=None):
        for block in self.blocks:
            x = block(x, mask, context, context_mask)
        return self.ln(x)


#################################################################################
#                     Encoders: image, audio (log-mel), text                    #
#################################################################################

def conv_stack(channels):
    """Stride-2 3x3 convolutions through `channels`, each followed by GroupNorm and SiLU."""
    layers = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
    return nn.Sequential(*layers)


class ConvTower(nn.Module):
    """Image or log-mel encoder: strided CNN -> grid tokens -> transformer -> (pooled emb, tokens)."""

    def __init__(self, in_ch, grid, width, n_layer, n_head, n_down, embed_dim):
        super().__init__()
        self.cnn = conv_stack([in_ch] + [width // 2 ** (n_down - 1 - i) for i in range(n_down)])
        self.pos = nn.Parameter(torch.randn(1, (grid[0] >> n_down) * (grid[1] >> n_down), width) * 0.02)
        self.transformer = Transformer(width, n_layer, n_head)
        self.head = nn.Linear(width, embed_dim)

    def forward(self, x):
        """x (B, in_ch, H, W) -> emb (B, embed_dim), tokens (B, N, width)."""
        tokens = self.cnn(x).flatten(2).transpose(1, 2) + self.pos    # (B, N, width)
        tokens = self.transformer(tokens)
        return self.head(tokens.mean(1)), tokens


class TextTower(nn.Module):
    """Word-id encoder: embeddings + positions -> transformer -> (masked-mean pooled emb, tokens)."""

    def __init__(self, vocab_size, max_len, width, n_layer, n_head, embed_dim):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, width)
        self.wpe = nn.Parameter(torch.randn(1, max_len, width) * 0.02)
        self.transformer = Transformer(width, n_layer, n_head)
        self.head = nn.Linear(width, embed_dim)

    def forward(self, ids):
        """ids (B, L) with 0 as padding -> emb (B, embed_dim), tokens (B, L, width), mask (B, L)."""
        mask = ids != 0                                                    # (B, L)
        tokens = self.transformer(self.wte(ids) + self.wpe[:, :ids.shape[1]], mask=mask)  # (B, L, width)
        pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.head(pooled), tokens, mask


class MelNorm(nn.Module):
    """Fixed affine normalisation of log-mels by the dataset's mean and std (stored in the checkpoint)."""

    def __init__(self, mel_mean, mel_std):
        super().__init__()
        self.register_buffer('stats', torch.tensor([mel_mean, mel_std]))

    def forward(self, mel):
        return ((mel - self.stats[0]) / self.stats[1])[:, None]           # (B, 1, n_mels, frames)

    def inverse(self, x):
        return x[:, 0] * self.stats[1] + self.stats[0]                     # (B, n_mels, frames)


class ContrastiveModel(nn.Module):
    """CLIP / CLAP / ImageBind-like encoders: one tower per modality, InfoNCE on the listed pairs."""

    def __init__(self, modalities=('image', 'text'), pairs=(('image', 'text'),), embed_dim=128, width=128,
                 n_layer=2, n_head=4, n_down=3, vocab_size=64, max_len=16, image_size=32, n_mels=64,
                 frames=64, mel_mean=0.0, mel_std=1.0):
        super().__init__()
        self.modalities, self.pairs = tuple(modalities), [tuple(p) for p in pairs]
        towers = {'image': lambda: ConvTower(3, (image_size, image_size), width, n_layer, n_head, n_down, embed_dim),
                  'audio': lambda: ConvTower(1, (n_mels, frames), width, n_layer, n_head, n_down, embed_dim),
                  'text': lambda: TextTower(vocab_size, max_len, width, n_layer, n_head, embed_dim)}
        self.towers = nn.ModuleDict({m: towers[m]() for m in self.modalities})
        self.mel_norm = MelNorm(mel_mean, mel_std)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.fields = [{'image': 'image', 'audio': 'mel', 'text': 'caption_ids'}[m] for m in self.modalities]
        self.fields += [] if 'caption_ids' in self.fields else ['caption_ids']

    def encode(self, modality, x):
        """Embed one modality: image uint8 (B, H, W, 3), audio log-mel (B, n_mels, frames) or text ids (B, L)."""
        if modality == 'image':
            x = image_to_float(x)
        elif modality == 'audio':
            x = self.mel_norm(x)
        return self.towers[modality](x)

    def forward(self, batch):
        """Symmetric InfoNCE; samples with identical captions are all positives of each other."""
        field = {'image': 'image', 'audio': 'mel', 'text': 'caption_ids'}
        emb = {m: F.normalize(self.encode(m, batch[field[m]])[0], dim=-1) for m in self.modalities}
        ids = batch['caption_ids']
        same = (ids[:, None, :] == ids[None, :, :]).all(-1).float()        # (B, B)
        target = same / same.sum(1, keepdim=True)
        scale = self.logit_scale.clamp(max=math.log(100)).exp()
        loss = 0
        for a, b in self.pairs:
            logits = scale * emb[a] @ emb[b].T                              # (B, B)
            loss = loss + (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        return loss / len(self.pairs)


#################################################################################
#                          Tokenizers: VQ-VAE with EMA codebook                 #
#################################################################################

class ResBlock(nn.Module):
    """Residual 3x3 conv block with GroupNorm and SiLU."""

    def __init__(self, ch):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                 nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x):
        return x + self.net(x)


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser; codes follow EMA cluster means and dead codes restart on batch vectors."""

    def __init__(self, codebook_size, dim, decay=0.99, dead_after=1.0):
        super().__init__()
        self.decay, self.dead_after = decay, dead_after
        self.register_buffer('codebook', torch.randn(codebook_size, dim) * 0.1)
        self.register_buffer('ema_count', torch.ones(codebook_size))
        self.register_buffer('ema_sum', self.codebook.clone())

    def ids(self, z):
        """z (B, N, D) -> nearest code ids (B, N)."""
        d = (z.pow(2).sum(-1, keepdim=True) - 2 * z @ self.codebook.T + self.codebook.pow(2).sum(-1))  # (B, N, K)
        return d.argmin(-1)

    def forward(self, z):
        """z (B, N, D) -> quantised z with straight-through gradients, ids (B, N), commitment loss."""
        ids = self.ids(z.detach().float())
        q = self.codebook[ids]                                             # (B, N, D)
        if self.training:
            with torch.no_grad():
                flat, onehot = z.detach().float().flatten(0, 1), F.one_hot(ids.flatten(), len(self.codebook)).float()
                self.ema_count.lerp_(onehot.sum(0), 1 - self.decay)
                self.ema_sum.lerp_(onehot.T @ flat, 1 - self.decay)
                self.codebook.copy_(self.ema_sum / self.ema_count.clamp(min=1e-5)[:, None])
                dead = self.ema_count < self.dead_after
                if dead.any():
                    pick = torch.randint(len(flat), (int(dead.sum()),), device=flat.device)
                    self.codebook[dead] = flat[pick]
                    self.ema_sum[dead], self.ema_count[dead] = flat[pick], 1.0
        commit = F.mse_loss(z, q.detach())
        return z + (q - z).detach(), ids, commit


class VQVAE(nn.Module):
    """Convolutional VQ-VAE tokenizer for images (3 channels) or normalised log-mels (1 channel)."""

    def __init__(self, modality='image', width=64, n_down=2, n_res=1, codebook_size=256, code_dim=32, beta=0.25,
                 image_size=32, n_mels=64, frames=64, mel_mean=0.0, mel_std=1.0):
        super().__init__()
        self.modality, self.beta = modality, beta
        in_ch = 3 if modality == 'image' else 1
        self.grid = (image_size >> n_down, image_size >> n_down) if modality == 'image' else (n_mels >> n_down, frames >> n_down)
        self.mel_norm = MelNorm(mel_mean, mel_std)
        self.encoder = nn.Sequential(nn.Conv2d(in_ch, width, 3, padding=1), *[ResBlock(width) for _ in range(n_res)],
                                     *[m for _ in range(n_down) for m in (nn.Conv2d(width, width, 4, 2, 1), ResBlock(width))],
                                     nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, code_dim, 1))
        self.quantizer = VectorQuantizer(codebook_size, code_dim)
        self.decoder = nn.Sequential(nn.Conv2d(code_dim, width, 3, padding=1), ResBlock(width),
                                     *[m for _ in range(n_down) for m in (nn.ConvTranspose2d(width, width, 4, 2, 1), ResBlock(width))],
                                     nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, in_ch, 3, padding=1))
        self.fields = ['image' if modality == 'image' else 'mel']

    def to_input(self, media):
        return image_to_float(media) if self.modality == 'image' else self.mel_norm(media)

    def from_output(self, x):
        return float_to_image(x) if self.modality == 'image' else self.mel_norm.inverse(x)

    def encode(self, media):
        """uint8 images (B, H, W, 3) or log-mels (B, n_mels, frames) -> ids (B, h * w)."""
        z = self.encoder(self.to_input(media)).flatten(2).transpose(1, 2)  # (B, N, D)
        return self.quantizer.ids(z.float())

    def decode(self, ids):
        """ids (B, h * w) -> media of the modality."""
        q = self.quantizer.codebook[ids].transpose(1, 2).unflatten(2, self.grid)  # (B, D, h, w)
        return self.from_output(self.decoder(q))

    def forward(self, batch):
        x = self.to_input(batch[self.fields[0]])
        z = self.encoder(x)                                                 # (B, D, h, w)
        q, _, commit = self.quantizer(z.flatten(2).transpose(1, 2))
        recon = self.decoder(q.transpose(1, 2).reshape(z.shape))
        return F.mse_loss(recon, x) + self.beta * commit


#################################################################################
#                     Judges: probe classifiers for evaluation                  #
#################################################################################

class Judge(nn.Module):
    """Classifier of real media with one head per label field; multi-label heads use BCE."""

    def __init__(self, modality='image', heads=(('sources', 10),), multilabel=('sources',), width=96, n_layer=1,
                 n_head=4, n_down=3, image_size=32, n_mels=64, frames=64, mel_mean=0.0, mel_std=1.0):
        super().__init__()
        self.modality, self.heads, self.multilabel = modality, dict(heads), tuple(multilabel)
        grid, in_ch = ((image_size, image_size), 3) if modality == 'image' else ((n_mels, frames), 1)
        self.tower = ConvTower(in_ch, grid, width, n_layer, n_head, n_down, width)
        self.mel_norm = MelNorm(mel_mean, mel_std)
        self.out = nn.ModuleDict({k: nn.Linear(width, n) for k, n in self.heads.items()})
        self.fields = ['image' if modality == 'image' else 'mel'] + list(self.heads)

    def forward_logits(self, media):
        """uint8 images or log-mels -> dict of logits (B, n_classes) per head."""
        x = image_to_float(media) if self.modality == 'image' else self.mel_norm(media)
        h = F.silu(self.tower(x)[0])
        return {k: head(h) for k, head in self.out.items()}

    def forward(self, batch):
        logits = self.forward_logits(batch[self.fields[0]])
        return sum(F.binary_cross_entropy_with_logits(v, batch[k].float()) if k in self.multilabel
                   else F.cross_entropy(v, batch[k].long()) for k, v in logits.items())


#################################################################################
#              Visual Echoes: one masked transformer over audio + image         #
#################################################################################

def truncated_normal(shape, mean, std, low, high, generator=None):
    """Samples of N(mean, std) truncated to [low, high] by inverse-CDF sampling."""
    normal = torch.distributions.Normal(mean, std)
    lo, hi = normal.cdf(torch.tensor(low)), normal.cdf(torch.tensor(high))
    u = lo + (hi - lo) * torch.rand(shape, generator=generator)
    return normal.icdf(u).clamp(low, high)


def random_mask(n_tokens, ratios, generator=None):
    """Per-row random masks (B, n_tokens) with round(ratio * n_tokens) True entries for each row's ratio (B,)."""
    scores = torch.rand(len(ratios), n_tokens, generator=generator)             # (B, N)
    counts = (ratios * n_tokens).round().long().clamp(0, n_tokens)              # (B,)
    ranks = scores.argsort(1).argsort(1)
    return ranks < counts[:, None]


class MaskedAVTransformer(nn.Module):
    """Visual Echoes: bidirectional MAGE-style encoder/decoder over [audio ids, image ids] with mask ids."""

    def __init__(self, n_audio=256, n_image=64, audio_codes=256, image_codes=256, width=256, n_layer=4,
                 n_dec_layer=2, n_head=8, drop_ratio=0.5, mask_mean=0.55, mask_std=0.25, mask_min=0.2,
                 p_cond=0.5, p_uncond=0.1):
        super().__init__()
        self.sizes, self.codes = (n_audio, n_image), (audio_codes, image_codes)
        self.drop_ratio, self.mask_mean, self.mask_std, self.mask_min = drop_ratio, mask_mean, mask_std, mask_min
        self.p_cond, self.p_uncond = p_cond, p_uncond
        self.wte = nn.ModuleList([nn.Embedding(k + 1, width) for k in self.codes])  # the last id is [MASK]
        self.pos = nn.Parameter(torch.randn(1, n_audio + n_image, width) * 0.02)
        self.dec_pos = nn.Parameter(torch.randn(1, n_audio + n_image, width) * 0.02)
        self.modality = nn.Parameter(torch.randn(2, width) * 0.02)
        self.pad = nn.Parameter(torch.randn(1, 1, width) * 0.02)                  # shared pad for dropped tokens
        self.encoder = Transformer(width, n_layer, n_head)
        self.decoder = Transformer(width, n_dec_layer, n_head)
        self.out = nn.ModuleList([nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width)) for _ in self.codes])
        self.bias = nn.ParameterList([nn.Parameter(torch.zeros(k)) for k in self.codes])
        self.fields = ['vq_audio_ids', 'vq_image_ids']

    def embed(self, ids, mask):
        """ids (B, N) over [audio, image], mask (B, N) True where hidden -> embeddings (B, N, C)."""
        parts, start = [], 0
        for m, (n, k) in enumerate(zip(self.sizes, self.codes)):
            x = torch.where(mask[:, start:start + n], k, ids[:, start:start + n])
            parts.append(self.wte[m](x) + self.modality[m])
            start += n
        return torch.cat(parts, 1) + self.pos                                     # (B, N, C)

    def logits(self, ids, mask, generator=None):
        """Logits (B, N, V) for every position, V = max codebook size (-inf beyond a modality's codebook)."""
        B, N = ids.shape
        x = self.embed(ids, mask)
        n_drop = int(min(self.drop_ratio * N, mask.sum(1).min()))                 # drop masked tokens only
        order = (torch.rand(B, N, generator=generator) + (~mask).float().cpu()).argsort(1).to(ids.device)  # masked first
        keep = order[:, n_drop:].sort(1).values                                   # (B, N - n_drop)
        h = self.encoder(torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1])))
        full = self.pad.expand(B, N, -1).clone().to(h.dtype)
        full.scatter_(1, keep[..., None].expand(-1, -1, h.shape[-1]), h)          # dropped positions get the pad
        h = self.decoder(full + self.dec_pos)                                     # (B, N, C)
        V, out, start = max(self.codes), [], 0
        for m, (n, k) in enumerate(zip(self.sizes, self.codes)):
            logit = self.out[m](h[:, start:start + n]) @ self.wte[m].weight[:k].T + self.bias[m]  # (B, n, k)
            out.append(F.pad(logit, (0, V - k), value=float('-inf')))
            start += n
        return torch.cat(out, 1)

    def sample_masks(self, B, generator=None):
        """Training masks (B, N): truncated-Gaussian ratios per modality; some rows condition on a whole modality."""
        ratios = [truncated_normal((B,), self.mask_mean, self.mask_std, self.mask_min, 1.0, generator) for _ in self.sizes]
        task = torch.rand(B, generator=generator)
        cond = task < self.p_cond                                                 # one modality fully visible
        uncond = (task >= self.p_cond) & (task < self.p_cond + self.p_uncond)     # one modality fully hidden
        which = torch.rand(B, generator=generator) < 0.5
        ratios[0] = torch.where(cond & ~which, 0.0, torch.where(uncond & ~which, 1.0, ratios[0]))
        ratios[1] = torch.where(cond & which, 0.0, torch.where(uncond & which, 1.0, ratios[1]))
        return torch.cat([random_mask(n, r, generator) for n, r in zip(self.sizes, ratios)], 1)

    def forward(self, batch, generator=None):
        ids = torch.cat([batch['vq_audio_ids'], batch['vq_image_ids']], 1).long()  # (B, N)
        mask = self.sample_masks(len(ids), generator).to(ids.device)
        logits = self.logits(ids, mask, generator)
        return F.cross_entropy(logits[mask].float(), ids[mask])


def mask_schedule(progress):
    """Fraction of tokens still masked after `progress` in [0, 1] of the decoding: cos(pi/2 * progress)."""
    return math.cos(math.pi / 2 * progress)


def decode(ids, known, logits_fn, steps=16, temperature=1.0, generator=None):
    """MaskGIT iterative unmasking: ids (B, N) with known (B, N) True where given; logits_fn(ids, mask) -> (B, N, V).

    Each step samples every unknown position, keeps the most confident samples (Gumbel noise of annealed
    temperature on their log-probabilities) and re-masks the rest, following the cosine schedule; known
    tokens have infinite confidence and never change, and every position is filled after the last step.
    """
    ids, known = ids.clone(), known.clone()
    unknown0 = (~known).sum(1)                                                    # (B,)
    for step in range(steps):
        mask = ~known
        logits = logits_fn(ids, mask).float()                                     # (B, N, V)
        gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=generator).clamp(1e-20, 1)))
        sampled = (logits + gumbel.to(logits.device)).argmax(-1)                  # categorical sample (B, N)
        logp = torch.log_softmax(logits, -1).gather(-1, sampled[..., None])[..., 0]
        anneal = temperature * (1 - (step + 1) / steps)
        noise = -torch.log(-torch.log(torch.rand(logp.shape, generator=generator).clamp(1e-20, 1))).to(logp.device)
        confidence = torch.where(mask, logp + anneal * noise, torch.full_like(logp, float('inf')))
        ids = torch.where(mask, sampled, ids)
        n_masked = (unknown0.float() * mask_schedule((step + 1) / steps)).floor().long()  # (B,)
        ranks = confidence.argsort(1).argsort(1)                                  # 0 = least confident
        known = ranks >= n_masked[:, None]
    return ids


def cfg_logits(logits_fn, cond, scale):
    """Off-the-shelf CFG: s * logits(x | cond) + (1 - s) * logits(x | cond fully masked); cond (B, N) True = condition."""
    def guided(ids, mask):
        if scale == 1:
            return logits_fn(ids, mask)
        both = logits_fn(torch.cat([ids, ids]), torch.cat([mask, mask | cond]))
        c, u = both.chunk(2)
        return torch.where(torch.isinf(c), c, scale * c + (1 - scale) * u)
    return guided


MODELS = {'contrastive': ContrastiveModel, 'vq': VQVAE, 'judge': Judge, 'echoes': MaskedAVTransformer}
