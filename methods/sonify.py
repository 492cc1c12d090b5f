"""Seeing Sound: a text-to-image DiT fine-tuned to draw a picture from a sound, trained without a
single real image-audio pair.

The pairs are made (data/sonify.py): each picture of an image-only dataset is sonified, its
sounding concepts named by a VLM, matching clips retrieved from a separate audio pool with CLAP
(Algorithm 1) and mixed at normalised loudness. The model is a PixArt-alpha text-to-image DiT
(tokens only, adaLN-single) whose caption projection is replaced: the audio encoder's tokens (AST)
pass through an MLP audio projector, trained from scratch, into the cross-attention of every
block. Every other weight starts from the text-to-image checkpoint and the whole DiT is fine-tuned
on cached image latents with its own diffusion loss (paper: AdamW at 3.16e-5, weight decay 3e-2).
Appendix A.11's variant first trains the projector alone, contrastively against the text of the
same rows (their concepts) through the DiT's own caption projection, kept frozen. Two variants of
ours, not the paper's, take the generator itself as the teacher: align='distill' trains the
projector so that the frozen DiT predicts from the sound what it predicts from that text, on the
same noisy latents; align='attention' trains the projector and every block's cross-attention so
that each block, given the teacher's own hidden states, takes from the sound what the generator's
cross-attention takes from the text (a loss per block instead of one at the output). With
token_keep < 1 each training row sees a random share of its sound's tokens (token dropout), in
either stage, so that no few tokens alone carry a source. With pooled (ours too) the tokens' mean
also joins the timestep embedding that adaLN-single modulates every block from, as Flux and SD3
add a pooled text vector; the fresh path starts silent. At inference a sound's tokens condition
the DiT (DDIM, guidance against its learned null) and the autoencoder decodes the latents. The
paper's section 4.5 probes are sound edits: sample.py --mix (semantic mixing), --mix_gain
(loudness inside a mix), --sequence (separated versus mixed), --reverb (acoustics), and the test
split of data/sonify.py holds them for eval.py.

    python train.py config/ldm_t2i.py config/ldm_pixart.py   # the toy PixArt: tokens only
    python prepare.py sonify && python prepare.py sonify --features toy
    python train.py config/sonify.py             # init_from the toy PixArt, projector re-created
    python sample.py --ckpt out/toyav_sonify --audio dog.wav --mix bell.wav --mix_gain 0.3
    python eval.py config/sonify_eval.py         # real toyav test audio -> pictures

At full scale (config/vggsound_sonify.py) the AST is the published one on raw waves, the latents
are PixArt-alpha's VAE's (prepare.py --features hf --encoders ast,sd_vae) and the DiT is read from
a diffusers PixArt-alpha transformer folder (setup: its weights, its 4096-wide caption projection
left out for the audio projector).

References:
1) Kalayeh & Petermann, Seeing Sound: sonification, the audio projector, Appendix A.11
2) PixArt-alpha: Chen et al. 2023 (adaLN-single, caption projection); DiT: Peebles & Xie 2023
3) AST: Gong, Chung & Glass 2021; InfoNCE: van den Oord et al. 2018, CLIP (Radford et al. 2021)
"""
import math
import os

import numpy as np
import pyloudnorm as pyln
import torch
import torch.nn.functional as F
from torch import nn

from data.sonify import normalise
from encoders import AudioTokens, load_latent_decoder, log_mel, read_checkpoint
from generators import load_generator
from model import LatentDiffusion, info_nce, mlp, same_caption

STAGES = ('finetune', 'projector')
ALIGNS = ('infonce', 'distill', 'attention')   # the projector stage's loss: A.11's, or the
                                                # generator as teacher, at its output or per block


#################################################################################
#        The DiT with an audio projector; Appendix A.11's pre-training          #
#################################################################################

class Sonify(LatentDiffusion):
    """PixArt reading sounds: audio tokens (B, m, d_a) -> MLP projector -> every block's
    cross-attention; the diffusion loss on image latents, or A.11's contrastive loss."""

    def __init__(self, net_args=None, shape=(4, 16, 16), target='ae_image_latent',
                 audio='ast_audio_tokens', p_uncond=0.1, schedule='cosine', prediction='v',
                 stage='finetune', text='', text_dim=128, temperature=0.07, generator='',
                 summary_token=False, align='infonce', token_keep=1.0, pooled=False):
        if pooled:  # the tokens' mean, as wide as they are
            net_args = dict(net_args, vec_dim=net_args['ctx_dim'])
        super().__init__('dit', net_args, shape, target, ctx=audio, p_uncond=p_uncond,
                         schedule=schedule, prediction=prediction)
        assert stage in STAGES and align in ALIGNS, (stage, align)
        assert stage == 'finetune' or not pooled, 'the pooled vector is a fine-tune option'
        assert text or stage == 'finetune', 'the projector stage needs the text field'
        self.stage = stage
        self.align = align
        self.audio = audio
        self.text = text
        self.log_scale = math.log(1 / temperature)
        self.generator = generator          # read by setup alone: a run, or PixArt's folder
        self.summary_token = summary_token  # the tokens' mean leads them (see conditions)
        self.token_keep = token_keep        # share of the sound's tokens a training row sees
        self.pooled = pooled                # the tokens' mean also joins the timestep (adaLN)
        if pooled:  # a fresh vector path starts silent: the fine-tune starts as the generator
            nn.init.zeros_(self.net.vec_embedder[-1].weight)
            nn.init.zeros_(self.net.vec_embedder[-1].bias)
            nn.init.zeros_(self.net.null_vec)
        self.text_projector = None          # A.11: the generator's caption projection, frozen
        self.teacher_weights = None         # distill, attention: the generator's, unsaved
        if text:
            d = self.net.x_embedder.out_channels
            self.text_projector = mlp(text_dim, d, d, torch.nn.GELU(approximate='tanh'))
            self.text_projector.requires_grad_(False)
        if stage == 'projector':  # the projector trains (attention: and the cross-attentions)
            self.net.requires_grad_(False)
            for part in self.aligned():
                part.requires_grad_(True)
            self.fields = [audio, text, 'caption_ids']
            if align != 'infonce':
                self.fields = [target, audio, text]

    def setup(self, run):
        """From scratch with a generator named: every DiT weight of it but its caption projection
        (the audio projector stays fresh); that projection becomes the frozen text projector."""
        if not self.generator:
            return
        weights = generator_weights(self.generator)                 # the DiT's own keys
        prefix = 'ctx_embedder.'
        caption = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        rest = {k: v for k, v in weights.items() if not k.startswith(prefix)}
        missing, unexpected = self.net.load_state_dict(rest, strict=False)
        others = [k for k in missing if not k.startswith((prefix, 'null_'))]  # nulls: for CFG
        if others or unexpected:
            raise ValueError(f"{self.generator}: not this DiT: missing {others}, unexpected "
                             f"{unexpected}")
        if self.text_projector is not None:
            self.text_projector.load_state_dict(caption)

    def train(self, mode=True):
        """Training mode but for the frozen parts: the text projector, and in the projector stage
        every DiT weight outside the parts it aligns."""
        super().train(mode)
        if self.text_projector is not None:
            self.text_projector.eval()
        if self.stage == 'projector':
            self.net.eval()
            for part in self.aligned():
                part.train(mode)
        return self

    def aligned(self):
        """The parts the projector stage trains: the audio projector, and with align='attention'
        every block's cross-attention."""
        crosses = [block.cross for block in self.net.blocks] if self.align == 'attention' else []
        return [self.net.ctx_embedder] + crosses

    def conditions(self, cond, drop):
        """The DiT's conditions; in training with token_keep < 1 each row keeps a random share of
        its sound's tokens (token dropout); with summary_token the tokens' mean (the toy AST's
        pooled output) leads them, as the published AST's CLS and distillation tokens lead its;
        with pooled their mean is also the DiT's vector, added to its timestep embedding."""
        tokens = self.heard(cond['ctx']).float()                               # (B, m, d_a)
        mean = tokens.mean(1, keepdim=True)                                     # (B, 1, d_a)
        cond = dict(cond, ctx=tokens)
        if self.pooled:
            cond['vec'] = mean[:, 0]                                            # (B, d_a)
            drop = dict(drop, vec=drop['ctx'])
        if self.summary_token:
            cond['ctx'] = torch.cat([mean, tokens], 1)                          # (B, 1 + m, d_a)
        return super().conditions(cond, drop)

    def heard(self, tokens):
        """The sound's tokens (B, m, d_a) a row sees: in training with token_keep < 1 a random
        share of them."""
        if self.training and self.token_keep < 1:
            return some_tokens(tokens, self.token_keep)
        return tokens

    def forward(self, batch):
        """The diffusion loss of the image latents given the sound (fine-tuning), or A.11."""
        if self.stage == 'projector':
            return self.contrastive(batch) if self.align == 'infonce' else self.distill(batch)
        return super().forward(batch)

    def contrastive(self, batch):
        """A.11: InfoNCE between each row's projected sound and its projected text, both averaged
        over tokens; rows with the same text are positives of each other."""
        sound = self.net.ctx_embedder(batch[self.audio].float()).mean(1)            # (B, d)
        with torch.no_grad():
            text = self.text_projector(batch[self.text].float()).mean(1)            # (B, d)
        same = same_caption(batch['caption_ids'])                                   # (B, B)
        scale = math.exp(self.log_scale)
        return info_nce(F.normalize(sound, dim=-1), F.normalize(text, dim=-1), same, scale)

    def distill(self, batch):
        """The generator read through its own caption projection is the teacher: its prediction
        from the row's text against the frozen DiT's from the projected sound, on the same noisy
        latents (distill), or each block's cross-attention of the teacher's hidden states over the
        text against the trained cross-attention over the projected sound (attention)."""
        x0 = self.mel_norm.media_to_float(self.modality, batch[self.target]).float()  # (B, C, H, W)
        x_t, t, _ = self.diffusion.noised(x0)                                   # t: (B,)
        if self.teacher_weights is None:  # read once, never saved: a resumed run reads it again
            weights = generator_weights(self.generator)
            self.teacher_weights = {k: v.to(x0.device) for k, v in weights.items()}
        crosses = self.aligned()[1:]   # attention: every block's cross-attention; distill: none
        seen = []   # each block's cross-attention in the teacher's pass: (hidden states, output)
        keep = lambda module, args, out: seen.append((args[0], out))
        hooks = [c.register_forward_hook(keep) for c in crosses]
        with torch.no_grad():
            teacher = torch.func.functional_call(self.net, self.teacher_weights, (x_t, t),
                                                 dict(ctx=batch[self.text].float()))
        for hook in hooks:
            hook.remove()
        audio = self.heard(batch[self.audio].float())                            # (B, n, d_a)
        if self.align == 'distill':
            student = self.net(x_t, t, ctx=audio)                               # (B, C, H, W)
            return F.mse_loss(student, teacher)
        sound = self.net.ctx_embedder(audio)                                    # (B, n, d)
        losses = [F.mse_loss(cross(x, sound), out) for cross, (x, out) in zip(crosses, seen)]
        return sum(losses) / len(losses)

    def param_groups(self):
        """The fresh projector (and vector path) apart from the pre-trained DiT (lr_groups may set
        its rate)."""
        fresh = [self.net.ctx_embedder] + ([self.net.vec_embedder] if self.pooled else [])
        return {'projector': [p for part in fresh for p in part.parameters()]}


Model = Sonify


def some_tokens(tokens, keep):
    """A random round(keep * m) of each row's m tokens (B, m, d) -> (B, n, d); the DiT's context
    has no positions, so fewer tokens is token dropout."""
    B, m, d = tokens.shape
    n = max(1, round(keep * m))
    order = torch.rand(B, m, device=tokens.device).argsort(1)                   # (B, m)
    chosen = order[:, :n, None].expand(B, n, d)                                 # (B, n, d)
    return tokens.gather(1, chosen)


def generator_weights(path):
    """The DiT weights to start from: a text-to-image run of this repository (its EMA if any) or a
    diffusers PixArt-alpha transformer folder (imported)."""
    if os.path.isfile(os.path.join(path, 'config.json')):
        return load_generator('pixart', path).state_dict()
    ckpt = read_checkpoint(os.path.join(path, 'ckpt.pt'))
    weights = ckpt.get('ema') or ckpt['model']
    return {k[len('net.'):]: v for k, v in weights.items() if k.startswith('net.')}


#################################################################################
#                  Inference: a sound -> its tokens -> the DiT -> a picture      #
#################################################################################

class Pipeline:
    """A sound -> the AST's tokens -> the fine-tuned DiT -> the autoencoder's decoder."""

    TASKS = {'a2i': (('audio',), ('image',))}
    OPTIONS = dict(steps=(25, 'DDIM steps'),
                   cfg_scale=(3.0, 'classifier-free guidance scale against the learned null '
                                   '(1 = off)'),
                   lufs=(0.0, 'each input sound brought to this loudness (dB LUFS) first, as '
                              'the sonified clips were (0 = as it is)'))

    def __init__(self, model, ckpt, ckpt_dir='out', device='cpu', **options):
        if model.stage != 'finetune':
            raise ValueError('a projector pre-training run draws nothing: fine-tune from it '
                             '(config/sonify_a11.py)')
        self.model = model
        self.options = options
        self.tasks = self.TASKS
        self.audio_tokens = AudioTokens(ckpt, ckpt_dir, device)
        self.mel_config = self.audio_tokens.mel_config
        self.decoder = load_latent_decoder(model, ckpt, ckpt_dir, device)

    @torch.no_grad()
    def generate(self, task, cond, rng=None, n=1):
        """{audio: log-mels (B, n_mels, frames), wave: (B, T)} -> {image: uint8 (B, H, W, 3)}."""
        opts = self.options
        if opts['lufs']:
            cond = self.at_loudness(cond, opts['lufs'])
        tokens = self.audio_tokens(cond).float()                                    # (B, m, d)
        latents = self.model.generate({'ctx': tokens}, opts['steps'], opts['cfg_scale'],
                                      rng=rng)
        images = self.decoder.decode(latents) if self.decoder else latents
        return {'image': images.cpu()}

    def at_loudness(self, cond, lufs):
        """Each input sound at a loudness (ITU-R BS.1770, dB LUFS): its wave normalised and
        clipped to [-1, 1] as the sonified mixtures are, its log-mels made again."""
        if 'wave' not in cond:
            raise ValueError('lufs: the condition needs the raw sound (wave) beside its log-mels')
        meter = pyln.Meter(self.mel_config.sample_rate)
        waves = [normalise(w, lufs, meter)[0] for w in np.asarray(cond['wave'], np.float64)]
        waves = torch.from_numpy(np.clip(np.stack(waves), -1, 1)).float()          # (B, T)
        return dict(cond, wave=waves, audio=log_mel(waves, self.mel_config))
