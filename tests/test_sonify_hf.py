"""Seeing Sound at full scale, offline: a folder of pictures sonified from a folder of recordings
with a tiny random CLAP and a VLM hook, cached with a tiny AST and PixArt VAE, and a tiny random
PixArt-alpha transformer folder fine-tuned with its caption projection replaced, by the same
prepare / train / sample commands as toyav."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import prepare
import sample
import train
from conftest import randomize, save_hf, tiny_config, tiny_hf_ast, tiny_hf_clap, tiny_sd_vae
from data import toyav
from encoders import HFPictureLatents, fit_length, load_audio, load_hf
from generators import pixart_config
from methods import load_checkpoint, load_pipeline

diffusers = pytest.importorskip('diffusers')
pytestmark = pytest.mark.usefixtures('one_thread')
SIZE = 16             # picture side: 8 x 8 latents of the tiny VAE
AST_DIM = 32          # the tiny AST's width: the audio projector's input (768 published)


def vlm(image):
    """A VLM hook for the test: a plain picture sounds of nothing, any other of a dog and a bell."""
    if np.asarray(image).std() < 1:
        return []
    return ['dog: barking', 'bell: ringing', 'wind: blowing', 'one too many: ignored']


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    """Pictures (five toyav renders, a plain one, a broken file), recordings (44.1 kHz stereo of
    1.5 s, a broken file), and the tiny hf CLAP, AST, VAE and PixArt transformer as folders."""
    root = tmp_path_factory.mktemp('full')
    rng = np.random.default_rng(0)
    pictures = root / 'pictures'
    pictures.mkdir()
    for i in range(5):
        picture = toyav.render([i], i % 3, 2, SIZE, rng)
        Image.fromarray(picture).save(pictures / f"{i}.png")
    Image.fromarray(np.full((SIZE, SIZE, 3), 200, np.uint8)).save(pictures / 'plain.png')
    (pictures / 'broken.jpg').write_bytes(b'not a picture')
    sounds = root / 'sounds'
    sounds.mkdir()
    for i in range(3):
        t = np.arange(int(1.5 * 44100)) / 44100
        left = 0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t)
        sf.write(sounds / f"{i}.wav", np.stack([left, 0.5 * left], 1), 44100)
    (sounds / 'broken.wav').write_bytes(b'not a sound')
    transformer = root / 'pixart'
    randomize(diffusers.PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=8, num_layers=2,
        sample_size=8, patch_size=2, caption_channels=10, cross_attention_dim=24)).save_pretrained(
        transformer)
    return dict(pictures=pictures, sounds=sounds, transformer=transformer,
                clap=save_hf(tiny_hf_clap(), root / 'clap'),
                ast=save_hf(tiny_hf_ast(), root / 'ast'),
                sd_vae=str(tiny_sd_vae(root / 'sd_vae').folder))


def test_the_same_commands_sonify_a_folder_and_fine_tune_pixart(folders, tmp_path, capsys):
    data = tmp_path / 'data'
    root = data / 'sonify'
    prepare.main(['sonify', '--src', str(folders['pictures']), '--audio_src',
                  str(folders['sounds']), '--vlms', 'test_sonify_hf:vlm', '--retrieval_clap',
                  folders['clap'], '--image_size', str(SIZE), '--val_images', '2', '--data_dir',
                  str(data)])
    err = capsys.readouterr().err
    assert 'broken.jpg' in err and 'broken.wav' in err                     # reported, skipped
    meta = json.loads((root / 'meta.json').read_text())
    assert meta['counts'] == {'train': 3, 'val': 2, 'test': 0}          # the plain one: filtered
    assert meta['pool']['clips'] == 6 and meta['vlms'] == ['test_sonify_hf:vlm']
    assert 'parts' not in meta and 'retrieval' not in meta              # no labels to score with
    clips = np.load(root / 'train_clips.npy')
    assert clips.shape == (3, 3) and (clips >= 0).all() and clips.max() < 6   # three concepts
    flags = [f"--ast={folders['ast']}", f"--sd_vae={folders['sd_vae']}"]
    prepare.main(['sonify', '--features', 'hf', '--encoders', 'ast,sd_vae', *flags, '--data_dir',
                  str(data), '--batch_size', '4'])
    latents = np.load(root / 'train_sd_vae_latent.npy')
    assert latents.shape == (3, 4, 8, 8)
    vae = load_hf('sd_vae', folders['sd_vae'])
    pictures = np.load(root / 'train_image.npy')
    np.testing.assert_allclose(latents, vae.encode(pictures).numpy(), atol=1e-5)

    config = json.loads((folders['transformer'] / 'config.json').read_text())
    net_args = dict(pixart_config(config), ctx_dim=AST_DIM, learn_null=True)
    model_args = dict(shape=(4, 8, 8), target='sd_vae_latent', audio='ast_audio_tokens',
                      generator=str(folders['transformer']), net_args=net_args)
    run = tmp_path / 'out' / 'sonify_full'
    train.train(tiny_config(tmp_path, 'clip', method='sonify', dataset='sonify', out_dir=str(run),
                            data_dir=str(data), model_args=model_args, max_iters=2,
                            eval_interval=2, learning_rate=3.16e-5, weight_decay=3e-2))
    model, ckpt = load_checkpoint(str(run / 'ckpt.pt'))
    assert ckpt['data']['features']['encoders'] == {'ast': folders['ast'],
                                                    'sd_vae': folders['sd_vae']}
    pipeline, _ = load_pipeline(str(run))
    assert isinstance(pipeline.decoder, HFPictureLatents)

    tone = tmp_path / 'tone.wav'
    sf.write(tone, 0.3 * np.sin(np.arange(12000) / 3), 16000)        # shorter than a clip: padded
    stem = str(tmp_path / 'tone')
    sample.main(['--ckpt', str(run), '--audio', str(tone), '--steps', '2', '--dtype', 'float32',
                 '--out', stem])
    wave = fit_length(load_audio(str(tone), 16000), 16000)[None]            # (1, 16000)
    tokens = load_hf('ast', folders['ast']).encode_audio(wave).tokens       # (1, 9, 32)
    rng = torch.Generator().manual_seed(1337)
    expected = vae.decode(model.generate({'ctx': tokens}, 2, 3.0, rng=rng))[0]
    picture = np.asarray(Image.open(f"{stem}.a2i.raw.png"))
    np.testing.assert_array_equal(picture, expected.numpy())


def test_a_folder_of_pictures_needs_a_real_vlm_and_the_audio(folders, tmp_path):
    common = ['sonify', '--src', str(folders['pictures']), '--data_dir', str(tmp_path)]
    with pytest.raises(SystemExit, match='needs a real VLM'):
        prepare.main(common + ['--audio_src', str(folders['sounds'])])
    with pytest.raises(SystemExit, match='--audio_src names the audio'):
        prepare.main(common + ['--vlms', 'test_sonify_hf:vlm'])
