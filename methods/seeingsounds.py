"""SeeingSounds: see a sound through the two conditioning spaces of a frozen text-to-image generator.

A frozen audio encoder (AST) turns a clip into m tokens. Two light branches carry them into the
spaces a text-to-image generator reads (paper Eq. 6): per-token MLP adapters A_T, A_V, then attention
pooling P_T (m -> l tokens, l learned queries) into the text-token space and P_V (m -> 1) into the
pooled vision-language space. They are trained with MSE to the encodings of the clip's caption
there, z_T(t) and z_V(t); the generator never runs in training. Controllability comes from the data
(Eq. 7): besides each clip with its class caption, the clip under a transform (a gain, a room) with
the edited caption, and two clips summed with the fused caption, the loss averaged over the three
terms apart. At inference the predicted tokens and vector condition the unchanged generator.
At toy scale the AST is the toy suite's (config/toyav_ast.py), both targets come from the toy CLIP
text tower (at full scale: T5 tokens and the pooled CLIP vector) and the generator is the toy
text-to-image DiT (config/ldm_t2i.py); the training rows are data/toyav_ctrl.py's.

    python train.py config/seeingsounds.py
    python sample.py --ckpt out/toyav_seeingsounds --audio dog.wav --reverb hall

References:
1) SeeingSounds (2025): adapters and attention pooling into T5 and CLIP spaces of a frozen Flux
2) AST: Gong, Chung & Glass 2021; attention pooling with learned queries: Lee et al. 2019 (Set
   Transformer), Jaegle et al. 2021 (Perceiver)
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from data import class_captions
from encoders import load_checkpoint, load_encoder, load_latent_decoder, parts_of
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
                 branches=('t', 'v'), terms=('plain', 'transform', 'mix'), heads=4):
        super().__init__()
        assert pooling in ('attention', 'average') and set(branches) <= {'t', 'v'}, (pooling, branches)
        self.branches = tuple(branches)
        self.terms = tuple(terms)
        self.branch_t = Branch(in_dim, token_dim, n_tokens, pooling, heads) if 't' in branches else None
        self.branch_v = Branch(in_dim, vec_dim, 1, pooling, heads) if 'v' in branches else None
        self.shapes = {'ctx': (n_tokens, token_dim), 'vec': (vec_dim,)}
        self.fields = [audio, tokens, pooled, 'kind']

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
        return tuple(role for role, branch in (('ctx', 't'), ('vec', 'v')) if branch not in self.branches)

    def forward(self, batch):
        """Eq. 7: per-row MSE of each branch to its target, averaged within each term, then over the
        terms present in the batch (Eq. 6 when terms is ('plain',))."""
        audio, tokens, pooled, kind = (batch[f] for f in self.fields)
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
#            Inference: audio -> (tokens, vector) -> the frozen generator        #
#################################################################################

class Pipeline:
    """A sound -> the AST's tokens -> the branches -> the frozen text-to-image generator."""

    TASKS = {'a2i': (('audio',), ('image',))}
    OPTIONS = dict(
        steps=(10, 'DDIM steps of the generator'),
        cfg_scale=(3.0, 'guidance scale of the generator (1 = off)'),
        generator=('', "the text-to-image run ('': out/<dataset>_t2i)"),
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
        if is_generator:
            self.generator, gen_ckpt = model, ckpt
        else:
            self.generator, gen_ckpt = load_checkpoint(os.path.join(path, 'ckpt.pt'), device)
        self.decoder = load_latent_decoder(self.generator, gen_ckpt, ckpt_dir, device)
        self.nulls = ()
        if is_generator:
            self.class_captions(gen_ckpt, ckpt_dir)
            self.mel_config = self.clap.mel_config
            return
        self.model = model
        self.nulls = model.nulls()
        self.ast = load_encoder('ast', ckpt, ckpt_dir, device)
        self.mel_config = self.ast.mel_config

    def class_captions(self, gen_ckpt, ckpt_dir):
        """The baseline's retrieval keys (toy CLAP text) and values (toy CLIP text) of each class's
        dry caption ('a loud <source> outdoors')."""
        captions = class_captions(parts_of(gen_ckpt['data']))
        self.clap = load_encoder('clap', gen_ckpt, ckpt_dir, self.device)
        keys = F.normalize(self.clap.encode_text(captions).emb, dim=-1)          # (K, D)
        values = load_encoder('clip', gen_ckpt, ckpt_dir, self.device).encode_text(captions)
        self.captions = (keys, values)

    def condition(self, mel):
        """Log-mels (B, n_mels, frames) -> the generator's condition {ctx, vec}."""
        if self.options['route'] == 'caption':
            keys, values = self.captions
            emb = F.normalize(self.clap.encode_mel(mel).emb, dim=-1)             # (B, D)
            nearest = (emb @ keys.T).argmax(-1)                                  # (B,)
            return {'ctx': values.tokens[nearest], 'vec': values.emb[nearest]}
        return self.model.predict(self.ast.encode_mel(mel).tokens)

    @torch.no_grad()
    def generate(self, task, cond, rng=None, n=1):
        """{audio: log-mels (B, n_mels, frames)} -> {image: uint8 (B, H, W, 3)}."""
        mel = torch.as_tensor(cond['audio']).float().to(self.device)
        condition = {k: v.float().to(self.device) for k, v in self.condition(mel).items()}
        out = self.generator.generate(condition, self.options['steps'], self.options['cfg_scale'],
                                      generator=rng, nulls=self.nulls)
        return {'image': (self.decoder.decode(out) if self.decoder else out).cpu()}
