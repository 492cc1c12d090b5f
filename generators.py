"""Published generators: weights -> modules by key mapping; AudioLDM and FLUX.1 pipelines on them.

FLUX.1's transformer and its rectified flow are here (used only with published weights); AudioLDM's
UNet and VAE, PixArt-alpha's and FLUX.1's transformers and FLUX.1's VAE (diffusers layouts),
Make-An-Audio's UNet and VAE (CompVis latent-diffusion layout), facebookresearch/DiT's and
black-forest-labs/flux's checkpoints are loaded into UNet, KLAutoencoder, DiT and FluxTransformer:
a config converter and a state-dict renamer per layout, both checked by parity tests against tiny
random diffusers models (tests/test_generators.py, tests/test_flux.py, tests/test_maa_import.py).
Nothing here trains; `load_generator` returns a module in eval mode. `AudioLDM` and `Flux` read a
diffusers pipeline folder whole and sample as its pipeline does (parity: tests/test_hf_pipeline.py,
tests/test_flux.py).

References:
1) AudioLDM: Liu et al. 2023; Make-An-Audio: Huang et al. 2023
2) DiT: Peebles & Xie 2023; PixArt-alpha: Chen et al. 2023; FLUX.1: Black Forest Labs 2024
3) layouts: diffusers (von Platen et al. 2022), CompVis latent diffusion (Rombach et al. 2022),
   or the authors' own (facebookresearch/DiT, black-forest-labs/flux)
4) rectified flow: Liu, Gong & Liu 2023; flow matching: Lipman et al. 2023; RoPE: Su et al. 2021
5) MMDiT, logit-normal times, time shift: SD3 (Esser et al. 2024); QK-norm: Dehghani et al. 2023
"""
import json
import math
import os
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from encoders import (MAA_CKPT, Frozen, HFClapText, HFHifiGan, HFMaaText, MelConfig, maa_bert,
                      read_maa_checkpoint)
from model import (DiT, Diffusion, KLAutoencoder, UNet, guided, mlp, modulate, modulation,
                   per_sample, split_heads, timestep_embedding)


#################################################################################
#          Flux.1: double- and single-stream transformer with 3-axis RoPE        #
#################################################################################

def rope_angles(ids, axes_dim, theta=10000):
    """Rotary angles of position ids (S, axes) -> cos, sin, each (S, sum(axes_dim))."""
    angles = []
    for i, dim in enumerate(axes_dim):
        exponents = torch.arange(0, dim, 2, dtype=torch.float64, device=ids.device) / dim
        pos = ids[:, i].double()[:, None]  # (S, 1) positions on this axis
        angles.append(pos * theta ** -exponents[None])  # (S, dim/2)
    angle = torch.cat(angles, 1).repeat_interleave(2, 1)  # (S, head_dim): one angle per pair
    return angle.cos().float(), angle.sin().float()


def rotate(x, cos, sin):
    """RoPE as Flux applies it: each pair (x_2j, x_2j+1) of x (B, heads, S, hd) turned."""
    x_even, x_odd = x.unflatten(-1, (-1, 2)).unbind(-1)  # (B, heads, S, hd/2) each
    turned = torch.stack([-x_odd, x_even], -1).flatten(-2)  # (B, heads, S, hd): turned by 90°
    return (x * cos + turned * sin).to(x.dtype)  # angles in fp32, as diffusers and BFL


def flux_positions(n_txt, h, w, device=None):
    """Ids (n_txt + h*w, 3) on (text, row, column): text at 0, patch (i, j) at (0, i, j)."""
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                                indexing='ij')
    img = torch.stack([torch.zeros_like(rows), rows, cols], -1).flatten(0, 1)  # (h*w, 3)
    txt = torch.zeros(n_txt, 3, dtype=img.dtype, device=device)  # (L, 3)
    return torch.cat([txt, img])  # (L + h*w, 3)


def joint_attention(q, k, v, cos, sin, mask=None):
    """Attention over [text; image], q and k rotated: (B, heads, S, hd) each -> (B, S, C)."""
    q = rotate(q, cos, sin)
    k = rotate(k, cos, sin)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, S, hd)
    return y.transpose(1, 2).flatten(2)  # (B, S, C)


class QKNormProjection(nn.Module):
    """Query, key and value projections in heads; queries and keys RMS-normalised per head."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(d, d)
        self.to_k = nn.Linear(d, d)
        self.to_v = nn.Linear(d, d)
        self.norm_q = nn.RMSNorm(d // heads, eps=1e-6)
        self.norm_k = nn.RMSNorm(d // heads, eps=1e-6)

    def qkv(self, x):
        """x (B, S, d) -> q, k, v, each (B, heads, S, d / heads)."""
        q = self.norm_q(split_heads(self.to_q(x), self.heads))
        k = self.norm_k(split_heads(self.to_k(x), self.heads))
        return q, k, split_heads(self.to_v(x), self.heads)


class FluxStream(QKNormProjection):
    """One modality's half of a double block: adaLN-Zero, QK-normed projections, output, MLP."""

    def __init__(self, d, heads, mlp_ratio=4.0):
        super().__init__(d, heads)
        self.adaLN_modulation = modulation(d, 6)
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.to_out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.fc1 = nn.Linear(d, int(d * mlp_ratio))
        self.fc2 = nn.Linear(int(d * mlp_ratio), d)

    def attention_input(self, x, c):
        """x (B, S, d), c (B, d) -> q, k, v of the modulated x; the six modulations (B, 1, d)."""
        m = self.adaLN_modulation(c)[:, None].chunk(6, -1)  # shift, scale, gate: attention, MLP
        h = modulate(self.norm1(x), m[0], m[1])  # (B, S, d)
        return self.qkv(h), m

    def update(self, x, y, m):
        """x (B, S, d) plus its gated attention output y (B, S, d), then plus its gated MLP."""
        shift1, scale1, gate1, shift2, scale2, gate2 = m
        x = x + gate1 * self.to_out(y)
        h = modulate(self.norm2(x), shift2, scale2)  # (B, S, d)
        return x + gate2 * self.fc2(F.gelu(self.fc1(h), approximate='tanh'))


class FluxDoubleBlock(nn.Module):
    """MMDiT block (SD3, Flux): text and image streams with own weights, one joint attention."""

    def __init__(self, d, heads, mlp_ratio=4.0):
        super().__init__()
        self.txt = FluxStream(d, heads, mlp_ratio)
        self.img = FluxStream(d, heads, mlp_ratio)

    def forward(self, txt, img, c, cos, sin, mask=None):
        """txt (B, L, d), img (B, N, d), c (B, d), cos, sin (L+N, hd), mask (B, 1, 1, L+N)."""
        L = txt.shape[1]
        qkv_txt, m_txt = self.txt.attention_input(txt, c)
        qkv_img, m_img = self.img.attention_input(img, c)
        q = torch.cat([qkv_txt[0], qkv_img[0]], 2)  # (B, heads, L + N, hd)
        k = torch.cat([qkv_txt[1], qkv_img[1]], 2)  # (B, heads, L + N, hd)
        v = torch.cat([qkv_txt[2], qkv_img[2]], 2)  # (B, heads, L + N, hd)
        y = joint_attention(q, k, v, cos, sin, mask)  # (B, L + N, d)
        return self.txt.update(txt, y[:, :L], m_txt), self.img.update(img, y[:, L:], m_img)


class FluxSingleBlock(QKNormProjection):
    """Single-stream block on [text; image]: one adaLN-Zero, attention and MLP side by side."""

    def __init__(self, d, heads, mlp_ratio=4.0):
        super().__init__(d, heads)
        hidden = int(d * mlp_ratio)
        self.adaLN_modulation = modulation(d, 3)
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.fc1 = nn.Linear(d, hidden)
        self.proj_out = nn.Linear(d + hidden, d)

    def forward(self, x, c, cos, sin, mask=None):
        """x (B, S, d) the joint sequence, c (B, d), cos, sin (S, hd), mask (B, 1, 1, S)."""
        shift, scale, gate = self.adaLN_modulation(c)[:, None].chunk(3, -1)  # (B, 1, d) each
        h = modulate(self.norm(x), shift, scale)  # (B, S, d)
        y = joint_attention(*self.qkv(h), cos, sin, mask)  # (B, S, d)
        hidden = F.gelu(self.fc1(h), approximate='tanh')  # (B, S, hidden)
        return x + gate * self.proj_out(torch.cat([y, hidden], -1))


class FluxTransformer(nn.Module):
    """FLUX.1 transformer: double-stream, then single-stream blocks on text and latent patches."""

    def __init__(self, in_channels=16, patch_size=2, hidden_size=3072, num_heads=24, depth=19,
                 depth_single=38, ctx_dim=4096, vec_dim=768, guidance_embed=True,
                 axes_dim=(16, 56, 56), theta=10000, mlp_ratio=4.0):
        super().__init__()
        d = hidden_size
        assert sum(axes_dim) == d // num_heads, f'RoPE axes {axes_dim} must fill one head'
        self.p = patch_size
        self.axes_dim = tuple(axes_dim)
        self.theta = theta
        self.x_embedder = nn.Linear(in_channels * patch_size ** 2, d)
        self.ctx_embedder = nn.Linear(ctx_dim, d)
        self.t_embedder = mlp(256, d, d)
        self.vec_embedder = mlp(vec_dim, d, d)
        self.guidance_embedder = mlp(256, d, d) if guidance_embed else None  # dev: yes, schnell: no
        double = [FluxDoubleBlock(d, num_heads, mlp_ratio) for _ in range(depth)]
        single = [FluxSingleBlock(d, num_heads, mlp_ratio) for _ in range(depth_single)]
        self.double_blocks = nn.ModuleList(double)
        self.single_blocks = nn.ModuleList(single)
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_mod = modulation(d, 2)  # (shift, scale), as BFL's
        self.final_linear = nn.Linear(d, patch_size ** 2 * in_channels)
        self.initialize_weights()

    def initialize_weights(self):
        """adaLN-Zero: zero modulations and output layer; blocks start as identities, output 0."""
        zero = [self.final_mod[1], self.final_linear]
        for block in self.double_blocks:
            zero += [block.txt.adaLN_modulation[1], block.img.adaLN_modulation[1]]
        zero += [block.adaLN_modulation[1] for block in self.single_blocks]
        for lin in zero:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x, t, ctx=None, ctx_mask=None, vec=None, guidance=None):
        """Rectified-flow velocity noise - x0 (B, C, H, W) of latents x (B, C, H, W).

        t (B,) flow time in [0, 1] (0: data, 1: noise); ctx (B, L, ctx_dim) text tokens (T5),
        ctx_mask (B, L) true where real (the published pipeline masks none); vec (B, vec_dim)
        pooled text vector (CLIP); guidance (B,) the distilled guidance scale (iff guidance_embed).
        H and W are multiples of the patch.
        """
        assert ctx is not None and vec is not None, 'Flux needs text tokens and a pooled vector'
        assert (guidance is None) == (self.guidance_embedder is None), 'guidance iff guidance_embed'
        B, C, H, W = x.shape
        p = self.p
        h = H // p
        w = W // p
        patches = x.view(B, C, h, p, w, p).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, p, p)
        img = self.x_embedder(patches.reshape(B, h * w, C * p * p))  # (B, N, d), Flux's packing
        txt = self.ctx_embedder(ctx)  # (B, L, d)
        L = txt.shape[1]
        c = self.t_embedder(timestep_embedding(1000 * t, 256).to(img.dtype))  # (B, d)
        if self.guidance_embedder is not None:
            g = timestep_embedding(1000 * guidance, 256).to(img.dtype)  # (B, 256)
            c = c + self.guidance_embedder(g)
        c = c + self.vec_embedder(vec)
        ids = flux_positions(L, h, w, x.device)  # (L + N, 3)
        cos, sin = rope_angles(ids, self.axes_dim, self.theta)  # (L + N, hd) each
        mask = None
        if ctx_mask is not None:  # no query attends to a padding token
            image_keys = torch.ones(B, h * w, dtype=torch.bool, device=x.device)  # (B, N)
            keep = torch.cat([ctx_mask.bool(), image_keys], 1)  # (B, L + N)
            mask = keep[:, None, None, :]  # (B, 1, 1, L + N)
        for block in self.double_blocks:
            txt, img = block(txt, img, c, cos, sin, mask)
        seq = torch.cat([txt, img], 1)  # (B, L + N, d)
        for block in self.single_blocks:
            seq = block(seq, c, cos, sin, mask)
        shift, scale = self.final_mod(c)[:, None].chunk(2, -1)  # (B, 1, d) each
        img = modulate(self.final_norm(seq[:, L:]), shift, scale)  # (B, N, d)
        out = self.final_linear(img)  # (B, N, C*p*p)
        out = out.view(B, h, w, C, p, p).permute(0, 3, 1, 4, 2, 5)  # (B, C, h, p, w, p)
        return out.reshape(B, C, H, W)  # (B, C, H, W)


#################################################################################
#                Rectified flow: flow matching as SD3 and Flux.1 use it          #
#################################################################################

def resolution_shift(n_tokens, base_seq=256, max_seq=4096, base_shift=0.5, max_shift=1.15):
    """Flux's resolution-dependent time shift exp(mu), mu linear in the number of image tokens."""
    slope = (max_shift - base_shift) / (max_seq - base_seq)
    mu = base_shift + slope * (n_tokens - base_seq)
    return math.exp(mu)


class FlowMatching:
    """Rectified flow x_t = (1 - t) x0 + t noise; net(x_t, t, **cond) predicts noise - x0."""

    def __init__(self, shift=1.0, dynamic_shift=False, patch=2, base_seq=256, max_seq=4096,
                 base_shift=0.5, max_shift=1.15, logit_normal=True):
        self.shift = shift  # a fixed time shift (SD3: 3, FLUX.1-schnell: 1) ...
        self.dynamic_shift = dynamic_shift  # ... or Flux's, from the image's tokens (FLUX.1-dev)
        self.patch = patch  # latent pixels per token side, to count the tokens
        self.seq_shift = (base_seq, max_seq, base_shift, max_shift)
        self.logit_normal = logit_normal  # training times sigmoid(N(0, 1)) as SD3's, else uniform

    def times(self, steps, x):
        """The steps + 1 times of a chain for latents x (B, C, H, W): 1 .. 1/steps shifted, 0."""
        # as diffusers' FlowMatchEulerDiscreteScheduler in the Flux pipeline
        shift = self.shift
        if self.dynamic_shift:
            n_tokens = x.shape[-2] * x.shape[-1] // self.patch ** 2
            shift = resolution_shift(n_tokens, *self.seq_shift)
        t = torch.linspace(1, 1 / steps, steps, dtype=torch.float64)  # (steps,), as Flux's pipeline
        t = shift * t / (1 + (shift - 1) * t)  # SD3's shift = Flux's exp(mu) / (exp(mu) + 1/t - 1)
        return torch.cat([t, t.new_zeros(1)]).float()  # (steps + 1,)

    def loss(self, net, x0, cond=None, rng=None):
        """MSE between the network's velocity and noise - x0 at random times."""
        B = x0.shape[0]
        if self.logit_normal:
            t = torch.randn(B, generator=rng, device=x0.device).sigmoid()  # (B,)
        else:
            t = torch.rand(B, generator=rng, device=x0.device)  # (B,)
        noise = torch.randn(x0.shape, generator=rng, device=x0.device, dtype=x0.dtype)
        tb = per_sample(t.to(x0.dtype), x0)  # (B, 1, ...)
        x_t = (1 - tb) * x0 + tb * noise
        return F.mse_loss(net(x_t, t, **(cond or {})), noise - x0)

    @torch.no_grad()
    def sample(self, net, x, cond=None, steps=28, rng=None):
        """Euler steps of dx/dt = net(x, t) from noise x at t = 1 to t = 0; rng unused."""
        times = self.times(steps, x).to(x.device)
        for t, t_next in zip(times[:-1], times[1:]):
            v = net(x, t.expand(x.shape[0]), **(cond or {}))  # (B, C, H, W)
            x = x + (t_next - t) * v
        return x


#################################################################################
#           Importers: published state dicts and configs -> model.py's          #
#################################################################################

def _rename(sd, rules, drop=()):
    """Apply ordered (regex, replacement) rules to every key not in `drop`; no two may meet."""
    out = {}
    for k, v in sd.items():
        if k not in drop:
            for pattern, repl in rules:
                k = re.sub(pattern, repl, k)
            assert k not in out, f'two source keys map onto {k!r}'
            out[k] = v
    return out


def _unfuse(sd, fused, names, width=None):
    """Split the rows of every key naming `fused` (e.g. '.qkv.') into one key per name."""
    out = {}
    for k, v in sd.items():
        if fused not in k:
            out[k] = v
            continue
        if width:       # `width` rows for each name but the last, which takes the rest
            rest = len(v) - width * (len(names) - 1)
            parts = v.split([width] * (len(names) - 1) + [rest])
        else:           # equal parts
            parts = v.chunk(len(names))
        for n, w in zip(names, parts):
            out[k.replace(fused, f'.{n}.')] = w
    return out


_COMMON = [(r'to_out\.0\.', 'to_out.'), (r'ff\.net\.0\.proj\.', 'fc1.'), (r'ff\.net\.2\.', 'fc2.'),
           (r'(down|up)samplers\.0\.conv\.', 'resample.'),
           (r'\.linear_1\.', '.0.'), (r'\.linear_2\.', '.2.')]


def import_audioldm_unet(sd):
    """diffusers UNet2DConditionModel state dict (AudioLDM or Make-An-Audio layout) -> UNet's."""
    return _rename(sd, _COMMON)


def import_audioldm_vae(sd):
    """diffusers AutoencoderKL state dict (also its pre-0.15 attention names) -> KLAutoencoder's."""
    old = [(r'\.query\.', '.to_q.'), (r'\.key\.', '.to_k.'), (r'\.value\.', '.to_v.'),
           (r'\.proj_attn\.', '.to_out.')]
    return _rename(sd, _COMMON + old)


def import_pixart(sd):
    """diffusers PixArtTransformer2DModel state dict -> DiT's (adaln='single')."""
    emb = r'^adaln_single\.emb\.'
    return _rename(sd, _COMMON + [
        (r'^pos_embed\.proj\.', 'x_embedder.'), (emb + r'timestep_embedder\.', 't_embedder.'),
        (emb + r'resolution_embedder\.', 'res_embedder.'),
        (emb + r'aspect_ratio_embedder\.', 'ar_embedder.'),
        (r'^adaln_single\.linear\.', 't_block.1.'), (r'^caption_projection\.', 'ctx_embedder.'),
        (r'^transformer_blocks\.', 'blocks.'), (r'\.attn1\.', '.attn.'), (r'\.attn2\.', '.cross.'),
        (r'^scale_shift_table$', 'final_mod'), (r'^proj_out\.', 'final_linear.')])


def import_dit(sd):
    """facebookresearch/DiT checkpoint (or a training checkpoint's 'ema') -> DiT's, no pos_embed."""
    return _rename(sd.get('ema', sd), [
        (r'^x_embedder\.proj\.', 'x_embedder.'), (r'^t_embedder\.mlp\.', 't_embedder.'),
        (r'^y_embedder\.embedding_table\.', 'y_embedder.'), (r'\.attn\.proj\.', '.attn.to_out.'),
        (r'\.mlp\.fc', '.fc'), (r'^final_layer\.linear\.', 'final_linear.'),
        (r'^final_layer\.adaLN_modulation\.', 'final_mod.')],
        drop=('pos_embed',))               # DiT recomputes it; timm's qkv is Attention's


_FLUX_DOUBLE = {  # diffusers FluxTransformerBlock -> FluxDoubleBlock ("context", "added": txt)
    'norm1.linear': 'img.adaLN_modulation.1', 'norm1_context.linear': 'txt.adaLN_modulation.1',
    'attn.to_q': 'img.to_q', 'attn.to_k': 'img.to_k', 'attn.to_v': 'img.to_v',
    'attn.add_q_proj': 'txt.to_q', 'attn.add_k_proj': 'txt.to_k', 'attn.add_v_proj': 'txt.to_v',
    'attn.norm_q': 'img.norm_q', 'attn.norm_k': 'img.norm_k',
    'attn.norm_added_q': 'txt.norm_q', 'attn.norm_added_k': 'txt.norm_k',
    'attn.to_out.0': 'img.to_out', 'attn.to_add_out': 'txt.to_out',
    'ff.net.0.proj': 'img.fc1', 'ff.net.2': 'img.fc2',
    'ff_context.net.0.proj': 'txt.fc1', 'ff_context.net.2': 'txt.fc2'}
_FLUX = [(r'^transformer_blocks\.(\d+)\.' + re.escape(src) + r'\.', rf'double_blocks.\1.{dst}.')
         for src, dst in _FLUX_DOUBLE.items()]
_FLUX += [
    (r'^single_transformer_blocks\.(\d+)\.(attn\.)?', r'single_blocks.\1.'),
    (r'^(single_blocks\.\d+)\.norm\.linear\.', r'\1.adaLN_modulation.1.'),
    (r'\.proj_mlp\.', '.fc1.'), (r'^context_embedder\.', 'ctx_embedder.'),
    (r'^time_text_embed\.timestep_embedder\.', 't_embedder.'),
    (r'^time_text_embed\.guidance_embedder\.', 'guidance_embedder.'),
    (r'^time_text_embed\.text_embedder\.', 'vec_embedder.'),
    (r'\.linear_1\.', '.0.'), (r'\.linear_2\.', '.2.'),
    (r'^norm_out\.linear\.', 'final_mod.1.'), (r'^proj_out\.', 'final_linear.')]
_FLUX_BFL = [  # black-forest-labs/flux's names -> Flux's, the fused projections split afterwards
    (r'^img_in\.', 'x_embedder.'), (r'^txt_in\.', 'ctx_embedder.'), (r'^time_in\.', 't_embedder.'),
    (r'^vector_in\.', 'vec_embedder.'), (r'^guidance_in\.', 'guidance_embedder.'),
    (r'\.in_layer\.', '.0.'), (r'\.out_layer\.', '.2.'),
    (r'\.(img|txt)_mod\.lin\.', r'.\1.adaLN_modulation.1.'),
    (r'\.modulation\.lin\.', '.adaLN_modulation.1.'),
    (r'\.(img|txt)_attn\.qkv\.', r'.\1.qkv.'), (r'\.(img|txt)_attn\.proj\.', r'.\1.to_out.'),
    (r'\.(img|txt)_attn\.norm\.', r'.\1.'), (r'^(single_blocks\.\d+)\.norm\.', r'\1.'),
    (r'\.query_norm\.scale$', '.norm_q.weight'), (r'\.key_norm\.scale$', '.norm_k.weight'),
    (r'\.(img|txt)_mlp\.0\.', r'.\1.fc1.'), (r'\.(img|txt)_mlp\.2\.', r'.\1.fc2.'),
    (r'\.linear1\.', '.qkv_mlp.'), (r'\.linear2\.', '.proj_out.'),
    (r'^final_layer\.linear\.', 'final_linear.'),
    (r'^final_layer\.adaLN_modulation\.', 'final_mod.')]


def _swap_halves(w):
    """Rows (a; b) -> (b; a): diffusers' final norm is (scale, shift), Flux's (shift, scale)."""
    first, second = w.chunk(2)
    return torch.cat([second, first])


def import_flux(sd):
    """diffusers FluxTransformer2DModel state dict, or black-forest-labs/flux's file -> Flux's."""
    # BFL's files: flux1-dev.safetensors, flux1-schnell.safetensors
    if 'img_in.weight' not in sd:
        final = {k: _swap_halves(v) for k, v in sd.items() if k.startswith('norm_out.linear.')}
        return _rename({**sd, **final}, _FLUX)
    sd = _rename(sd, _FLUX_BFL)
    width = sd['x_embedder.weight'].shape[0]
    sd = _unfuse(sd, '.qkv.', ['to_q', 'to_k', 'to_v'])  # double blocks: [q; k; v]
    return _unfuse(sd, '.qkv_mlp.', ['to_q', 'to_k', 'to_v', 'fc1'], width)  # [q; k; v; MLP in]


def load_state(model, sd):
    """Load an imported state dict: a missing, unexpected or misshapen key is named."""
    missing, unexpected = model.load_state_dict(sd, strict=False)  # a shape mismatch raises
    assert not missing and not unexpected, \
        f'{len(missing)} missing keys (first {missing[:1]}), ' \
        f'{len(unexpected)} unexpected (first {unexpected[:1]})'
    return model


def audioldm_unet_config(c):
    """diffusers UNet2DConditionModel config -> UNet kwargs."""
    ch = list(c['block_out_channels'])
    cross = c['cross_attention_dim']
    vec = c.get('class_embed_type')
    heads = c.get('num_attention_heads') or c['attention_head_dim']   # diffusers' misnomer: heads
    depth = c.get('transformer_layers_per_block', 1)
    assert isinstance(heads, int) and isinstance(depth, int), \
        'per-level heads / depths are not supported'
    unsupported = c.get('addition_embed_type') or c.get('use_linear_projection')
    assert vec in (None, 'simple_projection') and not unsupported
    assert isinstance(cross, int) or list(cross) == ch, \
        'per-level cross_attention_dim must be block_out_channels'
    ctx_dim = None                         # None: AudioLDM's self-attending "cross"-attention
    if isinstance(cross, int):
        ctx_dim = cross
    vec_dim = c['projection_class_embeddings_input_dim'] if vec else None
    return dict(in_ch=c['in_channels'], out_ch=c['out_channels'], channels=tuple(ch),
                layers=c['layers_per_block'],
                attn=tuple(b.startswith('CrossAttn') for b in c['down_block_types']), heads=heads,
                groups=c['norm_num_groups'], eps=c['norm_eps'], depth=depth, ctx_dim=ctx_dim,
                vec_dim=vec_dim, vec_concat=bool(c.get('class_embeddings_concat')))


def audioldm_vae_config(c):
    """diffusers AutoencoderKL config -> KLAutoencoder kwargs (AudioLDM's, or FLUX.1's)."""
    quant = c.get('use_quant_conv', True)      # FLUX.1's: 16 channels, no quant convs, a shift
    assert c.get('mid_block_add_attention', True) and c.get('use_post_quant_conv', True) == quant
    return dict(in_ch=c['in_channels'], out_ch=c['out_channels'],
                channels=tuple(c['block_out_channels']), layers=c['layers_per_block'],
                latent=c['latent_channels'], groups=c['norm_num_groups'],
                scaling_factor=c.get('scaling_factor', 0.18215), quant_conv=quant,
                shift_factor=c.get('shift_factor') or 0.0)


def pixart_config(c):
    """diffusers PixArtTransformer2DModel config -> DiT kwargs (adaLN-single, captions, no null)."""
    d = c['num_attention_heads'] * c['attention_head_dim']     # hidden size
    n = c['sample_size']                                        # latent side
    size_cond = c.get('use_additional_conditions')
    assert c.get('cross_attention_dim', d) == d
    assert c['out_channels'] in (c['in_channels'], 2 * c['in_channels'])
    if size_cond is None:
        size_cond = n == 128                # diffusers' default: on for the 1024 model
    return dict(input_size=n, patch_size=c['patch_size'], in_channels=c['in_channels'],
                hidden_size=d, depth=c['num_layers'], num_heads=c['num_attention_heads'],
                ctx_dim=c['caption_channels'], learn_sigma=c['out_channels'] != c['in_channels'],
                adaln='single', learn_null=False, size_cond=size_cond,
                pos_scale=c.get('interpolation_scale') or max(n // 64, 1),
                eps=c.get('norm_eps', 1e-6))


def dit_config(c):
    """diffusers DiTTransformer2DModel config -> DiT kwargs for official weights (import_dit)."""
    # timestep frequencies (shift 0; diffusers' port uses 1) and LayerNorm eps 1e-6 as
    # facebookresearch/DiT has them
    return dict(input_size=c['sample_size'], patch_size=c['patch_size'],
                in_channels=c['in_channels'],
                hidden_size=c['num_attention_heads'] * c['attention_head_dim'],
                depth=c['num_layers'], num_heads=c['num_attention_heads'],
                num_classes=c['num_embeds_ada_norm'],
                learn_sigma=c['out_channels'] == 2 * c['in_channels'], adaln='zero',
                freq_shift=0.0, eps=1e-6)


def flux_config(c):
    """diffusers FluxTransformer2DModel config -> Flux kwargs (in_channels: 2x2 packed latents)."""
    assert c.get('patch_size', 1) == 1 and c['in_channels'] % 4 == 0, 'Flux packs 2x2 patches'
    assert c.get('out_channels') in (None, c['in_channels']), c.get('out_channels')
    heads = c['num_attention_heads']
    return dict(in_channels=c['in_channels'] // 4, patch_size=2,
                hidden_size=heads * c['attention_head_dim'], num_heads=heads, depth=c['num_layers'],
                depth_single=c['num_single_layers'], ctx_dim=c['joint_attention_dim'],
                vec_dim=c['pooled_projection_dim'], guidance_embed=c['guidance_embeds'],
                axes_dim=tuple(c['axes_dims_rope']))


def flow_config(c):
    """diffusers FlowMatchEulerDiscreteScheduler config (Flux's, SD3's) -> FlowMatching kwargs."""
    unsupported = ('invert_sigmas', 'shift_terminal', 'use_karras_sigmas', 'use_exponential_sigmas',
                   'use_beta_sigmas', 'stochastic_sampling')
    assert not any(c.get(k) for k in unsupported), [k for k in unsupported if c.get(k)]
    assert c.get('time_shift_type', 'exponential') == 'exponential', c['time_shift_type']
    return dict(shift=c.get('shift', 1.0), dynamic_shift=c.get('use_dynamic_shifting', False),
                base_seq=c.get('base_image_seq_len', 256), max_seq=c.get('max_image_seq_len', 4096),
                base_shift=c.get('base_shift', 0.5), max_shift=c.get('max_shift', 1.15))


# Make-An-Audio (Text-to-Audio/Make-An-Audio) ships one CompVis latent-diffusion checkpoint,
# maa1_full.ckpt: model.diffusion_model.* (openaimodel.UNetModel), first_stage_model.*
# (autoencoder.AutoencoderKL), cond_stage_model.* (its MS-CLAP text encoder), described by
# configs/text_to_audio/txt2audio_args.yaml. The converters read that yaml as a dict (whole, or
# one part's params); the renamers read the checkpoint (Lightning's, its state dict, or one part).

LDM_GROUPS = 32            # CompVis normalization(): GroupNorm(32, c) in every layer
LDM_UNET = 'model.diffusion_model.'
LDM_VAE = 'first_stage_model.'
_RESNET = [(r'\.in_layers\.0\.', '.norm1.'), (r'\.in_layers\.2\.', '.conv1.'),
           (r'\.emb_layers\.1\.', '.time_emb_proj.'), (r'\.out_layers\.0\.', '.norm2.'),
           (r'\.out_layers\.3\.', '.conv2.'), (r'\.skip_connection\.', '.conv_shortcut.')]
_LDM_VAE = [
    (r'^encoder\.down\.(\d+)\.block\.', r'encoder.down_blocks.\1.resnets.'),
    (r'^encoder\.down\.(\d+)\.attn\.', r'encoder.down_blocks.\1.attentions.'),
    (r'^encoder\.down\.(\d+)\.downsample\.conv\.', r'encoder.down_blocks.\1.resample.'),
    (r'(up_blocks\.\d+\.)block\.', r'\1resnets.'), (r'(up_blocks\.\d+\.)attn\.', r'\1attentions.'),
    (r'(up_blocks\.\d+\.)upsample\.conv\.', r'\1resample.'),
    (r'\.mid\.block_1\.', '.mid_block.resnets.0.'), (r'\.mid\.block_2\.', '.mid_block.resnets.1.'),
    (r'\.mid\.attn_1\.', '.mid_block.attentions.0.'), (r'\.norm_out\.', '.conv_norm_out.'),
    (r'\.nin_shortcut\.', '.conv_shortcut.'), (r'(attentions\.\d+\.)norm\.', r'\1group_norm.'),
    (r'(attentions\.\d+\.)(q|k|v)\.', r'\1to_\2.'),
    (r'(attentions\.\d+\.)proj_out\.', r'\1to_out.')]
_CONV_ATTENTION = re.compile(r'attentions\.\d+\.to_(q|k|v|out)\.weight$')  # 1x1 convs, linear here


def _ldm_params(c, part):
    """The params of a part ('unet_config', 'first_stage_config') of a CompVis yaml, or c itself."""
    return c['model']['params'][part]['params'] if 'model' in c else c


def _ldm_part(sd, prefix):
    """The keys of one part of a CompVis checkpoint, prefix removed; a part alone as it is."""
    sd = sd.get('state_dict', sd)
    part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return part or sd


def _indices(sd, name):
    """The sorted block numbers n of the keys 'name.n.*'."""
    return sorted({int(k.split('.')[1]) for k in sd if k.startswith(name + '.')})


def _maa_unet_blocks(sd):
    """CompVis U-Net block prefixes -> UNet's, walked in order: a level ends at its resampler."""
    names = {'time_embed.': 'time_embedding.', 'input_blocks.0.0.': 'conv_in.',
             'out.0.': 'conv_norm_out.', 'out.2.': 'conv_out.',
             'middle_block.0.': 'mid_block.resnets.0.',
             'middle_block.1.': 'mid_block.attentions.0.',
             'middle_block.2.': 'mid_block.resnets.1.'}
    level = 0
    j = 0                                        # the block's index within its level
    for i in _indices(sd, 'input_blocks')[1:]:  # ResBlock [+ SpatialTransformer] or Downsample
        if f'input_blocks.{i}.0.op.weight' in sd:
            names[f'input_blocks.{i}.0.op.'] = f'down_blocks.{level}.resample.'
            level += 1
            j = 0
            continue
        names[f'input_blocks.{i}.0.'] = f'down_blocks.{level}.resnets.{j}.'
        names[f'input_blocks.{i}.1.'] = f'down_blocks.{level}.attentions.{j}.'
        j += 1
    level = 0
    j = 0
    for i in _indices(sd, 'output_blocks'):  # ResBlock [+ SpatialTransformer] [+ Upsample 'conv']
        block = f'output_blocks.{i}.'
        names[block + '0.'] = f'up_blocks.{level}.resnets.{j}.'
        names[block + '1.'] = f'up_blocks.{level}.attentions.{j}.'
        ups = [f'{block}{s}.conv.' for s in (1, 2) if f'{block}{s}.conv.weight' in sd]
        if not ups:
            j += 1
            continue
        names[ups[0]] = f'up_blocks.{level}.resample.'
        level += 1
        j = 0
    return names


def import_maa_unet(sd):
    """Make-An-Audio's checkpoint (CompVis UNetModel, model.diffusion_model.*) -> UNet's."""
    sd = _ldm_part(sd, LDM_UNET)
    names = {'': '', **_maa_unet_blocks(sd)}  # '': a key of no block stays, for load_state to name
    prefixes = sorted(names, key=len, reverse=True)  # 'output_blocks.2.1.conv.' before '...2.1.'
    out = {}
    for k, v in sd.items():
        prefix = next(p for p in prefixes if k.startswith(p))
        out[names[prefix] + k[len(prefix):]] = v
    return _rename(out, _RESNET + _COMMON)


def import_maa_vae(sd):
    """Make-An-Audio's checkpoint (CompVis AutoencoderKL, first_stage_model.*) -> KLAutoencoder."""
    part = _ldm_part(sd, LDM_VAE)
    sd = {k: v for k, v in part.items() if not k.startswith('loss.')}  # a VAE run keeps its loss
    n = len({k.split('.')[2] for k in sd if k.startswith('decoder.up.')})
    top_down = lambda m: f'decoder.up_blocks.{n - 1 - int(m[1])}.'  # CompVis numbers from the top
    sd = _rename(sd, [(r'^decoder\.up\.(\d+)\.', top_down)] + _LDM_VAE)
    return {k: v.flatten(1) if _CONV_ATTENTION.search(k) else v for k, v in sd.items()}


def maa_unet_config(c):
    """Make-An-Audio's yaml (or its unet_config params) -> UNet kwargs, cross-attending tokens."""
    p = _ldm_params(c, 'unet_config')
    heads = p.get('num_heads', -1)
    extras = ('use_scale_shift_norm', 'resblock_updown', 'use_linear_in_transformer', 'num_classes')
    supported = p.get('use_spatial_transformer') and not any(p.get(k) for k in extras)
    assert supported, f'a UNetModel with one of {extras} or without spatial transformers'
    assert heads > 0 and p.get('num_head_channels', -1) == -1, 'per-level heads are not supported'
    levels = range(len(p['channel_mult']))
    channels = tuple(p['model_channels'] * m for m in p['channel_mult'])
    attn = tuple(2 ** i in p['attention_resolutions'] for i in levels)  # downsampling factor 2^i
    return dict(in_ch=p['in_channels'], out_ch=p['out_channels'], channels=channels,
                layers=p['num_res_blocks'], attn=attn, heads=heads, groups=LDM_GROUPS, eps=1e-5,
                depth=p.get('transformer_depth', 1), ctx_dim=p['context_dim'])


def maa_vae_config(c):
    """Make-An-Audio's yaml (or its first_stage_config params) -> KLAutoencoder kwargs."""
    p = _ldm_params(c, 'first_stage_config')
    d = p['ddconfig']
    assert d.get('double_z', True) and p['embed_dim'] == d['z_channels'], 'embed_dim != z_channels'
    levels = range(len(d['ch_mult']))
    channels = tuple(d['ch'] * m for m in d['ch_mult'])
    sides = [d['resolution'] // 2 ** i for i in levels]  # one side of a level's feature map
    attn = tuple(side in d['attn_resolutions'] for side in sides)
    # the scale factor is learned (scale_by_std) and kept in the checkpoint's 'scale_factor'
    # buffer; it is read from the yaml's model.params.scale_factor when put there, else 1.0
    scale = 1.0
    if 'model' in c:
        scale = c['model']['params'].get('scale_factor', 1.0)
    return dict(in_ch=d['in_channels'], out_ch=d['out_ch'], channels=channels,
                layers=d['num_res_blocks'], latent=d['z_channels'], groups=LDM_GROUPS,
                scaling_factor=float(scale), attn=attn)


IMPORTERS = {  # kind -> (model.py module, config -> its kwargs, published state dict -> its keys)
    'audioldm_unet': (UNet, audioldm_unet_config, import_audioldm_unet),
    'audioldm_vae': (KLAutoencoder, audioldm_vae_config, import_audioldm_vae),
    'pixart': (DiT, pixart_config, import_pixart),
    'dit': (DiT, dit_config, import_dit),
    'flux': (FluxTransformer, flux_config, import_flux),
    'flux_vae': (KLAutoencoder, audioldm_vae_config, import_audioldm_vae),
    'maa_unet': (UNet, maa_unet_config, import_maa_unet),  # config: Make-An-Audio's yaml, a dict
    'maa_vae': (KLAutoencoder, maa_vae_config, import_maa_vae)}
# diffusers' weights file; a sharded model has <name>.index.json and the shards it names
DIFFUSERS_WEIGHTS = 'diffusion_pytorch_model.safetensors'


def _diffusers_weights(folder):
    """The state dict of a diffusers model folder: one safetensors file or its index's shards."""
    index = os.path.join(folder, DIFFUSERS_WEIGHTS + '.index.json')
    if not os.path.exists(index):
        return load_file(os.path.join(folder, DIFFUSERS_WEIGHTS))
    with open(index) as f:
        shards = sorted(set(json.load(f)['weight_map'].values()))
    sd = {}
    for shard in shards:
        sd.update(load_file(os.path.join(folder, shard)))
    return sd


def load_generator(kind, path, config=None):
    """A published generator (an IMPORTERS kind) as model.py's module, on the CPU, in eval mode."""
    # path: a diffusers model folder (config.json + safetensors weights: a pipeline's unet/, vae/
    # or transformer/), or one weights file (.safetensors, or a .pt) with `config`, the diffusers
    # config dict of that model. Kind 'dit' reads facebookresearch/DiT's key names: its
    # DiT-XL-2-256x256.pt with facebook/DiT-XL-2-256's transformer config.
    cls, to_kwargs, to_keys = IMPORTERS[kind]
    if os.path.isdir(path):
        if config is None:
            with open(os.path.join(path, 'config.json')) as f:
                config = json.load(f)
        sd = _diffusers_weights(path)
    elif config is None:
        raise ValueError(f'{path}: a single weights file needs the config of its model '
                         f'(config=...)')
    elif str(path).endswith('.safetensors'):
        sd = load_file(path)
    else:
        sd = torch.load(path, map_location='cpu', weights_only=True)
    return load_state(cls(**to_kwargs(config)), to_keys(sd)).eval()


# diffusers' prediction_type -> Diffusion's
PREDICTION = {'epsilon': 'eps', 'v_prediction': 'v', 'sample': 'x0'}


def is_pipeline(path):
    """True for a diffusers pipeline folder (model_index.json beside unet/, vae/, ...)."""
    return bool(path) and os.path.exists(os.path.join(path, 'model_index.json'))


class AudioLDM(Frozen):
    """AudioLDM (Liu et al. 2023) as a frozen CLAP-vector -> sound generator."""
    # From a diffusers pipeline folder (cvssp/audioldm-s-full-v2): model.py's UNet and
    # KLAutoencoder with its weights, its HiFi-GAN, and its CLAP text tower for the guidance null
    # (the embedding of "", the pipeline's default negative prompt). Sampling is model.py's DDIM
    # with trailing timesteps, not the pipeline's leading ones.

    def __init__(self, unet, vae, vocoder, text, scheduler, sample_size, seconds=None):
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.vocoder = vocoder
        self.text = text
        self.diffusion = Diffusion(scheduler['beta_schedule'], scheduler['num_train_timesteps'],
                                   PREDICTION[scheduler['prediction_type']],
                                   scheduler['beta_start'], scheduler['beta_end'])
        self.sample_rate = vocoder.sample_rate
        hop = vocoder.mel_config.hop
        n_mels = vocoder.mel_config.n_mels
        f = 2 ** (len(vae.decoder['up_blocks']) - 1)                      # VAE downsampling factor
        if seconds:
            frames = math.ceil(seconds * self.sample_rate / hop / f) * f
            self.length = int(seconds * self.sample_rate)
        else:                                                             # the pipeline's default
            frames = sample_size * f
            self.length = frames * hop
        self.shape = (unet.conv_in.in_channels, frames // f, n_mels // f)  # (C, h, w) of a latent
        self.register_buffer('null', text.encode_text(['']).emb)          # (1, D)
        self.freeze()

    @classmethod
    def from_pretrained(cls, path, seconds=None):
        """A diffusers AudioLDM pipeline folder; seconds per sample (default: the UNet's size)."""
        configs = {}
        for part, name in (('unet', 'config.json'), ('scheduler', 'scheduler_config.json')):
            with open(os.path.join(path, part, name)) as f:
                configs[part] = json.load(f)
        unet = load_generator('audioldm_unet', os.path.join(path, 'unet'))
        vae = load_generator('audioldm_vae', os.path.join(path, 'vae'))
        vocoder = HFHifiGan.from_pretrained(path)
        text = HFClapText.from_pretrained(path)
        return cls(unet, vae, vocoder, text, configs['scheduler'], configs['unet']['sample_size'],
                   seconds)

    @torch.no_grad()
    def sample_mel(self, cond, steps=25, cfg=3.0, sampler='ddim', rng=None):
        """{'vec': CLAP vectors (B, D)} -> AudioLDM log-mels (B, n_mels, frames)."""
        vec = F.normalize(cond['vec'].float(), dim=-1)                               # (B, D)
        net = self.unet
        if cfg != 1:
            null = self.null.expand(len(vec), -1)                                    # (B, D)
            net = guided(self.unet, cfg, {'vec': null})
        z = torch.randn((len(vec), *self.shape), generator=rng).to(vec.device)  # (B, C, h, w)
        z = self.diffusion.sample(net, z, {'vec': vec}, steps, sampler, rng=rng)
        mel = self.vae.decode(z / self.vae.scaling_factor)[:, 0]         # (B, frames, n_mels)
        return mel.transpose(1, 2)                                        # (B, n_mels, frames)

    def vocode(self, mel):
        """Log-mels (B, n_mels, frames) -> waves (B, T) at sample_rate, cut to the asked length."""
        return self.vocoder(mel)[:, :self.length].float()

    def generate(self, cond, steps=25, cfg=3.0, sampler='ddim', rng=None):
        """{'vec': CLAP vectors (B, D)} -> waves (B, T) at sample_rate."""
        return self.vocode(self.sample_mel(cond, steps, cfg, sampler, rng))


MAA_YAML = 'txt2audio_args.yaml'     # Make-An-Audio's configs/text_to_audio/ yaml, in its folder
MAA_MEL = MelConfig(sample_rate=16000, n_fft=1024, hop=256, n_mels=80, fmin=0.0, fmax=8000.0)
MAA_LATENT_PER_SECOND = 7.8           # latent frames a second (its gen_wav.py), a multiple of 4


def is_maa(path):
    """True for a Make-An-Audio folder (its checkpoint MAA_CKPT beside MAA_YAML)."""
    files = (MAA_CKPT, MAA_YAML)
    return bool(path) and all(os.path.exists(os.path.join(path, f)) for f in files)


class MakeAnAudio(Frozen):
    """Make-An-Audio (Huang et al. 2023) as a frozen (text tokens) -> log-mel generator."""
    # From its folder (maa1_full.ckpt and txt2audio_args.yaml): model.py's UNet and KLAutoencoder
    # with its weights, its text encoder for the guidance null (the tokens of "", as its
    # gen_wav.py), DDIM on its schedule (eps prediction, linear_start..linear_end on the square
    # root scale: 'scaled_linear'), trailing timesteps. Its BigVGAN vocoder is not ported: the
    # mels are read by the caller's vocoder.

    def __init__(self, unet, vae, text, config, scale_factor, seconds=10.0):
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.text = text
        p = config['model']['params']
        self.diffusion = Diffusion('scaled_linear', p['timesteps'], 'eps', p['linear_start'],
                                   p['linear_end'])
        self.scale_factor = scale_factor
        width = math.ceil(int(seconds * MAA_LATENT_PER_SECOND) / 4) * 4
        f = 2 ** (len(vae.decoder['up_blocks']) - 1)                       # VAE downsampling
        self.shape = (p['channels'], p['mel_dim'], width)                 # (C, h, w) of a latent
        self.mel_config = MelConfig(**dict(MAA_MEL.dict(), n_mels=p['mel_dim'] * f,
                                           frames=width * f))
        self.register_buffer('null', text.encode_text(['']).tokens)       # (1, L, d)
        self.freeze()

    @classmethod
    def from_pretrained(cls, path, seconds=10.0):
        """A Make-An-Audio folder (its bert/, if there, for BERT's config and tokenizer)."""
        with open(os.path.join(path, MAA_YAML)) as f:
            config = yaml.safe_load(f)
        sd = read_maa_checkpoint(path)
        unet = load_state(UNet(**maa_unet_config(config)), import_maa_unet(sd)).eval()
        vae = load_state(KLAutoencoder(**maa_vae_config(config)), import_maa_vae(sd)).eval()
        text = HFMaaText.from_state(sd, maa_bert(path))
        return cls(unet, vae, text, config, float(sd['scale_factor']), seconds)

    @torch.no_grad()
    def sample_mel(self, cond, steps=25, cfg=3.0, sampler='ddim', rng=None):
        """{'ctx': text tokens (B, L, d)} -> Make-An-Audio log-mels (B, n_mels, frames)."""
        ctx = cond['ctx'].float()
        net = self.unet
        if cfg != 1:
            null = self.null.expand(len(ctx), -1, -1)                           # (B, L, d)
            net = guided(self.unet, cfg, {'ctx': null})
        z = torch.randn((len(ctx), *self.shape), generator=rng).to(ctx.device)  # (B, C, h, w)
        z = self.diffusion.sample(net, z, {'ctx': ctx}, steps, sampler, rng=rng)
        return self.vae.decode(z / self.scale_factor)[:, 0]                  # (B, n_mels, frames)


# FluxPipeline's default picture side: its default_sample_size (128 latent pixels) x the VAE's 8
FLUX_SIZE = 1024


class Flux(Frozen):
    """FLUX.1 (Black Forest Labs 2024) as a frozen (T5 tokens, pooled CLIP) -> picture generator."""
    # From a diffusers pipeline folder (black-forest-labs/FLUX.1-dev or -schnell): FluxTransformer
    # and KLAutoencoder with its weights, FlowMatching from its scheduler; sampled as FluxPipeline
    # samples (Euler steps on its shifted times, the distilled guidance embedded, no true CFG).
    # The text encoders are not read: the condition comes as their outputs.

    def __init__(self, transformer, vae, scheduler):
        super().__init__()
        self.transformer = transformer
        self.vae = vae
        self.flow = FlowMatching(**flow_config(scheduler))
        self.scale = 2 ** (len(vae.decoder['up_blocks']) - 1)   # pixels a latent pixel spans
        self.freeze()

    @classmethod
    def from_pretrained(cls, path):
        """A diffusers FLUX.1 pipeline folder: transformer/, vae/, scheduler/."""
        with open(os.path.join(path, 'scheduler', 'scheduler_config.json')) as f:
            scheduler = json.load(f)
        transformer = load_generator('flux', os.path.join(path, 'transformer'))
        vae = load_generator('flux_vae', os.path.join(path, 'vae'))
        return cls(transformer, vae, scheduler)

    def latent_shape(self, height, width):
        """(C, h, w) of the latents of a height x width picture, as FluxPipeline rounds them."""
        side = 2 * self.scale                     # a latent side is a whole number of patches
        channels = self.transformer.x_embedder.in_features // 4
        return channels, 2 * (height // side), 2 * (width // side)

    @torch.no_grad()
    def sample(self, cond, steps=28, guidance=3.5, rng=None, height=FLUX_SIZE,
               width=FLUX_SIZE):
        """{'ctx': T5 tokens (B, L, 4096), 'vec': pooled CLIP (B, 768)} -> latents (B, C, h, w)."""
        ctx = cond['ctx']
        B = len(ctx)
        shape = self.latent_shape(height, width)
        noise = torch.randn((B, *shape), generator=rng).to(ctx.device)          # (B, C, h, w)
        net_cond = dict(ctx=ctx, vec=cond['vec'], guidance=None)
        if self.transformer.guidance_embedder is not None:                  # FLUX.1-dev's
            net_cond['guidance'] = torch.full((B,), float(guidance), device=ctx.device)
        return self.flow.sample(self.transformer, noise, net_cond, steps)

    def decode(self, z):
        """Latents (B, C, h, w) -> pictures in [0, 1] (B, H, W, 3)."""
        unscaled = z / self.vae.scaling_factor + self.vae.shift_factor
        x = self.vae.decode(unscaled)                                        # (B, 3, H, W)
        return (x.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)

    @torch.no_grad()
    def generate(self, cond, steps=28, guidance=3.5, rng=None, height=FLUX_SIZE,
                 width=FLUX_SIZE):
        """{'ctx': T5 tokens (B, L, 4096), 'vec': pooled CLIP (B, 768)} -> uint8 (B, H, W, 3)."""
        z = self.sample(cond, steps, guidance, rng, height, width)
        return (self.decode(z) * 255).round().to(torch.uint8)
