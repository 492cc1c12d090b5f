"""sonify: an image-only dataset made to sound (Seeing Sound, Kalayeh & Petermann), no pairs needed.

    python prepare.py sonify                  # after toyav and its toy CLIP, ImageBind, CLAP
    python prepare.py sonify --features toy   # the toy AST's tokens, the image latents, ...
    python prepare.py sonify --src IMAGES --audio_src AUDIO --vlms mymodule:vlm --duration 5

Two disjoint sources. The images are toyav's training split alone, joined by --backgrounds
background-only pictures (the filter's work, as the paper drops logos, icons and signs);
--val_images of them are the val split. The audio pool is --recordings longer recordings made by
the toyav world with its own seed (stereo, at --recording_rate), standardised as the paper's
Appendix A.7 says:
resampled to the project's rate, mono, cut into non-overlapping --duration chunks (1 s here, 5 s at
full scale), the tail zero-padded. Every image is sonified in three steps:

1. Sounding concepts: a VLM names up to three 'object: sound' strings of what it sees (PROMPT, the
   paper's prompt). Offline, two stand-in VLMs rank toyav's scenes by zero-shot retrieval with the
   toy CLIP ('clip') and with the toy ImageBind ('imagebind'); each VLM gives every image a row of
   its own (the paper's LLaVA and CogVLM). 'oracle' reads the concepts from the captions instead
   (an upper bound, labelled as such); 'module:function' names a real VLM (image -> strings), e.g.
   data.sonify:llava. An image with no concept gets no row.
2. Retrieval (Algorithm 1): the CLAP text embedding of every distinct concept against the pool's
   CLAP audio embeddings in one matrix product, cosines through a signed square root (--no_sqrt:
   without), the threshold the mean of the --top_k best, one clip drawn uniformly among those at or
   above it. The best clip always is, so every concept gets a clip; --top_k 1 is top-1 retrieval.
3. Mixing: each clip normalised (ITU-R BS.1770, pyloudnorm) to a loudness drawn uniformly from
   [--lufs_min, --lufs_max] dB LUFS, then summed; an image with two or more concepts is mixed
   --mix_draws times, each a row of its own. --keep_level (ours, not the paper's) shifts the sum
   back by the clips' mean change, so the targets set the clips' balance and the recordings the
   level of the mix.

Every row keeps its pairing beside the media (fields vlm, image_id, clips, lufs, measured_lufs,
scores, thresholds; -1 or NaN where a row has fewer than three concepts), so every pair can be
audited and rebuilt from the seed. The pool's labels never choose a clip: they only score the
retrieval (meta 'retrieval': source and environment precision against the image's labels, distinct
clips used over the pool's size) beside the VLMs' scores (meta 'concepts'). The test split holds
the probes of the paper's section 4.5, from pairs of dry clips of the toyav world: the two summed
('mix'), the second at a gain inside the mix ('interp_<gain>'), one after the other ('sequence'),
and the first alone in each room ('room'); their pictures are rendered from the labels.

At full scale --src is an image folder, --audio_src an audio folder (any files load_audio reads),
--retrieval_clap the published CLAP, and --vlms names real VLMs; the test split is empty.
The frozen parts of the toyav version are toyav's (meta 'parts').
References: Kalayeh & Petermann, Seeing Sound (Algorithm 1; Appendix A.7); ITU-R BS.1770-4 and
pyloudnorm (Steinmetz & Reiss 2021); LLaVA (Liu et al. 2023).
"""
import os
import time
import warnings
from functools import lru_cache
from itertools import combinations

import numpy as np
import pyloudnorm as pyln
import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import SPLITS, open_split, read_json, toyav
from data.toyav_ctrl import LOUD, dry_clip, heard
from data.toyav_ctrl import load_captioner as load_hook
from encoders import (MediaError, WordTokenizer, load_audio, load_hf, load_image, load_toy,
                      resample_waves)

OPTIONS = dict(
    vlms="the VLMs naming each image's sounding concepts, comma-separated: clip, imagebind "
         "(toyav's zero-shot stand-ins), oracle (read from the captions) or module:function "
         "(uint8 image (H, W, 3) -> up to three 'object: sound' strings)",
    recordings='toyav: recordings of the audio pool (the toyav world, its own seed)',
    recording_seconds='toyav: length of a pool recording (s), before it is cut into chunks',
    recording_rate='toyav: sample rate of the pool recordings before standardisation (Hz)',
    backgrounds='toyav: background-only pictures added to the images (the filter drops them)',
    val_images='images kept apart as the val split',
    toyav_dir="toyav: the data folder whose toyav cache gives the pictures ('' = --data_dir): a "
              "variant of this set prepared under another --data_dir reads them there",
    top_k='Algorithm 1: the threshold is the mean of the k best scores (1: top-1 retrieval)',
    no_sqrt='Algorithm 1 without its signed square root (an ablation)',
    lufs_min='each retrieved clip is normalised to a loudness uniform in [lufs_min, lufs_max]',
    lufs_max='the top of that range (dB LUFS)',
    mix_draws='an image with two or more concepts is sonified this many times, each a row with its '
              'own clips and loudnesses (one image with one concept: one row)',
    quiet_lufs='pool clips quieter than this (dB LUFS) are never retrieved: the mixing would '
               'raise them, and their noise floor with them, to the mixing range',
    keep_level='the mix shifted back to the loudness its clips were recorded at (their mean '
               'shift): the targets set the balance of the clips, the recordings its level',
    probes="toyav: pairs of dry clips in the test split, each in the paper's four probes",
    audio_src='full scale: the folder of the audio pool (--src is the image folder)',
    retrieval_clap='full scale: the published CLAP of retrieval, id or folder',
)
PROMPT = ("As a numbered list, provide one to up to three sound(s) associated with prominent "
          "objects visible and present in the image. Provide the objects followed by their "
          "associated sound")
MAX_CONCEPTS = 3                 # 'up to three' sounds an image
STAND_INS = ('clip', 'imagebind')
KINDS = ['sonified', 'mix', 'interp_0.1', 'interp_0.3', 'sequence', 'room']
INTERP = (0.1, 0.3)              # the gains of the second source in the loudness probes
EVENT_SECONDS = (0.6, 1.2)       # a pool recording sounds its source again after this long
MIN_EVENT = 0.3                  # no new sound in a recording's last 0.3 s
LEVEL_JITTER = 1.5               # +- dB around a loudness class's level, as toyav's
STEREO_LEVEL = 0.8               # a recording's second channel: the first at this level, own noise
QUERY_BLOCK = 1 << 26            # scores held at once by the retrieval (concepts x clips)
ENCODE_BATCH = 256
CACHED_FILES = 64                # recordings of a folder pool kept decoded while mixing
HF_CLAP = 'laion/clap-htsat-unfused'
LLAVA = 'llava-hf/llava-1.5-7b-hf'
MAX_NEW_TOKENS = 96


# ---------------------------------------------------------------------------------------------
# the audio pool: longer recordings, standardised (Appendix A.7)
# ---------------------------------------------------------------------------------------------

def pool_recording(source, env, loud, seconds, rate, rng):
    """A toyav recording (2, n) at rate: one source sounding again and again in a room, a level
    for its loudness class; the second channel quieter, with its own noise."""
    n = int(seconds * rate)
    dry = np.zeros(n)
    start = 0
    while n - start > MIN_EVENT * rate:
        length = min(int(rng.uniform(*EVENT_SECONDS) * rate), n - start)
        dry[start:start + length] = dry_clip(source, rate, length, rng)
        start += length
    gain = 10 ** ((toyav.GAIN_DB[loud] + rng.uniform(-LEVEL_JITTER, LEVEL_JITTER)) / 20)
    left = heard(dry, env, gain, rate, rng)                                   # (n,)
    right = STEREO_LEVEL * left + toyav.NOISE_FLOOR * rng.standard_normal(n)
    return np.stack([left, right]).astype(np.float32)                        # (2, n)


def standardise(wave, rate, sample_rate, seconds):
    """A recording (channels, T) or (T,) at rate -> chunks (n, seconds * sample_rate): resampled,
    mono, cut without overlap, the last chunk zero-padded."""
    wave = np.asarray(wave, np.float32)
    mono = wave.reshape(-1, wave.shape[-1]).mean(0)                           # (T,)
    mono = resample_waves(mono[None], rate, sample_rate)[0]                   # (T',)
    size = int(round(seconds * sample_rate))
    count = max(1, -(-len(mono) // size))                                     # ceil
    padded = np.zeros(count * size, np.float32)
    padded[:len(mono)] = mono
    return padded.reshape(count, size)                                        # (n, size)


def toy_pool(recordings, seconds, rate, sample_rate, duration, seed):
    """The toyav world's pool: chunks (N, T) and their labels {source, env, loud, recording}."""
    rng = np.random.default_rng(seed)
    chunks = []
    labels = {k: [] for k in ('source', 'env', 'loud', 'recording')}
    for i in tqdm(range(recordings), desc='sonify pool'):
        source = int(rng.integers(len(toyav.SOURCES)))
        env = int(rng.integers(len(toyav.ENVS)))
        loud = int(rng.integers(len(toyav.LOUDNESS)))
        recording = pool_recording(source, env, loud, seconds, rate, rng)
        cut = standardise(recording, rate, sample_rate, duration)             # (n, T)
        chunks.append(cut)
        for k, v in zip(labels, (source, env, loud, i)):
            labels[k] += [v] * len(cut)
    return np.concatenate(chunks), labels


class FolderPool:
    """A folder of recordings (any files load_audio reads) as a pool of standardised chunks, never
    held whole: scanned once for their embeddings, then read back a file at a time."""

    def __init__(self, folder, sample_rate, duration):
        self.folder = folder
        self.files = sorted(os.path.relpath(os.path.join(root, f), folder)
                            for root, _, names in os.walk(folder) for f in names if f[0] != '.')
        self.sample_rate = sample_rate
        self.duration = duration
        self.counts = {}                      # file -> its chunks, once read
        self.read_file = lru_cache(maxsize=CACHED_FILES)(self.chunks_of)

    def chunks_of(self, name):
        """A file's standardised chunks (n, T); MediaError if it cannot be read."""
        wave = load_audio(os.path.join(self.folder, name), self.sample_rate)   # mono, resampled
        return standardise(wave, self.sample_rate, self.sample_rate, self.duration)

    def scan(self, embed, measure):
        """Read every file once -> embed(chunks (B, T)) of every chunk (N, D), measure(chunks) of
        every chunk (N,), and the files that could not be read."""
        skipped = []
        buffer = []
        parts = []
        levels = []
        for name in tqdm(self.files, desc='sonify pool'):
            try:
                chunks = self.chunks_of(name)
            except MediaError as e:
                skipped.append(str(e))
                continue
            self.counts[name] = len(chunks)
            levels.append(measure(chunks))
            buffer.append(chunks)
            if sum(map(len, buffer)) >= ENCODE_BATCH:
                parts.append(embed(np.concatenate(buffer)))
                buffer = []
        if buffer:
            parts.append(embed(np.concatenate(buffer)))
        if not parts:
            raise ValueError(f"{self.folder}: no readable audio file among its "
                             f"{len(self.files)} files")
        self.index = [(name, c) for name, n in self.counts.items() for c in range(n)]
        return torch.cat(parts), np.concatenate(levels), skipped

    def __len__(self):
        return len(self.index)

    def __getitem__(self, clips):
        """Chunks (n, T) of pool indices (n,)."""
        return np.stack([self.read_file(name)[c] for name, c in (self.index[i] for i in clips)])


# ---------------------------------------------------------------------------------------------
# sounding concepts: a VLM, two stand-ins and the oracle
# ---------------------------------------------------------------------------------------------

def concept(source, env):
    """The 'object: sound' string of a toyav source in a place: 'bell: ringing in a large hall'."""
    name, verb = toyav.SOURCES[source][:2]
    return f"{name}: {verb} {toyav.ENVS[env][1]}"


def named_sources(text):
    """The toyav sources a text names (its words), in toyav's order."""
    words = set(WordTokenizer.words(text))
    return [s for s, (name, *_) in enumerate(toyav.SOURCES) if name in words]


def oracle(caption):
    """The concepts a toyav caption states: its sources in its place (none for a bare place)."""
    env = [phrase for _, phrase in toyav.ENVS].index(caption['visual'])
    return [concept(s, env) for s in named_sources(caption['text'])]


def scenes():
    """Every toyav scene a picture can show: (sources, env), one or two sources or none."""
    n = len(toyav.SOURCES)
    sets = [(s,) for s in range(n)] + list(combinations(range(n), 2)) + [()]
    return [(sources, env) for sources in sets for env in range(len(toyav.ENVS))]


def scene_texts(sources, env):
    """The captions of a scene, every loudness (an ensemble); a bare place for no source."""
    if not sources:
        return [toyav.ENVS[env][1]]
    return [toyav.caption(list(sources), env, loud)[0] for loud in range(len(toyav.LOUDNESS))]


@torch.no_grad()
def zero_shot(encoder, images):
    """A stand-in VLM: each picture's concepts are those of the scene whose captions a toy
    image-text encoder ranks first (ensembled over loudness words) -> a list per image."""
    found = scenes()
    keys = []
    for sources, env in found:
        emb = F.normalize(encoder.encode_text(scene_texts(sources, env)).emb, dim=-1)  # (L, D)
        keys.append(F.normalize(emb.mean(0), dim=-1))
    keys = torch.stack(keys)                                                   # (S, D)
    out = []
    for i in range(0, len(images), ENCODE_BATCH):
        emb = encoder.encode_image(np.asarray(images[i:i + ENCODE_BATCH])).emb
        best = (F.normalize(emb, dim=-1) @ keys.T).argmax(-1)                  # (B,)
        for k in best.tolist():
            sources, env = found[k]
            out.append([concept(s, env) for s in sources])
    return out


def parse_concepts(text):
    """A VLM's numbered list -> up to three 'object: sound' strings, lower case, unnumbered."""
    concepts = []
    for line in text.splitlines():
        head, dot, rest = line.strip().partition('.')
        if dot and head.isdigit() and ':' in rest:
            thing, _, sound = rest.partition(':')
            concepts.append(f"{thing.strip(' *').lower()}: {sound.strip(' *.').lower()}")
    return concepts[:MAX_CONCEPTS]


@lru_cache(maxsize=1)
def llava_model():
    """The published LLaVA-1.5 and its processor, loaded once (transformers)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    model = LlavaForConditionalGeneration.from_pretrained(LLAVA, device_map='auto')
    return AutoProcessor.from_pretrained(LLAVA), model


@torch.no_grad()
def llava(image):
    """A VLM hook (--vlms data.sonify:llava): a picture uint8 (H, W, 3) -> its sounding concepts."""
    from PIL import Image
    processor, model = llava_model()
    messages = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': PROMPT}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=Image.fromarray(image), text=prompt, return_tensors='pt')
    inputs = inputs.to(model.device)
    ids = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    answer = ids[0, inputs['input_ids'].shape[1]:]                            # the reply alone
    return parse_concepts(processor.decode(answer, skip_special_tokens=True))


def sounding_concepts(vlm, images, captions, encoders):
    """Up to three concepts per image from one VLM, a stand-in or the oracle -> a list each."""
    if vlm == 'oracle':
        return [oracle(c) for c in captions]
    if vlm in STAND_INS:
        return zero_shot(encoders(vlm), images)
    hook = load_hook(vlm)
    return [list(hook(np.asarray(image)))[:MAX_CONCEPTS] for image in tqdm(images, desc=vlm)]


# ---------------------------------------------------------------------------------------------
# retrieval (Algorithm 1) and mixing
# ---------------------------------------------------------------------------------------------

def signed_sqrt(x):
    """sign(x) sqrt(|x|): Algorithm 1 flattens the cosines so that more clips pass the threshold."""
    return x.sign() * x.abs().sqrt()


def candidates(text_emb, audio_emb, top_k, sqrt=True):
    """Algorithm 1 for concepts (Q, D) against a pool (N, D): per concept (clips at or above the
    mean of its top_k scores, their scores, the threshold). Cosines of every concept in one matrix
    product (in blocks of concepts when the pool is large)."""
    text = F.normalize(torch.as_tensor(text_emb).float(), dim=-1)            # (Q, D)
    audio = F.normalize(torch.as_tensor(audio_emb).float(), dim=-1)          # (N, D)
    k = min(top_k, len(audio))
    block = max(1, QUERY_BLOCK // len(audio))
    found = []
    for i in range(0, len(text), block):
        scores = text[i:i + block] @ audio.T                                 # (q, N) cosines
        if sqrt:
            scores = signed_sqrt(scores)
        thresholds = scores.topk(k, dim=-1).values.mean(-1)                  # (q,)
        for row, threshold in zip(scores, thresholds):
            clips = (row >= threshold).nonzero()[:, 0]                       # (n,), n >= 1
            found.append((clips.numpy(), row[clips].numpy(), float(threshold)))
    return found


def choose(found, rng):
    """One clip drawn uniformly among a concept's candidates -> (clip index, its score)."""
    clips, scores, _ = found
    j = int(rng.integers(len(clips)))
    return int(clips[j]), float(scores[j])


def loudness(chunks, meter):
    """Integrated loudness (dB LUFS) of each chunk (n, T) -> (n,); -inf for a silent one."""
    return np.array([meter.integrated_loudness(c.astype(np.float64)) for c in chunks])


def normalise(clip, target, meter):
    """A clip (T,) at target loudness (ITU-R BS.1770 integrated, dB LUFS) -> (clip, its loudness
    before); a silent clip has none (-inf) and stays as it is."""
    lufs = loudness(clip[None], meter)[0]
    if not np.isfinite(lufs):
        return clip, lufs
    with warnings.catch_warnings():                # peaks over 1 are clipped once, in the sum
        warnings.simplefilter('ignore', UserWarning)
        return pyln.normalize.loudness(clip.astype(np.float64), lufs, target), lufs


def mix(clips, targets, meter, keep_level=False):
    """Clips (n, T) each normalised to its target loudness, summed -> wave (T,), loudness before
    (n,). keep_level: the sum shifted by the clips' mean (loudness before - target), so that it
    keeps the level its clips were recorded at."""
    wave = np.zeros(clips.shape[1])
    measured = []
    for clip, target in zip(clips, targets):
        loud, lufs = normalise(clip, target, meter)
        wave += loud
        measured.append(lufs)
    measured = np.array(measured, np.float32)                                # (n,)
    heard = np.isfinite(measured)                                            # silent: no level
    if keep_level and heard.any():
        shift_db = np.mean(measured[heard] - np.asarray(targets)[heard])
        wave = wave * 10 ** (shift_db / 20)
    return np.clip(wave, -1, 1).astype(np.float32), measured


def retrieval_seconds(n_pool, n_concepts=1000, dim=512, top_k=10, seed=0):
    """Seconds Algorithm 1 takes for n_concepts random concepts against n_pool random clips."""
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(n_pool, dim, generator=g)                            # (N, D)
    text = torch.randn(n_concepts, dim, generator=g)                         # (Q, D)
    t0 = time.time()
    candidates(text, audio, top_k)
    return time.time() - t0


# ---------------------------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------------------------

def toy_images(data_dir, image_size, backgrounds, seed):
    """toyav's training split (prepared under data_dir) and background-only pictures -> (images,
    labels, captions)."""
    fields = ['image', 'sources', 'n_sources', 'env', 'loud']
    split, meta = open_split(data_dir, 'toyav', 'train', fields)
    if meta['image_size'] != image_size:
        raise ValueError(f"{data_dir}/toyav has {meta['image_size']}-px images, not --image_size "
                         f"{image_size}: prepare both at one size")
    images = np.asarray(split['image'])
    labels = {k: np.asarray(split[k]) for k in fields[1:]}
    captions = read_json(os.path.join(data_dir, 'toyav', 'captions.json'))['train']
    rng = np.random.default_rng(seed)
    envs = rng.integers(len(toyav.ENVS), size=backgrounds)                   # (n_bg,)
    bare = [toyav.background(env, image_size, rng) for env in envs]
    bare = np.clip(np.array(bare), 0, 255).astype(np.uint8).reshape(-1, *images.shape[1:])
    blank = {'sources': np.zeros((backgrounds, len(toyav.SOURCES)), np.uint8),
             'n_sources': np.zeros(backgrounds, np.int64), 'env': envs,
             'loud': np.zeros(backgrounds, np.int64)}
    labels = {k: np.concatenate([v, blank[k]]) for k, v in labels.items()}
    places = [toyav.ENVS[env][1] for env in envs]
    captions = captions + [dict(caption=p, text='', visual=p) for p in places]
    return np.concatenate([images, bare]), labels, captions


def folder_images(src, image_size):
    """Every readable picture under a folder -> (images (N, S, S, 3), files, skipped)."""
    files = sorted(os.path.relpath(os.path.join(root, f), src)
                   for root, _, names in os.walk(src) for f in names if f[0] != '.')
    images = []
    kept = []
    skipped = []
    for name in tqdm(files, desc='sonify images'):
        try:
            images.append(load_image(os.path.join(src, name), image_size))
            kept.append(name)
        except MediaError as e:
            skipped.append(str(e))
    if not images:
        raise ValueError(f"{src}: no readable picture among its {len(files)} files")
    return np.stack(images), kept, skipped


def audio_embeddings(clap, chunks, sample_rate):
    """CLAP audio embeddings (N, D) of the pool's chunks (N, T), a batch at a time."""
    parts = []
    for i in range(0, len(chunks), ENCODE_BATCH):
        batch = torch.from_numpy(chunks[i:i + ENCODE_BATCH])                  # (B, T)
        if hasattr(clap, 'roles'):                    # a toy CLAP: its own log-mels of the wave
            parts.append(clap.encode_audio(batch).emb)
        else:
            parts.append(clap.encode_audio(batch, sample_rate).emb)
    return torch.cat(parts).float()


def sonified_row(i, names, found, pool, lufs_range, rng, meter, keep_level=False):
    """Image i's row: a clip drawn among each concept's candidates, the clips mixed."""
    picks = [choose(found[name], rng) for name in names]
    clips = np.array([clip for clip, _ in picks])                             # (n,)
    targets = rng.uniform(*lufs_range, size=len(names))                      # (n,)
    wave, measured = mix(pool[clips], targets, meter, keep_level)
    pad = MAX_CONCEPTS - len(names)
    return dict(image_id=i, wave=wave, concepts=names,
                clips=np.pad(clips, (0, pad), constant_values=-1),
                lufs=np.pad(targets, (0, pad), constant_values=np.nan),
                measured_lufs=np.pad(measured, (0, pad), constant_values=np.nan),
                scores=np.pad([s for _, s in picks], (0, pad), constant_values=np.nan),
                thresholds=np.pad([found[n][2] for n in names], (0, pad),
                                  constant_values=np.nan))


def sonify(concepts, clap, pool, audio_emb, top_k, sqrt, lufs_range, rng, meter, mix_draws=1,
           usable=None, keep_level=False):
    """Rows of one VLM: for every image with a concept, its retrieved clips mixed (an image
    with two or more concepts mix_draws times) -> (rows, candidate counts of the concepts).
    usable (N,) bool: the pool's clips retrieval may choose (default: all)."""
    distinct = sorted({c for cs in concepts for c in cs})
    if not distinct:
        return [], []
    text_emb = clap.encode_text(distinct).emb                                # (Q, D)
    kept = np.flatnonzero(usable) if usable is not None else np.arange(len(audio_emb))  # (N',)
    found = candidates(text_emb, audio_emb[torch.from_numpy(kept)], top_k, sqrt)
    found = {c: (kept[clips], scores, threshold)                            # pool indices
             for c, (clips, scores, threshold) in zip(distinct, found)}
    rows = []
    for i, names in enumerate(concepts):
        draws = mix_draws if len(names) > 1 else len(names)   # no concept: no row (filtered)
        rows += [sonified_row(i, names, found, pool, lufs_range, rng, meter, keep_level)
                 for _ in range(draws)]
    return rows, [len(found[c][0]) for c in distinct]


def concept_scores(concepts, labels, n_toyav):
    """How well a VLM names toyav's images: kept images, backgrounds kept, the share of its
    concepts naming a source in the picture and of the pictures' sources it names."""
    named = [set(named_sources(' '.join(cs))) for cs in concepts]
    true = [set(np.flatnonzero(row).tolist()) for row in labels['sources']]
    hits = sum(len(n & t) for n, t in zip(named, true))
    n_named = sum(len(n) for n in named)
    n_true = sum(len(t) for t in true)
    return dict(kept=sum(bool(cs) for cs in concepts[:n_toyav]) / max(1, n_toyav),
                backgrounds_kept=sum(bool(cs) for cs in concepts[n_toyav:]),
                source_precision=hits / max(1, n_named), source_recall=hits / max(1, n_true))


def retrieval_scores(rows, labels, pool_labels, n_pool, candidate_counts):
    """Algorithm 1 scored with the pool's labels: the share of retrieved clips of a source in the
    picture and of its environment; distinct clips used over the pool's size."""
    used = [(row['image_id'], c) for row in rows for c in row['clips'] if c >= 0]
    source = np.array([labels['sources'][i][pool_labels['source'][c]] for i, c in used])
    env = np.array([labels['env'][i] == pool_labels['env'][c] for i, c in used])
    return dict(source_precision=float(source.mean()), env_precision=float(env.mean()),
                diversity=len({c for _, c in used}) / n_pool,
                candidates=float(np.mean(candidate_counts)))


def probe(kind, sources, env, clip, sr, size, rng):
    """One test row of the section 4.5 probes: a dry sound heard in a room, its picture, labels."""
    wave = heard(clip, env, 1.0, sr, rng)
    image = toyav.render(sorted(sources), env, LOUD, size, rng)
    full, text, visual = toyav.caption(sorted(sources), env, LOUD)
    return dict(image=image, wave=wave, kind=KINDS.index(kind), env=env, loud=LOUD,
                sources=np.isin(np.arange(len(toyav.SOURCES)), sources).astype(np.uint8),
                n_sources=len(sources), caption=dict(caption=full, text=text, visual=visual))


def probe_rows(n, sr, length, size, rng):
    """Section 4.5's probes for n pairs of dry clips (a, b): semantic mixing (a + b), loudness
    interpolation (a + g b), separated versus mixed (a then b), acoustics (a in each room)."""
    rows = []
    n_sources = len(toyav.SOURCES)
    half = length // 2
    for i in range(n):
        a = i % n_sources
        b = (a + 1 + int(rng.integers(n_sources - 1))) % n_sources
        clip_a = dry_clip(a, sr, length, rng)
        clip_b = dry_clip(b, sr, length, rng)
        rows.append(probe('mix', [a, b], 0, clip_a + clip_b, sr, size, rng))
        for gain in INTERP:
            rows.append(probe(f"interp_{gain}", [a, b], 0, clip_a + gain * clip_b, sr, size, rng))
        one_then_other = np.concatenate([dry_clip(a, sr, half, rng),
                                         dry_clip(b, sr, length - half, rng)])
        rows.append(probe('sequence', [a, b], 0, one_then_other, sr, size, rng))
        for env in range(len(toyav.ENVS)):
            rows.append(probe('room', [a], env, clip_a, sr, size, rng))
    return rows


def read(src, *, data_dir, out_dir, device, seed, image_size, sample_rate, duration,
         vlms='clip,imagebind', recordings=800, recording_seconds=2.5, recording_rate=22050,
         backgrounds=300, val_images=500, toyav_dir='', top_k=8, no_sqrt=False, lufs_min=-25.0,
         lufs_max=-21.0, mix_draws=1, quiet_lufs=-np.inf, keep_level=False, probes=60,
         audio_src='', retrieval_clap=HF_CLAP):
    """Sonified rows of every image and VLM, split train / val, and the probes -> dict(splits,
    schema, meta)."""
    names = [v for v in vlms.split(',') if v]
    toy = src is None
    if not names:
        raise ValueError('sonify: --vlms names no VLM')
    if not toy and set(names) & {'oracle', *STAND_INS}:
        raise ValueError(f"sonify: --vlms {vlms}: oracle and the stand-ins read toyav; a folder "
                         "of pictures needs a real VLM (module:function, e.g. data.sonify:llava)")
    if not toy and not audio_src:
        raise ValueError('sonify: --src is the folder of pictures; --audio_src names the audio')
    skipped = []
    if toy:
        images, labels, captions = toy_images(toyav_dir or data_dir, image_size, backgrounds,
                                              seed + 200)
        pool, pool_labels = toy_pool(recordings, recording_seconds, recording_rate, sample_rate,
                                     duration, seed + 300)
        encoders = lambda name: load_toy(name, 'toyav', out_dir, device)
    else:
        images, files, skipped = folder_images(src, image_size)
        labels = {}
        captions = [dict(caption=f, text='', visual='') for f in files]
        encoders = lambda name: load_hf(name, retrieval_clap).to(device)
    clap = encoders('clap')
    if toy and clap.sample_rate != sample_rate:
        raise ValueError(f"the toy CLAP hears {clap.sample_rate} Hz, not --sample_rate "
                         f"{sample_rate}")
    embed = lambda chunks: audio_embeddings(clap, chunks, sample_rate)
    meter = pyln.Meter(sample_rate)
    quiet = np.isfinite(quiet_lufs)              # the pool is measured only for a floor to hold
    measure = lambda chunks: loudness(chunks, meter) if quiet else np.full(len(chunks), np.inf)
    if toy:
        audio_emb = embed(pool)                                              # (N, D)
        levels = measure(pool)                                               # (N,)
    else:
        pool = FolderPool(audio_src, sample_rate, duration)
        audio_emb, levels, missed = pool.scan(embed, measure)
        skipped += missed
        pool_labels = dict(files=list(pool.counts), chunks=list(pool.counts.values()))
    n_toyav = len(images) - backgrounds if toy else len(images)
    rng = np.random.default_rng(seed + 400)
    val = set(rng.permutation(len(images))[:val_images].tolist())
    usable = levels >= quiet_lufs                                            # (N,)
    if not usable.any():
        raise ValueError(f"sonify: every pool clip is quieter than --quiet_lufs {quiet_lufs}")
    splits = {split: [] for split in SPLITS}
    concept_report = {}
    retrieval_report = {}
    for v, vlm in enumerate(names):
        concepts = sounding_concepts(vlm, images, captions, encoders)
        rows, counts = sonify(concepts, clap, pool, audio_emb, top_k, not no_sqrt,
                              (lufs_min, lufs_max), rng, meter, mix_draws, usable, keep_level)
        if toy:
            concept_report[vlm] = concept_scores(concepts, labels, n_toyav)
            retrieval_report[vlm] = retrieval_scores(rows, labels, pool_labels, len(pool), counts)
        for row in rows:
            i = row['image_id']
            caption = dict(caption='; '.join(row['concepts']), concepts=row['concepts'],
                           image=captions[i]['caption'])
            sample = dict(row, image=images[i], vlm=v, kind=0, caption=caption,
                          **{k: x[i] for k, x in labels.items()})
            splits['val' if i in val else 'train'].append(sample)
    if toy:
        rng = np.random.default_rng(seed + 500)
        length = int(duration * sample_rate)
        splits['test'] = probe_rows(probes, sample_rate, length, image_size, rng)
    s = image_size
    t = int(round(duration * sample_rate))
    schema = dict(image=((s, s, 3), 'uint8'), wave=((t,), 'float32'), vlm=((), 'int64'),
                  image_id=((), 'int64'), clips=((MAX_CONCEPTS,), 'int64'),
                  lufs=((MAX_CONCEPTS,), 'float32'), measured_lufs=((MAX_CONCEPTS,), 'float32'),
                  scores=((MAX_CONCEPTS,), 'float32'), thresholds=((MAX_CONCEPTS,), 'float32'))
    pairing = {k: -1 for k in ('vlm', 'image_id', 'clips')}
    pairing.update({k: np.nan for k in ('lufs', 'measured_lufs', 'scores', 'thresholds')})
    for row in splits['test']:
        row.update({k: np.full(schema[k][0], v) for k, v in pairing.items()})
    meta = dict(vlms=names, oracle='oracle' in names, top_k=top_k, sqrt=not no_sqrt,
                lufs=[lufs_min, lufs_max], mix_draws=mix_draws, keep_level=keep_level,
                quiet_lufs=quiet_lufs if quiet else None,                     # None: off
                pool=dict(clips=len(pool), quiet=int((~usable).sum()), **pool_labels))
    if toy:
        schema.update(sources=((len(toyav.SOURCES),), 'uint8'), n_sources=((), 'int64'),
                      env=((), 'int64'), loud=((), 'int64'), kind=((), 'int64'))
        classes = dict(sources=[x[0] for x in toyav.SOURCES], env=[e[0] for e in toyav.ENVS],
                       loud=toyav.LOUDNESS, kind=KINDS)
        meta.update(vocab=toyav.vocabulary(), classes=classes, parts='toyav',
                    concepts=concept_report, retrieval=retrieval_report,
                    pool=dict(meta['pool'], recordings=recordings, seconds=recording_seconds,
                              rate=recording_rate, seed=seed + 300))
    else:
        texts = [c['caption'] for rows in splits.values() for c in (r['caption'] for r in rows)]
        meta.update(vocab=WordTokenizer.vocabulary(texts), src=os.path.abspath(src),
                    audio_src=os.path.abspath(audio_src))
    return dict(splits=splits, schema=schema, meta=meta, skipped=skipped)


def prompts():
    """Zero-shot prompts: toyav's."""
    return toyav.prompts()
