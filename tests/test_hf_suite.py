"""The hf suite of encoders.py offline, on tiny random instances of the transformers classes."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

from conftest import (CAPTIONS, PAD, TEXT_LEN, save_hf, tiny_clap_text_config, tiny_hf_ast,
                      tiny_hf_clap, tiny_hf_clip, tiny_hf_flux_clip, tiny_hf_flux_t5,
                      tiny_hf_maa_text, tiny_sd_vae, tiny_t5_config, word_tokenizer)
from encoders import (CLAP_TEXT_TOKENS, HF_SUITE, Features, HFClapText, HFEncodec, HFHifiGan,
                      HFT5, MelConfig, hifigan_mel_config, load_hf, log_mel, resample_waves)


def sine(freq, sr, seconds=1.0, fade=0.1):
    """A (1, T) float32 sine at sample rate sr, faded in and out (no resampler edge transients)."""
    t = np.arange(int(sr * seconds)) / sr
    env = np.clip(np.minimum(t, seconds - t) / fade, 0, 1)
    return (0.5 * env * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None]


@pytest.fixture(scope='module')
def clip():
    return tiny_hf_clip()


@pytest.fixture(scope='module')
def clap():
    return tiny_hf_clap()


@pytest.fixture(scope='module')
def ast():
    return tiny_hf_ast()


@pytest.fixture(scope='module')
def t5():
    torch.manual_seed(0)
    model = tf.T5EncoderModel(tf.T5Config(**tiny_t5_config()))
    return HFT5(model, word_tokenizer(), max_length=TEXT_LEN)


@pytest.fixture(scope='module')
def flux_t5():
    return tiny_hf_flux_t5()


@pytest.fixture(scope='module')
def flux_clip():
    return tiny_hf_flux_clip()


@pytest.fixture(scope='module')
def vocoder():
    torch.manual_seed(0)
    cfg = tf.SpeechT5HifiGanConfig(model_in_dim=64, upsample_initial_channel=16,
                                   upsample_rates=(4, 4), upsample_kernel_sizes=(8, 8),
                                   resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1,),),
                                   normalize_before=False)
    return HFHifiGan(tf.SpeechT5HifiGan(cfg))


@pytest.fixture(scope='module')
def encodec():
    torch.manual_seed(0)
    cfg = tf.EncodecConfig(hidden_size=16, num_filters=4, num_lstm_layers=1,
                           target_bandwidths=(1.5, 3.0))                # 24 kHz, hop 320
    return HFEncodec(tf.EncodecModel(cfg))


@pytest.fixture(scope='module')
def clap_text():
    torch.manual_seed(0)
    cfg = tf.ClapTextConfig(**tiny_clap_text_config(CLAP_TEXT_TOKENS + PAD + 1), projection_dim=24)
    return HFClapText(tf.ClapTextModelWithProjection(cfg), word_tokenizer())


@pytest.fixture(scope='module')
def maa_text():
    return tiny_hf_maa_text()


@pytest.fixture(scope='module')
def sd_vae(tmp_path_factory):
    return tiny_sd_vae(tmp_path_factory.mktemp('sd_vae'))


# the roles with a tiny instance above (imagebind's is conftest.py's)
ROLES = ('clip', 'clap', 'ast', 't5', 'vocoder', 'encodec', 'clap_text', 'imagebind', 'flux_t5',
         'flux_clip', 'maa_text', 'sd_vae')
ALL_ROLES = sorted(set(HF_SUITE) | set(ROLES))   # a role load_hf lost fails, one untested fails


@pytest.fixture(scope='module')
def suite(request):
    return {role: request.getfixturevalue(role) for role in ROLES}


def test_load_hf_refuses_an_unknown_role():
    with pytest.raises(KeyError):
        load_hf('no_such_role')


@pytest.mark.parametrize('role', ALL_ROLES)
def test_frozen(suite, role):
    enc = suite[role]
    assert isinstance(enc, HF_SUITE[role])
    enc.train()
    assert all(not p.requires_grad for p in enc.parameters())
    assert sum(p.numel() for p in enc.parameters()) > 0
    assert not any(m.training for m in enc.modules())


def test_clip_image(clip):
    images = np.random.default_rng(0).integers(0, 256, (2, 20, 28, 3), dtype=np.uint8)
    f = clip.encode_image(images)
    assert isinstance(f, Features)
    assert f.emb.shape == (2, 24)
    assert f.tokens.shape == (2, 17, 32)                    # 1 + (32 / 8)^2 tokens
    assert f.emb.dtype == torch.float32
    batch = clip.processor(images=[Image.fromarray(im) for im in images], return_tensors='pt')
    ref = clip.model.get_image_features(**batch)
    torch.testing.assert_close(f.emb, ref.pooler_output)
    assert not torch.allclose(f.emb.norm(dim=-1), torch.ones(2))  # raw projection, not normalised
    big_images = np.random.default_rng(1).integers(0, 256, (2, 64, 48, 3), dtype=np.uint8)
    big = clip.encode_image(torch.from_numpy(big_images))
    assert big.emb.shape == f.emb.shape
    assert big.tokens.shape == f.tokens.shape


def test_clip_text(clip):
    f = clip.encode_text(CAPTIONS)
    assert f.emb.shape == (2, 24)
    assert f.tokens.shape == (2, TEXT_LEN, 32)
    assert f.mask.dtype == torch.bool
    assert f.mask.sum(1).tolist() == [5, 10]  # <s> words </s>
    batch = clip.tokenizer(CAPTIONS, padding='max_length', max_length=TEXT_LEN, return_tensors='pt')
    torch.testing.assert_close(f.emb, clip.model.get_text_features(**batch).pooler_output)


def test_clap_audio(clap):
    waves = torch.randn(2, 48000) * 0.1
    f = clap.encode_audio(waves, sample_rate=48000)
    assert f.emb.shape == (2, 24)
    assert f.tokens.shape == (2, 16, 32)                    # (32, 2 x 8 map) -> 16 tokens
    assert f.mask is None
    batch = clap.feature_extractor(list(waves.numpy()), sampling_rate=48000,
                                   truncation='rand_trunc', return_tensors='pt')
    torch.testing.assert_close(f.emb, clap.model.get_audio_features(**batch).pooler_output)
    torch.testing.assert_close(f.emb.norm(dim=-1), torch.ones(2))
    long = torch.randn(1, 100000) * 0.1  # > max_length_s: cropped to its start, never at random
    first = clap.encode_audio(long[:, :48000], sample_rate=48000).emb
    torch.testing.assert_close(clap.encode_audio(long, sample_rate=48000).emb, first)


@pytest.mark.parametrize('name', ['clap', 'ast'])
def test_audio_resampled(suite, name):
    enc = suite[name]
    lo = enc.encode_audio(sine(440, 8000), sample_rate=8000)
    hi = enc.encode_audio(sine(440, 44100), sample_rate=44100)
    assert lo.tokens.shape == hi.tokens.shape
    torch.testing.assert_close(lo.emb, hi.emb, atol=2e-3, rtol=2e-3)
    wrong = enc.encode_audio(sine(440, 44100), sample_rate=8000)  # misdeclared: a different sound
    assert (wrong.emb - hi.emb).abs().max() > 10 * (lo.emb - hi.emb).abs().max()


def test_clap_text(clap):
    f = clap.encode_text(CAPTIONS)
    assert f.emb.shape == (2, 24)
    assert f.tokens.shape == (2, TEXT_LEN, 32)
    assert f.mask.sum(1).tolist() == [5, 10]
    batch = clap.tokenizer(CAPTIONS, padding='max_length', max_length=TEXT_LEN, return_tensors='pt')
    torch.testing.assert_close(f.emb, clap.model.get_text_features(**batch).pooler_output)


def test_ast(ast):
    waves = np.random.default_rng(0).normal(size=(2, 8000)).astype(np.float32)
    f = ast.encode_audio(waves)
    assert f.emb.shape == (2, 32)
    assert f.tokens.shape == (2, 2 + 1 * 7, 32)  # cls, distill, (16-16)/8+1 x (64-16)/8+1
    batch = ast.feature_extractor(list(waves), sampling_rate=16000, return_tensors='pt')
    out = ast.model(**batch)
    torch.testing.assert_close(f.emb, out.pooler_output)
    torch.testing.assert_close(f.tokens, out.last_hidden_state)


def test_t5(t5):
    f = t5.encode_text(CAPTIONS)
    assert f.tokens.shape == (2, TEXT_LEN, 16)
    assert f.emb.shape == (2, 16)
    assert f.mask.sum(1).tolist() == [5, 10]
    batch = t5.tokenizer(CAPTIONS, padding='max_length', max_length=TEXT_LEN, return_tensors='pt')
    torch.testing.assert_close(f.tokens, t5.model(**batch).last_hidden_state)
    torch.testing.assert_close(f.emb[0], f.tokens[0, :5].mean(0))  # padding excluded from the mean


def test_flux_text_encoders_give_what_fluxpipeline_reads(flux_clip, flux_t5):
    """FluxPipeline._get_clip_prompt_embeds and _get_t5_prompt_embeds on the same models."""
    diffusers = pytest.importorskip('diffusers')
    clip_tokenizer = word_tokenizer()
    clip_tokenizer.model_max_length = TEXT_LEN       # the pipeline pads CLIP text to this
    pipe = diffusers.FluxPipeline(scheduler=None, vae=None, text_encoder=flux_clip.model,
                                  tokenizer=clip_tokenizer, text_encoder_2=flux_t5.model,
                                  tokenizer_2=word_tokenizer(), transformer=None)
    pooled = flux_clip.encode_text(CAPTIONS).emb
    assert pooled.shape == (2, 32)                   # the tower's width: no projection
    torch.testing.assert_close(pooled, pipe._get_clip_prompt_embeds(CAPTIONS, device='cpu'))
    tokens = flux_t5.encode_text(CAPTIONS).tokens
    assert tokens.shape == (2, 512, 16)
    want = pipe._get_t5_prompt_embeds(CAPTIONS, max_sequence_length=512, device='cpu')
    torch.testing.assert_close(tokens, want)
    masked = HFT5(flux_t5.model, word_tokenizer(), max_length=512).encode_text(CAPTIONS).tokens
    assert (masked - tokens).abs().max() > 1e-3      # Flux's T5 attends to its padding


def test_vocoder(vocoder):
    logmel = torch.randn(2, 64, 10)
    waves = vocoder(logmel)
    assert waves.shape == (2, 4 * 4 * 10)
    assert waves.dtype == torch.float32
    torch.testing.assert_close(waves, vocoder.model(logmel.transpose(1, 2)))
    with pytest.raises(RuntimeError):
        vocoder(logmel.transpose(1, 2))  # (B, frames, n_mels) is the published layout, not ours
    cfg = vocoder.mel_config
    assert (cfg.hop, cfg.n_mels, cfg.sample_rate) == (16, 64, 16000)
    assert vocoder(log_mel(torch.randn(1, 2 * cfg.n_fft), cfg)).shape == (1, cfg.hop * cfg.frames)


def test_audioldm_mel_config():
    # AudioLDM's vocoder/config.json
    cfg = tf.SpeechT5HifiGanConfig(model_in_dim=64, upsample_rates=[5, 4, 2, 2, 2],
                                   upsample_kernel_sizes=[16, 16, 8, 4, 4],
                                   upsample_initial_channel=1024, normalize_before=False)
    audioldm = MelConfig(sample_rate=16000, n_fft=1024, hop=160, n_mels=64, fmin=0.0, fmax=8000.0)
    assert hifigan_mel_config(cfg) == audioldm


def test_encodec(encodec):
    assert encodec.sample_rate == 24000
    waves = torch.randn(2, 16000) * 0.1
    # 1 s -> 24000 samples -> 75 frames of 2 codebooks at 1.5 kbps
    ids = encodec.encode(waves, sample_rate=16000)
    assert ids.shape == (2, 2, 75)
    assert ids.dtype == torch.long
    assert 0 <= ids.min()
    assert ids.max() < 1024
    x = torch.from_numpy(resample_waves(waves, 16000, 24000))[:, None]  # (B, 1, T) at 24 kHz
    ref = encodec.model.encode(x, bandwidth=1.5).audio_codes[0]
    assert torch.equal(ids, ref)
    out = encodec.decode(ids)
    assert out.shape == (2, 24000)
    assert out.dtype == torch.float32
    assert encodec.encode(out, sample_rate=24000).shape == ids.shape


def test_picture_latents_are_the_published_vaes_scaled_means(sd_vae):
    import diffusers
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    z = sd_vae.encode(images)
    assert z.shape == (2, 4, 8, 8)
    ref = diffusers.AutoencoderKL.from_pretrained(sd_vae.folder).eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        want = ref.encode(x).latent_dist.mean * 0.18215
        pictures = ref.decode(want / 0.18215).sample                          # (2, 3, 16, 16)
    torch.testing.assert_close(z, want, atol=1e-4, rtol=1e-4)
    out = sd_vae.decode(z)
    assert out.shape == (2, 16, 16, 3) and out.dtype == torch.uint8
    expected = ((pictures.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1)
    assert (out.float() - expected).abs().max() <= 1


def test_resample_waves():
    out = resample_waves(torch.from_numpy(sine(440, 8000)), 8000, 48000)
    assert out.shape == (1, 48000)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 1000:-1000], sine(440, 48000)[0, 1000:-1000], atol=1e-2)


@pytest.mark.parametrize('role', ALL_ROLES)
def test_from_pretrained_local(suite, role, tmp_path):
    enc = suite[role]
    save_hf(enc, tmp_path)
    loaded = load_hf(role, str(tmp_path))
    assert type(loaded) is type(enc)
    assert not loaded.training
    for a, b in zip(enc.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b)
    # default text lengths may differ: padding is masked
    if role in ('clip', 'clap', 't5', 'clap_text', 'imagebind', 'flux_t5', 'flux_clip',
                'maa_text'):
        want = enc.encode_text(CAPTIONS).emb
        torch.testing.assert_close(loaded.encode_text(CAPTIONS).emb, want)
