"""sample.py on bad inputs and on frozen models that changed: each refused in one line naming the file or argument."""
import shutil

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import sample
import train
from conftest import tiny_config


def refusal(argv):
    """sample.main's exit message for argv, checked to be one line."""
    with pytest.raises(SystemExit) as e:
        sample.main(argv)
    message = str(e.value.code)
    assert message.startswith('error: ') and '\n' not in message
    return message


def copy_models(tiny, dest, names):
    """Copies of tiny's trained toy models under dest (dest/toyav_<name>/), to change without touching the shared ones."""
    for name in names:
        shutil.copytree(tiny / 'out' / f"toyav_{name}", dest / f"toyav_{name}")
    return dest


@pytest.fixture(scope='module')
def echoes(tiny, tmp_path_factory):
    """A tiny Visual Echoes run on the ids of tiny's tokenizers: its directory."""
    out = tmp_path_factory.mktemp('echoes') / 'toyav_echoes'
    train.train(tiny_config(tiny, 'clip', method='echoes', out_dir=str(out), max_iters=2, eval_interval=2,
                            model_args=dict(width=32, n_layer=1, n_dec_layer=1, n_head=2)))
    return out


@pytest.mark.parametrize('kind', ['empty', 'text', 'junk', 'truncated', 'missing'])
def test_an_unreadable_or_missing_checkpoint_is_named(tiny, tmp_path, kind):
    path = tmp_path / 'run' / 'ckpt.pt'
    path.parent.mkdir()
    good = (tiny / 'out' / 'toyav_vq_audio' / 'ckpt.pt').read_bytes()
    content = {'empty': b'', 'text': b'not a checkpoint\n', 'junk': b'junk\n', 'truncated': good[:len(good) // 2],
               'missing': None}[kind]
    if content is not None:
        path.write_bytes(content)
    message = refusal(['--ckpt', str(path.parent), '--index', '0', '--data_dir', str(tiny / 'data')])
    assert f"{path}: " in message
    assert ('no checkpoint' if kind == 'missing' else 'not a readable checkpoint') in message


def test_an_unreadable_tokenizer_behind_a_checkpoint_is_named(tiny, echoes, tmp_path):
    out = copy_models(tiny, tmp_path / 'out', ['vq_audio', 'vq_image'])
    bad = out / 'toyav_vq_image' / 'ckpt.pt'
    bad.write_bytes(b'')
    message = refusal(['--ckpt', str(echoes), '--ckpt_dir', str(out), '--index', '0', '--data_dir', str(tiny / 'data'),
                       '--steps', '1', '--out', str(tmp_path / 'x')])
    assert f"{bad}: not a readable checkpoint (empty file (0 bytes))" in message


@pytest.mark.parametrize('n', [1, 512])
def test_a_short_audio_clip_is_padded_to_the_clip_length(tiny, tmp_path, n):
    clip = tmp_path / 'short.wav'
    sf.write(clip, 0.5 * np.sin(np.arange(n) / 5), 16000)
    sample.main(['--ckpt', str(tiny / 'out' / 'toyav_vq_audio'), '--audio', str(clip), '--out', str(tmp_path / 'a')])
    assert len(sf.read(tmp_path / 'a.wav')[0]) > 15000


def test_a_long_audio_clip_keeps_its_loudest_window_and_an_empty_one_is_refused(tiny, tmp_path):
    tone = 0.5 * np.sin(np.arange(16000) / 5)
    sf.write(tmp_path / 'tone.wav', tone, 16000)
    sf.write(tmp_path / 'late.wav', np.concatenate([0.01 * tone, 0.01 * tone, tone]), 16000)
    for name in ('tone', 'late'):
        sample.main(['--ckpt', str(tiny / 'out' / 'toyav_vq_audio'), '--audio', str(tmp_path / f"{name}.wav"),
                     '--out', str(tmp_path / 'out' / name)])
    assert (tmp_path / 'out' / 'tone.wav').read_bytes() == (tmp_path / 'out' / 'late.wav').read_bytes()
    sf.write(tmp_path / 'empty.wav', np.zeros(0), 16000)
    message = refusal(['--ckpt', str(tiny / 'out' / 'toyav_vq_audio'), '--audio', str(tmp_path / 'empty.wav')])
    assert 'empty.wav: empty audio' in message


def test_a_video_for_a_checkpoint_that_is_not_a_v2a_mapper_is_refused(tiny, tmp_path):
    message = refusal(['--ckpt', str(tiny / 'out' / 'toyav_vq_image'), '--video', str(tmp_path / 'clip.mp4')])
    assert message.startswith('error: --video: ') and 'toyav_vq_image' in message and 'vq checkpoint' in message


@pytest.mark.parametrize('tokenizer,given,takes', [('vq_audio', '--image', '--audio'), ('vq_image', '--audio', '--image')])
def test_a_tokenizer_given_the_other_modality_says_what_it_takes(tiny, tmp_path, tokenizer, given, takes):
    Image.new('RGB', (40, 30), (0, 200, 0)).save(tmp_path / 'cat.png')
    sf.write(tmp_path / 'dog.wav', np.zeros(16000), 16000)
    media = str(tmp_path / ('cat.png' if given == '--image' else 'dog.wav'))
    ckpt = str(tiny / 'out' / f"toyav_{tokenizer}")
    message = refusal(['--ckpt', ckpt, given, media, '--out', str(tmp_path / 'x')])
    assert f"{ckpt} is an {tokenizer[3:]} tokenizer: it takes {takes} or --index" in message


@pytest.mark.parametrize('index', [16, -1])
def test_an_index_outside_the_test_split_names_it_and_its_size(tiny, index):
    message = refusal(['--ckpt', str(tiny / 'out' / 'toyav_vq_audio'), '--index', str(index), '--data_dir', str(tiny / 'data')])
    assert f"--index {index}: the test split of {tiny / 'data' / 'toyav'} has 16 samples" in message
