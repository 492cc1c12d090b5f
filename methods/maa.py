"""Make-An-Audio steered by ImageBind: a few words and a picture of the place make one sound.

Each training caption is split into what can be pictured (the place) and what only words can say
(the sources, how loud, what they do); the place is rendered as a picture of its own
(data/toyav_maa.py). ImageBind embeds the words of the text part and the picture of the place in
one joint space; a fusion makes one embedding of the two (their average, a weighting by alpha,
fixed or learned, or attention: learned weights per row over the two); a learnable map turns it
into a token sequence shaped like the CLAP text tokens a text-to-audio latent diffusion model
(Make-An-Audio) cross-attends to. Two ways to train it:

    Experiment A (projection)       the tokens condition the generator inside the model and the
                                    generator's own diffusion loss trains fusion and map through
                                    it, the generator frozen (stage 1); stage 2 starts from stage 1
                                    and unfreezes the generator at a lower rate (init_from,
                                    lr_groups)
    Experiment B (token alignment)  the tokens are regressed onto the CLAP text tokens of the whole
                                    caption, loss l1 * MSE + l2 * (1 - cos), l1:l2 = 2:1; the
                                    generator never runs in training and is never changed

At inference the predicted tokens condition the generator (B: the unchanged one; A: its own). At
toy scale ImageBind is the toy suite's (config/toyav_imagebind.py) and the generator is the toy
Make-An-Audio route, out/<dataset>_t2a_tokens (config/ldm_tokens.py).

    python train.py config/maa.py              # Experiment B (config/maa_a.py: Experiment A)
    python sample.py --ckpt out/toyav_maa --text "a loud dog barking" --image tunnel.png

References:
1) Make-An-Audio: Huang et al. 2023; ImageBind: Girdhar et al. 2023 (one embedding space for
   text, pictures and sound); conditioning Make-An-Audio on ImageBind text and picture embeddings,
   Experiments A and B: the maa seed paper of this repository (DESIGN.md)
2) additive attention over inputs: Bahdanau et al. 2015; learned queries: Jaegle et al. 2021
"""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from encoders import load_checkpoint, load_encoder, parts_of
from generators import MakeAnAudio, is_maa
from methods.ldm import Pipeline as TextToMedia
from model import LatentDiffusion, Transformer, mlp

GENERATOR_RUN = '{parts}_t2a_tokens'    # the toy Make-An-Audio run under ckpt_dir, by default


#################################################################################
#                 Fusion of the text-part and picture embeddings                #
#################################################################################

class Fusion(nn.Module):
    """Joint-space embeddings of the text part and the picture (B, D) each -> one (B, D)."""

    def __init__(self, kind='average', dim=128, alpha=0.5, learn_alpha=False, hidden=64):
        super().__init__()
        assert kind in ('average', 'weighted', 'attention'), kind
        assert 0 < alpha < 1, alpha
        self.kind = kind
        logit = torch.tensor(math.log(alpha / (1 - alpha)))   # alpha = sigmoid(logit)
        if learn_alpha:
            self.alpha_logit = nn.Parameter(logit)
        else:
            self.register_buffer('alpha_logit', logit)
        self.score = mlp(dim, hidden, 1, nn.Tanh()) if kind == 'attention' else None

    def weights(self, both):
        """The weight of each embedding, rows summing to one: both (B, 2, D) -> (B, 2)."""
        B = len(both)
        if self.kind == 'average':
            return both.new_full((B, 2), 0.5)
        if self.kind == 'weighted':                            # alpha on the text part
            alpha = torch.sigmoid(self.alpha_logit).expand(B)   # (B,)
            return torch.stack([alpha, 1 - alpha], 1)
        return self.score(both)[..., 0].softmax(-1)            # (B, 2) attention weights

    def forward(self, text, image):
        """Text-part and picture embeddings (B, D) each, L2-normalised here -> fused (B, D)."""
        both = torch.stack([F.normalize(text, dim=-1), F.normalize(image, dim=-1)], 1)  # (B, 2, D)
        w = self.weights(both)                                                         # (B, 2)
        return (w[..., None] * both).sum(1)                                            # (B, D)


#################################################################################
#               The map: fused embedding -> the generator's tokens              #
#################################################################################

class TokenMap(nn.Module):
    """A fused embedding (B, D) -> tokens (B, L, C): L learned queries, each told the embedding,
    then transformer blocks and a projection to the token width."""

    def __init__(self, dim, n_tokens, token_dim, width, n_layer, n_head):
        super().__init__()
        self.embed = nn.Linear(dim, width)
        self.queries = nn.Parameter(torch.randn(n_tokens, width) * 0.02)
        self.body = Transformer(width, n_layer, n_head)
        self.out = nn.Linear(width, token_dim)

    def forward(self, fused):
        """fused (B, D) -> tokens (B, L, C)."""
        h = self.queries + self.embed(fused)[:, None]              # (B, L, width)
        return self.out(self.body(h))                              # (B, L, C)


class MakeAnAudioBind(nn.Module):
    """ImageBind text part + picture -> fusion -> tokens; the loss of Experiment A or B."""

    def __init__(self, experiment='b', text='imagebind_part_emb', image='imagebind_image_emb',
                 tokens='clap_text_tokens', emb_dim=128, n_tokens=16, token_dim=128,
                 fusion='average', alpha=0.5, learn_alpha=False, width=256, n_layer=2, n_head=4,
                 mse_weight=2.0, cos_weight=1.0, generator=None, generator_run=''):
        super().__init__()
        assert experiment in ('a', 'b'), experiment
        assert (experiment == 'a') == (generator is not None), 'Experiment A, and only A, ' \
            'holds the generator (its LatentDiffusion arguments)'
        self.fusion = Fusion(fusion, emb_dim, alpha, learn_alpha)
        self.map = TokenMap(emb_dim, n_tokens, token_dim, width, n_layer, n_head)
        self.mse_weight = mse_weight
        self.cos_weight = cos_weight
        self.generator = None
        self.generator_args = generator
        self.generator_run = generator_run
        target = tokens
        if generator is not None:
            self.generator = LatentDiffusion(**generator)
            assert set(self.generator.roles) == {'ctx'}, 'a generator reading tokens only'
            target = self.generator.target
        self.fields = [text, image, target]
        self.tokens = tokens
        if tokens not in self.fields:      # A: the true tokens, for the val metric alone
            self.fields.append(tokens)

    def fuse(self, text=None, image=None):
        """One joint-space embedding (B, D) of the two, or of the one given (a baseline)."""
        if text is None or image is None:
            alone = image if text is None else text
            return F.normalize(alone.float(), dim=-1)
        return self.fusion(text.float(), image.float())

    def predict(self, text=None, image=None):
        """ImageBind embeddings of the text part and/or picture (B, D) -> tokens (B, L, C)."""
        return self.map(self.fuse(text, image))

    def forward(self, batch):
        """A: the generator's diffusion loss on the predicted tokens; B: 2 MSE + (1 - cos)."""
        text, image, target = (batch[f] for f in self.fields[:3])
        tokens = self.predict(text, image)                                     # (B, L, C)
        if self.generator is not None:
            ctx = self.generator.roles['ctx']
            return self.generator({self.generator.target: target, ctx: tokens})
        return token_loss(tokens, target.float(), self.mse_weight, self.cos_weight)

    def metrics(self, batch):
        """Cosine of the predicted to the true CLAP text tokens (per token, averaged)."""
        tokens = self.predict(batch[self.fields[0]], batch[self.fields[1]])    # (B, L, C)
        target = batch[self.tokens].float()                                    # (B, L, C)
        return {'token_cos': F.cosine_similarity(tokens.float(), target, dim=-1).mean().item()}

    def setup(self, run):
        """Experiment A from scratch: the generator's weights from its trained run."""
        if self.generator is None:
            return
        run_dir = self.generator_run or os.path.join(run['ckpt_dir'],
                                                     GENERATOR_RUN.format(parts=run['parts']))
        path = os.path.join(run_dir, 'ckpt.pt')
        trained, ckpt = load_checkpoint(path)
        theirs = {k: ckpt['model_args'].get(k) for k in self.generator_args}
        if theirs != self.generator_args:
            raise ValueError(f"{path}: a generator of {theirs}, not the {self.generator_args} "
                             "model_args['generator'] asks for")
        self.generator.load_state_dict(trained.state_dict())

    def param_groups(self):
        """Fusion and map, and Experiment A's generator (stage 2 trains it at its own rate)."""
        groups = {'map': list(self.fusion.parameters()) + list(self.map.parameters())}
        if self.generator is not None:
            groups['generator'] = list(self.generator.parameters())
        return groups


def token_loss(pred, target, mse_weight=2.0, cos_weight=1.0):
    """Experiment B's loss on tokens (B, L, C): l1 * MSE + l2 * (1 - mean cosine per token)."""
    mse = F.mse_loss(pred, target)
    cos = F.cosine_similarity(pred, target, dim=-1).mean()                     # over (B, L)
    return mse_weight * mse + cos_weight * (1 - cos)


Model = MakeAnAudioBind


#################################################################################
#         Inference: words + picture -> ImageBind -> tokens -> generator        #
#################################################################################

class Pipeline:
    """A text part and a picture of the place -> ImageBind -> tokens -> the generator -> sound."""

    TASKS = {'ti2a': (('text', 'image'), ('audio',))}
    OPTIONS = dict(
        steps=(25, 'DDIM steps of the generator'),
        cfg_scale=(3.0, 'classifier-free guidance scale of the generator (1 = off)'),
        route=('fused', "what reaches the map: 'fused' (words and picture), 'image' (the picture "
                        "alone) or 'words' (the text part alone): the last two are baselines"),
        generator=('', "Experiment B's generator: a text-to-audio run reading CLAP text tokens "
                       "('': out/<dataset>_t2a_tokens) or a Make-An-Audio folder (maa1_full.ckpt, "
                       "txt2audio_args.yaml, bert/ optional); Experiment A samples its own"))

    def __init__(self, model, ckpt, ckpt_dir='out', device='cpu', **options):
        assert options['route'] in ('fused', 'image', 'words'), options['route']
        self.model = model
        self.options = options
        self.device = device
        self.tasks = self.TASKS
        self.bind = load_encoder('imagebind', ckpt, ckpt_dir, device)
        self.maa = None
        gen_model = model.generator
        gen_ckpt = ckpt
        parts = parts_of(ckpt['data'])
        path = options['generator'] or os.path.join(ckpt_dir, GENERATOR_RUN.format(parts=parts))
        if gen_model is None and is_maa(path):           # the published Make-An-Audio
            self.maa = MakeAnAudio.from_pretrained(path).to(device)
            self.check_generator(path, ['ctx'], self.maa.null.shape[-1])
            self.mel_config = self.maa.mel_config
            return
        if gen_model is None:                            # a text-to-audio run of this repository
            gen_model, gen_ckpt = load_checkpoint(os.path.join(path, 'ckpt.pt'), device)
            gen_args = gen_ckpt['model_args']
            roles = [role for role in ('vec', 'ctx') if gen_args.get(role)]
            self.check_generator(path, roles, gen_args.get('net_args', {}).get('ctx_dim'))
        self.generator = TextToMedia(gen_model, gen_ckpt, ckpt_dir, device, **options)
        self.mel_config = self.generator.mel_config

    def check_generator(self, path, roles, ctx_dim):
        """Refuse a generator that does not read tokens alone, as wide as the map's."""
        width = self.model.map.out.out_features
        if roles != ['ctx'] or ctx_dim != width:
            raise ValueError(f"{path}: a generator reading {roles} (token width {ctx_dim}); this "
                             f"run predicts tokens of width {width} for one reading tokens alone")

    @torch.no_grad()
    def generate(self, task, cond, rng=None, n=1):
        """{text: B text parts, image: uint8 pictures (B, H, W, 3)} -> {audio: log-mels}."""
        route = self.options['route']
        text = None
        image = None
        if route != 'image':
            text = self.bind.encode_text(list(cond['text'])).emb.to(self.device)     # (B, D)
        if route != 'words':
            image = self.bind.encode_image(cond['image']).emb.to(self.device)        # (B, D)
        tokens = self.model.predict(text, image)                                      # (B, L, C)
        if self.maa is None:
            return {'audio': self.generator.sample({'ctx': tokens}, rng).cpu()}
        opts = self.options
        mel = self.maa.sample_mel({'ctx': tokens}, opts['steps'], opts['cfg_scale'], rng=rng)
        return {'audio': mel.float().cpu()}
