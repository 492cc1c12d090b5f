"""V2A-Mapper: hear a picture by mapping its CLIP embedding into the CLAP space a generator reads.

CLIP embeds the picture (or every frame of a video, aggregated), a small trained mapper turns the
CLIP image embedding into a CLAP audio embedding, and a frozen CLAP-conditioned generator (AudioLDM;
at toy scale out/<dataset>_t2a) turns that into a sound. Only the mapper trains, with MSE on cached
pairs: a regression network (MLP or transformer), or a DALL-E 2-style diffusion prior that samples a
CLAP vector (x0-prediction under a cosine schedule, guidance through condition dropout to a learned
null). The paper's baselines train nothing: "w/o mapper" hands the CLIP vector to the generator as
it is; "vision-text-audio" retrieves the nearest training caption by CLIP and hands over its CLAP
text vector.

    python train.py config/v2a.py            # regression MLP (config/v2a_*.py: the other mappers)
    python sample.py --ckpt out/toyav_v2a --image cat.jpg
    python sample.py --ckpt out/toyav_v2a --video clip.mp4 --frames=mean --interp="a quiet bird"

References:
1) V2A-Mapper: Wang et al. AAAI 2024, "V2A-Mapper: A Lightweight Solution for Vision-to-Audio
   Generation by Connecting Foundation Models"
2) the diffusion prior on embeddings: DALL-E 2 (Ramesh et al. 2022)
3) CLIP (Radford et al. 2021), CLAP (Wu et al. 2023), AudioLDM (Liu et al. 2023)
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from data import read_json
from encoders import load_checkpoint, load_encoder, parts_of
from generators import AudioLDM, is_pipeline
from methods.ldm import Pipeline as TextToMedia
from model import Diffusion, Transformer, guided, mlp, timestep_embedding


#################################################################################
#                 The mapper: CLIP image emb -> CLAP audio emb (Sec. 3)         #
#################################################################################

def aggregate_frames(emb, how='middle', rng=None):
    """Frame embeddings (B, F, D) -> one per clip (B, D): a 'random', the 'middle' or the 'mean'."""
    B, n = emb.shape[:2]
    if how == 'middle':
        return emb[:, n // 2]
    if how == 'mean':
        return emb.mean(1)
    if how == 'random':
        pick = torch.randint(n, (B,), generator=rng).to(emb.device)  # (B,) a frame per clip
        return emb[torch.arange(B, device=emb.device), pick]
    raise ValueError(f'unknown frame aggregation {how!r}')


class V2AMapper(nn.Module):
    """Source embedding (CLIP image) -> target (CLAP audio), by regression or a diffusion prior.

    kind 'mlp' sums the projected inputs and runs residual MLP blocks; kind 'transformer' reads a
    learned query token after attending over the input tokens ([timestep, noisy target, condition,
    query] for the prior, DALL-E 2's layout without its causal mask; [condition, query] for
    regression). The prior predicts x0 under a cosine schedule of T steps and drops the condition to
    a learned (or zero) null with probability p_uncond for classifier-free guidance."""

    def __init__(self, source='clip_image_emb', target='clap_audio_emb', in_dim=128, out_dim=128,
                 kind='mlp', prior=False, width=256, n_layer=4, n_head=4, p_uncond=0.1,
                 learn_null=True, normalize=False, frames='middle', T=1000):
        super().__init__()
        assert kind in ('mlp', 'transformer'), kind
        self.kind = kind
        self.prior = prior
        self.width = width
        self.p_uncond = p_uncond
        self.normalize = normalize
        self.frames = frames
        self.fields = [source, target]
        self.embed_c = nn.Linear(in_dim, width)
        self.embed_t = None
        self.embed_x = None
        if prior:                                        # the step t and the noisy target x_t
            self.embed_t = mlp(width, width, width)
            self.embed_x = nn.Linear(out_dim, width)
        if kind == 'mlp':
            block = lambda: nn.Sequential(nn.LayerNorm(width),
                                          mlp(width, 4 * width, width, nn.GELU()))   # pre-norm
            self.body = nn.ModuleList([block() for _ in range(n_layer)])
            self.ln = nn.LayerNorm(width)
        else:
            n_tokens = 4 if prior else 2
            self.query = nn.Parameter(torch.randn(width) * 0.02)
            self.pos = nn.Parameter(torch.randn(n_tokens, width) * 0.02)
            self.body = Transformer(width, n_layer, n_head)
        self.head = nn.Linear(width, out_dim)
        if prior and learn_null:  # the null condition of CFG, in the (scaled) input space
            self.null = nn.Parameter(torch.zeros(in_dim))
        elif prior:
            self.register_buffer('null', torch.zeros(in_dim))
        self.diffusion = Diffusion('cosine', T, 'x0') if prior else None

    def scaled(self, x):
        """Embeddings (B, D) as the network sees them; normalize: unit-norm x sqrt(D) (DALL-E 2)."""
        x = x.float()
        return F.normalize(x, dim=-1) * x.shape[-1] ** 0.5 if self.normalize else x

    def predict(self, x, t, cond):
        """Target estimate (B, out_dim) from cond (B, in_dim); a prior also reads x_t and t (B,)."""
        parts = [self.embed_c(cond)]                                             # (B, width) each
        if self.prior:
            t_emb = timestep_embedding(t, self.width).to(x)                      # (B, width)
            parts = [self.embed_t(t_emb), self.embed_x(x)] + parts
        if self.kind == 'mlp':
            h = sum(parts)                                                       # (B, width)
            for block in self.body:
                h = h + block(h)
            return self.head(self.ln(h))
        tokens = torch.stack(parts + [self.query.expand_as(parts[0])], 1)  # (B, n_tokens, width)
        h = self.body(tokens + self.pos)
        return self.head(h[:, -1])  # the query's output

    def condition(self, emb, rng=None):
        """Source embeddings (B, D), or frame embeddings (B, F, D) aggregated, as the condition."""
        if emb.dim() == 3:
            emb = aggregate_frames(emb, self.frames, rng)
        return self.scaled(emb)

    def forward(self, batch, rng=None):
        """MSE to the target: directly (regression), or of the x0 prediction at a random step."""
        cond = self.condition(batch[self.fields[0]], rng)                        # (B, in_dim)
        target = self.scaled(batch[self.fields[1]])                              # (B, out_dim)
        if not self.prior:
            return F.mse_loss(self.predict(None, None, cond), target)
        drop = torch.rand(len(cond), generator=rng) < self.p_uncond              # (B,) CFG dropout
        cond = torch.where(drop[:, None].to(cond.device), self.null.to(cond), cond)
        return self.diffusion.loss(self.predict, target, dict(cond=cond), rng)

    @torch.no_grad()
    def generate(self, emb, steps=25, cfg=1.0, sampler='ddim', rng=None):
        """Source (B, in_dim) or frame embeddings (B, F, in_dim) -> target embeddings (B, out_dim)
        (unit-norm with normalize): the regression output, or a prior sample in `steps` steps."""
        cond = self.condition(emb, rng)
        if not self.prior:
            out = self.predict(None, None, cond)
        else:
            null = dict(cond=self.null.to(cond).expand_as(cond))
            net = self.predict if cfg == 1 else guided(self.predict, cfg, null)
            x = torch.randn(len(cond), self.head.out_features, generator=rng).to(cond)  # x_T
            context = dict(cond=cond)
            out = self.diffusion.sample(net, x, context, steps, sampler, rng=rng)
        return F.normalize(out, dim=-1) if self.normalize else out


Model = V2AMapper


#################################################################################
#         Inference: picture -> CLIP -> mapper -> CLAP -> generator (Fig. 2)    #
#################################################################################

class Pipeline:
    """A picture or a video to sound through a mapper, or through one of the paper's baselines."""

    TASKS = {'i2a': (('image',), ('audio',))}
    VIDEO = True                     # takes video frames (B, F, H, W, 3) as its picture
    OPTIONS = dict(
        route=('mapper', "how the picture reaches CLAP space: 'mapper' (the trained mapper), "
                         "'clip' (its CLIP vector as it is: the paper's w/o mapper) or 'caption' "
                         "(the nearest training caption by CLIP, then its CLAP text vector: "
                         "vision-text-audio); the last two take a generator's run as the "
                         "checkpoint"),
        generator=('', "the CLAP-conditioned generator: a run directory ('': out/<dataset>_t2a) "
                       "or a diffusers AudioLDM pipeline folder (e.g. a download of "
                       "cvssp/audioldm-s-full-v2)"),
        steps=(25, 'DDIM steps of the generator'),
        cfg_scale=(3.0, 'guidance scale of the generator (1 = off)'),
        mapper_steps=(25, 'DDIM steps of a diffusion-prior mapper'),
        mapper_cfg=(1.0, 'guidance scale of a diffusion-prior mapper (1 = off)'),
        frames=('', "video frame aggregation: random, middle or mean ('': the mapper's)"),
        interp=('', "a caption whose CLAP vector the picture's is moved towards"),
        alpha=(0.5, 'weight of the interp caption (0: the picture only)'),
        captions=('', "the caption route's training captions ('': data/<dataset>/captions.json)"))

    def __init__(self, model, ckpt, ckpt_dir='out', device='cpu', **options):
        self.device = device
        self.options = options
        self.tasks = self.TASKS
        dataset = ckpt['data']['dataset']
        route = options['route']
        is_generator = ckpt['method'] != 'v2a'
        if (route == 'mapper') == is_generator:
            wanted = 'generator' if is_generator else 'mapper'
            raise ValueError(f"route={route!r} takes a {wanted} run, not a {ckpt['method']} "
                             "checkpoint")
        self.mapper = None if is_generator else model
        if options['frames'] and self.mapper is not None:
            self.mapper.frames = options['frames']
        self.clip = load_encoder('clip', ckpt, ckpt_dir, device)
        path = options['generator'] or os.path.join(ckpt_dir, f"{parts_of(ckpt['data'])}_t2a")
        self.audioldm = None
        if is_pipeline(path):                         # a published AudioLDM, diffusers' layout
            self.audioldm = AudioLDM.from_pretrained(path).to(device)
            self.mel_config = self.audioldm.vocoder.mel_config
        else:                                         # a text-to-sound run of this repository
            gen_model = model
            gen_ckpt = ckpt
            if not is_generator:
                gen_model, gen_ckpt = load_checkpoint(os.path.join(path, 'ckpt.pt'), device)
            self.generator = TextToMedia(gen_model, gen_ckpt, ckpt_dir, device, **options)
            roles = self.generator.model.roles
            if roles != {'vec': 'clap_audio_emb'}:
                raise ValueError(f"{path}: needs a generator conditioned on a CLAP audio vector, "
                                 f"not {roles}")
            self.mel_config = self.generator.mel_config
        if route == 'caption' or options['interp']:
            self.clap = load_encoder('clap', ckpt, ckpt_dir, device)
        if route == 'caption':
            captions = options['captions'] or os.path.join('data', dataset, 'captions.json')
            self.captions = self.training_captions(captions)

    def training_captions(self, path):
        """The distinct training captions as retrieval keys (CLIP text) and values (CLAP text)."""
        rows = read_json(path)['train']
        texts = sorted({row['caption'] for row in rows})
        keys = F.normalize(self.clip.encode_text(texts).emb, dim=-1)              # (K, D_clip)
        values = self.clap.encode_text(texts).emb                                # (K, D_clap)
        return keys, values

    def clap_vector(self, images, rng):
        """Pictures (B, H, W, 3) or videos (B, F, H, W, 3) -> CLAP-space vectors (B, D) by route."""
        flat = images.reshape(-1, *images.shape[-3:])                            # (B * F, H, W, 3)
        emb = self.clip.encode_image(flat).emb                                   # (B * F, D)
        emb = emb.view(*images.shape[:-3], -1)                                   # (B, [F,] D)
        opts = self.options
        route = opts['route']
        if route == 'mapper':
            vec = self.mapper.generate(emb, opts['mapper_steps'], opts['mapper_cfg'], rng=rng)
        else:
            emb = aggregate_frames(emb) if emb.dim() == 3 else emb               # (B, D)
            vec = emb
        if route == 'caption':
            keys, values = self.captions
            nearest = (F.normalize(emb, dim=-1) @ keys.T).argmax(-1)  # (B,) caption index
            vec = values[nearest]
        if opts['interp']:
            text = F.normalize(self.clap.encode_text([opts['interp']]).emb, dim=-1)   # (1, D)
            alpha = opts['alpha']
            vec = (1 - alpha) * F.normalize(vec, dim=-1) + alpha * text
        return vec

    def generate(self, task, cond, rng=None, n=1):
        """{image: pictures (B, H, W, 3) or video frames (B, F, H, W, 3)} -> {audio: log-mels
        (B, ...)}, and {wave: (B, T)} from a published AudioLDM's vocoder."""
        vec = self.clap_vector(torch.as_tensor(cond['image']), rng).to(self.device)
        if self.audioldm is None:
            return {'audio': self.generator.sample({'vec': vec}, rng).cpu()}
        opts = self.options
        mel = self.audioldm.sample_mel({'vec': vec}, opts['steps'], opts['cfg_scale'],
                                       rng=rng)
        return {'audio': mel.float().cpu(), 'wave': self.audioldm.vocode(mel).cpu()}
