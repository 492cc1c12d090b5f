"""Text-conditioned latent diffusion: the generators the other methods stand on, trained here at toy
scale.

One `model.LatentDiffusion` serves three recipes, each a config: a U-Net on the toy autoencoder's
mel latents conditioned on the toy CLAP *audio* vector (AudioLDM: trained on audio embeddings,
sampled from the text embedding of the same CLAP), the same U-Net cross-attending to CLAP text
tokens (Make-An-Audio), and a DiT on image latents reading CLIP text tokens and the pooled CLIP
vector (PixArt / Flux at toy scale). Conditions are dropped for a tenth of the rows (U-Net: zeros,
DiT: learned nulls) for classifier-free guidance; v-prediction on a cosine schedule, DDIM with any
number of steps.

    python train.py config/ldm.py            # text -> sound (AudioLDM's recipe), out/toyav_t2a
    python sample.py --ckpt out/toyav_t2a --text "a loud dog barking in a tunnel"

References: latent diffusion (Rombach et al. 2022), AudioLDM (Liu et al. 2023), Make-An-Audio (Huang
et al. 2023), DiT (Peebles & Xie 2023), PixArt-alpha (Chen et al. 2023), classifier-free guidance
(Ho & Salimans 2022)."""
import torch

from encoders import load_encoder, load_latent_decoder
from model import LatentDiffusion

Model = LatentDiffusion


class Pipeline:
    """Text -> the toy encoder the generator was trained with -> DDIM -> latent decoder -> media."""

    OPTIONS = dict(steps=(25, 'DDIM steps'),
                   cfg_scale=(3.0, 'classifier-free guidance scale (1 = off)'))

    def __init__(self, model, ckpt, ckpt_dir='out', device='cpu', **options):
        self.model = model
        self.device = device
        self.options = options
        encoder = next(iter(model.roles.values())).split('_')[0]          # clap_audio_emb -> clap
        self.encoder = load_encoder(encoder, ckpt, ckpt_dir, device)
        self.decoder = load_latent_decoder(model, ckpt, ckpt_dir, device)
        self.modality = self.decoder.modality if self.decoder else model.modality
        self.mel_config = (self.decoder or self.encoder).mel_config
        task = 't2a' if self.modality == 'audio' else 't2i'
        self.tasks = {task: (('text',), (self.modality,))}

    def condition(self, texts):
        """Captions -> {role: features}: pooled embeddings for vec roles, token sequences for ctx. A
        generator trained on audio embeddings (AudioLDM's recipe) gets the same encoder's text
        ones."""
        feats = self.encoder.encode_text(texts)
        cond = {}
        for role, field in self.model.roles.items():
            cond[role] = feats.emb if field.endswith('_emb') else feats.tokens
        return {role: v.to(self.device) for role, v in cond.items()}

    @torch.no_grad()
    def sample(self, cond, rng=None):
        """Condition tensors {vec (B, D), ctx (B, L, D)} -> media of the generator's modality."""
        opts = self.options
        out = self.model.generate(cond, opts['steps'], opts['cfg_scale'], rng=rng)
        if self.decoder:
            return self.decoder.decode(out)                   # latents -> media
        return out

    def generate(self, task, cond, rng=None, n=1):
        """{text: list of B captions} -> {audio or image: media (B, ...)}."""
        return {self.modality: self.sample(self.condition(cond['text']), rng).cpu()}
