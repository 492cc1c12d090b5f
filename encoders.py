"""Frozen encoders, tokenizers and vocoders behind one interface per role, in two suites.

Roles (every frozen model exposes only the methods of its roles):
    image encoder   encode_image(images uint8 (B, H, W, 3))        -> Features(emb (B, D), tokens (B, N, C))
    audio encoder   encode_audio(waves float (B, T) at sample_rate) -> Features(emb, tokens)
    text encoder    encode_text(list of str)                        -> Features(emb, tokens, mask (B, L))
    tokenizer       encode(media) -> ids (B, N) long;  decode(ids) -> media
    vocoder         __call__(log-mel (B, n_mels, frames)) -> waves (B, T)
Suites: `toy` (networks of model.py trained here on the embedded dataset, loaded from out/) and
`hf` (the published models through transformers `from_pretrained`). Audio and image loading,
resampling and log-mel spectrograms live here too.

References: CLIP (Radford et al. 2021), CLAP (Wu et al. 2023), AST (Gong et al. 2021),
SpeechT5 HiFi-GAN vocoder as used by AudioLDM (Liu et al. 2023), EnCodec (Défossez et al. 2022),
Griffin & Lim 1984 for the toy vocoder.
"""
import hashlib
import json
import os
from dataclasses import dataclass, asdict
from typing import Optional

import librosa
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Features:
    """What an encoder returns: a pooled embedding and a token sequence (mask marks real tokens)."""
    emb: torch.Tensor                      # (B, D)
    tokens: torch.Tensor                   # (B, N, C)
    mask: Optional[torch.Tensor] = None    # (B, N) bool, True where a token is real


class Frozen(nn.Module):
    """Base of every frozen model: eval mode and requires_grad=False, whatever train() is called with."""

    def freeze(self):
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode=True):
        return super().train(False)


# ---------------------------------------------------------------------------------------------
# media loading
# ---------------------------------------------------------------------------------------------


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
        return asdict(self)


def mel_basis(cfg):
    """Slaney-normalised mel filterbank as a tensor (n_mels, n_fft // 2 + 1)."""
    fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    return torch.from_numpy(fb)


def log_mel(waves, cfg):
    """Natural-log mel spectrogram of waves (B, T) -> (B, n_mels, cfg.frames)."""
    waves = torch.as_tensor(waves, dtype=torch.float32)
    window = torch.hann_window(cfg.n_fft, device=waves.device)
    spec = torch.stft(waves, cfg.n_fft, cfg.hop, window=window, center=True, return_complex=True).abs()  # (B, F, frames')
    mel = mel_basis(cfg).to(waves.device) @ spec                                                   # (B, n_mels, frames')
    mel = F.pad(mel, (0, max(0, cfg.frames - mel.shape[-1])))[..., :cfg.frames]
    return torch.log(mel.clamp(min=cfg.floor))


class GriffinLim(Frozen):
    """Toy vocoder: log-mel -> linear magnitude (least squares) -> phase by Griffin-Lim iterations."""

    def __init__(self, cfg, n_iter=32, momentum=0.99):
        super().__init__()
        self.cfg, self.n_iter, self.momentum = cfg, n_iter, momentum
        self.register_buffer('inverse', torch.linalg.pinv(mel_basis(cfg)), persistent=False)  # (F, n_mels)
        self.freeze()

    @torch.no_grad()
    def forward(self, logmel):
        cfg = self.cfg
        mel = torch.exp(logmel.float())                                       # (B, n_mels, frames)
        mag = (self.inverse.to(mel.device) @ mel).clamp(min=0)                # (B, F, frames)
        window = torch.hann_window(cfg.n_fft, device=mel.device)
        length = cfg.hop * (mag.shape[-1] - 1)
        gen = torch.Generator(device='cpu').manual_seed(0)
        angles = torch.exp(2j * np.pi * torch.rand(mag.shape, generator=gen)).to(mel.device)
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


# ---------------------------------------------------------------------------------------------
# hf suite
# ---------------------------------------------------------------------------------------------

