"""Log-mels, the Griffin-Lim vocoder, the toy suite, sample.py and eval.py on tiny models."""
import json
import shutil

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import eval as evaluation
import sample
from encoders import GriffinLim, MelConfig, WordTokenizer, load_toy, log_mel
from encoders import StaleCache


def test_log_mel_has_the_configured_shape_and_finds_a_tone():
    cfg = MelConfig()
    t = torch.arange(cfg.sample_rate) / cfg.sample_rate
    mel = log_mel(torch.sin(2 * np.pi * 1000 * t)[None], cfg)           # (1, 64, 64)
    assert mel.shape == (1, cfg.n_mels, cfg.frames)
    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.fmin, fmax=cfg.fmax)[1:-1]
    assert abs(centres[mel[0].mean(-1).argmax().item()] - 1000) < 120


def test_griffin_lim_rebuilds_a_sound_whose_mel_matches():
    cfg = MelConfig()
    t = torch.arange(cfg.sample_rate) / cfg.sample_rate
    chirp = 0.3 * torch.sin(2 * np.pi * 440 * t * (1 + t)) * torch.exp(-3 * t)  # a falling chirp
    wave = chirp[None]
    mel = log_mel(wave, cfg)
    rebuilt = GriffinLim(cfg)(mel)
    assert rebuilt.shape[-1] == cfg.hop * (cfg.frames - 1)
    err = (log_mel(rebuilt, cfg) - mel)[..., 2:-2].abs()
    loud = mel[..., 2:-2] > mel.max() - 4                 # within ~35 dB of the peak
    assert err[loud].mean() < 0.5
    noise = log_mel(torch.randn_like(wave) * 0.05, cfg)
    assert (noise - mel)[..., 2:-2].abs()[loud].mean() > 1.5   # the check can tell a wrong sound


def test_word_tokenizer_pads_and_marks_unknown_words():
    tok = WordTokenizer(['a', 'bell'], max_len=4)
    ids = tok(['A bell, ringing.', 'bell'])
    assert ids.tolist() == [[2, 3, 1, 0], [3, 0, 0, 0]]


def test_toy_suite_roles(tiny):
    out = str(tiny / 'out')
    clip, clap, bind = (load_toy(n, out_dir=out) for n in ('clip', 'clap', 'imagebind'))
    images = np.zeros((2, 32, 32, 3), np.uint8)
    f = clip.encode_image(images)
    assert f.emb.shape == (2, 32)
    assert f.tokens.shape == (2, 16, 32)
    t = clap.encode_text(['a loud dog barking outdoors', 'a bell'])
    assert t.tokens.shape == (2, 16, 32)
    assert t.mask.sum(1).tolist() == [5, 2]
    assert bind.encode_audio(torch.zeros(2, 16000)).emb.shape == (2, 32)
    with pytest.raises(ValueError, match='no audio tower'):
        clip.encode_audio(torch.zeros(1, 16000))
    vq = load_toy('vq_audio', out_dir=out)
    mels = torch.randn(3, 64, 64) - 5
    ids = vq.encode(mels)
    assert ids.shape == (3, vq.n_tokens)
    assert int(ids.max()) < vq.codebook_size
    assert vq.decode(ids).shape == mels.shape


def test_sample_rebuilds_test_samples_and_files(tiny, real_data, tmp_path, capsys):
    ckpt_audio = str(tiny / 'out' / 'toyav_vq_audio')
    ckpt_image = str(tiny / 'out' / 'toyav_vq_image')
    sample.main(['--ckpt', ckpt_audio, '--index', '1', '--data_dir', str(tiny / 'data'),
                 '--out', str(tmp_path / 'a')])
    wave, sr = sf.read(tmp_path / 'a.reconstruct.wav')
    assert sr == 16000
    assert wave.ndim == 1
    assert len(wave) > 15000
    assert Image.open(tmp_path / 'a.reconstruct.spec.png').size == (64 * 4, 64 * 4)
    digit = next((real_data / 'fsdd' / 'recordings').glob('3_*.wav'))       # 8 kHz speech
    sample.main(['--ckpt', ckpt_audio, '--audio', str(digit), '--out', str(tmp_path / 'b')])
    assert sf.info(str(tmp_path / 'b.reconstruct.wav')).samplerate == 16000
    rgba = tmp_path / 'in.png'
    Image.new('RGBA', (50, 70), (255, 0, 0, 128)).save(rgba)
    sample.main(['--ckpt', ckpt_image, '--image', str(rgba), '--out', str(tmp_path / 'c')])
    raw = np.asarray(Image.open(tmp_path / 'c.reconstruct.raw.png'))
    assert raw.shape == (32, 32, 3)
    big = np.asarray(Image.open(tmp_path / 'c.reconstruct.png'))
    assert big.shape == (256, 256, 3)
    assert np.array_equal(big[::8, ::8], raw)
    assert not list(tmp_path.glob('*.tmp.*'))


def test_sample_names_a_broken_input_in_one_line(tiny, tmp_path):
    bad = tmp_path / 'broken.wav'
    bad.write_bytes(b'RIFF\x00\x00\x00\x00WAVEfmt garbage')
    with pytest.raises(SystemExit) as e:
        sample.main(['--ckpt', str(tiny / 'out' / 'toyav_vq_audio'), '--audio', str(bad)])
    assert 'broken.wav' in str(e.value)
    assert '\n' not in str(e.value)


def test_eval_enc_writes_the_contract(tiny, tmp_path):
    cfg = dict(evaluation.default_config(), out_dir=str(tmp_path / 'eval'),
               data_dir=str(tiny / 'data'), ckpt_dir=str(tiny / 'out'), batch_size=7)
    metrics = evaluation.evaluate(cfg)
    saved = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert saved == pytest.approx(metrics)
    expected_keys = ('enc.clip.source_acc', 'enc.clap.source_acc', 'enc.judge_audio.source_acc',
                     'enc.judge_image.env_acc', 'enc.vq_audio.source_acc',
                     'enc.clap.audio_fd_floor', 'enc.imagebind.audio_text_r_at_5',
                     'enc.ast.loud_probe_acc', 'enc.ast.env_probe_acc')
    for key in expected_keys:
        assert key in saved
    assert all(0 <= v <= 1 for k, v in saved.items() if k.endswith('_acc'))
    assert all(isinstance(v, float) for v in saved.values())
    assert '| enc.clip.source_acc |' in (tmp_path / 'eval' / 'table.md').read_text()


def test_eval_refuses_judges_of_other_mel_settings(tiny, tmp_path):
    data = tmp_path / 'data'
    shutil.copytree(tiny / 'data' / 'toyav', data / 'toyav')
    cfg = dict(evaluation.default_config(), out_dir=str(tmp_path / 'eval'), data_dir=str(data),
               ckpt_dir=str(tiny / 'out'))
    meta = json.loads((data / 'toyav' / 'meta.json').read_text())
    judges = evaluation.Judges(meta, cfg['ckpt_dir'])
    for net in judges.nets.values():
        assert not any(p.requires_grad for p in net.parameters())
    meta['mel']['hop'] += 1
    (data / 'toyav' / 'meta.json').write_text(json.dumps(meta))
    with pytest.raises(StaleCache, match='toyav_judge_audio.*mel settings'):
        evaluation.evaluate(cfg)
    assert not (tmp_path / 'eval').exists()
