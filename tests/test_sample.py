"""sample.py on bad inputs and on frozen models that changed.

Each is refused in one line naming the file or argument.
"""
import shutil

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import sample
import train
from conftest import TINY_ECHOES, TINY_T2A, tiny_config, tiny_v2a
import methods
from encoders import StaleCache
from methods import load_checkpoint
from methods import echoes as method


def refusal(argv):
    """sample.main's exit message for argv, checked to be one line."""
    with pytest.raises(SystemExit) as e:
        sample.main(argv)
    message = str(e.value.code)
    assert message.startswith('error: ')
    assert '\n' not in message
    return message


def copy_models(tiny, dest, names):
    """Copies of tiny's trained toy models under dest (dest/toyav_<name>/).

    They change without touching the shared ones.
    """
    for name in names:
        shutil.copytree(tiny / 'out' / f"toyav_{name}", dest / f"toyav_{name}")
    return dest


@pytest.fixture(scope='module')
def echoes(tiny, tmp_path_factory):
    """A tiny Visual Echoes run on the ids of tiny's tokenizers: its directory."""
    out = tmp_path_factory.mktemp('echoes') / 'toyav_echoes'
    train.train(tiny_config(tiny, 'clip', method='echoes', out_dir=str(out), max_iters=2,
                            eval_interval=2, model_args=TINY_ECHOES))
    return out


@pytest.fixture(scope='module')
def generators(tiny, tmp_path_factory):
    """A tiny text-to-audio latent diffusion run and a tiny V2A-Mapper run on tiny's features.

    Returns their directory.
    """
    root = tmp_path_factory.mktemp('generators')
    for name, spec in (('t2a', TINY_T2A), ('v2a', tiny_v2a(prior=False))):
        train.train(tiny_config(tiny, 'clip', out_dir=str(root / name), **spec))
    return root


def retrained(tiny, out, name):
    """Retrain the copy out/toyav_<name> of one of tiny's toy models with another seed.

    Returns its checkpoint path.
    """
    train.train(tiny_config(tiny, name, out_dir=str(out / f"toyav_{name}"), seed=7))
    return out / f"toyav_{name}" / 'ckpt.pt'


@pytest.mark.parametrize('tokenizer', ['vq_audio', 'vq_image'])
def test_echoes_refuses_a_tokenizer_it_was_not_trained_with(tiny, echoes, tmp_path, tokenizer):
    out = copy_models(tiny, tmp_path / 'out', ['vq_audio', 'vq_image'])
    model, ckpt = load_checkpoint(str(echoes / 'ckpt.pt'))
    argv = ['--ckpt', str(echoes), '--ckpt_dir', str(out), '--index', '0',
            '--data_dir', str(tiny / 'data'), '--steps', '1']
    options = methods.options(method.Pipeline, {})
    method.Pipeline(model, ckpt, str(out), **options)      # the tokenizers it was trained with
    sample.main(argv + ['--out', str(tmp_path / 'ok')])
    assert (tmp_path / 'ok.i2a.wav').exists()
    assert (tmp_path / 'ok.a2i.png').exists()
    path = retrained(tiny, out, tokenizer)
    with pytest.raises(StaleCache, match=f"^{path}: {tokenizer} checkpoint .* retrain the model"):
        method.Pipeline(model, ckpt, str(out), **options)
    message = refusal(argv + ['--out', str(tmp_path / 'stale')])
    assert message.startswith(f"error: {path}: ")
    assert 'this echoes model was trained with' in message
    assert not list(tmp_path.glob('stale*'))


@pytest.mark.parametrize('run,encoder', [('t2a', 'clap'), ('t2a', 'ae_audio'),
                                         ('v2a', 'clip'), ('v2a', 'ae_audio')])
def test_generators_refuse_an_encoder_or_latent_decoder_they_were_not_trained_with(
        tiny, generators, tmp_path, run, encoder):
    out = copy_models(tiny, tmp_path / 'out', ['clip', 'clap', 'ae_audio'])
    Image.new('RGB', (40, 30), (0, 200, 0)).save(tmp_path / 'cat.png')
    if run == 't2a':
        given = ['--text', 'a dog']
        task = 't2a'
    else:
        given = ['--image', str(tmp_path / 'cat.png'), '--generator', str(generators / 't2a')]
        task = 'i2a'
    argv = ['--ckpt', str(generators / run), '--ckpt_dir', str(out), '--steps', '1'] + given
    sample.main(argv + ['--out', str(tmp_path / 'ok')])
    assert (tmp_path / f"ok.{task}.wav").exists()
    path = retrained(tiny, out, encoder)
    message = refusal(argv + ['--out', str(tmp_path / 'stale')])
    assert message.startswith(f"error: {path}: {encoder} checkpoint ")
    assert 'retrain the model' in message


@pytest.mark.parametrize('kind', ['empty', 'text', 'junk', 'truncated', 'missing'])
def test_an_unreadable_or_missing_checkpoint_is_named(tiny, tmp_path, kind):
    path = tmp_path / 'run' / 'ckpt.pt'
    path.parent.mkdir()
    good = (tiny / 'out' / 'toyav_vq_audio' / 'ckpt.pt').read_bytes()
    contents = {'empty': b'', 'text': b'not a checkpoint\n', 'junk': b'junk\n',
                'truncated': good[:len(good) // 2], 'missing': None}
    content = contents[kind]
    if content is not None:
        path.write_bytes(content)
    message = refusal(['--ckpt', str(path.parent), '--index', '0',
                       '--data_dir', str(tiny / 'data')])
    assert f"{path}: " in message
    expected = 'no checkpoint' if kind == 'missing' else 'not a readable checkpoint'
    assert expected in message


def test_an_unreadable_tokenizer_behind_a_checkpoint_is_named(tiny, echoes, tmp_path):
    out = copy_models(tiny, tmp_path / 'out', ['vq_audio', 'vq_image'])
    bad = out / 'toyav_vq_image' / 'ckpt.pt'
    bad.write_bytes(b'')
    message = refusal(['--ckpt', str(echoes), '--ckpt_dir', str(out), '--index', '0',
                       '--data_dir', str(tiny / 'data'), '--steps', '1',
                       '--out', str(tmp_path / 'x')])
    assert f"{bad}: not a readable checkpoint (empty file (0 bytes))" in message


@pytest.mark.parametrize('n', [1, 512])
def test_a_short_audio_clip_is_padded_to_the_clip_length(tiny, tmp_path, n):
    clip = tmp_path / 'short.wav'
    sf.write(clip, 0.5 * np.sin(np.arange(n) / 5), 16000)
    sample.main(['--ckpt', str(tiny / 'out' / 'toyav_vq_audio'), '--audio', str(clip),
                 '--out', str(tmp_path / 'a')])
    assert len(sf.read(tmp_path / 'a.reconstruct.wav')[0]) > 15000


def test_a_long_audio_clip_keeps_its_loudest_window_and_an_empty_one_is_refused(tiny, tmp_path):
    ckpt = str(tiny / 'out' / 'toyav_vq_audio')
    tone = 0.5 * np.sin(np.arange(16000) / 5)
    sf.write(tmp_path / 'tone.wav', tone, 16000)
    sf.write(tmp_path / 'late.wav', np.concatenate([0.01 * tone, 0.01 * tone, tone]), 16000)
    for name in ('tone', 'late'):
        sample.main(['--ckpt', ckpt, '--audio', str(tmp_path / f"{name}.wav"),
                     '--out', str(tmp_path / 'out' / name)])
    from_tone = (tmp_path / 'out' / 'tone.reconstruct.wav').read_bytes()
    assert from_tone == (tmp_path / 'out' / 'late.reconstruct.wav').read_bytes()
    sf.write(tmp_path / 'empty.wav', np.zeros(0), 16000)
    message = refusal(['--ckpt', ckpt, '--audio', str(tmp_path / 'empty.wav')])
    assert 'empty.wav: empty audio' in message


def test_a_video_for_a_run_whose_pipeline_takes_none_is_refused(tiny, tmp_path):
    message = refusal(['--ckpt', str(tiny / 'out' / 'toyav_vq_image'),
                       '--video', str(tmp_path / 'clip.mp4')])
    assert message.startswith('error: --video: ')
    assert 'toyav_vq_image' in message
    assert 'takes no video' in message


def test_a_checkpoint_that_generates_nothing_is_named(tiny, tmp_path):
    Image.new('RGB', (40, 30), (0, 200, 0)).save(tmp_path / 'cat.png')
    message = refusal(['--ckpt', str(tiny / 'out' / 'toyav_clip'),
                       '--image', str(tmp_path / 'cat.png')])
    assert 'toyav_clip/ckpt.pt: a contrastive checkpoint (a frozen part' in message
    assert 'pipelines exist for' in message


@pytest.mark.parametrize('tokenizer,given,takes', [('vq_audio', '--image', '--audio'),
                                                   ('vq_image', '--audio', '--image')])
def test_a_tokenizer_given_the_other_modality_says_what_it_takes(tiny, tmp_path, tokenizer, given,
                                                                 takes):
    Image.new('RGB', (40, 30), (0, 200, 0)).save(tmp_path / 'cat.png')
    sf.write(tmp_path / 'dog.wav', np.zeros(16000), 16000)
    media = str(tmp_path / ('cat.png' if given == '--image' else 'dog.wav'))
    ckpt = str(tiny / 'out' / f"toyav_{tokenizer}")
    message = refusal(['--ckpt', ckpt, given, media, '--out', str(tmp_path / 'x')])
    assert f"{ckpt} takes {takes} (reconstruct) or --index, not {given}" in message


@pytest.mark.parametrize('index', [16, -1])
def test_an_index_outside_the_test_split_names_it_and_its_size(tiny, index):
    message = refusal(['--ckpt', str(tiny / 'out' / 'toyav_vq_audio'), '--index', str(index),
                       '--data_dir', str(tiny / 'data')])
    split = tiny / 'data' / 'toyav'
    assert f"--index {index}: the test split of {split} has 16 samples" in message


def test_help_keeps_the_docstring_layout_and_shows_every_default(capsys, monkeypatch):
    monkeypatch.setenv('COLUMNS', '200')
    with pytest.raises(SystemExit) as e:
        sample.main(['--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert sample.__doc__.splitlines()[2] in out               # an example line, unwrapped
    defaults = (('--seed SEED', '1337'), ('--gain GAIN', '1.0'), ('--ckpt_dir CKPT_DIR', 'out'),
                ('--dtype DTYPE', 'auto'))
    for flag, default in defaults:
        line = next(x for x in out.splitlines() if x.strip().startswith(flag))
        assert line.endswith(f"(default: {default})"), line
    assert '(default None: out/samples/<input>.<run>)' in out
    for key, cls in methods.PIPELINES.items():          # every pipeline option, with its default
        for name, (default, _) in cls.OPTIONS.items():
            assert f"--{name}={default!r}" in out.split(key, 1)[1], (key, name)
    head = out.splitlines()
    start = head.index('options:')
    end = head.index('pipeline options, given after the others as --name=value:')
    options = head[start:end]
    assert all(x.count('default') <= 1 for x in options)   # none said twice


def test_without_ckpt_the_default_run_for_the_inputs_is_named_or_its_command(tiny, echoes, tmp_path,
                                                                             monkeypatch, capsys):
    Image.new('RGB', (40, 30), (0, 200, 0)).save(tmp_path / 'cat.png')
    argv = ['--image', str(tmp_path / 'cat.png'), '--ckpt_dir', str(tiny / 'out'),
            '--out', str(tmp_path / 'x')]
    untrained = (str(tmp_path / 'nothing'), 'python train.py config/x.py')
    monkeypatch.setitem(methods.DEFAULT_RUNS, ('image',), untrained)
    message = refusal(argv)
    nothing = tmp_path / 'nothing'
    assert message == (f"error: the default run for image, {nothing}, is not trained yet: "
                       "python train.py config/x.py")
    trained = (str(echoes), 'python train.py config/echoes.py')
    monkeypatch.setitem(methods.DEFAULT_RUNS, ('image',), trained)
    sample.main(argv + ['--steps=1'])
    assert f"using {echoes} (the default run for image" in capsys.readouterr().out
    assert (tmp_path / 'x.i2a.wav').exists()
    assert (tmp_path / 'x.i2a.spec.png').exists()
    message = refusal(['--text', 'a dog', '--audio', str(tmp_path / 'cat.png')])
    assert message.startswith('error: no default run for audio + text')
