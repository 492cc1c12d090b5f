"""SeeingSounds: see a sound through the two conditioning spaces of a frozen text-to-image model.

A frozen audio encoder (AST) turns a clip into m tokens. Two light branches carry them into the
spaces a text-to-image generator reads (paper Eq. 6): per-token MLP adapters A_T, A_V, then
attention pooling P_T (m -> l tokens, l learned queries) into the text-token space and P_V (m -> 1)
into the pooled vision-language space. They are trained with MSE to the encodings of the clip's
caption there, z_T(t) and z_V(t); the generator never runs in training. Controllability comes from
the data (Eq. 7): besides each clip with its class caption, the clip under a transform (a gain, a
room) with the edited caption, and two clips summed with the fused caption, the loss averaged over
the three terms apart. At inference the predicted tokens and vector condition the unchanged
generator. At toy scale the AST is the toy suite's (config/toyav_ast.py), both targets come from the
toy CLIP text tower and the generator is the toy text-to-image DiT (config/ldm_t2i.py); the
training rows are data/toyav_ctrl.py's. At full scale (config/vggsound_seeingsounds.py) the AST is
the published one on the raw wave, the targets are the T5 tokens and the pooled CLIP-L vector
FLUX.1 reads (prepare.py --features hf --encoders ast,flux_t5,flux_clip) and the generator a
diffusers FLUX.1 folder; controllable_rows makes Eq. 7's rows of real clips.

    python train.py config/seeingsounds.py
    python sample.py --ckpt out/toyav_seeingsounds --audio dog.wav --reverb hall
    python sample.py --ckpt out/vggsound_seeingsounds --audio dog.wav --generator <FLUX.1-dev>

References:
1) SeeingSounds (2025): adapters and attention pooling into T5 and CLIP spaces of a frozen Flux
2) AST: Gong, Chung & Glass 2021; attention pooling with learned queries: Lee et al. 2019 (Set
   Transformer), Jaegle et al. 2021 (Perceiver)
"""
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.signal import fftconvolve

from data import class_captions, toyav, toyav_ctrl
from encoders import AudioTokens, load_checkpoint, load_encoder, load_latent_decoder, parts_of
from generators import FLUX_SIZE, Flux, is_pipeline
from model import Attention, mlp

TERMS = {'plain': (0,), 'transform': (1, 2), 'mix': (3,)}   # Eq. 7's terms by toyav_ctrl's kinds


#################################################################################
#                 Adapters and attention pooling (Sec. 3, Eq. 6)                #
#################################################################################

class AttentionPool(nn.Module):
    """n learned queries attend over tokens (B, m, d) -> (B, n, d)."""

    def __init__(self, dim, n_queries, heads):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.out = mlp(dim, 4 * dim, dim, nn.GELU())

    def forward(self, tokens):
        """tokens (B, m, d) -> pooled (B, n, d)."""
        q = self.queries.expand(len(tokens), -1, -1)                # (B, n, d)
        h = q + self.attn(q, self.norm(tokens))                     # (B, n, d)
        return h + self.out(h)


class Branch(nn.Module):
    """One branch: a per-token MLP adapter, then pooling to n tokens (attention or average)."""

    def __init__(self, in_dim, dim, n_out, pooling, heads):
        super().__init__()
        self.adapter = mlp(in_dim, 2 * dim, dim, nn.GELU())         # per token
        self.n_out = n_out
        self.pool = AttentionPool(dim, n_out, heads) if pooling == 'attention' else None

    def forward(self, tokens):
        """Audio tokens (B, m, in_dim) -> (B, n_out, dim)."""
        h = self.adapter(tokens)                                    # (B, m, dim)
        if self.pool is not None:
            return self.pool(h)
        pooled = F.adaptive_avg_pool1d(h.transpose(1, 2), self.n_out)  # (B, dim, n_out)
        return pooled.transpose(1, 2)


class SeeingSounds(nn.Module):
    """Audio tokens -> (text-space tokens (B, l, d_t), pooled vector (B, d_v)), trained by MSE."""

    def __init__(self, audio='ast_audio_tokens', tokens='clip_text_tokens', pooled='clip_text_emb',
                 in_dim=128, token_dim=128, n_tokens=16, vec_dim=128, pooling='attention',
                 branches=('t', 'v'), terms=('plain', 'transform', 'mix'), heads=4, kind='kind'):
        super().__init__()
        assert pooling in ('attention', 'average'), pooling
        assert set(branches) <= {'t', 'v'}, branches
        self.branches = tuple(branches)
        self.terms = tuple(terms)
        self.branch_t = None
        self.branch_v = None
        if 't' in branches:
            self.branch_t = Branch(in_dim, token_dim, n_tokens, pooling, heads)
        if 'v' in branches:
            self.branch_v = Branch(in_dim, vec_dim, 1, pooling, heads)
        self.shapes = {'ctx': (n_tokens, token_dim), 'vec': (vec_dim,)}
        self.kind = kind            # the field of each row's kind ('': plain clips only, Eq. 6)
        self.fields = [audio, tokens, pooled] + ([kind] if kind else [])

    def predict(self, audio_tokens):
        """Audio tokens (B, m, in_dim) -> {ctx: (B, l, d_t), vec: (B, d_v)}; an untrained branch's
        output is zeros (its role is then the generator's learned null)."""
        x = audio_tokens.float()
        out = {role: x.new_zeros(len(x), *shape) for role, shape in self.shapes.items()}
        if self.branch_t is not None:
            out['ctx'] = self.branch_t(x)                           # (B, l, d_t)
        if self.branch_v is not None:
            out['vec'] = self.branch_v(x)[:, 0]                     # (B, d_v)
        return out

    def nulls(self):
        """The generator's roles this model does not predict (single-branch ablations)."""
        roles = (('ctx', 't'), ('vec', 'v'))
        return tuple(role for role, branch in roles if branch not in self.branches)

    def forward(self, batch):
        """Eq. 7: per-row MSE of each branch to its target, averaged within each term, then over the
        terms present in the batch (Eq. 6 when terms is ('plain',))."""
        audio, tokens, pooled = (batch[f] for f in self.fields[:3])
        if self.kind:
            kind = batch[self.kind]
        else:                                                        # every row a plain clip
            kind = torch.zeros(len(audio), dtype=torch.long, device=audio.device)
        pred = self.predict(audio)
        per_row = 0
        if self.branch_t is not None:
            per_row = per_row + (pred['ctx'] - tokens.float()).pow(2).mean((1, 2))   # (B,)
        if self.branch_v is not None:
            per_row = per_row + (pred['vec'] - pooled.float()).pow(2).mean(1)         # (B,)
        term_losses = []
        for term in self.terms:
            rows = torch.isin(kind, torch.tensor(TERMS[term], device=kind.device))   # (B,)
            if rows.any():
                term_losses.append(per_row[rows].mean())
        if not term_losses:                                          # no row of a trained term
            return per_row.sum() * 0
        return torch.stack(term_losses).mean()

    def param_groups(self):
        """The two branches train at their own rates (paper: 1e-5 for T, 1e-7 for V at scale)."""
        groups = {}
        if self.branch_t is not None:
            groups['t'] = list(self.branch_t.parameters())
        if self.branch_v is not None:
            groups['v'] = list(self.branch_v.parameters())
        return groups


Model = SeeingSounds


#################################################################################
#     Controllability from real clips: transforms T_j, edited captions (Eq. 7)  #
#################################################################################

GAIN = (0.1, 0.5)          # the gain alpha of a quieter clip, uniform in this range (paper)
LOW_VOLUME = 0.3           # alpha under it is captioned 'low-volume', above 'medium-volume'
HALL = 1                   # the room of the reverb row: toyav's hall (impulse response, words)
SOUND_OF = 'the sound of '     # how ESC-50's captions begin (data/esc50.py)
KIND = {name: k for k, name in enumerate(toyav_ctrl.KINDS)}   # the kinds TERMS reads


def sound_phrase(caption):
    """What a caption says sounds: 'a dog barking' of 'the sound of a dog barking' (else itself)."""
    return caption[len(SOUND_OF):] if caption.startswith(SOUND_OF) else caption


def edited_caption(kind, caption, alpha=1.0, other=''):
    """The paper's f, g as templates: the caption of a clip after transform `kind` (KIND's)."""
    phrase = sound_phrase(caption)
    if kind == 'gain':
        volume = 'low-volume' if alpha < LOW_VOLUME else 'medium-volume'
        return f"the {volume} sound of {phrase}"
    if kind == 'room':
        return f"the sound of {phrase} {toyav.ENVS[HALL][1]}"
    if kind == 'mix':
        return f"the sound of {phrase} and {sound_phrase(other)}"
    return caption


def partner_of(i, captions):
    """The next clip after i (cyclically) whose caption differs: the second sound of a mix."""
    n = len(captions)
    for step in range(1, n):
        j = (i + step) % n
        if captions[j] != captions[i]:
            return j
    raise ValueError('a mix needs clips of at least two captions')


def controllable_rows(waves, captions, sample_rate, rng):
    """Clips (N, T) and captions -> Eq. 7's rows: waves (4N, T), captions, kinds (4N,) (KIND's)."""
    # four rows a clip: as it is, under a gain alpha, in the hall, summed with a clip of another
    # caption; each with its caption edited to say so
    length = waves.shape[1]
    rows = []
    for i, (wave, caption) in enumerate(zip(waves, captions)):
        alpha = rng.uniform(*GAIN)
        room = toyav.impulse_response(HALL, sample_rate, rng)       # unit energy
        hall = fftconvolve(wave, room)[:length]                      # (T,)
        j = partner_of(i, captions)
        rows.append(('plain', wave, caption))
        rows.append(('gain', alpha * wave, edited_caption('gain', caption, alpha)))
        rows.append(('room', hall, edited_caption('room', caption)))
        rows.append(('mix', wave + waves[j], edited_caption('mix', caption, other=captions[j])))
    out = np.stack([wave for _, wave, _ in rows]).astype(np.float32)     # (4N, T)
    kinds = np.array([KIND[kind] for kind, _, _ in rows])               # (4N,)
    return out, [caption for _, _, caption in rows], kinds


#################################################################################
#            Inference: audio -> (tokens, vector) -> the frozen generator        #
#################################################################################

class Pipeline:
    """A sound -> the AST's tokens -> the branches -> the frozen text-to-image generator."""

    TASKS = {'a2i': (('audio',), ('image',))}
    OPTIONS = dict(
        steps=(10, 'sampling steps of the generator (DDIM; Euler for a FLUX.1 folder)'),
        cfg_scale=(3.0, 'guidance scale of the generator (1 = off); for a FLUX.1-dev folder its '
                        'distilled guidance (3.5 in its pipeline)'),
        generator=('', "the text-to-image generator: a run ('': out/<dataset>_t2i) or a "
                       "diffusers FLUX.1 pipeline folder (e.g. a download of "
                       "black-forest-labs/FLUX.1-dev)"),
        size=(FLUX_SIZE, 'picture side in pixels from a FLUX.1 folder (a multiple of 16)'),
        route=('adapters', "'adapters' (the trained branches) or 'caption' (the toy CLAP's nearest "
                           "class caption through the same generator: a baseline that trains "
                           "nothing, on the generator's run)"))

    def __init__(self, model, ckpt, ckpt_dir='out', device='cpu', **options):
        self.options = options
        self.device = device
        self.tasks = self.TASKS
        parts = parts_of(ckpt['data'])
        is_generator = ckpt['method'] != 'seeingsounds'
        if (options['route'] == 'adapters') == is_generator:
            raise ValueError(f"route={options['route']!r} does not take a {ckpt['method']} run")
        path = options['generator'] or os.path.join(ckpt_dir, f"{parts}_t2i")
        self.flux = None
        self.decoder = None
        if is_generator:
            self.generator = model
            gen_ckpt = ckpt
        elif is_pipeline(path):                       # a published FLUX.1, diffusers' layout
            self.flux = Flux.from_pretrained(path).to(device)
            self.check_flux(model, path)
        else:                                         # a text-to-image run of this repository
            self.generator, gen_ckpt = load_checkpoint(os.path.join(path, 'ckpt.pt'), device)
        if self.flux is None:
            self.decoder = load_latent_decoder(self.generator, gen_ckpt, ckpt_dir, device)
        self.nulls = ()
        if is_generator:
            self.class_captions(gen_ckpt, ckpt_dir)
            self.mel_config = self.clap.mel_config
            return
        self.model = model
        self.nulls = model.nulls()
        self.audio_tokens = AudioTokens(ckpt, ckpt_dir, device)
        self.mel_config = self.audio_tokens.mel_config

    def check_flux(self, model, path):
        """Refuse a run whose outputs are not FLUX.1's T5-token and pooled CLIP widths."""
        net = self.flux.transformer
        want = {'ctx': net.ctx_embedder.in_features, 'vec': net.vec_embedder[0].in_features}
        got = {role: shape[-1] for role, shape in model.shapes.items()}
        if got != want:
            raise ValueError(f"{path}: FLUX.1 reads T5 tokens and a pooled CLIP vector of widths "
                             f"{want}; this run predicts {got}")

    def class_captions(self, gen_ckpt, ckpt_dir):
        """The baseline's retrieval keys (toy CLAP text) and values (toy CLIP text) of each class's
        dry caption ('a loud <source> outdoors')."""
        captions = class_captions(parts_of(gen_ckpt['data']))
        self.clap = load_encoder('clap', gen_ckpt, ckpt_dir, self.device)
        keys = F.normalize(self.clap.encode_text(captions).emb, dim=-1)          # (K, D)
        values = load_encoder('clip', gen_ckpt, ckpt_dir, self.device).encode_text(captions)
        self.captions = (keys, values)

    def condition(self, cond):
        """The sounds of a condition -> the generator's condition {ctx, vec}."""
        if self.options['route'] == 'caption':
            mel = torch.as_tensor(cond['audio']).float().to(self.device)   # (B, n_mels, frames)
            keys, values = self.captions
            emb = F.normalize(self.clap.encode_mel(mel).emb, dim=-1)             # (B, D)
            nearest = (emb @ keys.T).argmax(-1)                                  # (B,)
            return {'ctx': values.tokens[nearest], 'vec': values.emb[nearest]}
        return self.model.predict(self.audio_tokens(cond))

    @torch.no_grad()
    def generate(self, task, cond, rng=None, n=1):
        """{audio: log-mels (B, n_mels, frames), wave: (B, T)} -> {image: uint8 (B, H, W, 3)}."""
        condition = {k: v.float().to(self.device) for k, v in self.condition(cond).items()}
        opts = self.options
        if self.flux is not None:
            size = opts['size']
            images = self.flux.generate(condition, opts['steps'], opts['cfg_scale'],
                                        rng=rng, height=size, width=size)
            return {'image': images.cpu()}
        out = self.generator.generate(condition, opts['steps'], opts['cfg_scale'],
                                      rng=rng, nulls=self.nulls)
        return {'image': (self.decoder.decode(out) if self.decoder else out).cpu()}
