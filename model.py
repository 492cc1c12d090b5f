"""Every trainable network of nanoAV and the generative processes that use them.

Networks only: no file I/O, no printing, no device choices (generators.load_generator loads
published weights into UNet, KLAutoencoder and DiT; FLUX.1's transformer and flow matching, used
only with its published weights, live in generators.py). A network's forward(batch) returns its
training loss, so one loop in train.py trains them all; a paper's own network lives in
methods/<key>.py. Generative processes take the network as a callable, each testable alone:
masked decoding (`decode`), Gaussian diffusion (`Diffusion`).

References:
1) Transformer: Vaswani et al. 2017; pre-LN blocks as in GPT-2 / nanoGPT (Karpathy)
2) contrastive encoders: CLIP (Radford et al. 2021), CLAP (Wu et al. 2023),
   ImageBind (Girdhar et al. 2023)
3) VQ-VAE with EMA codebook and dead-code restarts: van den Oord et al. 2017,
   Razavi et al. 2019; SpecVQGAN (Iashin & Rahtu 2021)
4) masked generative transformers: MaskGIT (Chang et al. 2022)
5) DDPM: Ho, Jain & Abbeel 2020; DDIM: Song, Meng & Ermon 2021;
   cosine schedule: Nichol & Dhariwal 2021
6) v-prediction: Salimans & Ho 2022; classifier-free guidance: Ho & Salimans 2022;
   trailing timesteps: Lin et al. 2024
7) latent diffusion (KL autoencoder, U-Net with spatial transformers): Rombach et al. 2022
8) AudioLDM: Liu et al. 2023; Make-An-Audio: Huang et al. 2023
9) DiT: Peebles & Xie 2023; PixArt-α: Chen et al. 2023;
   a pooled vector joined to the timestep: Flux.1, SD3 (Esser et al. 2024)
"""
import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


#################################################################################
#                  Shared layers: embeddings, attention, ResNet                  #
#################################################################################

def timestep_embedding(t, dim, shift=0.0, max_period=10000):
    """Sinusoidal [cos | sin] features of timesteps (B,) -> (B, dim); shift=1: diffusers' DiT."""
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * steps / (half - shift))  # (half,)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([args.cos(), args.sin()], dim=-1)  # (B, dim)


@functools.lru_cache(maxsize=16)
def pos_embed_2d(dim, h, w, base=None, scale=1.0):
    """Fixed 2-D sin-cos position embedding (MAE, DiT) -> (h*w, dim); PixArt rescales the grid.
    Computed once per grid (a constant, as DiT's frozen pos_embed); callers must not modify it."""
    def axis(n, pos):
        """Positions (h*w,) on an axis of n, rescaled to `base` / `scale` -> (h*w, dim/2)."""
        pos = pos.double() / (n / (base or n)) / scale
        omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
        angles = pos[:, None] * omega  # (h*w, dim/4)
        return torch.cat([angles.sin(), angles.cos()], 1)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    col_half = axis(w, cols.flatten())  # (h*w, dim/2)
    row_half = axis(h, rows.flatten())  # (h*w, dim/2)
    return torch.cat([col_half, row_half], 1).float()  # column half first, as DiT does


def mlp(i, h, o, act=None):
    """Linear, activation (SiLU by default), Linear."""
    return nn.Sequential(nn.Linear(i, h), act or nn.SiLU(), nn.Linear(h, o))


def split_heads(y, heads):
    """(B, S, C) -> (B, heads, S, C / heads)."""
    return y.unflatten(-1, (heads, -1)).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head attention of x over itself, or over a context sequence (cross-attention)."""

    def __init__(self, dim, heads, ctx_dim=None, bias=False):
        super().__init__()
        self.heads = heads
        self.fused = ctx_dim is None
        if self.fused:  # self-attention: one fused layer, rows [q; k; v] (timm's qkv)
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        else:
            self.to_q = nn.Linear(dim, dim, bias=bias)
            self.to_k = nn.Linear(ctx_dim, dim, bias=bias)
            self.to_v = nn.Linear(ctx_dim, dim, bias=bias)
        self.to_out = nn.Linear(dim, dim)

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        """Separate to_q, to_k, to_v (published weights, older checkpoints) load into qkv."""
        kinds = ('weight', 'bias') if self.fused else ()
        for kind in kinds:
            names = [f'{prefix}to_{x}.{kind}' for x in 'qkv']
            if all(n in state for n in names):
                state[f'{prefix}qkv.{kind}'] = torch.cat([state.pop(n) for n in names])  # (3C, ..)
        super()._load_from_state_dict(state, prefix, *args, **kwargs)

    def project(self, x, ctx):
        """q (B, N, C) from x; k, v (B, L, C) from ctx, or from x when ctx is None."""
        if ctx is None:
            return self.qkv(x).chunk(3, dim=-1)
        if self.fused:  # the fused layer over another sequence of its width: its rows split
            rows = [x.shape[-1], 2 * x.shape[-1]]
            q_weight, kv_weight = self.qkv.weight.split(rows)  # (C, C), (2C, C)
            q_bias, kv_bias = (None, None) if self.qkv.bias is None else self.qkv.bias.split(rows)
            q = F.linear(x, q_weight, q_bias)  # (B, N, C)
            kv = F.linear(ctx, kv_weight, kv_bias)  # (B, L, 2C)
            return (q, *kv.chunk(2, dim=-1))
        return self.to_q(x), self.to_k(ctx), self.to_v(ctx)

    def forward(self, x, ctx=None, mask=None):
        """x (B, N, C); ctx (B, L, C_ctx), None: self-attention; mask (B, L) true where real."""
        B, N, C = x.shape
        q, k, v = self.project(x, ctx)
        q = split_heads(q, self.heads)  # (B, heads, N, C/heads)
        k = split_heads(k, self.heads)  # (B, heads, L, C/heads)
        v = split_heads(v, self.heads)  # (B, heads, L, C/heads)
        keep = None
        if mask is not None:
            keep = mask.bool()[:, None, None, :]  # (B, 1, 1, L) true where a key is real
            keep = keep | ~keep.any(-1, keepdim=True)  # no real key: all of them, as -1e4 on all
        # training in bf16 on a CPU: the plain product, whose backward is 1.5-10x faster than
        # SDPA's; sampling, float32 and other devices: SDPA (on a CPU up to 2x faster)
        plain = q.device.type == 'cpu' and q.dtype == torch.bfloat16 and torch.is_grad_enabled()
        if plain:
            att = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, heads, N, L)
            if keep is not None:  # -1e4 on padding, as diffusers
                att = att.masked_fill(~keep, -1e4)
            y = att.softmax(-1) @ v  # (B, heads, N, C/heads)
        else:  # a boolean mask: SDPA drops the padded keys itself
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, heads, N, C/heads)
        return self.to_out(y.transpose(1, 2).reshape(B, N, C))  # (B, N, C)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added between, plus a shortcut (DDPM, LDM)."""

    def __init__(self, cin, cout, temb=None, groups=32, eps=1e-5):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout) if temb else None
        self.norm2 = nn.GroupNorm(groups, cout, eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb=None):
        """x (B, cin, H, W), temb (B, temb) -> (B, cout, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))  # (B, cout, H, W)
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)  # (B, cout, H, W)
        return x + h


FIELDS = {'image': 'image', 'audio': 'mel', 'text': 'caption_ids'}  # the field each modality reads


def image_to_float(images):
    """uint8 images (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1


def float_to_image(x):
    """float (B, 3, H, W) in [-1, 1] -> uint8 images (B, H, W, 3)."""
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (B, 3, H, W)
    return pixels.permute(0, 2, 3, 1)  # (B, H, W, 3)


class Block(nn.Module):
    """Pre-LN transformer block: self-attention, optional cross-attention, MLP."""

    def __init__(self, dim, n_head, context_dim=None):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_head)
        self.cross = None
        if context_dim:
            self.ln_c = nn.LayerNorm(dim)
            self.cross = Attention(dim, n_head, context_dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = mlp(dim, 4 * dim, dim, nn.GELU())

    def forward(self, x, mask=None, context=None, context_mask=None):
        """x (B, N, dim), mask (B, N) real tokens, context (B, L, context_dim) -> (B, N, dim)."""
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
        """x (B, N, dim) through every block, then LayerNorm."""
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
        conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        layers += [conv, nn.GroupNorm(math.gcd(8, c_out), c_out), nn.SiLU()]
    return nn.Sequential(*layers)


class ConvTower(nn.Module):
    """Image or log-mel encoder: strided CNN -> grid tokens -> transformer -> (emb, tokens)."""

    def __init__(self, in_ch, grid, width, n_layer, n_head, n_down, embed_dim):
        super().__init__()
        widths = [width // 2 ** (n_down - 1 - i) for i in range(n_down)]  # doubling up to width
        self.cnn = conv_stack([in_ch] + widths)
        n_tokens = (grid[0] >> n_down) * (grid[1] >> n_down)
        self.pos = nn.Parameter(torch.randn(1, n_tokens, width) * 0.02)
        self.transformer = Transformer(width, n_layer, n_head)
        self.head = nn.Linear(width, embed_dim)

    def forward(self, x):
        """x (B, in_ch, H, W) -> emb (B, embed_dim), tokens (B, N, width)."""
        tokens = self.cnn(x).flatten(2).transpose(1, 2) + self.pos  # (B, N, width)
        tokens = self.transformer(tokens)
        return self.head(tokens.mean(1)), tokens


class TextTower(nn.Module):
    """Word-id encoder: embeddings + positions -> transformer -> (masked-mean emb, tokens)."""

    def __init__(self, vocab_size, max_len, width, n_layer, n_head, embed_dim):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, width)
        self.wpe = nn.Parameter(torch.randn(1, max_len, width) * 0.02)
        self.transformer = Transformer(width, n_layer, n_head)
        self.head = nn.Linear(width, embed_dim)

    def forward(self, ids):
        """ids (B, L) with 0 as padding -> emb (B, embed_dim), tokens (B, L, width), mask (B, L)."""
        mask = ids != 0  # (B, L)
        x = self.wte(ids) + self.wpe[:, :ids.shape[1]]  # (B, L, width)
        tokens = self.transformer(x, mask=mask)  # (B, L, width)
        n_real = mask.sum(1, keepdim=True).clamp(min=1)  # (B, 1)
        pooled = (tokens * mask[..., None]).sum(1) / n_real  # (B, width)
        return self.head(pooled), tokens, mask


class MelNorm(nn.Module):
    """Fixed affine normalisation of log-mels by the dataset's mean and std (in the checkpoint)."""

    def __init__(self, mel_mean, mel_std):
        super().__init__()
        self.register_buffer('stats', torch.tensor([mel_mean, mel_std]))

    def forward(self, mel):
        """Log-mels (B, n_mels, frames) -> normalised (B, 1, n_mels, frames)."""
        return ((mel - self.stats[0]) / self.stats[1])[:, None]  # (B, 1, n_mels, frames)

    def inverse(self, x):
        """Normalised (B, 1, n_mels, frames) -> log-mels (B, n_mels, frames)."""
        return x[:, 0] * self.stats[1] + self.stats[0]  # (B, n_mels, frames)

    def media_to_float(self, modality, media):
        """Network input: images to [-1, 1], log-mels normalised, anything else as it is."""
        if modality == 'image':
            return image_to_float(media)
        if modality == 'audio':
            return self(media)
        return media

    def float_to_media(self, modality, x):
        """Network output: uint8 images, log-mels, anything else (latents) as it is."""
        if modality == 'image':
            return float_to_image(x)
        if modality == 'audio':
            return self.inverse(x)
        return x


def same_caption(ids):
    """Caption ids (B, L) -> (B, B) float, 1 where two rows have the same caption."""
    return (ids[:, None, :] == ids[None, :, :]).all(-1).float()


def info_nce(a, b, same, scale):
    """Symmetric InfoNCE of unit embeddings a, b (B, D); same (B, B) marks each row's positives."""
    target = same / same.sum(1, keepdim=True)  # (B, B), rows sum to 1
    logits = scale * a @ b.T  # (B, B)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class ContrastiveModel(nn.Module):
    """CLIP / CLAP / ImageBind-like encoders: a tower per modality, InfoNCE on the listed pairs."""

    def __init__(self, modalities=('image', 'text'), pairs=(('image', 'text'),), embed_dim=128,
                 width=128, n_layer=2, n_head=4, n_down=3, audio_down=4, vocab_size=64, max_len=16,
                 image_size=32, n_mels=64, frames=64, mel_mean=0.0, mel_std=1.0):
        super().__init__()
        self.modalities = tuple(modalities)
        self.pairs = [tuple(p) for p in pairs]
        body = (width, n_layer, n_head)
        towers = {
            'image': lambda: ConvTower(3, (image_size, image_size), *body, n_down, embed_dim),
            'audio': lambda: ConvTower(1, (n_mels, frames), *body, audio_down, embed_dim),
            'text': lambda: TextTower(vocab_size, max_len, *body, embed_dim),
        }  # only the towers asked for are built
        self.towers = nn.ModuleDict({m: towers[m]() for m in self.modalities})
        self.mel_norm = MelNorm(mel_mean, mel_std)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.fields = [FIELDS[m] for m in self.modalities]
        if 'caption_ids' not in self.fields:  # the loss finds positives by caption
            self.fields.append('caption_ids')

    def encode(self, modality, x):
        """Embed uint8 images (B, H, W, 3), log-mels (B, n_mels, frames) or text ids (B, L)."""
        return self.towers[modality](self.mel_norm.media_to_float(modality, x))

    def forward(self, batch):
        """Symmetric InfoNCE; samples with identical captions are all positives of each other."""
        emb = {}
        for m in self.modalities:
            pooled = self.encode(m, batch[FIELDS[m]])[0]  # (B, embed_dim)
            emb[m] = F.normalize(pooled, dim=-1)
        same = same_caption(batch['caption_ids'])  # (B, B)
        scale = self.logit_scale.clamp(max=math.log(100)).exp()
        loss = 0
        for a, b in self.pairs:
            loss = loss + info_nce(emb[a], emb[b], same, scale)
        return loss / len(self.pairs)


#################################################################################
#                          Tokenizers: VQ-VAE with EMA codebook                 #
#################################################################################

class VectorQuantizer(nn.Module):
    """Nearest-code quantiser; codes follow EMA cluster means, dead codes restart on the batch."""

    def __init__(self, codebook_size, dim, decay=0.99, dead_after=1.0):
        super().__init__()
        self.decay = decay
        self.dead_after = dead_after  # a code whose EMA count falls below this restarts
        self.register_buffer('codebook', torch.randn(codebook_size, dim) * 0.1)
        self.register_buffer('ema_count', torch.ones(codebook_size))
        self.register_buffer('ema_sum', self.codebook.clone())

    def ids(self, z):
        """z (B, N, D) -> nearest code ids (B, N), in float32 whatever the autocast."""
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            z_sq = z.pow(2).sum(-1, keepdim=True)  # (B, N, 1)
            code_sq = self.codebook.pow(2).sum(-1)  # (K,)
            d = z_sq - 2 * z @ self.codebook.T + code_sq  # (B, N, K) squared distances
        return d.argmin(-1)

    def forward(self, z):
        """z (B, N, D) -> straight-through quantised z, ids (B, N), commitment loss."""
        with torch.autocast(z.device.type, enabled=False):  # float32 statistics under bf16
            return self.quantize(z.float())

    def quantize(self, z):
        """The quantiser's work in the precision of z."""
        ids = self.ids(z.detach())
        q = self.codebook[ids]  # (B, N, D)
        if self.training:
            with torch.no_grad():
                flat = z.detach().float().flatten(0, 1)  # (B*N, D)
                onehot = F.one_hot(ids.flatten(), len(self.codebook)).float()  # (B*N, K)
                self.ema_count.lerp_(onehot.sum(0), 1 - self.decay)
                self.ema_sum.lerp_(onehot.T @ flat, 1 - self.decay)
                self.codebook.copy_(self.ema_sum / self.ema_count.clamp(min=1e-5)[:, None])
                dead = self.ema_count < self.dead_after
                if dead.any():  # restart each dead code on a random vector of the batch
                    pick = torch.randint(len(flat), (int(dead.sum()),), device=flat.device)
                    self.codebook[dead] = flat[pick]
                    self.ema_sum[dead] = flat[pick]
                    self.ema_count[dead] = 1.0
        commit = F.mse_loss(z, q.detach())
        return z + (q - z).detach(), ids, commit


class MediaCodec(nn.Module):
    """Base of one-modality networks (autoencoders, judges): media <-> floats, grid after n_down."""

    def __init__(self, modality, n_down, image_size, n_mels, frames, mel_mean, mel_std,
                 level=False):
        super().__init__()
        self.modality = modality
        self.fields = [FIELDS[modality]]
        self.mel_norm = MelNorm(mel_mean, mel_std)
        self.level = level and modality == 'audio'
        if modality == 'image':
            self.in_ch = 3
            self.grid = (image_size >> n_down, image_size >> n_down)
        else:
            self.in_ch = 1
            self.grid = (n_mels >> n_down, frames >> n_down)

    def to_input(self, media):
        """Media -> network floats; level=True moves each log-mel's peak to 0 first."""
        if self.level:  # every clip at a full-scale sound's loudness: decodes stay above the floor
            media = media - media.amax((1, 2), keepdim=True)  # (B, n_mels, frames)
        return self.mel_norm.media_to_float(self.modality, media)

    def from_output(self, x):
        """Network floats -> media: uint8 images, or log-mels."""
        return self.mel_norm.float_to_media(self.modality, x)


class VQVAE(MediaCodec):
    """Convolutional VQ-VAE tokenizer for images (3 channels) or normalised log-mels (1 channel)."""

    def __init__(self, modality='image', width=64, n_down=2, n_res=1, codebook_size=256,
                 code_dim=32, beta=0.25, image_size=32, n_mels=64, frames=64, mel_mean=0.0,
                 mel_std=1.0, level=False):
        super().__init__(modality, n_down, image_size, n_mels, frames, mel_mean, mel_std, level)
        self.beta = beta
        ch = [width >> (n_down - i) for i in range(n_down + 1)]  # channels double as H, W halve
        res = lambda c: ResBlock(c, c, groups=math.gcd(8, c))
        encoder = [nn.Conv2d(self.in_ch, ch[0], 3, padding=1)]
        for i in range(n_down):
            encoder += [nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1), res(ch[i + 1])]
        encoder += [res(width) for _ in range(n_res)]
        encoder += [nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, code_dim, 1)]
        self.encoder = nn.Sequential(*encoder)
        self.quantizer = VectorQuantizer(codebook_size, code_dim)
        decoder = [nn.Conv2d(code_dim, width, 3, padding=1)]
        decoder += [res(width) for _ in range(n_res)]
        for i in reversed(range(n_down)):
            decoder.append(nn.ConvTranspose2d(ch[i + 1], ch[i], 4, 2, 1))
            decoder.append(res(ch[i]) if i > 0 else nn.SiLU())  # the last upsampling: a SiLU
        decoder.append(nn.Conv2d(ch[0], self.in_ch, 3, padding=1))
        self.decoder = nn.Sequential(*decoder)

    def encode(self, media):
        """uint8 images (B, H, W, 3) or log-mels (B, n_mels, frames) -> ids (B, h * w)."""
        z = self.encoder(self.to_input(media)).flatten(2).transpose(1, 2)  # (B, N, D)
        return self.quantizer.ids(z.float())

    def decode(self, ids):
        """ids (B, h * w) -> media of the modality."""
        q = self.quantizer.codebook[ids].transpose(1, 2).unflatten(2, self.grid)  # (B, D, h, w)
        return self.from_output(self.decoder(q))

    def forward(self, batch):
        """Training loss: reconstruction MSE + beta x commitment (the codebook follows by EMA)."""
        x = self.to_input(batch[self.fields[0]])
        z = self.encoder(x)  # (B, D, h, w)
        q, _, commit = self.quantizer(z.flatten(2).transpose(1, 2))  # (B, h*w, D)
        recon = self.decoder(q.transpose(1, 2).reshape(z.shape))  # (B, C, H, W)
        return F.mse_loss(recon, x) + self.beta * commit


#################################################################################
#                     Judges: probe classifiers for evaluation                  #
#################################################################################

def heads_loss(logits, batch, multilabel):
    """Summed classification losses of {head: logits (B, n)}: BCE on multi-label heads, else CE."""
    loss = 0
    for k, head_logits in logits.items():
        if k in multilabel:
            loss = loss + F.binary_cross_entropy_with_logits(head_logits, batch[k].float())
        else:
            target = batch[k]
            target = target.float() if target.dim() == 2 else target.long()  # one-hot or ids
            loss = loss + F.cross_entropy(head_logits, target)
    return loss


class Judge(MediaCodec):
    """Classifier of real media with one head per label field; multi-label heads use BCE."""

    def __init__(self, modality='image', heads=(('sources', 10),), multilabel=('sources',),
                 width=96, n_layer=1, n_head=4, n_down=3, image_size=32, n_mels=64, frames=64,
                 mel_mean=0.0, mel_std=1.0, level=False):
        # n_down=0: the grid of the media itself, which the tower downsamples
        super().__init__(modality, 0, image_size, n_mels, frames, mel_mean, mel_std, level)
        self.heads = dict(heads)
        self.multilabel = tuple(multilabel)
        self.tower = ConvTower(self.in_ch, self.grid, width, n_layer, n_head, n_down, width)
        self.out = nn.ModuleDict({k: nn.Linear(width, n) for k, n in self.heads.items()})
        self.fields += list(self.heads)

    def forward_logits(self, media):
        """uint8 images or log-mels -> dict of logits (B, n_classes) per head."""
        h = F.silu(self.tower(self.to_input(media))[0])
        return {k: head(h) for k, head in self.out.items()}

    def forward(self, batch):
        """Training loss: BCE on multi-label heads, cross-entropy on the others, summed."""
        return heads_loss(self.forward_logits(batch[self.fields[0]]), batch, self.multilabel)


class PatchTower(nn.Module):
    """AST-style encoder: non-overlapping patches, linear embedding, positions, transformer."""

    def __init__(self, in_ch, grid, patch, width, n_layer, n_head):
        super().__init__()
        self.embed = nn.Conv2d(in_ch, width, patch, stride=patch)   # one linear map per patch
        n_tokens = (grid[0] // patch) * (grid[1] // patch)
        self.pos = nn.Parameter(torch.randn(1, n_tokens, width) * 0.02)
        self.transformer = Transformer(width, n_layer, n_head)

    def forward(self, x):
        """x (B, in_ch, H, W) -> mean-pooled emb (B, width), tokens (B, N, width)."""
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, N, width)
        tokens = self.transformer(tokens)
        return tokens.mean(1), tokens


class AudioTagger(MediaCodec):
    """A toy Audio Spectrogram Transformer: log-mel patches -> tokens, trained to tag the sounding
    sources and the acoustic environment (AudioSet's ontology has both, but no loudness class)."""

    def __init__(self, heads=(('sources', 10), ('env', 3)), multilabel=('sources',), patch=8,
                 width=128, n_layer=4, n_head=4, image_size=32, n_mels=64, frames=64, mel_mean=0.0,
                 mel_std=1.0):
        super().__init__('audio', 0, image_size, n_mels, frames, mel_mean, mel_std)
        self.modalities = ('audio',)                   # the role it serves in the toy suite
        self.heads = dict(heads)
        self.multilabel = tuple(multilabel)
        self.tower = PatchTower(1, self.grid, patch, width, n_layer, n_head)
        self.out = nn.ModuleDict({k: nn.Linear(width, n) for k, n in self.heads.items()})
        self.fields += list(self.heads)

    def encode(self, modality, mel):
        """Log-mels (B, n_mels, frames) -> emb (B, width), tokens (B, N, width)."""
        return self.tower(self.to_input(mel))

    def forward_logits(self, mel):
        """Log-mels -> dict of logits (B, n_classes) per head."""
        pooled, _ = self.encode('audio', mel)
        return {k: head(pooled) for k, head in self.out.items()}

    def forward(self, batch):
        """Training loss: BCE on the sources, cross-entropy on the environment, summed."""
        return heads_loss(self.forward_logits(batch[self.fields[0]]), batch, self.multilabel)


#################################################################################
#        MaskGIT decoding and off-the-shelf guidance of masked transformers      #
#################################################################################

def mask_schedule(progress):
    """Fraction of tokens still masked after `progress` in [0, 1]: cos(pi/2 * progress)."""
    return math.cos(math.pi / 2 * progress)


CHOICE_TEMPERATURE = 4.5  # MaskGIT's Gumbel temperature on the unmasking confidence, annealed to 0


def gumbel_noise(shape, rng=None):
    """Standard Gumbel noise -log(-log u), u ~ U(0, 1) drawn on the CPU."""
    u = torch.rand(shape, generator=rng).clamp(1e-20, 1)
    return -torch.log(-torch.log(u))


def decode(ids, known, logits_fn, steps, temperature=CHOICE_TEMPERATURE, sample_temperature=1.0,
           rng=None):
    """MaskGIT unmasking: ids (B, N), known (B, N) true where given; logits_fn(ids, mask) (B, N, V).

    Each step samples every unknown position from softmax(logits / sample_temperature) (0: the
    argmax), keeps the most confident samples (Gumbel noise of annealed temperature on their
    log-probabilities) and re-masks the rest by the cosine schedule; known tokens have infinite
    confidence and never change, and every position is filled after the last step.
    """
    ids = ids.clone()
    known = known.clone()
    unknown0 = (~known).sum(1)  # (B,)
    for step in range(steps):
        mask = ~known
        logits = logits_fn(ids, mask).float()  # (B, N, V)
        gumbel = gumbel_noise(logits.shape, rng).to(logits.device)  # drawn even for argmax
        if sample_temperature > 0:  # a categorical sample by the Gumbel-max trick
            sampled = (logits / sample_temperature + gumbel).argmax(-1)  # (B, N)
        else:
            sampled = logits.argmax(-1)  # (B, N)
        logp_all = torch.log_softmax(logits, -1)  # (B, N, V)
        logp = logp_all.gather(-1, sampled[..., None])[..., 0]  # (B, N) of the sampled tokens
        anneal = temperature * (1 - (step + 1) / steps)
        noise = gumbel_noise(logp.shape, rng).to(logp.device)  # (B, N)
        infinite = torch.full_like(logp, float('inf'))
        confidence = torch.where(mask, logp + anneal * noise, infinite)  # (B, N)
        ids = torch.where(mask, sampled, ids)
        n_masked = (unknown0.float() * mask_schedule((step + 1) / steps)).floor().long()  # (B,)
        order = confidence.argsort(1)  # (B, N) positions from the least confident up
        ranks = order.argsort(1)  # (B, N) each position's place in that order
        known = ranks >= n_masked[:, None]  # the n_masked least confident are masked again
    return ids


def cfg_logits(logits_fn, cond, scale):
    """Off-the-shelf CFG: s·logits(x | cond) + (1 - s)·logits(x | cond masked); cond (B, N) bool."""
    def guided(ids, mask):
        if scale == 1:
            return logits_fn(ids, mask)
        both = logits_fn(torch.cat([ids, ids]), torch.cat([mask, mask | cond]))  # (2B, N, V)
        c, u = both.chunk(2)  # (B, N, V) each
        mixed = scale * c + (1 - scale) * u
        return torch.where(torch.isinf(c), c, mixed)  # infinite logits (given tokens) kept
    return guided


def joint_cfg_logits(logits_fn, first, scale):
    """CFG with nothing given: `first` (N,) bool guided by the others' decoded tokens, and back."""
    by_rest = cfg_logits(logits_fn, ~first, scale)  # conditions on the rest: for `first`
    by_first = cfg_logits(logits_fn, first, scale)  # conditions on `first`: for the rest

    def guided(ids, mask):
        return torch.where(first[:, None], by_rest(ids, mask), by_first(ids, mask))  # (B, N, V)
    return guided


#################################################################################
#                Noise schedules, diffusion process, guidance, EMA               #
#################################################################################

def noise_schedule(kind='linear', T=1000, beta_start=1e-4, beta_end=0.02):
    """Betas (T,) float64: 'linear' (DDPM), 'scaled_linear' (LDM), 'cosine' (squaredcos_cap_v2)."""
    if kind == 'linear':
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if kind == 'scaled_linear':
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float64) ** 2
    if kind in ('cosine', 'squaredcos_cap_v2'):
        f = lambda s: torch.cos((s / T + 0.008) / 1.008 * math.pi / 2) ** 2  # ᾱ(s) up to a constant
        s = torch.arange(T + 1, dtype=torch.float64)
        return (1 - f(s[1:]) / f(s[:-1])).clamp(max=0.999)
    raise ValueError(f'unknown noise schedule {kind!r}')


def per_sample(values, x):
    """Per-sample values (B,) shaped (B, 1, ...) to broadcast against x (B, ...)."""
    return values.view(-1, *[1] * (x.dim() - 1))


class Diffusion:
    """Gaussian diffusion with ε-, x0- or v-prediction; the network is any net(x_t, t, **cond)."""

    def __init__(self, schedule='linear', T=1000, prediction='eps', beta_start=1e-4, beta_end=0.02):
        assert prediction in ('eps', 'x0', 'v'), prediction
        self.T = T
        self.prediction = prediction
        betas = noise_schedule(schedule, T, beta_start, beta_end)
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)  # (T,) float64
        clean = torch.ones(1, dtype=torch.float64)  # index -1: ᾱ = 1, the clean end of a chain
        self._ab_ext = torch.cat([self.alphas_cumprod, clean])  # (T + 1,)

    def _ab(self, t, x):
        """ᾱ_t shaped to broadcast against x; t = -1 is the clean end of a chain."""
        return per_sample(self._ab_ext.to(x.device)[t].to(x.dtype), x)

    def q_sample(self, x0, t, noise):
        """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε."""
        a = self._ab(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def noised(self, x0, rng=None):
        """x0 noised at uniform timesteps -> x_t, t (B,), ε."""
        t = torch.randint(0, self.T, (x0.shape[0],), generator=rng, device=x0.device)
        noise = torch.randn(x0.shape, generator=rng, device=x0.device, dtype=x0.dtype)
        return self.q_sample(x0, t, noise), t, noise

    def loss(self, net, x0, cond=None, rng=None):
        """MSE between the network's output and its target (ε, x0 or v) at uniform timesteps."""
        x_t, t, noise = self.noised(x0, rng)
        a = self._ab(t, x0)
        v = a.sqrt() * noise - (1 - a).sqrt() * x0
        target = {'eps': noise, 'x0': x0, 'v': v}[self.prediction]
        out = net(x_t, t, **(cond or {}))
        return F.mse_loss(out[:, :x0.shape[1]], target)  # a learned variance is not trained here

    def predict(self, out, x_t, t):
        """(x0, ε) estimates from a network output; extra channels (learned variance) ignored."""
        a = self._ab(t, x_t)
        out = out[:, :x_t.shape[1]]
        if self.prediction == 'eps':
            return (x_t - (1 - a).sqrt() * out) / a.sqrt(), out
        if self.prediction == 'x0':
            return out, (x_t - a.sqrt() * out) / (1 - a).sqrt()
        x0 = a.sqrt() * x_t - (1 - a).sqrt() * out  # from v
        eps = (1 - a).sqrt() * x_t + a.sqrt() * out
        return x0, eps

    @torch.no_grad()
    def sample(self, net, x, cond=None, steps=50, sampler='ddim', eta=0.0, rng=None):
        """Denoise x = x_T over trailing-spaced steps: DDIM with η (0: deterministic) or DDPM."""
        assert 1 <= steps <= self.T and sampler in ('ddim', 'ddpm'), (steps, sampler)
        if sampler == 'ddpm':
            eta = 1.0
        spaced = torch.arange(steps, 0, -1) * self.T / steps  # (steps,) T .. T/steps
        ts = (spaced.round().long() - 1).tolist() + [-1]  # T-1 .. T/steps-1, then -1: clean
        for t, t_prev in zip(ts[:-1], ts[1:]):
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            x0, eps = self.predict(net(x, tt, **(cond or {})), x, tt)
            a = self._ab(tt, x)
            ap = self._ab(torch.full_like(tt, t_prev), x)
            sigma = eta * ((1 - ap) / (1 - a) * (1 - a / ap)).sqrt()  # η = 1: DDPM posterior std
            x = ap.sqrt() * x0 + (1 - ap - sigma ** 2).clamp(min=0).sqrt() * eps
            if eta > 0 and t_prev >= 0:
                noise = torch.randn(x.shape, generator=rng, device=x.device, dtype=x.dtype)
                x = x + sigma * noise
        return x


def guided(net, scale, null_cond):
    """Classifier-free guidance as a network: cond and null cond (its entries) in one batch."""
    def net_cfg(x, t, **cond):
        assert set(null_cond) <= set(cond), \
            f'null_cond keys {sorted(null_cond)} must be among {sorted(cond)}'
        both = {k: torch.cat([v, null_cond.get(k, v)]) for k, v in cond.items()}
        out = net(torch.cat([x, x]), torch.cat([t, t]), **both)  # (2B, ...)
        c, u = out.chunk(2)  # (B, ...) each
        return u + scale * (c - u)
    return net_cfg


@torch.no_grad()
def ema_update(ema_model, model, decay):
    """ema ← decay·ema + (1 − decay)·model on parameters; buffers are copied."""
    for e, p in zip(ema_model.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema_model.buffers(), model.buffers()):
        e.copy_(b)


#################################################################################
#             Latent-diffusion U-Net (AudioLDM, Make-An-Audio) and VAE           #
#################################################################################

class TransformerBlock(nn.Module):
    """Pre-LN block: self-attention, cross-attention (AudioLDM: to x if no context), GEGLU MLP."""

    def __init__(self, dim, heads, ctx_dim=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, ctx_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 8 * dim)  # GEGLU: values and gates
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x, ctx=None, mask=None):
        """x (B, N, dim), ctx (B, L, ctx_dim) or None (attend to x), mask (B, L) -> (B, N, dim)."""
        x = x + self.attn1(self.norm1(x))
        if ctx is None:
            mask = None  # attn2 attends to x: nothing is padding
        x = x + self.attn2(self.norm2(x), ctx, mask)
        h, gate = self.fc1(self.norm3(x)).chunk(2, dim=-1)  # (B, N, 4*dim) each
        return x + self.fc2(h * F.gelu(gate))


class SpatialTransformer(nn.Module):
    """Transformer over a feature map's pixels: GroupNorm, 1x1 conv, blocks, 1x1 conv, residual."""

    def __init__(self, c, heads, ctx_dim=None, groups=32, depth=1):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.proj_in = nn.Conv2d(c, c, 1)
        blocks = [TransformerBlock(c, heads, ctx_dim) for _ in range(depth)]
        self.transformer_blocks = nn.ModuleList(blocks)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x, ctx=None, mask=None):
        """x (B, C, H, W), ctx (B, L, ctx_dim) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # (B, H*W, C)
        for block in self.transformer_blocks:
            h = block(h, ctx, mask)
        return x + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))  # (B, C, H, W)


class PixelAttention(Attention):
    """Single-head self-attention over pixels, GroupNorm before, residual (LDM autoencoder)."""

    def __init__(self, c, groups=32):
        super().__init__(c, 1, bias=True)
        self.group_norm = nn.GroupNorm(groups, c, eps=1e-6)

    def forward(self, x, ctx=None, mask=None):
        """x (B, C, H, W) -> x + attention over its H*W pixels."""
        B, C, H, W = x.shape
        h = super().forward(self.group_norm(x).flatten(2).transpose(1, 2))  # (B, H*W, C)
        return x + h.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)


class Level(nn.Module):
    """One resolution of a U-Net or autoencoder: ResNets, each maybe with attention; resampling."""

    def __init__(self, cins, cout, temb, groups, eps, attn=None, resample=None, pad=1):
        super().__init__()
        self.resnets = nn.ModuleList([ResBlock(c, cout, temb, groups, eps) for c in cins])
        self.attentions = nn.ModuleList([attn() for _ in cins] if attn else [])
        self.resample = None
        if resample:  # 'down': a stride-2 conv; 'up': a conv after nearest upsampling
            stride = 2 if resample == 'down' else 1
            self.resample = nn.Conv2d(cout, cout, 3, stride, pad)
        self.mode = resample
        self.pad = pad

    def forward(self, h, temb=None, ctx=None, mask=None, skips=None):
        """h (B, C, H, W); skips: the U-Net's down-path activations, one popped per ResNet."""
        outs = []
        for i, resnet in enumerate(self.resnets):
            if skips is not None:
                h = torch.cat([h, skips.pop()], 1)
            h = resnet(h, temb)
            if len(self.attentions):
                h = self.attentions[i](h, ctx, mask)
            outs.append(h)
        if self.mode == 'down':
            if self.pad == 0:  # the autoencoder pads asymmetrically
                h = F.pad(h, (0, 1, 0, 1))
            h = self.resample(h)
            outs.append(h)
        elif self.mode == 'up':
            if skips:  # to the next skip's size, as a side may have been odd
                h = F.interpolate(h, size=tuple(skips[-1].shape[-2:]), mode='nearest')
            else:
                h = F.interpolate(h, scale_factor=2.0, mode='nearest')
            h = self.resample(h)
        return h, outs


class Mid(nn.Module):
    """Bottleneck: ResNet block, attention, ResNet block."""

    def __init__(self, c, temb, groups, eps, attn):
        super().__init__()
        self.resnets = nn.ModuleList([ResBlock(c, c, temb, groups, eps) for _ in range(2)])
        self.attentions = nn.ModuleList([attn()])

    def forward(self, h, temb=None, ctx=None, mask=None):
        """h (B, C, H, W) -> (B, C, H, W)."""
        h = self.resnets[0](h, temb)
        h = self.attentions[0](h, ctx, mask)
        return self.resnets[1](h, temb)


class UNet(nn.Module):
    """Latent-diffusion U-Net: a vector joins the time embedding (AudioLDM's CLAP), tokens cross."""

    def __init__(self, in_ch=8, out_ch=8, channels=(128, 256, 384, 640), layers=2,
                 attn=(False, True, True, True), heads=8, groups=32, eps=1e-5, vec_dim=None,
                 vec_concat=True, ctx_dim=None, depth=1):
        super().__init__()
        c0 = channels[0]
        temb = 4 * c0
        n = len(channels)
        self.conv_in = nn.Conv2d(in_ch, c0, 3, padding=1)
        self.time_embedding = mlp(c0, temb, temb)
        self.class_embedding = nn.Linear(vec_dim, temb) if vec_dim else None
        self.vec_concat = bool(vec_dim) and vec_concat
        tdim = 2 * temb if self.vec_concat else temb  # the ResNets' time embedding width

        def spatial(on, c):
            """A Level's attention factory: spatial transformers (ctx_dim None: on themselves)."""
            if on:
                return lambda: SpatialTransformer(c, heads, ctx_dim, groups, depth)
        self.down_blocks = nn.ModuleList()
        skip_ch = [c0]  # the channels of the activations the up path will take
        c = c0
        for i, (co, a) in enumerate(zip(channels, attn)):
            down = 'down' if i < n - 1 else None
            cins = [c] + [co] * (layers - 1)
            self.down_blocks.append(Level(cins, co, tdim, groups, eps, spatial(a, co), down))
            skip_ch += [co] * (layers + bool(down))
            c = co
        self.mid_block = Mid(c, tdim, groups, eps, spatial(True, c))
        self.up_blocks = nn.ModuleList()
        for i, (co, a) in enumerate(zip(reversed(channels), reversed(attn))):
            cins = [ci + skip_ch.pop() for ci in [c] + [co] * layers]  # each joined by a skip
            up = 'up' if i < n - 1 else None
            self.up_blocks.append(Level(cins, co, tdim, groups, eps, spatial(a, co), up))
            c = co
        self.conv_norm_out = nn.GroupNorm(groups, c0, eps)
        self.conv_out = nn.Conv2d(c0, out_ch, 3, padding=1)

    def forward(self, x, t, vec=None, ctx=None, ctx_mask=None):
        """x (B, in_ch, H, W), t (B,), vec (B, vec_dim), ctx (B, L, ctx_dim), ctx_mask (B, L)."""
        t_freq = timestep_embedding(t, self.conv_in.out_channels).to(x.dtype)  # (B, c0)
        emb = self.time_embedding(t_freq)  # (B, temb)
        if self.class_embedding is not None:
            v = self.class_embedding(vec)  # (B, temb)
            if self.vec_concat:
                emb = torch.cat([emb, v], 1)  # (B, 2 temb)
            else:
                emb = emb + v
        h = self.conv_in(x)  # (B, c0, H, W)
        skips = [h]
        for block in self.down_blocks:
            h, outs = block(h, emb, ctx, ctx_mask)
            skips += outs
        h = self.mid_block(h, emb, ctx, ctx_mask)
        for block in self.up_blocks:
            h, _ = block(h, emb, ctx, ctx_mask, skips)
        return self.conv_out(F.silu(self.conv_norm_out(h)))  # (B, out_ch, H, W)


class KLAutoencoder(nn.Module):
    """KL-regularised autoencoder (LDM; AudioLDM's mel VAE): x -> (mean, logvar); latents -> x."""

    def __init__(self, in_ch=1, out_ch=1, channels=(128, 256, 512), layers=2, latent=8, groups=32,
                 scaling_factor=1.0, quant_conv=True, shift_factor=0.0, attn=None):
        super().__init__()
        self.scaling_factor = scaling_factor  # the diffusion model sees scaling_factor · z ...
        self.shift_factor = shift_factor  # ... or scaling_factor · (z - shift_factor) (Flux's VAE)
        eps = 1e-6
        c0 = channels[0]
        c1 = channels[-1]
        n = len(channels)
        if not attn:  # per level: attention after each ResNet block (LDM)
            attn = (False,) * n

        def pixel(on, c):
            """A Level's attention factory: pixel attention on c channels, if on."""
            if on:
                return lambda: PixelAttention(c, groups)
        downs = nn.ModuleList()
        for i, (ci, co, a) in enumerate(zip([c0] + list(channels[:-1]), channels, attn)):
            down = 'down' if i < n - 1 else None
            cins = [ci] + [co] * (layers - 1)
            downs.append(Level(cins, co, None, groups, eps, pixel(a, co), down, pad=0))
        self.encoder = nn.ModuleDict(dict(
            conv_in=nn.Conv2d(in_ch, c0, 3, padding=1),
            down_blocks=downs,
            mid_block=Mid(c1, None, groups, eps, pixel(True, c1)),
            conv_norm_out=nn.GroupNorm(groups, c1, eps),
            conv_out=nn.Conv2d(c1, 2 * latent, 3, padding=1)))
        rev = list(channels[::-1])
        ups = nn.ModuleList()
        for i, (ci, co, a) in enumerate(zip([c1] + rev[:-1], rev, attn[::-1])):
            up = 'up' if i < n - 1 else None
            ups.append(Level([ci] + [co] * layers, co, None, groups, eps, pixel(a, co), up))
        self.decoder = nn.ModuleDict(dict(
            conv_in=nn.Conv2d(latent, c1, 3, padding=1),
            up_blocks=ups,
            mid_block=Mid(c1, None, groups, eps, pixel(True, c1)),
            conv_norm_out=nn.GroupNorm(groups, c0, eps),
            conv_out=nn.Conv2d(c0, out_ch, 3, padding=1)))
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1) if quant_conv else nn.Identity()
        self.post_quant_conv = nn.Conv2d(latent, latent, 1) if quant_conv else nn.Identity()

    def encode(self, x):
        """x (B, in_ch, H, W) -> mean, logvar, each (B, latent, H / 2^(n-1), W / 2^(n-1))."""
        e = self.encoder
        h = e['conv_in'](x)
        for block in e['down_blocks']:
            h, _ = block(h)
        h = e['mid_block'](h)
        h = e['conv_out'](F.silu(e['conv_norm_out'](h)))  # (B, 2 latent, h, w)
        mean, logvar = self.quant_conv(h).chunk(2, dim=1)  # (B, latent, h, w) each
        return mean, logvar.clamp(-30.0, 20.0)

    @staticmethod
    def sample(mean, logvar, rng=None):
        """z = mean + σ·ε."""
        noise = torch.randn(mean.shape, generator=rng, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * logvar).exp() * noise

    def decode(self, z):
        """z (B, latent, h, w), unscaled -> (B, out_ch, H, W)."""
        d = self.decoder
        h = d['mid_block'](d['conv_in'](self.post_quant_conv(z)))  # (B, c1, h, w)
        for block in d['up_blocks']:
            h, _ = block(h)
        return d['conv_out'](F.silu(d['conv_norm_out'](h)))


#################################################################################
#                        Diffusion transformer (DiT, PixArt)                     #
#################################################################################

def modulation(d, n):
    """adaLN's MLP of the conditioning vector (B, d): SiLU, Linear to n vectors (B, n*d)."""
    return nn.Sequential(nn.SiLU(), nn.Linear(d, n * d))


def modulate(x, shift, scale):
    """adaLN: a normalised x (B, N, d) scaled by 1 + scale and shifted, each (B, 1, d)."""
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    """Transformer block under adaLN-Zero (DiT) or adaLN-single (PixArt: shared t_block + table)."""

    def __init__(self, d, heads, mlp_ratio=4.0, cross=False, adaln='zero', eps=1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=eps)
        self.attn = Attention(d, heads, bias=True)
        self.cross = Attention(d, heads, bias=True) if cross else None
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=eps)
        hidden = int(d * mlp_ratio)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)
        self.adaLN_modulation = None  # DiT: the block's own MLP of c
        self.scale_shift_table = None  # PixArt: a learned table plus the shared t_block(c)
        if adaln == 'zero':
            self.adaLN_modulation = modulation(d, 6)
        if adaln == 'single':
            self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d ** 0.5)

    def forward(self, x, c, ctx=None, mask=None):
        """x (B, N, d); c (B, d) (adaLN-Zero) or t_block's (B, 6d) (adaLN-single); ctx (B, L, d)."""
        B, _, d = x.shape
        if self.scale_shift_table is None:
            m = self.adaLN_modulation(c).view(B, 6, d)  # (B, 6, d)
        else:
            m = self.scale_shift_table[None] + c.view(B, 6, d)  # (B, 6, d)
        shift1, scale1, gate1, shift2, scale2, gate2 = m.unsqueeze(2).unbind(1)  # each (B, 1, d)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1))
        if self.cross is not None:
            x = x + self.cross(x, ctx, mask)
        h = self.fc1(modulate(self.norm2(x), shift2, scale2))  # (B, N, hidden)
        return x + gate2 * self.fc2(F.gelu(h, approximate='tanh'))


class DiT(nn.Module):
    """Diffusion transformer on latent patches, given a class, tokens and/or a pooled vector."""

    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28,
                 num_heads=16, mlp_ratio=4.0, num_classes=0, ctx_dim=0, vec_dim=0, learn_sigma=True,
                 adaln='zero', learn_null=True, size_cond=False, freq_shift=0.0, pos_scale=1.0,
                 eps=1e-6):
        super().__init__()
        assert adaln in ('zero', 'single'), adaln
        d = hidden_size
        self.p = patch_size
        self.adaln = adaln
        self.num_classes = num_classes
        self.out_channels = in_channels * (2 if learn_sigma else 1)  # learn_sigma: + a variance
        self.base = input_size // patch_size  # the grid of the position embedding (PixArt)
        self.pos_scale = pos_scale
        self.freq_shift = freq_shift
        self.x_embedder = nn.Conv2d(in_channels, d, patch_size, patch_size)
        self.t_embedder = mlp(256, d, d)
        self.y_embedder = nn.Embedding(num_classes + 1, d) if num_classes else None  # +1: null
        self.ctx_embedder = mlp(ctx_dim, d, d, nn.GELU(approximate='tanh')) if ctx_dim else None
        self.vec_embedder = mlp(vec_dim, d, d) if vec_dim else None
        self.null_ctx = None  # learned CFG nulls of the tokens and of the vector
        self.null_vec = None
        if ctx_dim and learn_null:
            self.null_ctx = nn.Parameter(torch.randn(d) / d ** 0.5)
        if vec_dim and learn_null:
            self.null_vec = nn.Parameter(torch.randn(d) / d ** 0.5)
        self.res_embedder = mlp(256, d // 3, d // 3) if size_cond else None  # PixArt: H and W,
        self.ar_embedder = mlp(256, d // 3, d // 3) if size_cond else None  # the aspect ratio
        self.t_block = modulation(d, 6) if adaln == 'single' else None
        block = lambda: DiTBlock(d, num_heads, mlp_ratio, bool(ctx_dim), adaln, eps)
        self.blocks = nn.ModuleList([block() for _ in range(depth)])
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        if adaln == 'zero':
            self.final_mod = modulation(d, 2)
        else:
            self.final_mod = nn.Parameter(torch.randn(2, d) / d ** 0.5)
        self.final_linear = nn.Linear(d, patch_size ** 2 * self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        """DiT's init: xavier linears (and patch conv), N(0, 0.02) embeddings, zero-init outputs."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.x_embedder.weight.view(self.x_embedder.out_channels, -1))
        small = [self.y_embedder]
        for seq in (self.t_embedder, self.ctx_embedder, self.t_block):
            if seq is not None:
                small += list(seq)
        for m in small:
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        # zero adaLN-Zero modulations, cross-attention outputs (PixArt) and the final layer:
        # every block starts as the identity and the output is exactly 0
        zero = [self.final_linear]
        if self.adaln == 'zero':
            zero.append(self.final_mod[1])
        for block in self.blocks:
            if block.adaLN_modulation is not None:
                zero.append(block.adaLN_modulation[1])
            if block.cross is not None:
                zero.append(block.cross.to_out)
        for lin in zero:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x, t, y=None, ctx=None, ctx_mask=None, vec=None, size=None, drop_y=None,
                drop_ctx=None, drop_vec=None):
        """Velocity, noise or x0 (and variance) of latents x (B, C, H, W) at timesteps t (B,).

        y (B,) class ids (num_classes: the null class); ctx (B, L, ctx_dim) tokens, ctx_mask (B, L)
        true where real; vec (B, vec_dim) pooled vector; size (B, 3) PixArt's (height, width,
        aspect); drop_y, drop_ctx, drop_vec (B,) bool: rows whose class, tokens or vector become
        the learned null (CFG training and the unconditional branch; each alone for ablations).
        """
        B, _, H, W = x.shape
        h = H // self.p
        w = W // self.p
        x = self.x_embedder(x).flatten(2).transpose(1, 2)  # (B, N, d)
        x = x + pos_embed_2d(x.shape[-1], h, w, self.base, self.pos_scale).to(x)
        c = self.t_embedder(timestep_embedding(t, 256, self.freq_shift).to(x.dtype))  # (B, d)
        if self.y_embedder is not None:
            if drop_y is not None:
                y = y.masked_fill(drop_y, self.num_classes)
            c = c + self.y_embedder(y)
        if self.vec_embedder is not None:
            v = self.vec_embedder(vec)  # (B, d)
            if drop_vec is not None:
                v = torch.where(drop_vec[:, None], self.null_vec.to(v), v)
            c = c + v
        if self.res_embedder is not None:
            hw = timestep_embedding(size[:, :2].flatten(), 256).to(x.dtype)  # (2B, 256)
            res = self.res_embedder(hw).view(B, -1)  # (B, 2d/3)
            ar = self.ar_embedder(timestep_embedding(size[:, 2], 256).to(x.dtype))  # (B, d/3)
            c = c + torch.cat([res, ar], 1)
        if self.ctx_embedder is not None:
            ctx = self.ctx_embedder(ctx)  # (B, L, d)
            if drop_ctx is not None:
                ctx = torch.where(drop_ctx[:, None, None], self.null_ctx.to(ctx), ctx)
        m = c  # adaLN-Zero: each block modulates from c
        if self.t_block is not None:  # adaLN-single: one shared MLP
            m = self.t_block(c)  # (B, 6d)
        for block in self.blocks:
            x = block(x, m, ctx, ctx_mask)
        if self.adaln == 'zero':
            mod = self.final_mod(c).view(B, 2, -1)  # (B, 2, d)
        else:
            mod = self.final_mod[None] + c[:, None]  # (B, 2, d)
        shift, scale = mod.unsqueeze(2).unbind(1)  # (B, 1, d) each
        x = self.final_linear(modulate(self.final_norm(x), shift, scale))  # (B, N, p*p*out)
        x = x.view(B, h, w, self.p, self.p, self.out_channels)  # (B, h, w, p, p, out)
        x = x.permute(0, 5, 1, 3, 2, 4)  # (B, out, h, p, w, p)
        return x.reshape(B, self.out_channels, H, W)  # (B, out, H, W)


#################################################################################
#     Generators trained on a dataset: a media autoencoder, latent diffusion     #
#################################################################################

class MediaAutoencoder(MediaCodec):
    """A KLAutoencoder of one modality: MSE + kl_weight·KL; latents scaled to unit std."""

    def __init__(self, modality='audio', channels=(16, 32, 64), layers=1, latent=4, groups=8,
                 kl_weight=1e-4, image_size=32, n_mels=64, frames=64, mel_mean=0.0, mel_std=1.0):
        n_down = len(channels) - 1
        super().__init__(modality, n_down, image_size, n_mels, frames, mel_mean, mel_std)
        self.kl_weight = kl_weight
        self.shape = (latent, *self.grid)
        self.vae = KLAutoencoder(self.in_ch, self.in_ch, channels, layers, latent, groups)
        self.register_buffer('latent_std', torch.ones(()))  # of the latent means: LDM's scale

    def encode(self, media):
        """Media -> scaled latent means (B, latent, h, w)."""
        return self.vae.encode(self.to_input(media))[0] / self.latent_std

    def decode(self, z):
        """Scaled latents (B, latent, h, w) -> media."""
        return self.from_output(self.vae.decode(z * self.latent_std))

    def forward(self, batch):
        """Training loss: MSE of a posterior sample + kl_weight x KL; tracks the latent std."""
        x = self.to_input(batch[self.fields[0]])
        mean, logvar = self.vae.encode(x)  # (B, latent, h, w) each
        if self.training:
            with torch.no_grad():
                self.latent_std.lerp_(mean.float().std(), 0.01)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        recon = self.vae.decode(self.vae.sample(mean, logvar))  # (B, C, H, W)
        return F.mse_loss(recon, x) + self.kl_weight * kl


class LatentDiffusion(nn.Module):
    """A UNet or DiT on media or cached latents given cached vectors (vec) and/or tokens (ctx)."""

    def __init__(self, net='unet', net_args=None, shape=(4, 16, 16), target='kl_audio_latent',
                 vec=None, ctx=None, unit_vec=True, p_uncond=0.1, schedule='cosine',
                 prediction='v', mel_mean=0.0, mel_std=1.0):
        super().__init__()
        assert net in ('unet', 'dit') and (vec or ctx), (net, vec, ctx)
        self.net = {'unet': UNet, 'dit': DiT}[net](**(net_args or {}))
        self.is_dit = net == 'dit'
        self.shape = tuple(shape)
        self.target = target
        self.unit_vec = unit_vec  # vectors L2-normalised, as CLAP's
        self.p_uncond = p_uncond  # CFG training: conditions dropped (U-Net: zeros, DiT: nulls)
        self.roles = {k: f for k, f in (('vec', vec), ('ctx', ctx)) if f}  # net argument -> field
        self.fields = [target] + list(self.roles.values())
        modality_of = {field: m for m, field in FIELDS.items()}
        self.modality = modality_of.get(target)  # None: the target is a cached latent
        self.mel_norm = MelNorm(mel_mean, mel_std)
        self.diffusion = Diffusion(schedule, 1000, prediction)

    def from_output(self, x):
        """Denoised floats -> media of the target modality (latents stay as they are)."""
        return self.mel_norm.float_to_media(self.modality, x)

    def conditions(self, cond, drop):
        """{vec, ctx} as floats; the rows of each role in drop[role] (B,) bool become its null."""
        out = {}
        for role, v in cond.items():
            v = v.float()
            if role == 'vec' and self.unit_vec:
                v = F.normalize(v, dim=-1)
            out[role] = v
        if self.is_dit:  # the DiT puts in its learned nulls
            for role in cond:
                out[f'drop_{role}'] = drop[role]
            return out
        for role, v in out.items():  # the U-Net's null: zeros
            keep = ~per_sample(drop[role], v)
            out[role] = v * keep
        return out

    def forward(self, batch):
        """Training loss: the diffusion loss of the target, conditions dropped at rate p_uncond."""
        x0 = self.mel_norm.media_to_float(self.modality, batch[self.target]).float()  # (B, C, H, W)
        drop = torch.rand(len(x0), device=x0.device) < self.p_uncond  # (B,)
        cond = {role: batch[field] for role, field in self.roles.items()}
        cond = self.conditions(cond, {role: drop for role in cond})  # one draw for every role
        return self.diffusion.loss(self.net, x0, cond)

    @torch.no_grad()
    def generate(self, cond, steps=25, cfg=3.0, sampler='ddim', rng=None, nulls=()):
        """{vec (B, D), ctx (B, L, D)} -> B media (or latents) by DDIM/DDPM at guidance scale cfg.

        The roles in `nulls` are replaced by their null in both branches (single-branch ablations).
        """
        v = next(iter(cond.values()))
        B = len(v)
        given = {r: torch.full((B,), r in nulls, dtype=torch.bool, device=v.device) for r in cond}
        hidden = {r: torch.ones(B, dtype=torch.bool, device=v.device) for r in cond}
        c = self.conditions(cond, given)
        net = self.net
        if cfg != 1:
            net = guided(self.net, cfg, self.conditions(cond, hidden))
        x = torch.randn((B, *self.shape), generator=rng, device=v.device)  # (B, C, H, W)
        x = self.diffusion.sample(net, x, c, steps, sampler, rng=rng)
        return self.from_output(x)


_SIZES = {'XL': (28, 1152, 16), 'L': (24, 1024, 16), 'B': (12, 768, 12), 'S': (12, 384, 6)}
DiT_models = {f'DiT-{s}/{p}': dict(depth=n, hidden_size=d, num_heads=h, patch_size=p)
              for s, (n, d, h) in _SIZES.items() for p in (2, 4, 8)}  # each size with each patch
DiT_models['PixArt-XL/2'] = dict(depth=28, hidden_size=1152, num_heads=16, patch_size=2,
                                 ctx_dim=4096, adaln='single', learn_null=False)
