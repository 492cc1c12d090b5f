"""AV-MNIST: spoken digits (Free Spoken Digit Dataset) paired by digit with MNIST handwriting.

    python prepare.py avmnist --src ../shared/data  # fsdd/recordings/*.wav and mnist/ under it
    python prepare.py avmnist                       # downloads both: <data_dir>/downloads/avmnist/

Audio splits, by --split. `fsdd` (the default) is FSDD's own split: recordings 0-4 of every speaker
and digit are the test split, 5-9 val, 10-49 train, so every speaker is heard in training and the
three splits share no recording. `speaker` holds one speaker out: --test_speaker's recordings
(default george) are the test split, recordings 0-4 of every other speaker val, the rest train.
With --peak P every recording is scaled to peak amplitude P (the speakers' levels differ ninefold).
With --copies K each training recording is joined by K perturbed copies: a speed factor uniform in
1 +- --speed (pitch, formants and tempo move together, as with a shorter or longer vocal tract),
then a tempo factor of the same range, and a start up to 0.2 s later; they give a model more voices
than the training speakers. MNIST images are split by index into disjoint pools sized like the audio
splits, and every recording gets --pairs images of its digit from its split's pool (a seeded
permutation per digit, repeated only when a pool runs out), each pair a sample: with --pairs 2 the
250 test recordings of the shared copy make 500 test pairs.
References: Vielzeuf et al. 2018, CentralNet (the AV-MNIST pairing); Jackson et al., Free Spoken
Digit Dataset; LeCun et al. 1998, MNIST; Ko et al. 2015, Audio augmentation for speech recognition
(speed perturbation).
"""
import gzip
import os
import re
import shutil
import urllib.request
import zipfile

import librosa
import numpy as np
from tqdm import tqdm

from encoders import MediaError, WordTokenizer, fit_length, load_audio, resize_image

DIGITS = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']
TEST_TAKES = 5           # split fsdd: recordings 0-4 of every speaker are test (FSDD's own split)
VAL_TAKES = 10           # split fsdd: recordings 5-9 are val; split speaker: 0-4 of the others
TEST_SPEAKER = 'george'  # split speaker: held out unless --test_speaker
FSDD_URL = 'https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip'
MNIST_URL = 'https://ossci-datasets.s3.amazonaws.com/mnist/'
MNIST_FILES = ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')
RECORDING = re.compile(r'(\d)_(\w+?)_(\d+)\.wav')   # <digit>_<speaker>_<n>.wav
MAX_DELAY = 0.2                                   # seconds a perturbed copy may start later
OPTIONS = dict(
    split="fsdd: FSDD's split (test recordings 0-4 of every speaker, val 5-9, train 10-49); "
          'speaker: --test_speaker held out as the test split (val: recordings 0-4 of the others)',
    test_speaker=f"with --split speaker: the FSDD speaker held out (default {TEST_SPEAKER})",
    copies='speed-perturbed copies of every training recording (0 = none)',
    speed='copies play at a speed, and a tempo, each uniform in 1 +- this',
    peak='scale every recording to this peak amplitude (0 = as recorded)',
    pairs='MNIST images paired with each recording, each pair one sample (distinct images while '
          "the split's pool lasts)",
)


def caption(digit):
    """A sample's caption and its parts: the text says who makes the sound, the image the digit."""
    text = 'a person saying'
    visual = f"the digit {DIGITS[digit]}"
    return dict(caption=f"{text} {visual}", text=text, visual=visual)


def prompts():
    """Zero-shot prompts: for each digit, the captions that name it (for prompt ensembling)."""
    return [[caption(d)['caption'], caption(d)['visual']] for d in range(len(DIGITS))]


def download(url, path):
    """Fetch url into path (atomically); a one-line ConnectionError when offline."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(path + '.tmp', 'wb') as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        raise ConnectionError(f"cannot download {url} ({getattr(e, 'reason', e)}); offline, put "
                              f"FSDD's recordings/ and MNIST's {MNIST_FILES[0]}, {MNIST_FILES[1]} "
                              f"under DIR/fsdd/ and DIR/mnist/ and pass --src DIR") from e
    os.replace(path + '.tmp', path)


def fetch(root):
    """Download FSDD and the MNIST test set into root unless already there; returns root."""
    recordings = os.path.join(root, 'fsdd', 'recordings')
    if not os.path.isdir(recordings):
        archive = os.path.join(root, 'fsdd.zip')
        download(FSDD_URL, archive)
        tmp = recordings + '.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                if '/recordings/' in member and member.endswith('.wav'):
                    dest = os.path.join(tmp, os.path.basename(member))
                    with z.open(member) as src, open(dest, 'wb') as dst:
                        shutil.copyfileobj(src, dst)
        os.replace(tmp, recordings)
        os.remove(archive)
    for name in MNIST_FILES:
        if not os.path.exists(os.path.join(root, 'mnist', name)):
            download(MNIST_URL + name, os.path.join(root, 'mnist', name))
    return root


def read_idx(path):
    """A gzipped idx file (MNIST's format) -> uint8 array of the dimensions its header gives."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found")
    try:
        with gzip.open(path) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise MediaError(f"{path}: not a readable gzip file ({e})") from e
    if len(data) < 4 or data[:3] != b'\0\0\x08':
        raise MediaError(f"{path}: not an idx file of unsigned bytes (header {data[:4].hex()})")
    dims = np.frombuffer(data, '>u4', data[3], 4).astype(int)
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * data[3])
    if body.size != np.prod(dims):
        raise MediaError(f"{path}: {body.size} bytes of data for dimensions {dims.tolist()}")
    return body.reshape(dims)


def level(wave, peak):
    """A recording scaled to peak amplitude `peak` (0: as it is; silence stays silence)."""
    top = np.abs(wave).max()
    return wave * (peak / top) if peak and top > 0 else wave


def perturbed(wave, sample_rate, n, rng, speed, peak):
    """A recording (T,) at another speed and tempo, delayed up to MAX_DELAY, leveled, n samples."""
    factor, rate = rng.uniform(1 - speed, 1 + speed, 2)
    slower = round(sample_rate / factor)
    fast = librosa.resample(wave, orig_sr=sample_rate, target_sr=slower, res_type='soxr_hq')
    fast = librosa.effects.time_stretch(fast, rate=rate, n_fft=512)        # tempo apart from pitch
    room = max(0, min(int(MAX_DELAY * sample_rate), n - len(fast)))
    delay = int(rng.integers(0, room + 1))
    return fit_length(level(np.pad(fast, (delay, 0)), peak).astype(np.float32), n)


def image_pools(n, counts):
    """Disjoint index ranges of n images, one per split in order, sized like its share of counts."""
    shares = np.cumsum([0] + list(counts.values())) / max(1, sum(counts.values()))
    bounds = np.round(shares * n).astype(int)
    return {split: np.arange(bounds[i], bounds[i + 1]) for i, split in enumerate(counts)}


def split_of(speaker, take, split, test_speaker):
    """The split of recording `take` of `speaker` under --split fsdd or speaker."""
    if split == 'fsdd':
        return 'test' if take < TEST_TAKES else 'val' if take < VAL_TAKES else 'train'
    return 'test' if speaker == test_speaker else 'val' if take < TEST_TAKES else 'train'


def pair_images(splits, images, labels, rng, image_size, root):
    """Give every recording an MNIST image of its digit from its split's pool (in place)."""
    for part, pool in image_pools(len(images), {s: len(v) for s, v in splits.items()}).items():
        for digit in range(len(DIGITS)):
            todo = [x for x in splits[part] if x['label'] == digit]
            mine = rng.permutation(pool[labels[pool] == digit])
            if todo and not len(mine):
                raise MediaError(f"{root}/mnist: no image of digit {digit} for the {part} split")
            for k, x in enumerate(todo):
                x['mnist_index'] = int(mine[k % len(mine)])
                gray = images[x['mnist_index']][..., None]                         # (28, 28, 1)
                x['image'] = resize_image(np.repeat(gray, 3, axis=2), image_size)  # (S, S, 3)


def read(src, *, data_dir, seed, image_size, sample_rate, duration, split='fsdd',
         test_speaker=None, copies=0, speed=0.15, peak=0.0, pairs=1):
    """Every FSDD recording paired with an MNIST image of its digit -> dict(splits, ...)."""
    if pairs < 1:
        raise ValueError(f"avmnist: --pairs {pairs}: every recording needs at least one image")
    if split not in ('fsdd', 'speaker'):
        raise ValueError(f"avmnist: --split {split} is neither fsdd nor speaker")
    if split == 'fsdd' and test_speaker is not None:
        raise ValueError(f"avmnist: --test_speaker {test_speaker} holds a speaker out only with "
                         f"--split speaker (the default split, fsdd, tests every speaker on "
                         f"recordings 0-4)")
    root = src or fetch(os.path.join(data_dir, 'downloads', 'avmnist'))
    images = read_idx(os.path.join(root, 'mnist', MNIST_FILES[0]))            # (M, 28, 28)
    labels = read_idx(os.path.join(root, 'mnist', MNIST_FILES[1]))            # (M,)
    if len(images) != len(labels):
        raise MediaError(f"{os.path.join(root, 'mnist')}: {len(images)} images but "
                         f"{len(labels)} labels")
    folder = os.path.join(root, 'fsdd', 'recordings')
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not found (FSDD recordings <digit>_<speaker>_<n>.wav)")
    names = sorted(f for f in os.listdir(folder) if f.endswith('.wav'))
    skipped = [f"{os.path.join(folder, f)}: not named <digit>_<speaker>_<n>.wav" for f in names
               if not RECORDING.fullmatch(f)]
    clips = [(int(m[1]), m[2], int(m[3]), m[0]) for m in map(RECORDING.fullmatch, names) if m]
    if not clips:
        raise ValueError(f"{folder}: no recording named <digit>_<speaker>_<n>.wav among its "
                         f"{len(os.listdir(folder))} files")
    speakers = sorted({speaker for _, speaker, _, _ in clips})
    if split == 'speaker':
        test_speaker = test_speaker or TEST_SPEAKER
        if test_speaker not in speakers:
            raise ValueError(f"--test_speaker {test_speaker!r} is none of the speakers in "
                             f"{folder}: {', '.join(speakers)}")
    n = int(duration * sample_rate)
    splits = {'train': [], 'val': [], 'test': []}
    rng = np.random.default_rng(seed)
    for digit, speaker, take, name in tqdm(clips, desc='avmnist'):
        try:
            wave = level(load_audio(os.path.join(folder, name), sample_rate), peak)   # (T,)
        except MediaError as e:
            skipped.append(str(e))
            continue
        part = split_of(speaker, take, split, test_speaker)
        n_copies = copies if part == 'train' else 0
        waves = [fit_length(wave, n)]
        waves += [perturbed(wave, sample_rate, n, rng, speed, peak) for _ in range(n_copies)]
        splits[part] += [dict(wave=w, sources=np.eye(len(DIGITS), dtype=np.uint8)[digit],
                              label=digit, speaker=speakers.index(speaker), caption=caption(digit),
                              perturbed=int(k > 0), file=os.path.join('fsdd', 'recordings', name))
                         for k, w in enumerate(waves) for _ in range(pairs)]
    pair_images(splits, images, labels, rng, image_size, root)
    warnings = []
    if splits['train'] and not splits['val']:
        numbers = '5-9' if split == 'fsdd' else '0-4'
        warnings.append(f"avmnist: the val split is empty: {folder} has no recording that --split "
                        f"{split} puts in val (numbers {numbers})")
    s = image_size
    schema = dict(image=((s, s, 3), 'uint8'), wave=((n,), 'float32'),
                  sources=((len(DIGITS),), 'uint8'), label=((), 'int64'), speaker=((), 'int64'),
                  mnist_index=((), 'int64'), perturbed=((), 'uint8'))
    captions = [caption(d)['caption'] for d in range(len(DIGITS))]
    meta = dict(vocab=WordTokenizer.vocabulary(captions),
                classes=dict(sources=DIGITS, label=DIGITS, speaker=speakers),
                src=os.path.abspath(root), split=split, test_speaker=test_speaker, copies=copies,
                speed=speed, peak=peak, pairs=pairs)
    return dict(splits=splits, schema=schema, meta=meta, skipped=skipped, warnings=warnings)
