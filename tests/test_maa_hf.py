"""Make-An-Audio + ImageBind at full scale, offline: tiny random ImageBind towers, a tiny random
Make-An-Audio folder (CompVis checkpoint: U-Net, VAE and its BERT + MS-CLAP text encoder, yaml)
driven by the same prepare / train / sample commands as toyav, down to a wav."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import prepare
import sample
import train
from conftest import save_hf, tiny_config, tiny_hf_imagebind, tiny_hf_maa_text
from data import toyav_maa
from encoders import MAA_CKPT, HFMaaText, load_hf, save_png
from generators import LDM_UNET, LDM_VAE, MAA_YAML, MakeAnAudio, is_maa
from methods import load_checkpoint
from test_maa_import import _maa_unet, _maa_vae, _tiny_yaml

pytestmark = pytest.mark.usefixtures('one_thread')
BIND_DIM = 24       # the tiny ImageBind's joint space (1024 published)
TEXT_DIM = 12       # the tiny Make-An-Audio's token width, its yaml's context_dim (1024 published)
MEL_DIM = 4         # latent rows of the tiny Make-An-Audio (80 mels / 8 = 10 published)
FULL_SCALE = dict(experiment='b', text='imagebind_part_emb', image='imagebind_image_emb',
                  tokens='maa_text_text_tokens', emb_dim=BIND_DIM, n_tokens=77,
                  token_dim=TEXT_DIM, width=16, n_layer=1, n_head=2)


@pytest.fixture(scope='module')
def maa_dir(tmp_path_factory):
    """A tiny Make-An-Audio folder: maa1_full.ckpt (Lightning layout), its yaml, bert/."""
    path = tmp_path_factory.mktemp('maa')
    save_hf(tiny_hf_maa_text(TEXT_DIM), path)                     # the text encoder, bert/
    config = _tiny_yaml([1, 2], [1, 2])
    config['model']['params']['mel_dim'] = MEL_DIM
    unet, _ = _maa_unet(config)
    vae, _ = _maa_vae(config)
    sd = torch.load(path / MAA_CKPT, weights_only=True)['state_dict']
    sd.update({k: v for k, v in unet['state_dict'].items() if k.startswith(LDM_UNET)})
    sd.update({k: v for k, v in vae['state_dict'].items() if k.startswith(LDM_VAE)})
    sd['scale_factor'] = torch.tensor(0.9)
    torch.save({'state_dict': sd, 'global_step': 1}, path / MAA_CKPT)
    (path / MAA_YAML).write_text(yaml.safe_dump(config))
    return path


def test_the_text_encoder_reads_ids_alone_and_projects_every_token(maa_dir):
    enc = load_hf('maa_text', str(maa_dir))
    assert type(enc) is HFMaaText and not enc.training
    assert not any(p.requires_grad for p in enc.parameters())
    ref = tiny_hf_maa_text(TEXT_DIM)
    captions = ['a dog barking', 'a loud bell ringing in the large hall']
    f = enc.encode_text(captions)
    assert f.tokens.shape == (2, 77, TEXT_DIM) and f.emb.shape == (2, TEXT_DIM)
    torch.testing.assert_close(f.tokens, ref.encode_text(captions).tokens)
    ids = enc.tokenize(captions)['input_ids']
    projection = ref.projection
    with torch.no_grad():
        hidden = ref.model(input_ids=ids).last_hidden_state              # no attention mask
        masked = ref.model(**enc.tokenize(captions)).last_hidden_state
        h = projection.linear1(hidden)
        expected = projection.layer_norm(h + projection.linear2(torch.nn.functional.gelu(h)))
    torch.testing.assert_close(f.tokens, expected)
    torch.testing.assert_close(f.emb, f.tokens[:, 0])                     # the projected [CLS]
    assert not torch.allclose(hidden, masked)                      # so the mask would matter


def test_make_an_audio_samples_log_mels_from_tokens(maa_dir):
    assert is_maa(str(maa_dir)) and not is_maa(str(maa_dir / 'bert'))
    gen = MakeAnAudio.from_pretrained(str(maa_dir), seconds=1.0)
    assert gen.shape == (4, MEL_DIM, 8)                           # int(7.8) -> 8 latent frames
    assert gen.mel_config.n_mels == MEL_DIM * 8 and gen.mel_config.frames == 64
    assert gen.scale_factor == pytest.approx(0.9) and gen.null.shape == (1, 77, TEXT_DIM)
    ctx = torch.randn(2, 77, TEXT_DIM, generator=torch.Generator().manual_seed(0))
    mel = gen.sample_mel({'ctx': ctx}, steps=2, rng=torch.Generator().manual_seed(0))
    again = gen.sample_mel({'ctx': ctx}, steps=2, rng=torch.Generator().manual_seed(0))
    assert mel.shape == (2, MEL_DIM * 8, 64) and torch.isfinite(mel).all()
    torch.testing.assert_close(mel, again)
    plain = gen.sample_mel({'ctx': ctx}, steps=2, cfg=1.0,
                           rng=torch.Generator().manual_seed(0))
    assert not torch.allclose(mel, plain)                          # guidance reads the null


def test_the_same_commands_run_experiment_b_on_make_an_audio(maa_dir, tmp_path):
    """prepare.py --features hf --encoders imagebind,maa_text; train.py on its cache; sample.py
    --generator <Make-An-Audio folder> writes a wav."""
    bind = save_hf(tiny_hf_imagebind(BIND_DIM), tmp_path / 'imagebind')
    data = tmp_path / 'data'
    prepare.main(['toyav_maa', '--data_dir', str(data), '--n_train', '16', '--n_val', '4',
                  '--n_test', '4'])
    prepare.main(['toyav_maa', '--features', 'hf', '--encoders', 'imagebind,maa_text',
                  '--imagebind', bind, '--maa_text', str(maa_dir), '--data_dir', str(data),
                  '--batch_size', '8'])
    root = data / 'toyav_maa'
    fields = json.loads((root / 'features.json').read_text())['fields']
    assert fields['maa_text_text_tokens']['shape'] == [77, TEXT_DIM]
    assert fields['imagebind_part_emb']['shape'] == [BIND_DIM]
    captions = json.loads((root / 'captions.json').read_text())['train']
    part = np.load(root / 'train_imagebind_part_emb.npy')
    texts = [c['text'] for c in captions[:2]]
    torch.testing.assert_close(torch.from_numpy(part[:2]),
                               load_hf('imagebind', bind).encode_text(texts).emb)
    run = tmp_path / 'out' / 'toyav_maa'
    train.train(tiny_config(tmp_path, 'clip', out_dir=str(run), method='maa', dataset='toyav_maa',
                            data_dir=str(data), model_args=FULL_SCALE))
    _, ckpt = load_checkpoint(str(run))
    assert ckpt['data']['features']['suite'] == 'hf'
    picture = tmp_path / 'hall.png'
    save_png(str(picture), toyav_maa.place_picture('in a large hall', 64,
                                                   np.random.default_rng(0)))
    sample.main(['--ckpt', str(run), '--text', 'a loud dog barking', '--image', str(picture),
                 f"--generator={maa_dir}", '--steps=2', '--dtype', 'float32',
                 '--out', str(tmp_path / 'dog')])
    wave, rate = sf.read(tmp_path / 'dog.ti2a.wav')
    assert rate == 16000 and len(wave) > 16000 and np.isfinite(wave).all()
    assert (tmp_path / 'dog.ti2a.spec.png').exists()
