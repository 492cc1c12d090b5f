"""The paper's full V2A-Mapper system, offline: tiny random instances of the published classes
saved as folders, driven by the same prepare / train / sample commands as toyav; encoders.AudioLDM
against diffusers' pipeline."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import transformers as tf
from PIL import Image

import prepare
import sample
import train
from conftest import (PAD, randomize, save_hf, tiny_clap_text_config, tiny_config, tiny_hf_clap,
                      tiny_hf_clip, word_tokenizer)
from encoders import CLAP_TEXT_TOKENS, load_hf, load_image
from methods import load_checkpoint
from generators import AudioLDM

diffusers = pytest.importorskip('diffusers')
DIM = 24   # the tiny CLIP's and CLAP's joint spaces, and the generator's condition


@pytest.fixture(scope='module')
def audioldm(tmp_path_factory):
    """A tiny AudioLDMPipeline and the folder save_pretrained wrote it to.

    AudioLDM's layout: self-attending UNet levels, the CLAP vector concatenated to the time
    embedding, a mel VAE, a SpeechT5 HiFi-GAN, a CLAP text tower.
    """
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D'),
        up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'), cross_attention_dim=(8, 16),
        attention_head_dim=2, norm_num_groups=4, class_embed_type='simple_projection',
        projection_class_embeddings_input_dim=DIM, class_embeddings_concat=True)
    unet = randomize(unet, 1, std=0.1)
    vae = diffusers.AutoencoderKL(
        in_channels=1, out_channels=1, down_block_types=('DownEncoderBlock2D',) * 3,
        up_block_types=('UpDecoderBlock2D',) * 3, block_out_channels=(8, 16, 16),
        layers_per_block=1, latent_channels=4, norm_num_groups=4, scaling_factor=0.9)
    vae = randomize(vae, 2, std=0.1)
    vocoder = tf.SpeechT5HifiGan(tf.SpeechT5HifiGanConfig(
        model_in_dim=16, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=(4, 4),
        upsample_kernel_sizes=(8, 8), resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1,),),
        normalize_before=False))
    vocoder = randomize(vocoder, 3, std=0.1)
    text_config = tf.ClapTextConfig(**tiny_clap_text_config(CLAP_TEXT_TOKENS + PAD + 1),
                                    projection_dim=DIM)
    text = tf.ClapTextModelWithProjection(text_config)
    scheduler = diffusers.DDIMScheduler(beta_schedule='scaled_linear', beta_start=0.0015,
                                        beta_end=0.0195, clip_sample=False, set_alpha_to_one=True,
                                        timestep_spacing='trailing')
    pipe = diffusers.AudioLDMPipeline(vae=vae, text_encoder=text.eval(), tokenizer=word_tokenizer(),
                                      unet=unet, scheduler=scheduler, vocoder=vocoder)
    path = tmp_path_factory.mktemp('audioldm')
    pipe.save_pretrained(path)
    return pipe, path


@pytest.mark.parametrize('cfg', [1.0, 3.0])
def test_audioldm_matches_the_diffusers_pipeline(audioldm, cfg):
    pipe, path = audioldm
    ours = AudioLDM.from_pretrained(str(path))
    assert ours.shape == (4, 8, 4)
    assert ours.length == 512          # 8 x 4 x 16 / 16 kHz = 32 ms: 32 mel frames of 16 bins
    assert not ours.training
    assert not any(p.requires_grad for p in ours.parameters())
    vec = F.normalize(torch.randn(2, DIM, generator=torch.Generator().manual_seed(3)), dim=-1)
    z = torch.randn((2, *ours.shape), generator=torch.Generator().manual_seed(0))  # its first draw
    with torch.no_grad():
        ref = pipe(prompt_embeds=vec, num_inference_steps=5, guidance_scale=cfg, latents=z.clone(),
                   output_type='np').audios
    rng = torch.Generator().manual_seed(0)
    out = ours.generate({'vec': vec}, steps=5, cfg=cfg, rng=rng)
    assert out.shape == ref.shape == (2, 512)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-4, rtol=1e-3)
    assert out.std() > 1e-3                                   # the random weights do make a sound


def test_the_same_commands_run_the_full_system(tiny, audioldm, tmp_path):
    """prepare.py --features hf, train.py on its cache, sample.py --generator <AudioLDM folder>.

    Each step's output equals running the published pieces by hand.
    """
    _, pipe_dir = audioldm
    clip_dir = save_hf(tiny_hf_clip(DIM), tmp_path / 'clip')
    clap_dir = save_hf(tiny_hf_clap(DIM), tmp_path / 'clap')
    data = tmp_path / 'data'
    toyav = data / 'toyav'
    shutil.copytree(tiny / 'data' / 'toyav', toyav)
    prepare.main(['toyav', '--features', 'hf', '--clip', clip_dir, '--clap', clap_dir,
                  '--data_dir', str(data), '--batch_size', '16'])
    feats = json.loads((toyav / 'features.json').read_text())
    assert feats['suite'] == 'hf'
    assert feats['encoders'] == {'clip': clip_dir, 'clap': clap_dir}
    assert sorted(feats['fields']) == ['clap_audio_emb', 'clap_text_emb', 'clip_image_emb',
                                       'clip_text_emb']
    clip = load_hf('clip', clip_dir)
    clap = load_hf('clap', clap_dir)
    images = np.load(toyav / 'test_image.npy')
    waves = np.load(toyav / 'test_wave.npy')
    np.testing.assert_allclose(np.load(toyav / 'test_clip_image_emb.npy'),
                               clip.encode_image(images).emb, atol=1e-5)
    np.testing.assert_allclose(np.load(toyav / 'test_clap_audio_emb.npy'),
                               clap.encode_audio(waves).emb, atol=1e-5)

    out = tmp_path / 'out' / 'toyav_v2a'
    mapper_args = dict(kind='mlp', prior=True, in_dim=DIM, out_dim=DIM, width=32, n_layer=1)
    train.train(tiny_config(tmp_path, 'clip', method='v2a', out_dir=str(out), data_dir=str(data),
                            model_args=mapper_args))
    mapper, ckpt = load_checkpoint(str(out / 'ckpt.pt'))
    encoders = {'clip': clip_dir, 'clap': clap_dir}
    assert ckpt['data']['features'] == {'suite': 'hf', 'encoders': encoders}

    Image.fromarray(images[0]).save(tmp_path / 'cat.png')
    stem = str(tmp_path / 'cat')
    sample.main(['--ckpt', str(out), '--image', str(tmp_path / 'cat.png'),
                 '--generator', str(pipe_dir), '--n', '2', '--steps', '4', '--mapper_steps', '4',
                 '--dtype', 'float32', '--out', stem])
    picture = load_image(str(tmp_path / 'cat.png'), 32)[None]
    emb = clip.encode_image(picture).emb.expand(2, -1)                     # (2, DIM)
    rng = torch.Generator().manual_seed(1337)     # one seed for the mapper, then the generator
    vec = F.normalize(mapper.generate(emb, 4, 1.0, rng=rng), dim=-1)
    generator = AudioLDM.from_pretrained(str(pipe_dir))
    expected = generator.generate({'vec': vec}, 4, 3.0, rng=rng)
    for j in range(2):
        wave, sr = sf.read(f"{stem}.i2a.{j}.wav", dtype='float32')
        assert sr == 16000
        assert wave.shape == (512,)
        np.testing.assert_allclose(wave, expected[j].clamp(-1, 1).numpy(), atol=2 / 32768)
        assert Image.open(f"{stem}.i2a.{j}.spec.png").size[0] > 0


def test_hf_features_of_video_frames():
    """A video dataset's frames (B, F, H, W, 3) get a CLIP embedding each: frames_emb (B, F, D)."""
    rng = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8, generator=rng)
    media = {'image': frames[:, 1], 'frames': frames}
    out = prepare.encoder_features(tiny_hf_clip(DIM), media, ['a dog', 'a cat'], 16000)
    assert set(out) == {'image_emb', 'text_emb', 'frames_emb'}
    assert out['frames_emb'].shape == (2, 3, DIM)
    np.testing.assert_allclose(out['frames_emb'][:, 1], out['image_emb'], atol=1e-5)
    assert not np.allclose(out['frames_emb'][:, 0], out['image_emb'], atol=1e-3)
