"""Real datasets through prepare.py (avmnist, vggsound, esc50, imagehear): splits, bad input."""
import argparse
import ast
import csv
import importlib
import inspect
import json
import re
import runpy
import shutil
import sys
import urllib.error
import urllib.request

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import data
import prepare
import train
from conftest import tiny_config
from data import SPLITS, avmnist, open_split, toyav
from encoders import MelConfig, WordTokenizer, load_audio, log_mel

SPEAKERS = ['george', 'jackson', 'lucas', 'nicolas', 'yweweler']


def run(*argv):
    prepare.main([str(a) for a in argv])


def read_split(root, split):
    """Every media and label field of a prepared split (open_split), captions, files and meta."""
    meta = json.loads((root / 'meta.json').read_text())
    data, _ = open_split(str(root.parent), root.name, split, list(meta['fields']))
    captions = json.loads((root / 'captions.json').read_text())[split]
    files = json.loads((root / 'files.json').read_text())[split]
    assert len(captions) == len(files) == meta['counts'][split]
    for field, spec in meta['fields'].items():
        assert data[field].shape == (len(files), *spec['shape']), field
        assert str(data[field].dtype) == spec['dtype'], field
    return {k: np.array(v) for k, v in data.items()}, captions, files, meta


def reported(err, name):
    """The lines of err that name a file or row."""
    return [line for line in err.splitlines() if name in line]


def reported_once(err, name, why):
    """Exactly one line of err names the file or row, and it gives the reason."""
    lines = reported(err, name)
    assert len(lines) == 1 and why in lines[0], (name, lines)


def train_tiny(root, dataset, name, **overrides):
    """A toy model of conftest's tiny sizes trained for two steps on data/<dataset> under root."""
    out_dir = str(root / 'out' / f"{dataset}_{name}")
    cfg = tiny_config(root, name, dataset=dataset, out_dir=out_dir, max_iters=2, eval_interval=2,
                      **overrides)
    train.train(cfg)


def refused(tmp_path, *argv):
    """The one-line error prepare.py ends with for argv; nothing is written under tmp_path/data."""
    with pytest.raises(SystemExit) as stop:
        run(*argv, '--data_dir', tmp_path / 'data')
    message = str(stop.value.code)
    assert message.startswith('error: ') and '\n' not in message
    assert not (tmp_path / 'data').exists()
    return message


# ---- every reader ----

def test_every_reader_declares_its_options():
    """read(src, **options): its own options have defaults and a help text, the rest are shared."""
    for name, reader in prepare.READERS.items():
        params = inspect.signature(reader.read).parameters
        own = {k for k, p in params.items() if p.default is not p.empty}
        assert list(params)[0] == 'src' and set(reader.OPTIONS) == own, name
        assert set(params) - own - {'src'} <= set(prepare.SHARED), name
        assert all(text.strip() for text in reader.OPTIONS.values()), name


@pytest.mark.parametrize('argv, why', [
    (['vggsound', '--copies', '2'],
     '--copies is an option of avmnist, not of vggsound (its options: --val_fraction, --n_frames)'),
    (['imagehear', '--val_fold', '3'],
     '--val_fold is an option of esc50, not of imagehear (its options: none)'),
    (['toyav', '--features', 'toy', '--p_mix', '0.5'],
     "--p_mix is an option of reading toyav's media"),
    (['toyav', '--src', 'DIR'], 'toyav: --src DIR: the world is generated from --seed'),
    (['avmnist', '--test_speaker', 'lucas'],
     'avmnist: --test_speaker lucas holds a speaker out only with --split speaker'),
    (['avmnist', '--split', 'random'], 'avmnist: --split random is neither fsdd nor speaker'),
])
def test_an_option_for_another_dataset_is_refused(argv, why, tmp_path):
    assert refused(tmp_path, *argv).startswith(f"error: {why}")


@pytest.mark.parametrize('dataset, expected', [
    ('vggsound', r'raw/vggsound/vggsound.csv: not found; VGGSound is read from '
                 r'.*/raw/vggsound/vggsound.csv \(the official csv, '
                 r'https://www.robots.ox.ac.uk/~vgg/data/vggsound/vggsound.csv\) and the clips '
                 r'.*/raw/vggsound/video/<youtube_id>_<start:06d>.mp4 .*; pass --src DIR'),
    ('esc50', r'raw/esc50/meta/esc50.csv: not found \(nor .*raw/esc50/esc50.csv\); ESC-50 is read '
              r'from .*raw/esc50 laid out as its repository https://github.com/karolpiczak/ESC-50 '
              r'.*; pass --src DIR'),
    ('imagehear', r'raw/imagehear: not found; ImageHear '
                  r'\(https://pages.cs.huji.ac.il/adiyoss-lab/im2wav/\) is read from one folder '
                  r'per class, .*raw/imagehear/<class>/\*.jpg\|jpeg\|png; pass --src DIR'),
])
def test_without_src_a_dataset_is_read_from_its_documented_place(dataset, expected, tmp_path):
    """No --src and nothing at <data_dir>/raw/<dataset>/: one line says what layout is expected."""
    assert re.search(expected, refused(tmp_path, dataset)), expected


def test_prompts_of_a_dataset_without_them_is_a_clear_error():
    assert data.prompts('toyav') == toyav.prompts() and data.prompts('avmnist') == avmnist.prompts()
    for name in ('vggsound', 'esc50', 'imagehear'):
        with pytest.raises(ValueError, match=f"^dataset {name}: no zero-shot prompts"):
            data.prompts(name)


def test_captions_are_tokenised_on_words():
    """Punctuation splits words and is dropped; toyav's and avmnist's captions keep their words."""
    words = WordTokenizer.words("Cars (BMW) bay) conga/bongo accelerating, can't 'stop' 2nd-hand.")
    assert words == ['cars', 'bmw', 'bay', 'conga', 'bongo', 'accelerating', "can't", 'stop', '2nd',
                     'hand']
    _, captions = toyav.generate(60, 0)
    texts = [c[k] for c in captions for k in ('caption', 'text', 'visual')]
    texts += sum(toyav.prompts(), [])
    assert all(WordTokenizer.words(t) == t.split() for t in texts)
    assert WordTokenizer.vocabulary(texts) == toyav.vocabulary()
    digits = [avmnist.caption(d)['caption'] for d in range(10)] + sum(avmnist.prompts(), [])
    words = {'a', 'person', 'saying', 'the', 'digit', *avmnist.DIGITS}
    assert WordTokenizer.vocabulary(digits) == sorted(words)


# ---- avmnist ----

@pytest.fixture(scope='module')
def avmnist_root(real_data, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp('avmnist')
    run('avmnist', '--src', real_data, '--data_dir', data_dir, '--split', 'speaker',
        '--test_speaker', 'lucas')
    return data_dir / 'avmnist'


def fsdd_name(file):
    """(digit, speaker, take) from fsdd/recordings/<digit>_<speaker>_<take>.wav."""
    digit, speaker, take = file.split('/')[-1][:-4].split('_')
    return int(digit), speaker, int(take)


def test_avmnist_has_toyav_fields_and_shapes(avmnist_root):
    meta = json.loads((avmnist_root / 'meta.json').read_text())
    assert meta['counts'] == dict(train=1800, val=200, test=500)   # test: lucas; val: others' 0-4
    assert meta['mel'] == MelConfig().dict() and meta['image_size'] == 32
    assert meta['classes']['speaker'] == SPEAKERS and meta['classes']['sources'] == avmnist.DIGITS
    data, captions, _, _ = read_split(avmnist_root, 'test')
    assert data['image'].shape == (500, 32, 32, 3) and data['image'].dtype == np.uint8
    assert data['wave'].shape == (500, 16000) and data['wave'].dtype == np.float32
    assert data['mel'].shape == (500, 64, 64) and data['caption_ids'].shape == (500, 16)
    assert data['sources'].dtype == np.uint8 and (data['sources'].sum(1) == 1).all()
    assert data['speaker'].dtype == np.int64
    expected = log_mel(data['wave'][:4], MelConfig())
    torch.testing.assert_close(torch.from_numpy(data['mel'][:4]), expected)
    known = (data['caption_ids'] > 1).sum(1)                   # words that are not unknown (1)
    assert known.tolist() == [len(c['caption'].split()) for c in captions]


def test_avmnist_labels_match_fsdd_names_and_mnist(avmnist_root, real_data):
    mnist = real_data / 'mnist'
    images = avmnist.read_idx(mnist / avmnist.MNIST_FILES[0])
    labels = avmnist.read_idx(mnist / avmnist.MNIST_FILES[1])
    assert images.shape == (8000, 28, 28) and labels.max() == 9
    for split in ('train', 'val', 'test'):
        data, captions, files, meta = read_split(avmnist_root, split)
        digits = np.array([fsdd_name(f)[0] for f in files])
        np.testing.assert_array_equal(data['sources'].argmax(1), digits)
        np.testing.assert_array_equal(data['label'], digits)
        np.testing.assert_array_equal(labels[data['mnist_index']], digits)   # the image's digit too
        speakers = [meta['classes']['speaker'][s] for s in data['speaker']]
        assert speakers == [fsdd_name(f)[1] for f in files]
        assert all(avmnist.DIGITS[d] in c['caption'] for d, c in zip(digits, captions))
        assert all(c['caption'] == f"{c['text']} {c['visual']}" for c in captions)
    img = data['image'][:20].astype(float)                                    # (20, 32, 32, 3)
    assert (img == img[..., :1]).all()                                        # gray as RGB
    grays = [Image.fromarray(i[..., 0].astype(np.uint8)) for i in img]
    small = np.stack([np.asarray(g.resize((28, 28))) for g in grays])          # (20, 28, 28)
    for a, b in zip(small, images[data['mnist_index'][:20]]):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    for i in range(5):                                                    # FSDD digits: under 1 s
        y = load_audio(real_data / files[i], 16000)
        assert len(y) < 16000 and not data['wave'][i, len(y):].any()
        np.testing.assert_allclose(data['wave'][i, :len(y)], y)


def test_avmnist_held_out_speaker_only_in_test_and_image_pools_disjoint(avmnist_root):
    splits = {s: read_split(avmnist_root, s) for s in ('train', 'val', 'test')}
    who = {s: {fsdd_name(f)[1] for f in files} for s, (_, _, files, _) in splits.items()}
    assert who['test'] == {'lucas'} and 'lucas' not in who['train'] | who['val']
    assert all(fsdd_name(f)[2] < 5 for f in splits['val'][2])
    assert all(fsdd_name(f)[2] >= 5 for f in splits['train'][2])
    pools = {s: set(d['mnist_index'].tolist()) for s, (d, _, _, _) in splits.items()}
    assert not pools['train'] & pools['val'] and not pools['train'] & pools['test']
    assert not pools['val'] & pools['test']


def test_avmnist_default_split_is_fsdds_own(real_data, tmp_path, capsys):
    """Recordings 0-4 of every speaker are test, 5-9 val, 10-49 train: every speaker in each."""
    run('avmnist', '--src', real_data, '--data_dir', tmp_path)
    root = tmp_path / 'avmnist'
    meta = json.loads((root / 'meta.json').read_text())
    assert meta['split'] == 'fsdd' and meta['test_speaker'] is None
    assert meta['counts'] == dict(train=2000, val=250, test=250)
    splits = {s: read_split(root, s) for s in SPLITS}
    names = {s: [fsdd_name(f) for f in files] for s, (_, _, files, _) in splits.items()}
    takes = {s: {take for _, _, take in xs} for s, xs in names.items()}
    assert takes == dict(train=set(range(10, 50)), val=set(range(5, 10)), test=set(range(5)))
    for xs in names.values():
        assert {speaker for _, speaker, _ in xs} == set(SPEAKERS)
        assert {digit for digit, _, _ in xs} == set(range(10))
    files = [set(f) for _, _, f, _ in splits.values()]
    assert sum(map(len, files)) == len(set.union(*files)) == 2500             # disjoint, all used
    pools = [set(d['mnist_index'].tolist()) for d, _, _, _ in splits.values()]
    assert sum(map(len, pools)) == len(set.union(*pools))
    assert 'warning' not in capsys.readouterr().err                           # no silent recording


def small_fsdd(real_data, src):
    """A --src folder under src: MNIST and takes 0 and 7 of every FSDD speaker and digit, linked."""
    real_data = real_data.resolve()
    (src / 'fsdd' / 'recordings').mkdir(parents=True)
    (src / 'mnist').symlink_to(real_data / 'mnist')
    for f in (real_data / 'fsdd' / 'recordings').glob('*.wav'):
        if fsdd_name(f.name)[2] in (0, 7):
            (src / 'fsdd' / 'recordings' / f.name).symlink_to(f)
    return src


def test_avmnist_speed_perturbed_copies_only_in_train(real_data, tmp_path):
    src = small_fsdd(real_data, tmp_path / 'src')
    run('avmnist', '--src', src, '--data_dir', tmp_path / 'data', '--split', 'speaker',
        '--copies', '2', '--speed', '0.2', '--peak', '0.5')
    root = tmp_path / 'data' / 'avmnist'
    counts = json.loads((root / 'meta.json').read_text())['counts']
    assert counts == dict(train=120, val=40, test=20)
    data, _, files, _ = read_split(root, 'train')
    np.testing.assert_array_equal(data['perturbed'], np.tile([0, 1, 1], 40))
    assert files[0::3] == files[1::3] == files[2::3]                 # copies follow their original
    for field in ('label', 'speaker'):
        np.testing.assert_array_equal(data[field][0::3], data[field][1::3])
    wave = data['wave']                                                               # (120, 16000)
    np.testing.assert_allclose(np.abs(wave).max(1), 0.5, rtol=1e-5)  # every clip at one peak
    voiced = (np.abs(wave) > 1e-3).sum(1)
    assert not np.isclose(wave[0::3], wave[1::3]).all(1).any()
    assert (voiced[1::3] != voiced[0::3]).mean() > 0.9               # a new speed, a new length
    assert all((read_split(root, s)[0]['perturbed'] == 0).all() for s in ('val', 'test'))


def test_avmnist_pairs_give_each_recording_distinct_images_of_its_digit(real_data, tmp_path):
    src = small_fsdd(real_data, tmp_path / 'src')
    run('avmnist', '--src', src, '--data_dir', tmp_path / 'data', '--pairs', '3')
    root = tmp_path / 'data' / 'avmnist'
    meta = json.loads((root / 'meta.json').read_text())
    assert meta['pairs'] == 3 and meta['counts'] == dict(train=0, val=150, test=150)
    mnist = real_data.resolve() / 'mnist'
    labels = avmnist.read_idx(mnist / avmnist.MNIST_FILES[1])
    data, _, files, _ = read_split(root, 'test')
    assert files[0::3] == files[1::3] == files[2::3]                 # each recording three times
    np.testing.assert_array_equal(data['wave'][0::3], data['wave'][2::3])
    index = data['mnist_index']                                                       # (150,)
    assert len(set(index.tolist())) == 150                           # 150 distinct images
    np.testing.assert_array_equal(labels[index], data['label'])      # each of the spoken digit
    with pytest.raises(SystemExit, match='--pairs 0: every recording needs at least one image'):
        run('avmnist', '--src', src, '--data_dir', tmp_path / 'data', '--pairs', '0')


def test_any_speaker_can_be_held_out_and_bad_recordings_are_reported(real_data, tmp_path, capsys):
    real_data = real_data.resolve()
    src = small_fsdd(real_data, tmp_path / 'src')
    (src / 'fsdd' / 'recordings' / '3_lucas_9.wav').write_text('not audio\n' * 20)
    george = real_data / 'fsdd' / 'recordings' / '0_george_0.wav'
    (src / 'fsdd' / 'recordings' / 'hello.wav').symlink_to(george)
    for speaker in SPEAKERS:
        run('avmnist', '--src', src, '--data_dir', tmp_path / 'data', '--split', 'speaker',
            '--test_speaker', speaker)
        root = tmp_path / 'data' / 'avmnist'
        test = read_split(root, 'test')[2]
        assert {fsdd_name(f)[1] for f in test} == {speaker} and len(test) == 20
        others = read_split(root, 'train')[2] + read_split(root, 'val')[2]
        assert all(fsdd_name(f)[1] != speaker for f in others)
        err = capsys.readouterr().err
        reported_once(err, '3_lucas_9.wav', 'not a readable audio file')
        reported_once(err, 'hello.wav', 'not named')
    with pytest.raises(SystemExit, match='none of the speakers.*george, jackson'):
        run('avmnist', '--src', src, '--data_dir', tmp_path / 'data', '--split', 'speaker',
            '--test_speaker', 'theo')


def test_avmnist_without_network_fails_clearly(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError('no network')
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    with pytest.raises(SystemExit, match='cannot download https://github.com/.*no network.*--src'):
        run('avmnist', '--data_dir', tmp_path)
    assert not (tmp_path / 'avmnist').exists() and not list(tmp_path.rglob('*.tmp'))


def test_toy_suite_trains_on_avmnist(avmnist_root, tmp_path):
    data_dir = avmnist_root.parent
    for name in ('clip', 'clap', 'vq_audio', 'vq_image'):
        train_tiny(tmp_path, 'avmnist', name, data_dir=str(data_dir))
    judges = (('config/avmnist_judge_audio.py', 2), ('config/avmnist_judge_image.py', 1))
    for config, heads in judges:
        cfg = train.configure(train.default_config(), [config])
        cfg['model_args'] = {**cfg['model_args'], 'width': 32, 'n_head': 2}
        cfg.update(data_dir=str(data_dir), out_dir=str(tmp_path / cfg['out_dir']), batch_size=8,
                   max_iters=2, eval_iters=1)
        ckpt = torch.load(train.train(cfg), weights_only=True)
        assert ckpt['data']['dataset'] == 'avmnist' and len(ckpt['model_args']['heads']) == heads


# ---- vggsound ----

def csv_rows(path):
    """The rows of VGGSound's csv as dicts."""
    lines = path.read_text().splitlines()
    return [dict(zip(('id', 'start', 'label', 'split'), r)) for r in csv.reader(lines)]


def test_vggsound_prepares_all_six_real_clips(real_data, tmp_path):
    run('vggsound', '--src', real_data / 'vggsound', '--data_dir', tmp_path)
    rows = csv_rows(real_data / 'vggsound' / 'vggsound.csv')
    root = tmp_path / 'vggsound'
    meta = json.loads((root / 'meta.json').read_text())
    assert meta['counts']['train'] + meta['counts']['val'] == 4 and meta['counts']['test'] == 2
    assert meta['skipped'] == 0
    assert meta['classes']['sources'] == sorted({r['label'] for r in rows})
    seen = set()
    for split in ('train', 'val', 'test'):
        data, captions, files, _ = read_split(root, split)              # the empty val split too
        assert data['frames'].shape[1:] == (10, 32, 32, 3) and data['wave'].shape[1:] == (16000,)
        np.testing.assert_array_equal(data['image'], data['frames'][:, 5])
        for i, f in enumerate(files):
            row = next(r for r in rows if f.split('/')[-1].startswith(r['id'] + '_'))
            assert (row['split'] == 'test') == (split == 'test')
            assert meta['classes']['label'][data['label'][i]] == row['label']
            assert data['sources'][i].argmax() == data['label'][i]
            assert data['sources'][i].sum() == 1
            assert captions[i]['caption'] == f"the sound of {row['label']}"
            assert np.sqrt(np.mean(data['wave'][i] ** 2)) > 1e-3         # real sound, not padding
            change = data['frames'][i, 0].astype(int) - data['frames'][i, -1]
            assert np.abs(change).mean() > 1                              # frames over time
            seen.add(row['id'])
    assert seen == {r['id'] for r in rows}


def remux_video_only(src, dst):
    """Copy of a clip's video stream alone: a clip without an audio track."""
    with av.open(str(src)) as inp, av.open(str(dst), 'w') as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)


def test_vggsound_reports_missing_corrupt_and_silent_clips(real_data, tmp_path, capsys):
    real = real_data.resolve() / 'vggsound'
    video = tmp_path / 'src' / 'video'
    video.mkdir(parents=True)
    for f in (real / 'video').glob('*.mp4'):
        (video / f.name).symlink_to(f)
    dog = (real / 'video' / 'vas_dog_02677_000000.mp4').read_bytes()
    (video / 'corruptclip_000000.mp4').write_bytes(dog[:len(dog) // 2])
    remux_video_only(real / 'video' / 'vas_drum_02480_000000.mp4',
                     video / 'silentclip_3000_13000.mp4')
    extra = ('corruptclip,0,dog barking,train\nsilentclip,3,playing drum kit,test\n'
             'missingclip,12,baby crying,train\n')
    (tmp_path / 'src' / 'vggsound.csv').write_text((real / 'vggsound.csv').read_text() + extra)
    run('vggsound', '--src', tmp_path / 'src', '--data_dir', tmp_path / 'data')
    err = capsys.readouterr().err
    reported_once(err, 'corruptclip', 'not a readable audio file')
    reported_once(err, 'silentclip', 'no audio stream')
    reported_once(err, 'missingclip', 'no clip')
    assert not any(reported(err, f.stem) for f in (real / 'video').glob('*.mp4'))
    meta = json.loads((tmp_path / 'data' / 'vggsound' / 'meta.json').read_text())
    assert sum(meta['counts'].values()) == 6 and meta['skipped'] == 3


def vggsound_src(real_data, src, csv_text, clips=None, place=lambda i, name: name):
    """A --src folder: real clips named from clips (all: None) at video/<place(i, name)>, a csv."""
    real = real_data.resolve() / 'vggsound' / 'video'
    chosen = [f for f in sorted(real.glob('*.mp4')) if clips is None or f.name.startswith(clips)]
    for i, f in enumerate(chosen):
        dest = src / 'video' / place(i, f.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(f)
    (src / 'video').mkdir(parents=True, exist_ok=True)
    (src / 'vggsound.csv').write_text(csv_text, encoding='utf-8')
    return src


def real_csv(real_data):
    """The text of the real VGGSound csv."""
    return (real_data / 'vggsound' / 'vggsound.csv').read_text()


def test_vggsound_reads_the_default_folder_and_a_csv_with_a_bom(real_data, tmp_path, capsys):
    """A spreadsheet's "CSV UTF-8" starts with U+FEFF: its first row is a clip like the others."""
    vggsound_src(real_data, tmp_path / 'data' / 'raw' / 'vggsound', '\ufeff' + real_csv(real_data))
    run('vggsound', '--data_dir', tmp_path / 'data')
    assert 'skipped' not in capsys.readouterr().err
    meta = json.loads((tmp_path / 'data' / 'vggsound' / 'meta.json').read_text())
    assert sum(meta['counts'].values()) == 6 and meta['skipped'] == 0
    assert 'vas_dog_02677_000000.mp4' in (tmp_path / 'data' / 'vggsound' / 'files.json').read_text()


@pytest.mark.parametrize('place, why', [
    (lambda i, name: f"class{i % 2}/{name}", '6 in subfolders'),
    (lambda i, name: f"video_{2754 + i:05d}.mp4", '6 not named like a clip'),
    (lambda i, name: f"other{name}", '6 named like a clip but not in the csv'),
])
def test_vggsound_folder_without_a_matching_clip_is_an_error(place, why, real_data, tmp_path):
    vggsound_src(real_data, tmp_path / 'src', real_csv(real_data), place=place)
    message = refused(tmp_path, 'vggsound', '--src', tmp_path / 'src')
    assert f"no usable clip among its 6 files ({why})" in message
    assert message.endswith('named <youtube_id>_<start:06d>.mp4 or '
                            '<youtube_id>_<start_ms>_<end_ms>.mp4 (or .mkv, .webm)')


def test_vggsound_rows_without_a_clip_in_one_line(real_data, tmp_path, capsys):
    """A big csv beside a partial mirror: one line counts the missing rows; classes: the clips'."""
    absent = ''.join(f"absent{i:05d},{i % 10},label {i % 300},{'train' if i % 5 else 'test'}\n"
                     for i in range(20000))
    text = absent + real_csv(real_data)
    src = vggsound_src(real_data, tmp_path / 'src', text, clips=('0DC', '1aD'))
    run('vggsound', '--src', src, '--data_dir', tmp_path / 'data')
    lines = [line for line in capsys.readouterr().err.splitlines() if 'absent' in line]
    assert len(lines) == 1 and lines[0].startswith("skipped 20004 of the csv's rows, no clip")
    assert 'row 1 absent00000_000000, row 2 absent00001_000001, ' in lines[0]
    assert lines[0].endswith('and 19999 more (--list_missing lists them all)')
    meta = json.loads((tmp_path / 'data' / 'vggsound' / 'meta.json').read_text())
    assert meta['classes']['sources'] == ['baby crying', 'female singing']
    assert meta['skipped'] == 20004
    run('vggsound', '--src', src, '--data_dir', tmp_path / 'data', '--list_missing')
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith('skipped')]
    assert len(lines) == 20004 and lines[0].startswith('skipped row 1 absent00000_000000: no clip')


def test_vggsound_refuses_a_clip_in_two_splits_reads_a_repeat_once(real_data, tmp_path, capsys):
    leak = real_csv(real_data) + 'vas_dog_02677,0,dog barking,test\n'
    src = vggsound_src(real_data, tmp_path / 'leak', leak, clips='vas_dog')
    message = refused(tmp_path, 'vggsound', '--src', src)
    assert 'a leak between them (1): vas_dog_02677_000000 (row 1 train, row 7 test)' in message
    repeat = real_csv(real_data) + 'vas_dog_02677,0,dog barking,train\n' * 2
    run('vggsound', '--src', vggsound_src(real_data, tmp_path / 'repeat', repeat, clips='vas_dog'),
        '--data_dir', tmp_path / 'data')
    lines = reported(capsys.readouterr().err, 'repeated')
    assert len(lines) == 1 and lines[0].endswith('2 repeated rows dropped (the clip and split of '
                                                  'an earlier row): rows 7, 8')
    meta = json.loads((tmp_path / 'data' / 'vggsound' / 'meta.json').read_text())
    assert sum(meta['counts'].values()) == 1


def test_vggsound_empty_val_split_is_warned_about(real_data, tmp_path, capsys):
    src = vggsound_src(real_data, tmp_path / 'src', real_csv(real_data), clips=('vas_', '0nib'))
    run('vggsound', '--src', src, '--data_dir', tmp_path / 'data')
    err = capsys.readouterr().err
    lines = reported(err, 'val split')
    assert lines == ['warning: vggsound: the val split is empty (--val_fraction 0.05 chose none of '
                     'the 4 train clips); pass a larger --val_fraction']
    counts = json.loads((tmp_path / 'data' / 'vggsound' / 'meta.json').read_text())['counts']
    empty_test = ["warning: vggsound: the test split is empty (no usable clip of the csv's test "
                  "rows)"]
    assert reported(err, 'test split') == (empty_test if counts['test'] == 0 else [])
    run('vggsound', '--src', src, '--data_dir', tmp_path / 'data', '--val_fraction', '0.5')
    assert not reported(capsys.readouterr().err, 'val split')
    meta = json.loads((tmp_path / 'data' / 'vggsound' / 'meta.json').read_text())
    assert meta['counts']['val'] > 0


def test_vggsound_captions_keep_words_not_punctuation(real_data, tmp_path):
    labels = real_csv(real_data).replace('dog barking', '"dog (bmw) barking, conga/bongo"')
    run('vggsound', '--src', vggsound_src(real_data, tmp_path / 'src', labels, clips='vas_dog'),
        '--data_dir', tmp_path / 'data')
    data, captions, _, meta = read_split(tmp_path / 'data' / 'vggsound', 'train')
    words = ['the', 'sound', 'of', 'dog', 'bmw', 'barking', 'conga', 'bongo']
    assert meta['vocab'] == sorted(words)
    assert (data['caption_ids'][0] > 1).sum() == 8 and '(bmw)' in captions[0]['caption']


# ---- esc50 ----

@pytest.fixture(scope='module')
def esc50_src(real_data, tmp_path_factory):
    """The real ESC-50 subset plus a row whose file is missing and one whose file is not audio."""
    src = tmp_path_factory.mktemp('esc50src')
    real_data = real_data.resolve()
    (src / 'audio').mkdir()
    for f in (real_data / 'esc50' / 'audio').glob('*.wav'):
        (src / 'audio' / f.name).symlink_to(f)
    (src / 'audio' / 'notes.wav').write_text('not audio\n' * 20)
    extra = 'missing.wav,2,0,dog,True,1,A\nnotes.wav,2,0,dog,True,2,A\n'
    (src / 'esc50.csv').write_text((real_data / 'esc50' / 'esc50.csv').read_text() + extra)
    return src


def test_esc50_audio_only_split_by_fold(esc50_src, tmp_path, capsys):
    run('esc50', '--src', esc50_src, '--data_dir', tmp_path, '--test_fold', 4, '--val_fold', 3)
    err = capsys.readouterr().err
    reported_once(err, 'missing.wav', 'not found')
    reported_once(err, 'notes.wav', 'not a readable audio file')
    lines = (esc50_src / 'esc50.csv').read_text().splitlines()
    rows = {r['filename']: r for r in csv.DictReader(lines)}
    for split, fold, n in (('train', 2, 2), ('val', 3, 1), ('test', 4, 37)):
        data, captions, files, meta = read_split(tmp_path / 'esc50', split)
        assert 'image' not in data and data['mel'].shape == (n, 64, 64)
        assert data['wave'].shape == (n, 16000)
        for i, f in enumerate(files):
            row = rows[f.split('/')[-1]]
            assert int(row['fold']) == fold == data['fold'][i]
            assert meta['classes']['label'][data['label'][i]] == row['category']
            assert meta['classes']['sources'][data['sources'][i].argmax()] == row['category']
            assert captions[i]['caption'].startswith('the sound of ')
    captions = json.loads((tmp_path / 'esc50' / 'captions.json').read_text())['test']
    assert {'caption': 'the sound of a dog barking'} in captions


def test_feature_cache_of_an_audio_only_dataset(esc50_src, tmp_path, capsys):
    run('esc50', '--src', esc50_src, '--data_dir', tmp_path / 'data', '--test_fold', 4,
        '--val_fold', 3)
    for name in ('clap', 'vq_audio'):
        train_tiny(tmp_path, 'esc50', name)
    run('esc50', '--features', 'toy', '--data_dir', tmp_path / 'data', '--out_dir',
        tmp_path / 'out')
    assert 'no clip, imagebind, vq_image, ae_image features' in capsys.readouterr().out
    feats = json.loads((tmp_path / 'data' / 'esc50' / 'features.json').read_text())
    assert sorted(feats['encoders']) == ['clap', 'vq_audio']
    for split, n in (('train', 2), ('val', 1), ('test', 37)):
        fields = ['clap_audio_emb', 'clap_text_emb', 'vq_audio_ids']
        data, _ = open_split(str(tmp_path / 'data'), 'esc50', split, fields, str(tmp_path / 'out'))
        assert data['clap_audio_emb'].shape == (n, 32) and len(data['vq_audio_ids']) == n
    with pytest.raises(FileNotFoundError, match='no field image'):
        open_split(str(tmp_path / 'data'), 'esc50', 'train', ['image'])


def test_esc50_reads_a_csv_with_a_byte_order_mark(esc50_src, tmp_path, capsys):
    (tmp_path / 'src').mkdir()
    (tmp_path / 'src' / 'audio').symlink_to(esc50_src / 'audio')
    text = (esc50_src / 'esc50.csv').read_text()
    (tmp_path / 'src' / 'esc50.csv').write_text('\ufeff' + text, 'utf-8')
    run('esc50', '--src', tmp_path / 'src', '--data_dir', tmp_path / 'data')
    meta = json.loads((tmp_path / 'data' / 'esc50' / 'meta.json').read_text())
    assert sum(meta['counts'].values()) == 40 and meta['skipped'] == 2
    assert len(meta['classes']['label']) == 20


def test_esc50_folder_without_the_csvs_files_is_an_error(esc50_src, tmp_path):
    """Recordings sorted into per-class subfolders: none is where the csv says."""
    (tmp_path / 'src' / 'audio' / 'dogs').mkdir(parents=True)
    (tmp_path / 'src' / 'esc50.csv').symlink_to(esc50_src / 'esc50.csv')
    for f in sorted((esc50_src / 'audio').glob('*.wav')):
        (tmp_path / 'src' / 'audio' / 'dogs' / f.name).symlink_to(f)
    message = refused(tmp_path, 'esc50', '--src', tmp_path / 'src')
    assert re.search(r"audio: none of the 42 recordings of .*esc50.csv is usable \(42 not found, "
                     r"0 unreadable\); it holds 41 files \(41 in subfolders\) and should hold each "
                     r"csv filename directly, e.g. 4-161099-A-47.wav$", message), message


def write_esc50(src, recordings):
    """An ESC-50 folder of {filename: (fold, wave at 44.1 kHz, mono (T,) or stereo (T, 2))}."""
    (src / 'audio').mkdir(parents=True)
    rows = ['filename,fold,target,category']
    for name, (fold, wave) in recordings.items():
        sf.write(src / 'audio' / name, wave, 44100)
        rows.append(f"{name},{fold},0,dog")
    (src / 'esc50.csv').write_text('\n'.join(rows) + '\n')
    return src


def test_silent_recordings_and_empty_splits_are_warned_about(tmp_path, capsys):
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)                # 1 s at 44.1 kHz
    src = write_esc50(tmp_path / 'src', {
        'sound.wav': (1, tone), 'zeros.wav': (1, np.zeros(44100)),
        'cancel.wav': (5, np.stack([tone, -tone], 1)),                             # L + R = 0
        'quiet.wav': (5, 1e-3 * tone),                                     # quiet, not silent
    })
    run('esc50', '--src', src, '--data_dir', tmp_path / 'data')
    err = capsys.readouterr().err
    (silent,) = reported(err, 'silent')
    assert silent.startswith('warning: 2 silent clips')
    assert silent.endswith(': audio/zeros.wav, audio/cancel.wav')
    assert reported(err, 'val split') == ['warning: esc50: the val split is empty (no recording '
                                          'of --val_fold 4; the folds read are 1, 5); pass one of '
                                          'them as --val_fold']
    run('esc50', '--src', src, '--data_dir', tmp_path / 'data', '--val_fold', 1,
        '--test_fold', 2)
    assert reported(capsys.readouterr().err, 'split is empty') == [
        'warning: esc50: the test split is empty (no recording of --test_fold 2; the folds read '
        'are 1, 5); pass one of them as --test_fold']


# ---- imagehear ----

@pytest.fixture
def imagehear_src(tmp_path):
    """Two class folders: an RGB jpeg, a gray png, an RGBA png (left half clear), a broken png."""
    src = tmp_path / 'imagehear'
    (src / 'dog').mkdir(parents=True)
    (src / 'church_bells').mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).save(src / 'dog' / 'rgb.jpg')
    ramp = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (50, 1))                  # (50, 50)
    Image.fromarray(ramp, 'L').save(src / 'dog' / 'gray.png')
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :, 0] = 200                                                       # red
    rgba[:, 16:, 3] = 255                                                     # opaque right half
    Image.fromarray(rgba, 'RGBA').save(src / 'church_bells' / 'rgba.png')
    (src / 'church_bells' / 'broken.png').write_text('not an image\n')
    (src / 'church_bells' / 'notes.txt').write_text('not an image either, and not one by name\n')
    return src


def test_imagehear_end_to_end(imagehear_src, tmp_path, capsys):
    run('imagehear', '--src', imagehear_src, '--data_dir', tmp_path / 'data')
    err = capsys.readouterr().err
    reported_once(err, 'broken.png', 'not a readable image')
    assert not reported(err, 'notes.txt')
    root = tmp_path / 'data' / 'imagehear'
    data, captions, files, meta = read_split(root, 'test')
    assert meta['counts'] == dict(train=0, val=0, test=3) and 'mel' not in meta['fields']
    assert files == ['church_bells/rgba.png', 'dog/gray.png', 'dog/rgb.jpg']
    assert data['image'].shape == (3, 32, 32, 3) and data['image'].dtype == np.uint8
    rgba = data['image'][0].astype(int)
    gray = data['image'][1].astype(int)
    assert (rgba[:, :14] == 255).all() and (rgba[:, 18:] == [200, 0, 0]).all()   # clear -> white
    assert (gray == gray[..., :1]).all() and gray[0, -1, 0] > gray[0, 0, 0] + 100
    assert data['label'].tolist() == [0, 1, 1]
    assert meta['classes']['label'] == ['church_bells', 'dog']
    assert [c['caption'] for c in captions] == ['a photo of a church bells', 'a photo of a dog',
                                                'a photo of a dog']
    assert read_split(root, 'train')[0]['image'].shape == (0, 32, 32, 3)


def test_imagehear_folder_without_an_image_is_an_error(imagehear_src, tmp_path):
    for f in imagehear_src.rglob('*.*g'):
        f.rename(f.with_suffix('.txt'))
    message = refused(tmp_path, 'imagehear', '--src', imagehear_src)
    assert 'no readable image among its 5 files (2 class folders, 0 files named' in message


def test_feature_cache_of_an_image_only_dataset(imagehear_src, tmp_path, capsys):
    """An evaluation set's image encoders come from another dataset: tiny toyav ones copied over."""
    run('imagehear', '--src', imagehear_src, '--data_dir', tmp_path / 'data')
    run('toyav', '--data_dir', tmp_path / 'data', '--n_train', 16, '--n_val', 8, '--n_test', 8)
    for name in ('clip', 'vq_image'):
        train_tiny(tmp_path, 'toyav', name)
        shutil.copytree(tmp_path / 'out' / f"toyav_{name}", tmp_path / 'out' / f"imagehear_{name}")
    run('imagehear', '--features', 'toy', '--data_dir', tmp_path / 'data', '--out_dir',
        tmp_path / 'out')
    assert 'no clap, imagebind, ast, vq_audio, ae_audio features' in capsys.readouterr().out
    fields = ['clip_image_emb', 'clip_text_emb', 'vq_image_ids']
    for split, n in (('train', 0), ('val', 0), ('test', 3)):
        data, _ = open_split(str(tmp_path / 'data'), 'imagehear', split, fields,
                             str(tmp_path / 'out'))
        assert data['clip_image_emb'].shape == (n, 32) and data['vq_image_ids'].shape[0] == n


def described(rest, default):
    """What a configurator help line says after `--key=`: the text after its default, or ''."""
    for gap in re.finditer(r'\s+', rest):
        try:
            if ast.literal_eval(rest[:gap.start()]) == default:
                return rest[gap.end():].strip()
        except (ValueError, SyntaxError):
            pass
    return ''


@pytest.mark.parametrize('script', ['prepare', 'sample', 'train', 'eval'])
def test_help_explains_every_option(script, monkeypatch, capsys):
    """`python <script>.py --help` explains every option: argparse help, or configurator comment."""
    module = importlib.import_module(script)
    monkeypatch.setenv('COLUMNS', '1000')                           # argparse: one line per option
    monkeypatch.setattr(sys, 'argv', [module.__file__, '--help'])
    parsers = []
    parse_known_args = argparse.ArgumentParser.parse_known_args

    def recorded(self, *a, **kw):
        """parse_known_args (parse_args calls it too), remembering the parser."""
        parsers.append(self)
        return parse_known_args(self, *a, **kw)

    monkeypatch.setattr(argparse.ArgumentParser, 'parse_known_args', recorded)
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(module.__file__, run_name='__main__')
    out = capsys.readouterr().out
    assert stop.value.code == 0 and out
    if hasattr(module, 'default_config'):                           # configurator: module globals
        rows = dict(re.findall(r"^  --(\w+)=(.*)$", out, re.M))
        config = module.default_config()
        assert sorted(rows) == sorted(config)
        for key, rest in rows.items():
            assert described(rest, config[key]), f"--{key}: {rest.strip()!r}"
    else:
        (parser,) = parsers
        text = ' '.join(out.split())
        for action in parser._actions:
            assert action.help and action.help != argparse.SUPPRESS, action.dest
            helped = action.help % dict(vars(action), prog=parser.prog)  # %(default)s filled
            assert ' '.join(helped.split()) in text, action.dest
            assert all(opt in text for opt in action.option_strings), action.dest
