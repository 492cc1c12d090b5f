"""Evaluation: judges, metrics and the task table (the README's Results say what each number is).

    python eval.py config/toyav_eval.py            # writes out/<exp>/metrics.json and table.md
    python eval.py --tasks=enc --split=val

Judges are probe classifiers trained on real media of the dataset (python train.py
config/<dataset>_judge_{audio,image}.py); generated media is judged by them and embedded by the
frozen encoders. Task `enc` measures the frozen parts themselves: the judges on real media, zero-shot
source accuracy and retrieval of the toy encoders, the tokenizers' reconstructions, and the
real-vs-real Fréchet floor in each embedding space. Generated sound is judged and embedded as the
log-mel a generator outputs; the vocoder is measured on its own (`enc.vocoder.*`), as a ceiling.

References: Fréchet distance of embeddings: Heusel et al. 2017 (FID), Kilgour et al. 2019 (FAD), as audioldm_eval
computes it; Inception score: Salimans et al. 2016, torch-fidelity's splits; CLIP score: Hessel et al. 2021;
V2A-Mapper's and Visual Echoes' evaluation protocols (Wang et al. 2024, Yang et al. 2024).
"""
import copy
import importlib
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg, special, stats
from scipy.spatial.distance import pdist

from configurator import configure
from encoders import GriffinLim, MediaError, MelConfig, load_checkpoint, load_latent_decoder, load_toy, log_mel, to_tensor
from model import FIELDS
from data import check_mel, open_split, read_json, write_json
from encoders import StaleCache

# -----------------------------------------------------------------------------
out_dir = 'out/toyav_eval'      # where metrics.json and table.md are written
dataset = 'toyav'               # data/<dataset>/
data_dir = 'data'               # where datasets live
ckpt_dir = 'out'                # where trained models live (out/<dataset>_<name>/ckpt.pt)
tasks = 'enc'                   # comma-separated tasks to run: enc, t2a, t2i, i2a, a2i, joint, inpaint
ckpt = ''                       # the generator to evaluate (a training run directory), for every task but enc
n_eval = 500                    # test samples judged per generation task (at most the split's size)
n_diverse = 16                  # inputs given several outputs each for the diversity metric
n_outputs = 4                   # outputs per input for the diversity metric
steps = 16                      # masked-decoding iterations (model.STEPS), or DDIM steps of a diffusion generator
joint_steps = 30                # masked-decoding iterations of Echoes joint generation, both unknown (model.JOINT_STEPS)
temperature = 4.5               # Gumbel temperature of the masked-decoding confidence (model.CHOICE_TEMPERATURE)
sample_temperature = 1.0        # temperature of the masked-decoding token samples (below 1 sharper, 0 = argmax)
cfg_scale = 3.0                 # classifier-free guidance scale (1 = off; Echoes joint: each modality by the other)
span = '0.25,0.75'              # inpainting: the audio time span regenerated, as fractions of the clip
generator = ''                  # V2A-Mapper (a v2a ckpt): the CLAP-conditioned audio generator (default out/<dataset>_t2a)
mapper_steps = 25               # DDIM steps of a diffusion-prior mapper
mapper_cfg = 1.0                # guidance scale of a diffusion-prior mapper (1 = off)
i2a_route = 'clip'              # i2a with a CLAP-conditioned generator as ckpt: 'clip' (w/o mapper) or 'caption' (vision-text-audio)
split = 'test'                  # split whose media is judged
batch_size = 250                # batch size for judging and encoding
seed = 1337                     # seed of any sampling
device = 'cpu'                  # 'cpu' or 'cuda'
# -----------------------------------------------------------------------------
CONFIG_KEYS = [k for k, v in globals().items() if not k.startswith('_') and k.islower() and isinstance(v, (int, float, bool, str))]


def default_config():
    """The defaults above as a fresh dict."""
    return {k: copy.deepcopy(globals()[k]) for k in CONFIG_KEYS}


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------

def _np(x):
    """Tensor, array or list -> float64 numpy array."""
    return x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)


def frechet_distance(x, y):
    """Fréchet distance of Gaussians fitted to embeddings x (N, D) and y (M, D), as audioldm_eval computes it."""
    x, y = _np(x), _np(y)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"frechet_distance needs >= 2 embeddings per set, got {len(x)} and {len(y)}")
    mu1, mu2 = x.mean(0), y.mean(0)                                                            # (D,)
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))  # (D, D)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary component {np.abs(covmean.imag).max():.3g} in sqrtm")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def accuracy(pred, target):
    """Fraction of pred (N,) labels or (N, C) scores (argmax) equal to target labels (N,)."""
    pred, target = _np(pred), _np(target)
    pred = pred.argmax(-1) if pred.ndim == 2 else pred
    return float((pred == target).mean())


def multilabel_set_accuracy(probs, target_multi_hot, threshold=0.5):
    """Fraction of rows whose predicted set (probs (N, C) >= threshold) equals the target set exactly."""
    return float(((_np(probs) >= threshold) == (_np(target_multi_hot) > 0.5)).all(-1).mean())


def recall_at_k(query_emb, key_emb, query_labels, key_labels, k):
    """Fraction of queries (Q, D) with a key (K, D) of their label among the k most cosine-similar keys."""
    q, keys = _np(query_emb), _np(key_emb)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    keys = keys / np.maximum(np.linalg.norm(keys, axis=-1, keepdims=True), 1e-12)
    top = np.argsort(-(q @ keys.T), axis=-1, kind='stable')[:, :k]                             # (Q, k)
    return float((_np(key_labels)[top] == _np(query_labels)[:, None]).any(-1).mean())


def spearman(x, y):
    """Spearman rank correlation of two paired sequences (N,)."""
    return float(stats.spearmanr(_np(x), _np(y)).statistic)


def inception_score(logits, splits=10):
    """exp(E KL(p(y|x) || p(y))) of classifier logits (N, C), mean over splits after torch-fidelity's shuffle."""
    p = special.softmax(_np(logits), axis=-1)                                                  # (N, C)
    p = p[np.random.RandomState(2020).permutation(len(p))]
    scores = []
    for chunk in np.array_split(p, min(splits, len(p))):
        marginal = chunk.mean(0, keepdims=True)                                                # (1, C)
        kl = (special.xlogy(chunk, chunk) - special.xlogy(chunk, marginal)).sum(-1)           # (n,)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores))


def kl_divergence(logits_p, logits_q):
    """Mean over pairs of KL(softmax(p_i) || softmax(q_i)), logits (N, C); p is the reference (real) side."""
    log_p, log_q = special.log_softmax(_np(logits_p), -1), special.log_softmax(_np(logits_q), -1)
    return float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean())


def mean_pairwise_distance(emb):
    """Mean Euclidean distance over all pairs of embeddings (N, D), N >= 2."""
    emb = _np(emb)
    if len(emb) < 2:
        raise ValueError(f"mean_pairwise_distance needs >= 2 embeddings, got {len(emb)}")
    return float(pdist(emb).mean())


def cosine_score(a, b):
    """100 x mean cosine similarity of paired embeddings a (N, D) and b (N, D)."""
    a, b = _np(a), _np(b)
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)  # (N,)
    return float(100 * cos.mean())


# ---------------------------------------------------------------------------------------------
# judges
# ---------------------------------------------------------------------------------------------

def toy(name, cfg, meta):
    """A frozen toy model of the dataset (encoders.load_toy), refused if it was trained with other mel settings."""
    frozen = load_toy(name, cfg['dataset'], cfg['ckpt_dir'], cfg['device'])
    check_mel(os.path.join(cfg['ckpt_dir'], f"{cfg['dataset']}_{name}"), frozen.mel_config.dict(), meta)
    return frozen


class Judges:
    """The dataset's audio and image judges (frozen): media -> logits per head."""

    def __init__(self, meta, ckpt_dir, device='cpu'):
        self.nets = {}
        for m in ('audio', 'image'):
            path = os.path.join(ckpt_dir, f"{meta['dataset']}_judge_{m}", 'ckpt.pt')
            net, ckpt = load_checkpoint(path, device)
            check_mel(path, ckpt['data']['mel'], meta)
            self.nets[m] = net.requires_grad_(False)
        self.device = device

    @torch.no_grad()
    def logits(self, modality, media, batch_size=250):
        """uint8 images (N, H, W, 3) or log-mels (N, n_mels, frames) -> {head: logits (N, n)}."""
        net, parts = self.nets[modality], []
        for i in range(0, len(media), batch_size):
            parts.append(net.forward_logits(to_tensor(media[i:i + batch_size]).to(self.device)))
        return {k: torch.cat([p[k] for p in parts]).cpu() for k in parts[0]}


# ---------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------

def batched(fn, x, n):
    """fn over x in chunks of n (memmaps are read chunk by chunk) -> concatenated tensor."""
    return torch.cat([fn(np.asarray(x[i:i + n])) for i in range(0, len(x), n)])


def set_codes(multi_hot):
    """Multi-hot rows (N, K) -> one integer per distinct set (N,)."""
    return (np.asarray(multi_hot).astype(np.int64) << np.arange(multi_hot.shape[1])).sum(1)


def task_enc(cfg, judges):
    """The frozen parts on real media: judges, zero-shot encoders, tokenizers, Fréchet floors."""
    _, meta = open_split(cfg['data_dir'], cfg['dataset'], cfg['split'], [])
    data, _ = open_split(cfg['data_dir'], cfg['dataset'], cfg['split'], ['image', 'mel'] + label_fields(meta))
    val, _ = open_split(cfg['data_dir'], cfg['dataset'], 'val', ['image', 'mel'])
    captions = read_json(os.path.join(cfg['data_dir'], cfg['dataset'], 'captions.json'))[cfg['split']]
    labels = {k: np.asarray(data[k]) for k in label_fields(meta)}
    single = labels['sources'].sum(1) == 1
    out = {}
    for m, field in (('audio', 'mel'), ('image', 'image')):
        out.update(judged(judges, m, data[field], labels, f"judge_{m}."))
    prompts = importlib.import_module(f"data.{cfg['dataset']}").prompts()
    for name in ('clip', 'clap', 'imagebind'):
        enc = toy(name, cfg, meta)
        classes = F.normalize(torch.stack([F.normalize(enc.encode_text(p).emb, dim=-1).mean(0) for p in prompts]), dim=-1)  # (K, D)
        texts = F.normalize(enc.encode_text([c['caption'] for c in captions]).emb, dim=-1)             # (N, D)
        for m, field in (('image', 'image'), ('audio', 'mel')):
            if m not in enc.roles:
                continue
            run = enc.encode_image if m == 'image' else enc.encode_mel
            raw = batched(lambda x: run(x).emb, data[field], cfg['batch_size'])                   # (N, D)
            emb = F.normalize(raw, dim=-1)
            zero_shot = (emb @ classes.T).argmax(-1).numpy()                                      # prompt ensembles
            codes = set_codes(labels['sources'])
            out[f"{name}.{m}_source_acc"] = accuracy(zero_shot[single], labels['sources'][single].argmax(1))
            out[f"{name}.{m}_text_r_at_5"] = recall_at_k(emb.numpy(), texts.numpy(), codes, codes, 5)
            out[f"{name}.{m}_fd_floor"] = frechet_distance(batched(lambda x: run(x).emb, val[field], cfg['batch_size']).numpy(), raw.numpy())
    out['clip.source_acc'], out['clap.source_acc'] = out['clip.image_source_acc'], out['clap.audio_source_acc']
    mel_cfg = MelConfig(**meta['mel'])
    vocoder = GriffinLim(mel_cfg)
    vocoded = lambda mel: log_mel(vocoder(to_tensor(mel)), mel_cfg)                      # through the waveform
    out.update(judged(judges, 'audio', batched(vocoded, data['mel'], cfg['batch_size']), labels, 'vocoder.'))
    for name in ('vq_image', 'vq_audio', 'ae_image', 'ae_audio'):                       # tokenizers, autoencoders
        if not os.path.exists(os.path.join(cfg['ckpt_dir'], f"{cfg['dataset']}_{name}", 'ckpt.pt')):
            continue
        tok = toy(name, cfg, meta)
        recon = batched(lambda x: tok.decode(tok.encode(x)), data[FIELDS[tok.modality]], cfg['batch_size'])
        media = batched(vocoded, recon, cfg['batch_size']) if tok.modality == 'audio' else recon
        out.update(judged(judges, tok.modality, media, labels, f"{name}."))
    return {f"enc.{k}": float(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# generation tasks
# ---------------------------------------------------------------------------------------------

def label_fields(meta):
    """The dataset's label fields with class names (toyav: sources, env, loud; avmnist: sources, speaker)."""
    return [k for k in meta['classes'] if k in meta['fields']]


def judged(judges, modality, media, labels, prefix=''):
    """Judge media against its labels (a condition's, for generated media): the exact source set, every other
    head the judge and the labels share (toyav: environment, loudness or size class and its rank correlation),
    and the recall of the sources of two-source samples where there are any."""
    logits = judges.logits(modality, media)
    pred = (logits['sources'].sigmoid() > 0.5).numpy()
    true = np.asarray(labels['sources']).astype(bool)
    two = true.sum(1) == 2
    out = {'source_acc': multilabel_set_accuracy(pred, true)}
    if two.any():
        out['mix_recall'] = float((pred & true)[two].sum() / true[two].sum())
    for head in [h for h in logits if h != 'sources' and h in labels]:
        out[f"{head}_acc"] = accuracy(logits[head], labels[head])
    if 'loud' in logits and 'loud' in labels:
        level = (logits['loud'].softmax(-1) * torch.arange(logits['loud'].shape[-1])).sum(-1).numpy()  # expected class
        out['loudness_rho' if modality == 'audio' else 'size_rho'] = spearman(labels['loud'], level)
    return {prefix + k: v for k, v in out.items()}


class Spaces:
    """The named embedding spaces of generated media: toy CLAP (audio), toy CLIP (images), toy ImageBind (both)."""

    def __init__(self, cfg, meta):
        self.clap, self.clip, self.bind = (toy(n, cfg, meta) for n in ('clap', 'clip', 'imagebind'))
        self.n = cfg['batch_size']

    def fd_space(self, modality, media):
        """Embeddings (N, D) for Fréchet distance and diversity: CLAP audio for sound, CLIP image for pictures."""
        run = (lambda x: self.clap.encode_mel(x).emb) if modality == 'audio' else (lambda x: self.clip.encode_image(x).emb)
        return batched(run, media, self.n).numpy()

    def joint_space(self, modality, media):
        """ImageBind embeddings (N, D) for cross-modal similarity."""
        run = (lambda x: self.bind.encode_mel(x).emb) if modality == 'audio' else (lambda x: self.bind.encode_image(x).emb)
        return batched(run, media, self.n).numpy()


def echoes_generator(cfg, model, ckpt):
    """Visual Echoes as a generator: (task, test-split data of some rows, generator) -> {modality: media}."""
    from sample import Echoes
    echoes = Echoes(model, ckpt, cfg['ckpt_dir'], cfg['device'])
    kw = dict(temperature=cfg['temperature'], sample_temperature=cfg['sample_temperature'],
              cfg=cfg['cfg_scale'], span=tuple(float(x) for x in cfg['span'].split(',')))

    def generate(task, rows, generator):
        steps = cfg['joint_steps'] if task == 'joint' else cfg['steps']
        a, i = echoes.run(task, torch.from_numpy(rows['vq_audio_ids'].astype(np.int64)),
                          torch.from_numpy(rows['vq_image_ids'].astype(np.int64)), generator=generator,
                          steps=steps, **kw)
        return {'audio': echoes.audio_tok.decode(a), 'image': echoes.image_tok.decode(i)}
    return generate, ['vq_audio_ids', 'vq_image_ids']


def text_field(field):
    """The text-role field of the encoder behind a cached field: clap_audio_emb -> clap_text_emb."""
    encoder, kind = field.split('_')[0], field.split('_')[-1]
    return f"{encoder}_text_{kind}"


def image_route(cfg, route, generator_fields):
    """How an image conditions a CLAP-vector generator in task i2a: rows -> {'vec': (B, D)}.
    route: a V2A mapper network (CLIP image emb -> CLAP audio emb), 'clip' (the CLIP vector as it is: the paper's
    "w/o mapper") or 'caption' (the nearest training caption by CLIP image -> text retrieval, then its CLAP text
    embedding: the paper's vision-text-audio baseline)."""
    if generator_fields != {'vec': 'clap_audio_emb'}:
        raise SystemExit(f"i2a needs a generator conditioned on a CLAP audio vector, not {generator_fields}")
    if route == 'caption':
        train, _ = open_split(cfg['data_dir'], cfg['dataset'], 'train', ['clip_text_emb', 'clap_text_emb'], cfg['ckpt_dir'])
        keys = F.normalize(to_tensor(train['clip_text_emb']), dim=-1)         # (N_train, D)
        values = to_tensor(train['clap_text_emb'])                                                 # (N_train, D)
        return lambda rows, gen: {'vec': values[(F.normalize(to_tensor(rows['clip_image_emb']), dim=-1) @ keys.T).argmax(-1)]}
    if route == 'clip':
        return lambda rows, gen: {'vec': to_tensor(rows['clip_image_emb'])}
    if isinstance(route, str):
        raise SystemExit(f"unknown i2a_route {route!r}: 'clip' or 'caption' (a mapper is evaluated as --ckpt)")
    return lambda rows, gen: {'vec': route.generate(to_tensor(rows[route.fields[0]]), cfg['mapper_steps'], cfg['mapper_cfg'],
                                                    generator=gen)}


def ldm_generator(cfg, model, ckpt, route=None):
    """A latent-diffusion generator: test rows -> media. Tasks t2a/t2i condition through the cached text features
    (a model trained on audio embeddings, AudioLDM's recipe, gets the same encoder's text embeddings); task i2a
    through an image route (see image_route)."""
    fields = {role: text_field(f) for role, f in model.roles.items()}
    ae = load_latent_decoder(model, ckpt, cfg['ckpt_dir'], cfg['device'])
    route = route or cfg['i2a_route']
    image_field = route.fields[0] if hasattr(route, 'fields') else 'clip_image_emb'
    route = image_route(cfg, route, model.roles) if 'i2a' in cfg['tasks'].split(',') else None

    def generate(task, rows, generator):
        if task == 'i2a':
            cond = route(rows, generator)
        else:
            cond = {role: torch.tensor(np.asarray(rows[f]), dtype=torch.float32) for role, f in fields.items()}
        out = model.generate({k: v.to(cfg['device']) for k, v in cond.items()}, steps=cfg['steps'], cfg=cfg['cfg_scale'],
                             generator=generator)
        return {OUTPUTS[task][0]: (ae.decode(out) if ae else out).cpu()}
    return generate, list(fields.values()) + ['imagebind_text_emb', image_field]


def v2a_generator(cfg, mapper, ckpt):
    """V2A-Mapper: CLIP image embedding -> mapper -> CLAP vector -> the CLAP-conditioned generator (cfg generator)."""
    path = cfg['generator'] or os.path.join(cfg['ckpt_dir'], f"{ckpt['data']['dataset']}_t2a")
    model, gen_ckpt = load_checkpoint(os.path.join(path, 'ckpt.pt'), cfg['device'])
    return ldm_generator(cfg, model, gen_ckpt, route=mapper)


GENERATORS = {'echoes': echoes_generator, 'ldm': ldm_generator, 'v2a': v2a_generator}
OUTPUTS = {'t2a': ('audio',), 't2i': ('image',), 'i2a': ('audio',), 'a2i': ('image',), 'joint': ('audio', 'image'),
           'inpaint': ('audio',)}


def load_generator(cfg, meta):
    """The configured checkpoint as (generate function, the cached fields it reads, embedding spaces)."""
    if not cfg['ckpt']:
        raise SystemExit("generation tasks need --ckpt=out/<experiment>")
    model, ckpt = load_checkpoint(os.path.join(cfg['ckpt'], 'ckpt.pt'), cfg['device'])
    return (*GENERATORS[ckpt['method']](cfg, model, ckpt), Spaces(cfg, meta))


def task_generate(cfg, judges, generator, task):
    """Generate from test conditions with the configured checkpoint; judge, embed and time the outputs."""
    generate, fields, spaces = generator
    _, meta = open_split(cfg['data_dir'], cfg['dataset'], cfg['split'], [])
    data, _ = open_split(cfg['data_dir'], cfg['dataset'], cfg['split'], fields + ['image', 'mel'] + label_fields(meta), cfg['ckpt_dir'])
    val, _ = open_split(cfg['data_dir'], cfg['dataset'], 'val', ['image', 'mel'])
    n = min(cfg['n_eval'], len(data['sources']))
    rows = {k: np.asarray(v[:n]) for k, v in data.items()}
    gen = torch.Generator().manual_seed(cfg['seed'])
    parts = [generate(task, {k: v[i:i + cfg['batch_size']] for k, v in rows.items()}, gen) for i in range(0, n, cfg['batch_size'])]
    out = {m: torch.cat([p[m] for p in parts]) for m in OUTPUTS[task]}
    metrics, real = {}, {'audio': 'mel', 'image': 'image'}
    for m, media in out.items():
        prefix = '' if len(out) == 1 else f"{m}_"
        if task == 'inpaint':                     # judge the regenerated span alone, and the real span beside it
            media = span_tiled(media, cfg['span'])
            metrics.update(judged(judges, m, span_tiled(to_tensor(rows['mel']), cfg['span']), rows, 'real_span_'))
        metrics.update(judged(judges, m, media, rows, prefix))
        real_emb = spaces.fd_space(m, rows[real[m]])                                           # (n, D)
        metrics[prefix + 'fd'] = frechet_distance(spaces.fd_space(m, media), real_emb)
        metrics[prefix + 'fd_floor'] = frechet_distance(spaces.fd_space(m, np.asarray(val[real[m]][:n])), real_emb)
        if task in ('i2a', 'a2i'):
            cond = 'image' if m == 'audio' else 'audio'
            metrics['cs'] = cosine_score(spaces.joint_space(cond, rows[real[cond]]), spaces.joint_space(m, media))
        if task in ('t2a', 't2i'):
            metrics['cs'] = cosine_score(rows['imagebind_text_emb'], spaces.joint_space(m, media))
    if task == 'joint':
        a, i = (judges.logits(m, out[m])['sources'].sigmoid() > 0.5 for m in ('audio', 'image'))
        metrics['source_acc'] = float((a == i).all(1).float().mean())      # both outputs judged the same source set
    metrics.update(diversity_and_speed(cfg, generate, spaces, task, rows))
    return {f"{task}.{k}": float(v) for k, v in metrics.items()}


def span_tiled(mels, span):
    """The time span of log-mels (N, n_mels, frames) repeated to fill the clip: a judge trained on whole clips
    reads a span this way far better than with the rest silenced (toyav real spans: 0.89 vs 0.42 sources)."""
    lo, hi = (float(x) for x in span.split(','))
    frames = mels.shape[-1]
    a, b = int(lo * frames), max(int(hi * frames), int(lo * frames) + 1)
    return torch.as_tensor(mels)[..., a + torch.arange(frames) % (b - a)]   # (N, n_mels, frames)


def diversity_and_speed(cfg, generate, spaces, task, rows):
    """Mean pairwise distance among n_outputs outputs per input (first output modality); seconds per sample at batch 1."""
    m = OUTPUTS[task][0]
    gen = torch.Generator().manual_seed(cfg['seed'] + 1)
    dists = []
    for j in range(min(cfg['n_diverse'], len(rows['sources']))):
        repeat = {k: np.repeat(v[j:j + 1], cfg['n_outputs'], 0) for k, v in rows.items()}
        dists.append(mean_pairwise_distance(spaces.fd_space(m, generate(task, repeat, gen)[m])))
    t0, n_timed = time.time(), 3
    for j in range(n_timed):
        generate(task, {k: v[j:j + 1] for k, v in rows.items()}, gen)
    t1, n_batch = time.time(), min(32, len(rows['sources']))
    generate(task, {k: v[:n_batch] for k, v in rows.items()}, gen)
    speed = {'sec_per_sample': (t1 - t0) / n_timed, 'sec_per_sample_b32': (time.time() - t1) / n_batch}
    return {'diversity': float(np.mean(dists)), **speed} if dists else speed      # n_diverse=0: no diversity



def write_table(path, metrics):
    """A markdown table of metrics, one row per task with its metrics as `name value` pairs."""
    lines = ['| key | value |', '|---|---|'] + [f"| {k} | {v:.4g} |" for k, v in sorted(metrics.items())]
    with open(path + '.tmp', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(path + '.tmp', path)
    return '\n'.join(lines)


def evaluate(cfg):
    """Run the configured tasks; write metrics.json and table.md into out_dir; return the metrics."""
    torch.manual_seed(cfg['seed'])
    _, meta = open_split(cfg['data_dir'], cfg['dataset'], cfg['split'], [])
    judges = Judges(meta, cfg['ckpt_dir'], cfg['device'])
    metrics, generator = {}, None
    for task in cfg['tasks'].split(','):
        t0 = time.time()
        if task == 'enc':
            metrics.update(task_enc(cfg, judges))
        elif task in OUTPUTS:
            generator = generator or load_generator(cfg, meta)
            metrics.update(task_generate(cfg, judges, generator, task))
        else:
            raise SystemExit(f"unknown task {task!r} (tasks: enc, {', '.join(OUTPUTS)})")
        metrics[f"{task}.eval_seconds"] = time.time() - t0
    os.makedirs(cfg['out_dir'], exist_ok=True)
    write_json(os.path.join(cfg['out_dir'], 'metrics.json'), metrics)
    print(write_table(os.path.join(cfg['out_dir'], 'table.md'), metrics))
    return metrics


if __name__ == '__main__':
    try:
        evaluate(configure(default_config(), script=__file__))
    except (StaleCache, MediaError, FileNotFoundError) as e:   # one line naming the file, no traceback
        sys.exit(f"error: {e}")
