"""Frozen encoders, tokenizers and vocoders behind one interface per role, in two suites.

Roles (every frozen model exposes only the methods of its roles):
    image encoder  encode_image(images uint8 (B, H, W, 3))    -> Features(emb (B, D), tokens)
    audio encoder  encode_audio(waves (B, T) at sample_rate)  -> Features(emb, tokens (B, N, C))
    text encoder   encode_text(list of str)                   -> Features(emb, tokens, mask (B, L))
    tokenizer      encode(media) -> ids (B, N) long;  decode(ids) -> media
    autoencoder    encode(media) -> latents (B, C, h, w); decode(latents) -> media
    vocoder        __call__(log-mel (B, n_mels, frames)) -> waves (B, T)
Suites: `toy` (networks of model.py trained here on the embedded dataset, loaded from out/) and
`hf` (the published models through transformers `from_pretrained`; generators.py loads the
published generator weights). Audio and image loading, resampling and log-mel spectrograms live
here too.

References:
1) CLIP: Radford et al. 2021; CLAP: Wu et al. 2023; ImageBind: Girdhar et al. 2023
2) AST: Gong et al. 2021; EnCodec: Défossez et al. 2022; FLAN-T5: Chung et al. 2022
3) the SpeechT5 HiFi-GAN vocoder as AudioLDM (Liu et al. 2023) uses it
4) Griffin & Lim 1984 for the toy vocoder
"""
import hashlib
import math
import os
from dataclasses import dataclass, asdict
from typing import Optional

import av
import librosa
import numpy as np
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageOps

from model import (VQVAE, AudioTagger, ContrastiveModel, Judge, LatentDiffusion, MediaAutoencoder,
                   float_to_image, image_to_float)


@dataclass
class Features:
    """What an encoder returns: a pooled embedding and a token sequence (mask marks real tokens)."""
    emb: torch.Tensor                      # (B, D)
    tokens: torch.Tensor                   # (B, N, C)
    mask: Optional[torch.Tensor] = None    # (B, N) bool, True where a token is real


class Frozen(nn.Module):
    """Base of every frozen model: eval mode and requires_grad=False, whatever train() asks."""

    def freeze(self):
        """Eval mode and requires_grad=False on every parameter."""
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode=True):
        """Stay in eval mode: a training loop's model.train() does not reach frozen parts."""
        return super().train(False)


# ---------------------------------------------------------------------------------------------
# media loading
# ---------------------------------------------------------------------------------------------
class MediaError(ValueError):
    """A media file that cannot be used; the message is one line naming the file and the problem."""


def _media_error(path, what, err=None):
    """MediaError '<path>: <what> (<first line of err>)'."""
    message = f"{path}: {what}"
    detail = str(err).strip() if err is not None else ''
    if detail:
        message += f" ({detail.splitlines()[0]})"
    return MediaError(message)


def _check_file(path):
    """Raise MediaError unless path is an existing file with at least one byte."""
    if not os.path.isfile(path):
        raise _media_error(path, 'file not found')
    if os.path.getsize(path) == 0:
        raise _media_error(path, 'empty file (0 bytes)')


def _decode_audio_av(path):
    """First audio stream of any container, channels averaged -> (float32 (T,), sample rate)."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise _media_error(path, 'no audio stream')
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format='fltp')  # float planar, input layout and rate kept
        frames = []
        for decoded in container.decode(stream):
            frames += resampler.resample(decoded)
        frames += resampler.resample(None)                      # what the resampler still holds
    if not frames:
        return np.zeros(0, np.float32), stream.codec_context.sample_rate
    wave = np.concatenate([f.to_ndarray().mean(0) for f in frames])   # (T,)
    return wave, frames[0].sample_rate


def load_audio(path, sample_rate):
    """Any audio file (or a video's first audio stream) -> mono float32 (T,) at sample_rate."""
    _check_file(path)
    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            wave = f.read(dtype='float32', always_2d=True).mean(1)  # (T,)
    except RuntimeError:  # not a libsndfile format (mp4, mkv, webm, m4a, ...): try ffmpeg
        try:
            wave, sr = _decode_audio_av(path)
        except av.error.FFmpegError as e:
            raise _media_error(path, 'not a readable audio file '
                                     '(corrupt or unknown format)') from e
    if wave.size == 0:
        raise _media_error(path, 'empty audio (0 samples)')
    if not np.isfinite(wave).all():
        raise _media_error(path, 'non-finite audio samples (NaN or inf)')
    if sr != sample_rate:
        wave = librosa.resample(wave, orig_sr=sr, target_sr=sample_rate, res_type='soxr_hq')
    return np.ascontiguousarray(wave, dtype=np.float32)


def fit_length(wave, n):
    """Mono wave (T,) -> (n,): zero-padded at the end, or cut to its loudest n-sample window."""
    if len(wave) <= n:
        return np.pad(wave, (0, n - len(wave)))
    energy = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])   # (T + 1,)
    start = int(np.argmax(energy[n:] - energy[:-n]))          # the first of the loudest windows
    return wave[start:start + n]


def _to_rgb(im):
    """Any PIL image -> uint8 (H, W, 3): alpha over white, I/I;16 from 0..65535, F from 0..1."""
    if im.mode in ('I', 'F') or im.mode.startswith('I;16'):
        x = np.nan_to_num(np.asarray(im, dtype=np.float64))                  # (H, W)
        if im.mode != 'F':
            scale = 255 / 65535
        elif x.max() <= 1.0:
            scale = 255.0
        else:                                                             # F beyond 0..1: 0..255
            scale = 1.0
        gray = np.clip(np.rint(x * scale), 0, 255).astype(np.uint8)         # (H, W)
        return np.repeat(gray[..., None], 3, axis=2)                        # (H, W, 3)
    if {'A', 'a'} & set(im.getbands()) or 'transparency' in im.info:
        white = Image.new('RGBA', im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert('RGBA'))
    return np.array(im.convert('RGB'))


def load_image(path, size=None):
    """Any image PIL reads -> uint8 (H, W, 3), resized by resize_image when size is given."""
    _check_file(path)
    try:
        with Image.open(path) as im:
            im.load()
            rgb = _to_rgb(ImageOps.exif_transpose(im))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _media_error(path, 'not a readable image', e) from e
    if rgb.size == 0:
        raise _media_error(path, 'zero-size image')
    return rgb if size is None else resize_image(rgb, size)


def resize_image(rgb, size):
    """uint8 (H, W, 3), bicubic -> size int: shorter side to size, centre crop; (h, w): resize."""
    img = Image.fromarray(rgb)
    bicubic = Image.Resampling.BICUBIC
    if isinstance(size, int):
        scale = size / min(img.size)
        w = max(size, round(img.width * scale))
        h = max(size, round(img.height * scale))
        left = (w - size) // 2
        top = (h - size) // 2
        img = img.resize((w, h), bicubic).crop((left, top, left + size, top + size))
    else:
        img = img.resize((size[1], size[0]), bicubic)
    return np.array(img)


def load_video_frames(path, n_frames):
    """n_frames frames uniformly spaced over the first video stream -> uint8 (n_frames, H, W, 3)."""
    _check_file(path)
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    got = {}
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _media_error(path, 'no video stream')
            count = sum(1 for p in container.demux(container.streams.video[0]) if p.size)
        want = np.linspace(0, max(count - 1, 0), n_frames).round().astype(int)     # (n_frames,)
        wanted = set(want.tolist())
        hw = {}                                  # every frame at the first one's size
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(container.streams.video[0])):
                if i in wanted:
                    got[i] = frame.to_ndarray(format='rgb24', **hw)              # (H, W, 3)
                    hw = hw or dict(height=got[i].shape[0], width=got[i].shape[1])
                if i >= want[-1]:
                    break
    except av.error.FFmpegError as e:
        raise _media_error(path, 'not a decodable video', e) from e
    if not got:
        raise _media_error(path, 'no decodable video frames')
    keys = sorted(got)
    frames = []
    for i in want:     # a frame the decoder did not deliver falls back to the nearest earlier one
        earlier = [k for k in keys if k <= i]
        frames.append(got[max(earlier, default=keys[0])])
    return np.stack(frames)                                                # (n_frames, H, W, 3)


PICTURE_SIZE = 256   # pictures are written this large (nearest neighbour), the raw size beside them


def save_wav(path, wave, sample_rate):
    """Write a mono float wave as 16-bit PCM, atomically."""
    tmp = path[:-4] + '.tmp.wav'
    sf.write(tmp, np.clip(np.asarray(wave, dtype=np.float32), -1, 1), sample_rate, subtype='PCM_16')
    os.replace(tmp, path)


def save_png(path, image):
    """Write a uint8 (H, W, 3) or (H, W) picture, atomically."""
    tmp = path[:-4] + '.tmp.png'
    Image.fromarray(np.asarray(image)).save(tmp)
    os.replace(tmp, path)


def upscale(image, size=PICTURE_SIZE):
    """uint8 (H, W, 3) -> enlarged (nearest neighbour) by the integer factor nearest to size."""
    factor = max(1, round(size / image.shape[0]))
    return np.kron(image, np.ones((factor, factor, 1), np.uint8))


def spectrogram_picture(mel, size=PICTURE_SIZE):
    """Log-mel (n_mels, frames) -> uint8 picture, low frequencies at the bottom, 80 dB contrast."""
    db = mel * 20 / np.log(10)                                                  # natural log -> dB
    x = np.clip((db - db.max() + 80) / 80, 0, 1)[::-1]
    pic = np.stack([x ** 0.5, x ** 1.5, x * 0.3 + 0.7 * x ** 3], -1)           # a dark-to-warm ramp
    return upscale((pic * 255).astype(np.uint8), size)


# ---------------------------------------------------------------------------------------------
# log-mel spectrograms and the Griffin-Lim vocoder
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MelConfig:
    """Every setting that decides what a log-mel spectrogram means; caches record it."""
    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 250
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    frames: int = 64       # spectrograms are cut or padded to this many frames
    floor: float = 1e-5    # log(max(mel, floor))

    def dict(self):
        """The settings as a plain dict (what caches and checkpoints record)."""
        return asdict(self)


def mel_basis(cfg):
    """Slaney-normalised mel filterbank as a tensor (n_mels, n_fft // 2 + 1)."""
    fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                             fmin=cfg.fmin, fmax=cfg.fmax)
    return torch.from_numpy(fb)


def log_mel(waves, cfg):
    """Natural-log mel spectrogram of waves (B, T) -> (B, n_mels, cfg.frames)."""
    waves = torch.as_tensor(waves, dtype=torch.float32)
    window = torch.hann_window(cfg.n_fft, device=waves.device)
    spec = torch.stft(waves, cfg.n_fft, cfg.hop, window=window, center=True, return_complex=True)
    mag = spec.abs()                                                     # (B, F, frames')
    mel = mel_basis(cfg).to(waves.device) @ mag                          # (B, n_mels, frames')
    pad = max(0, cfg.frames - mel.shape[-1])
    mel = F.pad(mel, (0, pad))[..., :cfg.frames]                         # (B, n_mels, frames)
    return torch.log(mel.clamp(min=cfg.floor))


class GriffinLim(Frozen):
    """Toy vocoder: log-mel -> linear magnitude (least squares) -> phase by Griffin-Lim."""

    def __init__(self, cfg, n_iter=32, momentum=0.99):
        super().__init__()
        self.cfg = cfg
        self.n_iter = n_iter
        self.momentum = momentum
        inverse = torch.linalg.pinv(mel_basis(cfg))                      # (F, n_mels)
        self.register_buffer('inverse', inverse, persistent=False)
        self.freeze()

    @torch.no_grad()
    def forward(self, logmel):
        """Log-mels (B, n_mels, frames) -> waves (B, hop * (frames - 1))."""
        cfg = self.cfg
        mel = torch.exp(logmel.float())                                       # (B, n_mels, frames)
        mag = (self.inverse.to(mel.device) @ mel).clamp(min=0)                # (B, F, frames)
        window = torch.hann_window(cfg.n_fft, device=mel.device)
        length = cfg.hop * (mag.shape[-1] - 1)
        rng = torch.Generator(device='cpu').manual_seed(0)
        angles = torch.exp(2j * np.pi * torch.rand(mag.shape, generator=rng)).to(mel.device)
        prev = torch.zeros_like(angles)
        for _ in range(self.n_iter):
            wave = torch.istft(mag * angles, cfg.n_fft, cfg.hop, window=window, length=length)
            rebuilt = torch.stft(wave, cfg.n_fft, cfg.hop, window=window, return_complex=True)
            angles = rebuilt - self.momentum / (1 + self.momentum) * prev
            angles = angles / angles.abs().clamp(min=1e-8)
            prev = rebuilt
        return torch.istft(mag * angles, cfg.n_fft, cfg.hop, window=window, length=length)  # (B, T)


# ---------------------------------------------------------------------------------------------
# toy suite
# ---------------------------------------------------------------------------------------------

TOY_ENCODERS = {  # trained by config/<dataset>_<name>.py -> the media fields their training needs
    'clip': ('image',), 'clap': ('mel',), 'imagebind': ('image', 'mel'), 'ast': ('mel',),
    'vq_image': ('image',), 'vq_audio': ('mel',), 'ae_audio': ('mel',), 'ae_image': ('image',)}


class WordTokenizer:
    """Word-level tokenizer over a fixed vocabulary: 0 is padding, 1 an unknown word."""

    def __init__(self, vocab, max_len):
        self.vocab = list(vocab)
        self.max_len = max_len
        self.index = {w: i + 2 for i, w in enumerate(self.vocab)}

    @staticmethod
    def words(text):
        """A text's words as the tokenizer sees them: lower-case runs of letters, digits and '."""
        # punctuation -> spaces
        kept = ''.join(c if c.isalnum() or c == "'" else ' ' for c in text.lower())
        stripped = [w.strip("'") for w in kept.split()]
        return [w for w in stripped if w]

    @classmethod
    def vocabulary(cls, texts):
        """Every word of texts, sorted: a vocabulary without unknown words for them."""
        return sorted({w for text in texts for w in cls.words(text)})

    def __call__(self, texts):
        """list of str -> ids (B, max_len) long."""
        ids = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for i, text in enumerate(texts):
            words = self.words(text)[:self.max_len]
            row = [self.index.get(w, 1) for w in words]
            ids[i, :len(words)] = torch.tensor(row, dtype=torch.long)
        return ids


def to_tensor(x):
    """A tensor of x; arrays (read-only memmaps too) are copied, tensors passed through."""
    return x if torch.is_tensor(x) else torch.from_numpy(np.array(x))


def file_hash(path):
    """Short sha256 of a file's bytes: the identity of a checkpoint in cache metadata."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()[:16]


class StaleCache(RuntimeError):
    """A cache or frozen model that does not match the settings or checkpoints it is used with."""


def read_checkpoint(path, device='cpu'):
    """torch.load(path), weights only; FileNotFoundError if missing, MediaError if unreadable."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no checkpoint; "
                                f"train it first (python train.py config/<name>.py)")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:   # empty, cut short or not a torch.save file: torch raises many kinds
        what = str(e).split('. ')[0]
        if os.path.getsize(path) == 0:
            detail = 'empty file (0 bytes)'
        elif what:
            detail = f"{type(e).__name__}: {what}"
        else:
            detail = type(e).__name__
        raise _media_error(path, 'not a readable checkpoint', detail) from e


FROZEN_NETWORKS = {  # method -> model.py network of a frozen part (trained by train.py, read here)
    'contrastive': ContrastiveModel, 'vq': VQVAE, 'judge': Judge, 'autoencoder': MediaAutoencoder,
    'tagger': AudioTagger, 'ldm': LatentDiffusion}


def load_checkpoint(path, device='cpu', networks=FROZEN_NETWORKS):
    """Rebuild a trained network from its checkpoint alone (EMA weights if any) -> (model, ckpt)."""
    # `networks` maps the checkpoint's method to the class (methods.NETWORKS knows every method)
    ckpt = read_checkpoint(path, device)
    if ckpt.get('method') not in networks:
        raise _media_error(path, f"a checkpoint of {ckpt.get('method')!r}, "
                                 f"none of {', '.join(networks)}")
    model = networks[ckpt['method']](**ckpt['model_args'])
    model.load_state_dict(ckpt.get('ema') or ckpt['model'])
    return model.to(device).eval(), ckpt


class ToyEncoder(Frozen):
    """A toy contrastive model (CLIP-, CLAP- or ImageBind-like) behind image/audio/text roles."""

    def __init__(self, model, ckpt):
        super().__init__()
        self.net = model
        self.roles = set(model.modalities)
        data = ckpt['data']
        self.mel_config = MelConfig(**data['mel'])
        self.sample_rate = self.mel_config.sample_rate
        self.tokenizer = WordTokenizer(data['vocab'], data['max_len'])
        self.freeze()

    def _run(self, modality, x):
        """One tower of the toy model, no gradients -> Features."""
        if modality not in self.roles:
            raise ValueError(f"this encoder has no {modality} tower (it has {sorted(self.roles)})")
        with torch.no_grad():
            out = self.net.encode(modality, x)
        return Features(out[0], out[1], out[2] if len(out) > 2 else None)

    def encode_image(self, images):
        """uint8 images (B, H, W, 3) -> Features."""
        return self._run('image', to_tensor(images))

    def encode_mel(self, mels):
        """Log-mels (B, n_mels, frames) -> Features."""
        return self._run('audio', to_tensor(mels).float())

    def encode_audio(self, waves):
        """Waves (B, T) at the encoder's rate -> Features (through its own log-mel)."""
        return self.encode_mel(log_mel(waves, self.mel_config))

    def encode_text(self, texts):
        """Captions -> Features with the word-padding mask."""
        return self._run('text', self.tokenizer(texts))


class ToyTokenizer(Frozen):
    """A toy VQ-VAE (tokenizer role: ids) or KL autoencoder (autoencoder role: latents)."""
    # media: uint8 images (B, H, W, 3) or log-mels (B, n_mels, frames)

    def __init__(self, model, ckpt):
        super().__init__()
        self.net = model
        self.modality = model.modality
        self.mel_config = MelConfig(**ckpt['data']['mel'])
        if hasattr(model, 'quantizer'):
            self.codebook_size = len(model.quantizer.codebook)
            self.n_tokens = model.grid[0] * model.grid[1]
        self.freeze()

    @torch.no_grad()
    def encode(self, media):
        """Media of the modality -> ids (B, N) or latents (B, C, h, w)."""
        return self.net.encode(to_tensor(media))

    @torch.no_grad()
    def decode(self, codes):
        """Ids or latents -> media of the modality."""
        codes = torch.as_tensor(codes)
        if hasattr(self, 'codebook_size'):
            return self.net.decode(codes.long())
        return self.net.decode(codes.float())


def parts_of(data):
    """The dataset whose toy parts serve a dataset (its meta) or a run (its checkpoint's data)."""
    # a dataset made from another's world (toyav_ctrl from toyav) names it as its 'parts'
    return data.get('parts') or data['dataset']


def toy_checkpoint(name, dataset='toyav', out_dir='out'):
    """Where train.py saves the toy model `name` of a dataset: out/<dataset>_<name>/ckpt.pt."""
    return os.path.join(out_dir, f"{dataset}_{name}", 'ckpt.pt')


def load_toy(name, dataset='toyav', out_dir='out', device='cpu', user=None):
    """A frozen toy model trained here: out/<dataset>_<name>/ckpt.pt."""
    # With user, the checkpoint of a model trained on this one's cached features: StaleCache unless
    # this is the checkpoint file whose hash user['data']['features'] records.
    path = toy_checkpoint(name, dataset, out_dir)
    model, ckpt = load_checkpoint(path, device)
    wrapper = ToyTokenizer if ckpt['method'] in ('vq', 'autoencoder') else ToyEncoder
    frozen = wrapper(model, ckpt)
    now = file_hash(path)
    frozen.checkpoint_hash = now
    want = None
    if user:
        features = user.get('data', {}).get('features') or {}
        if features.get('suite') == 'toy':
            want = features['encoders'].get(name)
    if want and now != want:
        raise StaleCache(f"{path}: {name} checkpoint {now}, not the {want} this {user['method']} "
                         f"model was trained with; retrain the model (python prepare.py {dataset} "
                         f"--features toy, then train.py) or restore that {name} checkpoint")
    return frozen


def load_latent_decoder(generator, ckpt, out_dir='out', device='cpu'):
    """The frozen autoencoder whose latents a generator targets; None if it works on media."""
    # ae_audio_latent -> ae_audio: a toy one checked (load_toy with the generator's checkpoint
    # ckpt) to be the one the generator was trained on, or the published one its hf cache names
    if generator.modality:
        return None
    name = generator.target.rsplit('_', 1)[0]
    return load_encoder(name, ckpt, out_dir, device)


# ---------------------------------------------------------------------------------------------
# hf suite
# ---------------------------------------------------------------------------------------------

# The published models through transformers `from_pretrained`. Every class takes already-built
# objects (so tests pass tiny random ones) and does its own resizing/resampling, so callers hand
# it project media: uint8 images (B, H, W, 3) of any size, mono float waves (B, T) at any rate.

HF_DEFAULT_SR = 16000    # the project's audio rate: encode_audio's default sample_rate
CLAP_TEXT_TOKENS = 77    # LAION-CLAP pads captions to 77 RoBERTa tokens
T5_TEXT_TOKENS = 120     # PixArt-alpha's T5 caption length
FLUX_T5_TOKENS = 512     # FLUX.1-dev's T5 caption length (its pipeline's max_sequence_length)
PIXART_VAE = 'PixArt-alpha/PixArt-XL-2-512x512'   # its vae/: sd-vae-ft-ema, latents scaled 0.18215
AUDIOLDM_N_FFT = 1024    # AudioLDM's mel, besides the rate, hop and n_mels its vocoder config has
AUDIOLDM_FMIN = 0.0
AUDIOLDM_FMAX = 8000.0


def resample_waves(waves, sample_rate, target_rate):
    """Mono waves (B, T) at sample_rate -> float32 ndarray (B, T') at target_rate (soxr)."""
    waves = torch.as_tensor(waves).float().cpu().numpy()
    if sample_rate == target_rate:
        return waves
    out = librosa.resample(waves, orig_sr=sample_rate, target_sr=target_rate, res_type='soxr_hq',
                           axis=-1)
    return out.astype(np.float32)


class HFFrozen(Frozen):
    """Shared plumbing: one frozen transformers model, inputs moved to it, text tokenized."""

    def __init__(self, model, tokenizer=None, max_length=None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.freeze()

    @classmethod
    def _published(cls, name, model_class, *part_classes, **kw):
        """cls(model, *parts), each loaded by its transformers class's from_pretrained(name)."""
        model = model_class.from_pretrained(name, **kw)
        parts = [part.from_pretrained(name) for part in part_classes]
        return cls(model, *parts)

    def to_model(self, batch):
        """Tensors of a processor's output on the model's device; floating ones in its dtype."""
        p = next(self.model.parameters())
        out = {}
        for k, v in batch.items():
            if torch.is_tensor(v):
                dtype = p.dtype if v.is_floating_point() else None
                out[k] = v.to(p.device, dtype)
        return out

    def tokenize(self, texts):
        """Captions -> input_ids, attention_mask, padded to max_length: cached tokens, one shape."""
        batch = self.tokenizer(list(texts), padding='max_length', max_length=self.max_length,
                               truncation=True, return_tensors='pt')
        return self.to_model(batch)


class HFTextTower(HFFrozen):
    """A joint-space model whose text side is get_text_features: pooled emb, hidden states, mask."""

    def text_output(self, batch):
        """A tokenized batch -> the model's text output (pooler_output, last_hidden_state)."""
        return self.model.get_text_features(**batch)

    @torch.no_grad()
    def encode_text(self, texts):
        """Captions -> pooled projected embedding (B, D) and the last hidden states as tokens."""
        batch = self.tokenize(texts)
        out = self.text_output(batch)
        mask = batch['attention_mask'].bool()                              # (B, L)
        return Features(out.pooler_output, out.last_hidden_state, mask)    # (B, 512), (B, L, C)


class HFClip(HFTextTower):
    """CLIP image + text (openai/clip-vit-base-patch32); emb projected, NOT L2-normalised."""

    def __init__(self, model, processor, tokenizer):
        super().__init__(model, tokenizer, model.config.text_config.max_position_embeddings)
        self.processor = processor

    @classmethod
    def from_pretrained(cls, name='openai/clip-vit-base-patch32', **kw):
        """The published CLIP (transformers CLIPModel) with its image processor and tokenizer."""
        from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel
        return cls._published(name, CLIPModel, CLIPImageProcessorPil, AutoTokenizer, **kw)

    @torch.no_grad()
    def encode_image(self, images):
        """uint8 images (B, H, W, 3) of any size -> CLIP Features (pooled projection, patches)."""
        from PIL import Image
        images = torch.as_tensor(images).cpu().numpy()                      # (B, H, W, 3) uint8
        batch = self.processor(images=[Image.fromarray(im) for im in images], return_tensors='pt')
        out = self.model.get_image_features(**self.to_model(batch))
        return Features(out.pooler_output, out.last_hidden_state)          # (B, 512), (B, 50, 768)


class HFFluxClip(HFTextTower):
    """CLIP's text tower as FLUX.1 reads it (CLIPTextModel): emb its pooler_output, unprojected."""
    # FluxPipeline._get_clip_prompt_embeds: 77 tokens, the final-norm hidden state at the end token,
    # no projection (CLIPModel's get_text_features would add one) and no normalisation.

    def __init__(self, model, tokenizer):
        super().__init__(model, tokenizer, model.config.max_position_embeddings)

    @classmethod
    def from_pretrained(cls, name='openai/clip-vit-large-patch14', **kw):
        """The published CLIP-L text tower (transformers CLIPTextModel) with its tokenizer."""
        from transformers import AutoTokenizer, CLIPTextModel
        return cls._published(name, CLIPTextModel, AutoTokenizer, **kw)

    def text_output(self, batch):
        """A tokenized batch -> CLIPTextModel's output: pooler_output (B, 768), hidden states."""
        return self.model(**batch)


# ImageBind (Girdhar et al. 2023, facebookresearch/ImageBind): imagebind_huge's image and text
# encoders are OpenCLIP ViT-H/14 (laion2b_s32b_b79k), initialised from it and kept frozen (its model
# card); same widths, depths and heads, CLS / EOT pooling, LayerNorm + bias-free projection, L2
# normalisation. It differs from that CLIP only in its LayerNorm eps and in a temporal patch
# embedding that sees a still image as two equal frames. Its audio, depth, thermal, IMU trunks are
# its own.
IMAGEBIND_CLIP = 'laion/CLIP-ViT-H-14-laion2B-s32B-b79K'  # OpenCLIP ViT-H/14 in transformers
IMAGEBIND_LN_EPS = 1e-6   # all of ImageBind's LayerNorms (OpenCLIP's: 1e-5)


class HFImageBind(HFClip):
    """ImageBind's image + text encoders as a CLIPModel; emb L2-normalised as ImageBind's is."""

    @classmethod
    def from_pretrained(cls, name=IMAGEBIND_CLIP, **kw):
        """OpenCLIP ViT-H/14 with ImageBind's LayerNorm eps and image transform; CLIP tokenizer."""
        from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessorPil, CLIPModel
        from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
        config = CLIPConfig.from_pretrained(name)
        config.text_config.layer_norm_eps = IMAGEBIND_LN_EPS
        config.vision_config.layer_norm_eps = IMAGEBIND_LN_EPS
        side = config.vision_config.image_size
        crop = {'height': side, 'width': side}
        # ImageBind's load_and_transform_vision_data: bicubic resize, centre crop, CLIP mean/std
        processor = CLIPImageProcessorPil(size={'shortest_edge': side}, crop_size=crop,
                                          resample=PILImageResampling.BICUBIC,
                                          image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
        model = CLIPModel.from_pretrained(name, config=config, **kw)
        return cls(model, processor, AutoTokenizer.from_pretrained(name))

    def encode_image(self, images):
        """uint8 images (B, H, W, 3) of any size -> ImageBind Features (unit emb, patch tokens)."""
        f = super().encode_image(images)
        return Features(F.normalize(f.emb, dim=-1), f.tokens)

    def encode_text(self, texts):
        """Captions -> ImageBind Features (unit emb without its text logit scale, tokens, mask)."""
        f = super().encode_text(texts)
        return Features(F.normalize(f.emb, dim=-1), f.tokens, f.mask)


class HFClap(HFTextTower):
    """CLAP audio + text encoder (laion/clap-htsat-unfused, 48 kHz); emb is L2-normalised."""

    def __init__(self, model, feature_extractor, tokenizer, max_length=CLAP_TEXT_TOKENS):
        super().__init__(model, tokenizer, max_length)
        self.feature_extractor = feature_extractor

    @classmethod
    def from_pretrained(cls, name='laion/clap-htsat-unfused', **kw):
        """The published LAION-CLAP (transformers ClapModel), its feature extractor, tokenizer."""
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel
        return cls._published(name, ClapModel, ClapFeatureExtractor, AutoTokenizer, **kw)

    @torch.no_grad()
    def encode_audio(self, waves, sample_rate=HF_DEFAULT_SR):
        """Mono waves (B, T) at sample_rate -> CLAP audio Features (first 10 s, no random crop)."""
        fe = self.feature_extractor
        waves = resample_waves(waves, sample_rate, fe.sampling_rate)
        waves = waves[:, :fe.nb_max_samples]              # (B, <= 10 s): no random crop
        # rand_trunc: one mel channel for the unfused patch embed (the fused default stacks 4)
        batch = fe(list(waves), sampling_rate=fe.sampling_rate, truncation='rand_trunc',
                   return_tensors='pt')
        out = self.model.get_audio_features(**self.to_model(batch))
        tokens = out.last_hidden_state.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)
        return Features(out.pooler_output, tokens)                  # (B, 512), (B, 64, 768)


class HFAst(HFFrozen):
    """Audio Spectrogram Transformer (16 kHz Kaldi fbank): audio tokens."""

    def __init__(self, model, feature_extractor):
        super().__init__(model)
        self.feature_extractor = feature_extractor

    @classmethod
    def from_pretrained(cls, name='MIT/ast-finetuned-audioset-10-10-0.4593', **kw):
        """The published AST (transformers ASTModel) with its feature extractor."""
        from transformers import ASTFeatureExtractor, ASTModel
        return cls._published(name, ASTModel, ASTFeatureExtractor, **kw)

    @torch.no_grad()
    def encode_audio(self, waves, sample_rate=HF_DEFAULT_SR):
        """Mono waves (B, T) at sample_rate -> AST Features (pooled output, patch tokens)."""
        sr = self.feature_extractor.sampling_rate
        waves = resample_waves(waves, sample_rate, sr)                     # (B, T') at 16 kHz
        batch = self.feature_extractor(list(waves), sampling_rate=sr, return_tensors='pt')
        out = self.model(**self.to_model(batch))
        return Features(out.pooler_output, out.last_hidden_state)       # (B, 768), (B, 1214, 768)


class HFT5(HFFrozen):
    """T5 text encoder (google/flan-t5-base); no pooler, so emb is the masked mean of the tokens."""

    def __init__(self, model, tokenizer, max_length=T5_TEXT_TOKENS):
        super().__init__(model, tokenizer, max_length)

    @classmethod
    def from_pretrained(cls, name='google/flan-t5-base', **kw):
        """The published FLAN-T5 encoder (transformers T5EncoderModel) with its tokenizer."""
        from transformers import AutoTokenizer, T5EncoderModel
        return cls._published(name, T5EncoderModel, AutoTokenizer, **kw)

    masked = True      # the encoder attends to real tokens only (FLUX.1's pipeline: to all)

    @torch.no_grad()
    def encode_text(self, texts):
        """Captions -> T5 token Features (masked-mean pooled emb, hidden states, padding mask)."""
        batch = self.tokenize(texts)
        inputs = batch if self.masked else {'input_ids': batch['input_ids']}
        tokens = self.model(**inputs).last_hidden_state                    # (B, L, d)
        mask = batch['attention_mask'].bool()                              # (B, L)
        m = mask.unsqueeze(-1).to(tokens.dtype)                            # (B, L, 1)
        emb = (tokens * m).sum(1) / m.sum(1).clamp(min=1)                  # (B, d)
        return Features(emb, tokens, mask)


class HFFluxT5(HFT5):
    """The T5 encoder as FLUX.1 reads it: 512 tokens, padding included and attended to (no mask)."""
    # FluxPipeline._get_t5_prompt_embeds, as black-forest-labs/flux's HFEmbedder: the input ids
    # alone, padded to max_sequence_length (FLUX.1-dev 512, -schnell 256).

    masked = False

    def __init__(self, model, tokenizer, max_length=FLUX_T5_TOKENS):
        super().__init__(model, tokenizer, max_length)

    @classmethod
    def from_pretrained(cls, name='google/t5-v1_1-xxl', **kw):
        """The published T5 v1.1 XXL encoder (transformers T5EncoderModel) with its tokenizer."""
        from transformers import AutoTokenizer, T5EncoderModel
        return cls._published(name, T5EncoderModel, AutoTokenizer, **kw)


def hifigan_mel_config(config):
    """The MelConfig a SpeechT5HifiGan expects (AudioLDM's: 16 kHz, hop 160, 64 mels, 0-8 kHz)."""
    hop = math.prod(config.upsample_rates)
    return MelConfig(sample_rate=config.sampling_rate, n_fft=AUDIOLDM_N_FFT, hop=hop,
                     n_mels=config.model_in_dim, fmin=AUDIOLDM_FMIN, fmax=AUDIOLDM_FMAX)


class HFHifiGan(HFFrozen):
    """AudioLDM's HiFi-GAN vocoder (SpeechT5HifiGan): log-mels -> waves."""

    def __init__(self, model):
        super().__init__(model)
        self.mel_config = hifigan_mel_config(model.config)
        self.sample_rate = model.config.sampling_rate

    @classmethod
    def from_pretrained(cls, name='cvssp/audioldm-s-full-v2', **kw):
        """AudioLDM's published HiFi-GAN (transformers SpeechT5HifiGan, the pipeline's vocoder/)."""
        from transformers import SpeechT5HifiGan
        return cls(SpeechT5HifiGan.from_pretrained(name, subfolder='vocoder', **kw))

    @torch.no_grad()
    def forward(self, logmel):
        """AudioLDM log-mels (B, n_mels, frames) -> waves (B, T) at the vocoder's rate."""
        p = next(self.model.parameters())
        spec = logmel.to(p.device, p.dtype).transpose(1, 2)   # (B, frames, n_mels), as published
        return self.model(spec)                                # (B, hop * frames)


class HFEncodec(HFFrozen):
    """EnCodec tokenizer (facebook/encodec_24khz): waves -> ids (B, n_q, frames) -> 24 kHz waves."""

    def __init__(self, model, bandwidth=None):
        super().__init__(model)
        if model.config.chunk_length is not None or model.config.normalize:
            raise ValueError('HFEncodec needs an unchunked, unnormalised EnCodec (encodec_24khz): '
                             'ids carry no scales')
        self.sample_rate = model.config.sampling_rate
        # kbps; 1.5 -> 2 codebooks at 24 kHz
        self.bandwidth = bandwidth or model.config.target_bandwidths[0]

    @classmethod
    def from_pretrained(cls, name='facebook/encodec_24khz', bandwidth=None, **kw):
        """The published EnCodec (transformers EncodecModel) at a target bandwidth."""
        from transformers import EncodecModel
        return cls(EncodecModel.from_pretrained(name, **kw), bandwidth)

    @torch.no_grad()
    def encode(self, waves, sample_rate=HF_DEFAULT_SR):
        """Mono waves (B, T) at sample_rate -> code ids (B, n_q, frames)."""
        p = next(self.model.parameters())
        waves = resample_waves(waves, sample_rate, self.sample_rate)           # (B, T')
        x = torch.from_numpy(waves).to(p.device, p.dtype)                     # (B, T')
        codes = self.model.encode(x.unsqueeze(1), bandwidth=self.bandwidth).audio_codes
        return codes[0]                                                       # (B, n_q, frames)

    @torch.no_grad()
    def decode(self, ids):
        """Code ids (B, n_q, frames) -> waves (B, T) at the codec's rate."""
        device = next(self.model.parameters()).device
        ids = ids.to(device).unsqueeze(0)                          # (1 chunk, B, n_q, frames)
        waves = self.model.decode(ids, [None]).audio_values        # (B, 1, hop * frames)
        return waves[:, 0]                                         # (B, T) at self.sample_rate


class HFClapText(HFFrozen):
    """A CLAP text tower alone, as AudioLDM pipelines ship it; emb: L2-normalised text_embeds."""

    def __init__(self, model, tokenizer, max_length=CLAP_TEXT_TOKENS):
        super().__init__(model, tokenizer, max_length)

    @classmethod
    def from_pretrained(cls, name='cvssp/audioldm-s-full-v2', **kw):
        """AudioLDM's CLAP text tower (ClapTextModelWithProjection, in the text_encoder/ folder)."""
        from transformers import AutoTokenizer, ClapTextModelWithProjection
        model = ClapTextModelWithProjection.from_pretrained(name, subfolder='text_encoder', **kw)
        tokenizer = AutoTokenizer.from_pretrained(name, subfolder='tokenizer')
        return cls(model, tokenizer)

    @torch.no_grad()
    def encode_text(self, texts):
        """Captions -> CLAP text Features (projected pooled emb, hidden states, padding mask)."""
        batch = self.tokenize(texts)
        out = self.model(**batch)
        emb = F.normalize(out.text_embeds, dim=-1)                         # (B, D)
        mask = batch['attention_mask'].bool()                              # (B, L)
        return Features(emb, out.last_hidden_state, mask)


# Make-An-Audio's text encoder (its FrozenCLAPEmbedder, Text-to-Audio/Make-An-Audio): MS-CLAP 2022's
# caption encoder, BERT (bert-base-uncased) and a projection to 1024, trained with the rest and kept
# in its checkpoint under cond_stage_model.caption_encoder.*; it reads 77 padded tokens by their ids
# alone (no attention mask) and the U-Net cross-attends to the projection of every hidden state.
MAA_CKPT = 'maa1_full.ckpt'                       # the checkpoint file of a Make-An-Audio folder
MAA_TEXT = 'cond_stage_model.caption_encoder.'    # its text encoder's keys in that checkpoint
MAA_TEXT_TOKENS = 77


def maa_bert(path):
    """Where BERT's config and tokenizer are read: bert/ beside a Make-An-Audio checkpoint, else the
    hub's bert-base-uncased."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    local = os.path.join(folder, 'bert')
    return local if os.path.isdir(local) else 'bert-base-uncased'


def read_maa_checkpoint(path):
    """The state dict of a Make-An-Audio checkpoint: a .ckpt, or a folder holding MAA_CKPT."""
    if os.path.isdir(path):
        path = os.path.join(path, MAA_CKPT)
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    return ckpt.get('state_dict', ckpt)


class ClapProjection(nn.Module):
    """MS-CLAP's projection head: h = W1 x, then LayerNorm(h + W2 GELU(h)); bias-free linears."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x):
        """x (..., d_in) -> (..., d_out)."""
        h = self.linear1(x)
        return self.layer_norm(h + self.linear2(F.gelu(h)))


class HFMaaText(HFFrozen):
    """Make-An-Audio's text encoder (BERT + MS-CLAP projection): the tokens its U-Net reads."""

    def __init__(self, model, projection, tokenizer, max_length=MAA_TEXT_TOKENS):
        super().__init__(model, tokenizer, max_length)
        self.projection = projection
        self.freeze()

    @classmethod
    def from_state(cls, sd, bert):
        """The encoder in a Make-An-Audio state dict; BERT's config and tokenizer from bert."""
        from transformers import AutoTokenizer, BertConfig, BertModel
        part = {k[len(MAA_TEXT):]: v for k, v in sd.items() if k.startswith(MAA_TEXT)}
        model = BertModel(BertConfig.from_pretrained(bert))
        own = model.state_dict()
        base = {k[len('base.'):]: v for k, v in part.items() if k.startswith('base.')}
        stale = [k for k in base if k not in own and k.endswith('position_ids')]  # old buffers
        model.load_state_dict({k: v for k, v in base.items() if k not in stale})
        head = {k[len('projection.'):]: v for k, v in part.items() if k.startswith('projection.')}
        d_out, d_in = head['linear1.weight'].shape
        projection = ClapProjection(d_in, d_out)
        projection.load_state_dict(head)
        return cls(model, projection, AutoTokenizer.from_pretrained(bert))

    @classmethod
    def from_pretrained(cls, path):
        """The text encoder inside a Make-An-Audio checkpoint (a .ckpt, or its folder)."""
        return cls.from_state(read_maa_checkpoint(path), maa_bert(path))

    @torch.no_grad()
    def encode_text(self, texts):
        """Captions -> Features: tokens (B, 77, 1024), emb the projected [CLS] (MS-CLAP pools)."""
        batch = self.tokenize(texts)
        hidden = self.model(input_ids=batch['input_ids']).last_hidden_state   # (B, L, 768)
        tokens = self.projection(hidden)                                       # (B, L, d)
        return Features(tokens[:, 0], tokens, batch['attention_mask'].bool())


class HFPictureLatents(Frozen):
    """A published KL autoencoder of pictures (diffusers AutoencoderKL; PixArt-alpha's is
    sd-vae-ft-ema): uint8 pictures <-> latents scaled as its diffusion model reads them."""

    modality = 'image'

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.freeze()

    @classmethod
    def from_pretrained(cls, name=PIXART_VAE):
        """An AutoencoderKL folder, a pipeline folder with vae/, or a hub id of such a pipeline."""
        from generators import load_generator
        folder = name
        if not os.path.isdir(name):
            from huggingface_hub import snapshot_download
            folder = snapshot_download(name, allow_patterns=['vae/*'])
        if not os.path.exists(os.path.join(folder, 'config.json')):
            folder = os.path.join(folder, 'vae')
        latents = cls(load_generator('audioldm_vae', folder))
        latents.folder = folder                     # where its weights and config came from
        return latents

    @torch.no_grad()
    def encode(self, images):
        """uint8 pictures (B, H, W, 3) -> scaled latent means (B, C, H / f, W / f)."""
        p = next(self.vae.parameters())
        x = image_to_float(to_tensor(images)).to(p.device, p.dtype)          # (B, 3, H, W)
        mean, _ = self.vae.encode(x)
        return ((mean - self.vae.shift_factor) * self.vae.scaling_factor).float().cpu()

    @torch.no_grad()
    def decode(self, z):
        """Scaled latents (B, C, h, w) -> uint8 pictures (B, H, W, 3)."""
        p = next(self.vae.parameters())
        unscaled = z.to(p.device, p.dtype) / self.vae.scaling_factor + self.vae.shift_factor
        return float_to_image(self.vae.decode(unscaled).float())


HF_SUITE = {'clip': HFClip, 'clap': HFClap, 'ast': HFAst, 't5': HFT5, 'vocoder': HFHifiGan,
            'encodec': HFEncodec, 'clap_text': HFClapText, 'imagebind': HFImageBind,
            'flux_t5': HFFluxT5, 'flux_clip': HFFluxClip, 'maa_text': HFMaaText,
            'sd_vae': HFPictureLatents}


def load_hf(role_name, name=None, **kw):
    """The hf-suite model of a role (a key of HF_SUITE), from name or the role's default."""
    cls = HF_SUITE[role_name]
    if name:
        return cls.from_pretrained(name, **kw)
    return cls.from_pretrained(**kw)


def load_encoder(name, ckpt, out_dir='out', device='cpu'):
    """The frozen encoder behind a checkpoint's cached features (its ckpt['data']['features'])."""
    # the published model they name for the hf suite, else the toy one trained on the dataset
    # (checked by load_toy)
    features = ckpt['data'].get('features') or {}
    if features.get('suite') == 'hf':
        return load_hf(name, features['encoders'][name]).to(device)
    return load_toy(name, parts_of(ckpt['data']), out_dir, device, ckpt)



class AudioTokens:
    """The audio-token role (AST) behind a run's cached features: the toy AST on log-mels, or the
    published AST on the raw waves beside them (an hf-suite cache)."""

    def __init__(self, ckpt, out_dir='out', device='cpu'):
        self.ast = load_encoder('ast', ckpt, out_dir, device)
        self.device = device
        features = ckpt['data'].get('features') or {}
        self.hears_waves = features.get('suite') == 'hf'
        if self.hears_waves:
            self.mel_config = MelConfig(**ckpt['data']['mel'])
        else:
            self.mel_config = self.ast.mel_config

    def __call__(self, cond):
        """A condition's sounds {audio: log-mels (B, n_mels, frames), wave: (B, T)} -> tokens
        (B, m, d)."""
        if not self.hears_waves:
            mel = torch.as_tensor(cond['audio']).float().to(self.device)  # (B, n_mels, frames)
            return self.ast.encode_mel(mel).tokens
        if 'wave' not in cond:
            raise ValueError("the published AST reads raw sound: the condition needs 'wave' "
                             "(B, T) beside its log-mels")
        waves = torch.as_tensor(cond['wave']).float()                      # (B, T)
        return self.ast.encode_audio(waves, self.mel_config.sample_rate).tokens
