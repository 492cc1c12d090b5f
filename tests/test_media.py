"""Media loading (encoders.load_audio, load_image, load_video_frames): real files, broken ones."""
import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from encoders import MediaError, load_audio, load_image, load_video_frames

SR = 16000


def real_files(root, sub, pattern, n=None):
    """Sorted files under root/sub matching pattern; fail (not skip) when there are none."""
    files = sorted((root / sub).glob(pattern))
    assert files, f'no {pattern} files in {root / sub}'
    return files[:n]


def write_video(path, levels, size=(48, 64)):
    """Lossless H.264 mp4 without audio, frame i uniformly gray at levels[i]."""
    with av.open(str(path), 'w') as c:
        s = c.add_stream('libx264', rate=10, options={'crf': '0'})
        s.height = size[0]
        s.width = size[1]
        s.pix_fmt = 'yuv420p'
        for v in levels:
            gray = np.full((*size, 3), v, np.uint8)
            frame = av.VideoFrame.from_ndarray(gray, format='rgb24')
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def write_audio_container(path, codec, x, rate):
    """Stereo float x (2, T) encoded with codec into the container path's extension names."""
    with av.open(str(path), 'w') as c:
        s = c.add_stream(codec, rate=rate, layout='stereo')
        planes = np.ascontiguousarray(x, np.float32)
        frame = av.AudioFrame.from_ndarray(planes, format='fltp', layout='stereo')
        frame.sample_rate = rate
        for p in list(s.encode(frame)) + list(s.encode(None)):
            c.mux(p)


def expect_error(path, fn, *args, words=()):
    """fn(path, ...) raises a one-line MediaError naming the file (and containing words)."""
    with pytest.raises(MediaError) as info:
        fn(path, *args)
    msg = str(info.value)
    assert path.name in msg
    assert '\n' not in msg
    for w in words:
        assert w in msg
    return msg


# ---- audio: real files ----

def test_fsdd_resampled_to_16k(real_data):
    for f in real_files(real_data, 'fsdd/recordings', '*.wav', 3):
        native, sr = sf.read(f, dtype='float32')
        assert sr == 8000
        assert native.ndim == 1
        y = load_audio(f, SR)
        assert y.dtype == np.float32
        assert y.ndim == 1
        assert abs(len(y) - len(native) / sr * SR) <= 1
        every_other = y[::2]
        n = min(len(every_other), len(native))
        # same signal, upsampled
        assert np.corrcoef(every_other[:n], native[:n])[0, 1] > 0.95
        np.testing.assert_array_equal(load_audio(f, 8000), native)    # no resampling at 8 kHz


def test_esc50_native_and_resampled(real_data):
    for f in real_files(real_data, 'esc50/audio', '*.wav', 2):
        info = sf.info(f)
        assert info.samplerate == 44100
        native = load_audio(f, 44100)
        channels = sf.read(f, dtype='float32')[0].reshape(len(native), -1)     # (T, C)
        np.testing.assert_allclose(native, channels.mean(1), atol=1e-7)
        y = load_audio(f, SR)
        assert abs(len(y) - info.frames / 44100 * SR) <= 1
        rms = np.sqrt(np.mean(y ** 2))
        native_rms = np.sqrt(np.mean(native ** 2))
        assert abs(rms - native_rms) < 0.1 * native_rms + 1e-4


def test_vggsound_audio_from_mp4(real_data):
    for f in real_files(real_data, 'vggsound/video', '*.mp4'):
        with av.open(str(f)) as c:
            stream = c.streams.audio[0]
            duration = float(stream.duration * stream.time_base)
        y = load_audio(f, SR)
        assert y.dtype == np.float32
        assert y.ndim == 1
        assert np.isfinite(y).all()
        assert abs(len(y) / SR - duration) < 0.05, f.name
        assert 1e-3 < np.sqrt(np.mean(y ** 2))
        assert np.abs(y).max() <= 1.5


# ---- audio: written here ----

def test_stereo_float_wav_averages_channels(tmp_path):
    t = np.arange(8000) / 8000
    left = 0.5 * np.sin(2 * np.pi * 300 * t)
    right = np.full_like(t, 0.25)
    path = tmp_path / 'stereo.wav'
    sf.write(path, np.stack([left, right], 1).astype(np.float32), 8000, subtype='FLOAT')
    np.testing.assert_allclose(load_audio(path, 8000), (left + right) / 2, atol=1e-7)


def test_six_channels_mean_to_mono(tmp_path):
    levels = np.linspace(-0.6, 0.6, 6, dtype=np.float32)                  # mean 0
    x = np.tile(levels, (1000, 1)) + np.float32(0.1)                        # (T, 6)
    path = tmp_path / 'surround.wav'
    sf.write(path, x, 16000, subtype='FLOAT')
    np.testing.assert_allclose(load_audio(path, SR), np.full(1000, 0.1), atol=1e-6)


@pytest.mark.parametrize('subtype,bits', [('PCM_16', 16), ('PCM_24', 24), ('PCM_32', 32)])
def test_integer_wav_scaled_to_unit_range(tmp_path, subtype, bits):
    codes = np.array([0, 1, -1, 2 ** (bits - 2), -2 ** (bits - 1)], np.float64)
    x = codes / 2 ** (bits - 1)                                             # exact codes
    path = tmp_path / f'{subtype}.wav'
    sf.write(path, x, 22050, subtype=subtype)
    assert sf.info(path).subtype == subtype
    np.testing.assert_allclose(load_audio(path, 22050), x, atol=1e-7)


def test_resampled_sine_keeps_its_frequency(tmp_path):
    path = tmp_path / 'tone.flac'
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)
    sf.write(path, tone, 44100, subtype='PCM_16')
    y = load_audio(path, SR)
    assert len(y) == SR
    assert np.argmax(np.abs(np.fft.rfft(y))) == 440                         # 1 s: bin = Hz
    assert abs(np.abs(y[1000:-1000]).max() - 0.5) < 0.01


def test_ogg_vorbis(tmp_path):
    x = 0.5 * np.sin(2 * np.pi * 500 * np.arange(SR) / SR)
    path = tmp_path / 'tone.ogg'
    sf.write(path, x, SR, format='OGG', subtype='VORBIS')
    y = load_audio(path, SR)
    assert len(y) == SR
    assert np.corrcoef(x, y)[0, 1] > 0.99


def test_audio_in_mkv_and_webm_containers(tmp_path):
    t = np.arange(SR) / SR
    x = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), np.full_like(t, 0.25)])   # (2, T)
    write_audio_container(tmp_path / 'pcm.mkv', 'pcm_s16le', x, SR)
    np.testing.assert_allclose(load_audio(tmp_path / 'pcm.mkv', SR), x.mean(0), atol=1e-4)
    tone48 = 0.5 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)
    x48 = np.stack([tone48, np.zeros(48000)])
    write_audio_container(tmp_path / 'opus.webm', 'libopus', x48, 48000)
    y = load_audio(tmp_path / 'opus.webm', SR)                              # 48 kHz -> 16 kHz
    assert abs(len(y) - SR) <= 1
    assert np.corrcoef(y, x.mean(0) - 0.125)[0, 1] > 0.98


def test_truncated_wav(tmp_path):
    x = (np.arange(8000) % 200 - 100).astype(np.int16)
    path = tmp_path / 'full.wav'
    sf.write(path, x, 8000, subtype='PCM_16')
    data = path.read_bytes()
    (tmp_path / 'cut_header.wav').write_bytes(data[:30])
    expect_error(tmp_path / 'cut_header.wav', load_audio, SR, words=['not a readable audio file'])
    (tmp_path / 'cut_data.wav').write_bytes(data[:44 + 2 * 3000])       # header + 3000 samples
    y = load_audio(tmp_path / 'cut_data.wav', 8000)                     # what is there is read
    np.testing.assert_array_equal(y, x[:3000] / 32768)


@pytest.mark.parametrize('name,words', [('notes.wav', ['not a readable audio file']),
                                        ('zero.wav', ['0 bytes']),
                                        ('empty.wav', ['empty audio', '0 samples']),
                                        ('nan.wav', ['non-finite']),
                                        ('missing.wav', ['not found']),
                                        ('video_only.mp4', ['no audio stream'])])
def test_bad_audio_raises_media_error(tmp_path, name, words):
    path = tmp_path / name
    if name == 'notes.wav':
        path.write_text('these are my notes, not audio\n' * 20)
    elif name == 'zero.wav':
        path.write_bytes(b'')
    elif name == 'empty.wav':
        sf.write(path, np.zeros(0, np.float32), 16000)
        assert path.stat().st_size > 0
    elif name == 'nan.wav':
        sf.write(path, np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype='FLOAT')
    elif name == 'video_only.mp4':
        write_video(path, [0, 50, 100])
    expect_error(path, load_audio, SR, words=words)


# ---- images ----

def _save(tmp_path, name, im, **kw):
    path = tmp_path / name
    im.save(path, **kw)
    return path


def _palette_image():
    im = Image.new('P', (3, 1))
    im.putpalette([0, 0, 0, 10, 20, 30, 200, 100, 50] + [0] * 759)
    im.putdata([0, 1, 2])
    return im


def test_image_modes_to_rgb(tmp_path):
    u8 = lambda rows: np.array(rows, np.uint8)
    pixels = {                         # file: its single row of pixels, as an image
        'l.png': Image.fromarray(u8([[0, 77, 255]]), 'L'),
        'one.png': Image.fromarray(np.array([[0, 1, 0]], bool)),
        'la.png': Image.fromarray(u8([[[100, 0], [100, 255], [0, 128]]]), 'LA'),
        'rgba.png': Image.fromarray(u8([[[200, 10, 10, 0], [200, 10, 10, 255], [0, 0, 0, 128]]]),
                                    'RGBA'),
        'p.png': _palette_image(),
        'cmyk.tif': Image.fromarray(u8([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]]), 'CMYK'),
        'i16.png': Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)),
        'i32.tif': Image.fromarray(np.array([[257, 32768, 65535]], np.int32)),
        'f.tif': Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)),
    }
    rgb = {                            # file: the expected RGB of each pixel
        'l.png': [[0] * 3, [77] * 3, [255] * 3],
        'one.png': [[0] * 3, [255] * 3, [0] * 3],
        'la.png': [[255] * 3, [100] * 3, [127] * 3],
        'rgba.png': [[255] * 3, [200, 10, 10], [127] * 3],
        'p.png': [[0, 0, 0], [10, 20, 30], [200, 100, 50]],
        'cmyk.tif': [[255] * 3, [0, 255, 255], [0] * 3],
        'i16.png': [[0] * 3, [128] * 3, [255] * 3],
        'i32.tif': [[1] * 3, [128] * 3, [255] * 3],
        'f.tif': [[0] * 3, [128] * 3, [255] * 3],
    }
    modes = {'l.png': 'L', 'one.png': '1', 'la.png': 'LA', 'rgba.png': 'RGBA', 'p.png': 'P',
             'cmyk.tif': 'CMYK', 'i16.png': 'I;16', 'i32.tif': 'I', 'f.tif': 'F'}
    for name, im in pixels.items():
        expected = rgb[name]
        path = _save(tmp_path, name, im)
        assert Image.open(path).mode == modes[name], name   # the file really has that mode
        out = load_image(path)
        assert out.dtype == np.uint8, name
        assert out.shape == (1, 3, 3), name
        np.testing.assert_array_equal(out[0], np.array(expected, np.uint8), err_msg=name)


@pytest.mark.parametrize('ext', ['png', 'gif'])
def test_palette_transparency_becomes_white(tmp_path, ext):
    path = _save(tmp_path, f'pt.{ext}', _palette_image(), transparency=0)
    assert Image.open(path).mode == 'P'
    white_first = [[255, 255, 255], [10, 20, 30], [200, 100, 50]]
    np.testing.assert_array_equal(load_image(path)[0], white_first)


def test_image_resize_and_center_crop(tmp_path):
    x = np.zeros((20, 80, 3), np.uint8)              # red | green (middle half) | blue
    x[:, :20, 0] = 255
    x[:, 20:60, 1] = 255
    x[:, 60:, 2] = 255
    path = _save(tmp_path, 'wide.png', Image.fromarray(x))
    sq = load_image(path, size=10)                   # 20x80 -> 10x40 -> center 10x10
    assert sq.shape == (10, 10, 3)
    assert (sq[..., 1] > 250).all()
    assert (sq[..., 0] < 5).all()
    assert (sq[..., 2] < 5).all()
    hw = load_image(path, size=(12, 34))
    assert hw.shape == (12, 34, 3)
    assert hw.dtype == np.uint8
    assert (hw[:, 15:19, 1] > 250).all()
    assert (hw[:, :3, 0] > 250).all()
    assert (hw[:, -3:, 2] > 250).all()
    x_tall = np.ascontiguousarray(x.transpose(1, 0, 2))                   # (80, 20, 3)
    tall = _save(tmp_path, 'tall.png', Image.fromarray(x_tall))
    assert (load_image(tall, size=10)[..., 1] > 250).all()


@pytest.mark.parametrize('name,words', [('cut.png', ['not a readable image', 'truncated']),
                                        ('notes.png', ['not a readable image']),
                                        ('zero.png', ['0 bytes']),
                                        ('missing.jpg', ['not found'])])
def test_bad_image_raises_media_error(tmp_path, name, words):
    path = tmp_path / name
    if name == 'cut.png':
        noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
        full = _save(tmp_path, 'full.png', Image.fromarray(noise))
        data = full.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif name == 'notes.png':
        path.write_text('not an image\n' * 10)
    elif name == 'zero.png':
        path.write_bytes(b'')
    expect_error(path, load_image, words=words)


# ---- video ----

def test_video_frames_uniformly_spaced(tmp_path):
    path = tmp_path / 'ramp.mp4'
    write_video(path, [20 * i for i in range(10)])
    v = load_video_frames(path, 4)                          # frames 0, 3, 6, 9
    assert v.shape == (4, 48, 64, 3)
    assert v.dtype == np.uint8
    np.testing.assert_allclose(v.reshape(4, -1).mean(1), [0, 60, 120, 180], atol=3)
    many = load_video_frames(path, 19).reshape(19, -1).mean(1)   # more than there are: repeats
    assert many.shape == (19,)
    assert (np.diff(many) >= 0).all()
    # every frame, in order
    np.testing.assert_allclose(np.unique(np.rint(many / 20)), np.arange(10))
    np.testing.assert_allclose(load_video_frames(path, 1).mean(), 0, atol=3)


def test_real_video_frames(real_data):
    for f in real_files(real_data, 'vggsound/video', 'vas_*.mp4', 2):
        with av.open(str(f)) as c:
            first = next(c.decode(video=0)).to_ndarray(format='rgb24')
        v = load_video_frames(f, 5)
        assert v.shape == (5, *first.shape)
        assert v.dtype == np.uint8
        np.testing.assert_array_equal(v[0], first)
        assert np.abs(v[0].astype(int) - v[-1]).mean() > 1                # the clip moves


def test_bad_video_raises_media_error(tmp_path):
    sf.write(tmp_path / 'sound.wav', np.zeros(800, np.float32), 8000)
    expect_error(tmp_path / 'sound.wav', load_video_frames, 3, words=['no video stream'])
    (tmp_path / 'notes.mp4').write_text('not a video\n' * 10)
    expect_error(tmp_path / 'notes.mp4', load_video_frames, 3, words=['not a decodable video'])
    (tmp_path / 'zero.mp4').write_bytes(b'')
    expect_error(tmp_path / 'zero.mp4', load_video_frames, 3, words=['0 bytes'])
    expect_error(tmp_path / 'missing.mp4', load_video_frames, 3, words=['not found'])
