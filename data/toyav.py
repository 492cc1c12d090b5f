"""toyav: a procedural audio-visual world, generated deterministically from a seed (no download).

Ten sound sources, each with a visual identity (shape + colour) and an acoustic identity (timbre
+ pitch pattern). Factors that bind the modalities: object size <-> loudness, background <->
reverberation, one or two objects <-> a mixture of one or two sources. Nuisances that bind nothing:
position, colour jitter, onset time, pitch jitter, a few dB of level jitter. Every sample has a
caption and its complementary split into a text part (loudness + sources) and a visual part (the
place).
"""
import numpy as np
from scipy.signal import fftconvolve
from tqdm import tqdm

SOURCES = [  # name, verb, shape, colour (RGB)
    ('bell', 'ringing', 'triangle', (240, 210, 30)),
    ('drum', 'beating', 'square', (200, 30, 30)),
    ('bird', 'chirping', 'diamond', (60, 110, 230)),
    ('engine', 'running', 'hbar', (250, 130, 20)),
    ('siren', 'wailing', 'ring', (235, 60, 170)),
    ('rain', 'falling', 'vbar', (130, 200, 255)),
    ('clock', 'ticking', 'circle', (245, 245, 245)),
    ('whistle', 'blowing', 'cross', (130, 230, 60)),
    ('frog', 'croaking', 'xshape', (20, 140, 60)),
    ('dog', 'barking', 'half', (140, 80, 30)),
]
ENVS = [('outdoors', 'outdoors'), ('hall', 'in a large hall'), ('tunnel', 'in a tunnel')]
LOUDNESS = ['quiet', 'moderate', 'loud']   # <-> object size small, medium, large
GAIN_DB = [-20.0, -10.0, 0.0]              # level of each loudness class
SIZE = [0.16, 0.23, 0.30]                  # object radius as a fraction of the image side
MIX_SHRINK = 0.8                           # objects are smaller when two share the image
REF_RMS = 0.1                              # every source is normalised to this RMS before its gain
NOISE_FLOOR = 1e-3                         # std of the white noise under every clip
OPTIONS = dict(
    n_train='training samples',
    n_val='validation samples',
    n_test='test samples',
    p_mix='probability that a sample has two sources',
)


def vocabulary():
    """Every word a caption can contain, sorted (the toy text encoders' word list)."""
    words = {'a', 'and'} | set(LOUDNESS)
    for name, verb, _, _ in SOURCES:
        words |= {name, verb}
    for _, phrase in ENVS:
        words |= set(phrase.split())
    return sorted(words)


def caption(sources, env, loud):
    """(full caption, text part, visual part) of a sample; the text part: loudness and sources."""
    things = ' and a '.join(f"{SOURCES[s][0]} {SOURCES[s][1]}" for s in sources)
    text = f"a {LOUDNESS[loud]} {things}"
    visual = ENVS[env][1]
    return f"{text} {visual}", text, visual


# ---------------------------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------------------------

def shape_mask(shape, u, v):
    """Boolean mask of a unit-radius shape on coordinates (u, v) centred on the object."""
    r = np.sqrt(u ** 2 + v ** 2)
    return {
        'circle': r <= 1,
        'square': np.maximum(abs(u), abs(v)) <= 0.8,
        'diamond': abs(u) + abs(v) <= 1,
        'triangle': (v <= 0.8) & (abs(u) <= (v + 1) / 1.8),
        'ring': (r <= 1) & (r >= 0.55),
        'hbar': (abs(u) <= 1) & (abs(v) <= 0.35),
        'vbar': (abs(v) <= 1) & (abs(u) <= 0.35),
        'cross': ((abs(u) <= 0.3) | (abs(v) <= 0.3)) & (np.maximum(abs(u), abs(v)) <= 1),
        'xshape': ((abs(u - v) <= 0.4) | (abs(u + v) <= 0.4)) & (r <= 1.1),
        'half': (r <= 1) & (v >= -0.1),
    }[shape]


def background(env, size, rng):
    """Background picture of an environment (H, W, 3) float in [0, 255]."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    jitter = rng.uniform(-12, 12, 3)
    if env == 0:    # outdoors: sky over grass
        sky = np.array([120, 170, 235]) + jitter
        grass = np.array([70, 150, 60]) + jitter
        img = np.where((y < 0.6)[..., None], sky, grass)
    elif env == 1:  # hall: warm walls with columns
        wall = np.array([205, 175, 135]) + jitter
        img = wall * (1 - 0.25 * (np.sin(x * np.pi * 8) > 0.6))[..., None]
    else:           # tunnel: dark arch
        rock = np.array([75, 75, 85]) + jitter
        r = np.sqrt((x - 0.5) ** 2 + (y - 0.7) ** 2)
        img = rock * (1 - 0.6 * (r < 0.45))[..., None]
    return img


def render(sources, env, loud, size, rng):
    """Picture of a sample (H, W, 3) uint8: the sources' objects on the environment's background."""
    img = background(env, size, rng)
    y, x = np.mgrid[0:size, 0:size] + 0.5
    radius = SIZE[loud] * size * (MIX_SHRINK if len(sources) > 1 else 1.0)
    slots = [(0.0, 1.0)] if len(sources) == 1 else [(0.0, 0.5), (0.5, 1.0)]
    for s, (lo, hi) in zip(sources, slots):
        _, _, shape, colour = SOURCES[s]
        cx = rng.uniform(lo * size + radius, hi * size - radius)
        cy = rng.uniform(radius, size - radius)
        mask = shape_mask(shape, (x - cx) / radius, (y - cy) / radius)
        img[mask] = np.clip(np.array(colour) + rng.uniform(-15, 15, 3), 0, 255)
    return np.clip(img, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# sounds
# ---------------------------------------------------------------------------------------------

def harmonics(f0, t, n, rolloff=1.0):
    """Sum of n harmonics of a (possibly time-varying) f0 with 1/k^rolloff amplitudes."""
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(f0, t.shape)) * (t[1] - t[0])
    return sum(np.sin(k * phase) / k ** rolloff for k in range(1, n + 1))


def pulses(t, starts, length, decay):
    """Envelope with an exponentially decaying pulse of `length` seconds at each start."""
    env = np.zeros_like(t)
    for s in starts:
        on = (t >= s) & (t < s + length)
        env[on] = np.exp(-(t[on] - s) * decay)
    return env


def synth(source, sr, n, pf, rng):
    """Dry signal (n,) of a source at pitch factor pf; timbre and pitch pattern are its identity."""
    t = np.arange(n) / sr
    name = SOURCES[source][0]
    if name == 'bell':
        partials = [(1, 1), (2, .6), (2.76, .4), (5.4, .25)]   # (frequency ratio, amplitude)
        x = sum(a * np.sin(2 * np.pi * 660 * pf * m * t) for m, a in partials)
        return x * np.exp(-t * 4)
    if name == 'drum':
        f = 60 + 70 * np.exp(-(t % 0.35) * 20)
        tone = harmonics(f * pf, t, 1) + 0.3 * rng.standard_normal(n)
        return tone * pulses(t, [0, 0.35], 0.3, 12)
    if name == 'bird':
        f = (2500 + 1500 * ((t % 0.2) / 0.08)) * pf
        return np.sin(2 * np.pi * np.cumsum(f) / sr) * pulses(t, np.arange(4) * 0.2, 0.08, 5)
    if name == 'engine':
        return harmonics(70 * pf, t, 15) * (1 + 0.3 * np.sin(2 * np.pi * 8 * t))
    if name == 'siren':
        return harmonics((700 + 300 * np.sin(2 * np.pi * 2 * t)) * pf, t, 2)
    if name == 'rain':
        noise = np.diff(rng.standard_normal(n + 1))
        drops = pulses(t, rng.uniform(0, 1, 12) * t[-1], 0.02, 200)
        return noise * (0.5 + drops)
    if name == 'clock':
        f = np.where((t // 0.2) % 2 == 0, 3000, 2400) * pf
        return np.sin(2 * np.pi * f * t) * pulses(t, np.arange(5) * 0.2, 0.015, 300)
    if name == 'whistle':
        f = (1800 + 20 * np.sin(2 * np.pi * 6 * t)) * pf
        return np.sin(2 * np.pi * np.cumsum(f) / sr) + 0.05 * rng.standard_normal(n)
    if name == 'frog':
        square = np.sign(np.sin(2 * np.pi * 250 * pf * t))
        croaks = pulses(t, [0, 0.3, 0.6], 0.15, 8)
        flutter = np.sin(2 * np.pi * 40 * t) > 0          # 40 Hz on/off
        return square * croaks * flutter
    f = (450 - 500 * (t % 0.4)) * pf   # dog: two barks with a falling pitch
    tone = harmonics(f, t, 8, 0.7) + 0.2 * rng.standard_normal(n)
    return tone * pulses(t, [0, 0.4], 0.12, 10)


def impulse_response(env, sr, rng):
    """Room impulse response of an environment, scaled to unit energy."""
    if env == 0:    # outdoors: dry, one faint ground reflection
        h = np.zeros(int(0.01 * sr))
        h[0] = 1.0
        h[-1] = 0.2
    elif env == 1:  # hall: long, dense exponential tail after a pre-delay
        t = np.arange(int(1.5 * sr)) / sr
        h = rng.standard_normal(t.size) * np.exp(-t * 6.9 / 1.5) * (t > 0.02)
        h[0] = 2.0
    else:           # tunnel: distinct slap echoes every 80 ms over a faint tail
        t = np.arange(int(0.8 * sr)) / sr
        h = np.zeros(t.size)
        h[::int(0.08 * sr)] = np.exp(-t[::int(0.08 * sr)] * 6.9 / 0.8)
        h += 0.05 * rng.standard_normal(t.size) * np.exp(-t * 6.9 / 0.8)
    return h / np.sqrt((h ** 2).sum())


def sound(sources, env, loud, sr, n, rng):
    """Waveform of a sample (n,) float32 and its gain in dB."""
    gain_db = GAIN_DB[loud] + rng.uniform(-1.5, 1.5)
    mix = np.zeros(n)
    for s in sources:
        onset = int(rng.uniform(0, 0.15) * sr)
        dry = synth(s, sr, n - onset, rng.uniform(0.96, 1.04), rng)
        mix[onset:] += dry / (np.sqrt(np.mean(dry ** 2)) + 1e-8) * REF_RMS
    wet = fftconvolve(mix, impulse_response(env, sr, rng))[:n]
    wave = wet * 10 ** (gain_db / 20) + NOISE_FLOOR * rng.standard_normal(n)
    return np.clip(wave, -1, 1).astype(np.float32), gain_db


def generate(n, seed, image_size=32, sample_rate=16000, duration=1.0, p_mix=0.3):
    """n samples of the world from one seed: dict of arrays (image, wave, labels) and captions."""
    rng = np.random.default_rng(seed)
    length = int(duration * sample_rate)
    out = {k: [] for k in ['image', 'wave', 'sources', 'n_sources', 'env', 'loud', 'gain_db']}
    captions = []
    for _ in range(n):
        k = 2 if rng.random() < p_mix else 1
        sources = sorted(rng.choice(len(SOURCES), k, replace=False).tolist())
        env = int(rng.integers(len(ENVS)))
        loud = int(rng.integers(len(LOUDNESS)))
        wave, gain_db = sound(sources, env, loud, sample_rate, length, rng)
        out['image'].append(render(sources, env, loud, image_size, rng))
        out['wave'].append(wave)
        out['sources'].append(np.isin(np.arange(len(SOURCES)), sources).astype(np.uint8))
        out['n_sources'].append(k)
        out['env'].append(env)
        out['loud'].append(loud)
        out['gain_db'].append(gain_db)
        full, text, visual = caption(sources, env, loud)
        captions.append({'caption': full, 'text': text, 'visual': visual})
    arrays = {k: np.array(v) for k, v in out.items()}       # lists of arrays are stacked
    arrays['gain_db'] = arrays['gain_db'].astype(np.float32)
    return arrays, captions


def prompts():
    """Zero-shot prompts: per source, every single-source caption naming it (prompt ensembling)."""
    settings = [(env, loud) for env in range(len(ENVS)) for loud in range(len(LOUDNESS))]
    per_source = []
    for s in range(len(SOURCES)):
        per_source.append([caption([s], env, loud)[0] for env, loud in settings])
    return per_source


def read(src, *, seed, image_size, sample_rate, duration, n_train=5000, n_val=500, n_test=500,
         p_mix=0.3):
    """The world's splits, split i generated from seed + i -> dict(splits, schema, meta)."""
    if src is not None:
        raise ValueError(f"toyav: --src {src}: the world is generated from --seed, not read")
    counts = dict(train=n_train, val=n_val, test=n_test)
    splits = {}
    for i, (split, n) in enumerate(tqdm(counts.items(), desc='toyav')):
        if not n:
            splits[split] = []
            continue
        arrays, captions = generate(n, seed + i, image_size, sample_rate, duration, p_mix)
        samples = [{k: v[j] for k, v in arrays.items()} for j in range(n)]
        splits[split] = [dict(x, caption=c) for x, c in zip(samples, captions)]
    s = image_size
    t = int(duration * sample_rate)
    schema = dict(image=((s, s, 3), 'uint8'),
                  wave=((t,), 'float32'),
                  sources=((len(SOURCES),), 'uint8'),
                  n_sources=((), 'int64'),
                  env=((), 'int64'),
                  loud=((), 'int64'),
                  gain_db=((), 'float32'))
    classes = dict(sources=[x[0] for x in SOURCES], env=[e[0] for e in ENVS], loud=LOUDNESS)
    meta = dict(vocab=vocabulary(), p_mix=p_mix, classes=classes)
    return dict(splits=splits, schema=schema, meta=meta)


def class_captions():
    """Each source's class caption: the source loud and outdoors, as a dry clip sounds."""
    return [caption([s], 0, len(LOUDNESS) - 1)[0] for s in range(len(SOURCES))]
