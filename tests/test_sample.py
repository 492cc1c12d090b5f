"""sample.py on bad inputs and on frozen models that changed: each refused in one line naming the file or argument."""
import shutil

import pytest

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
