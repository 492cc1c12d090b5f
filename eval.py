"""Evaluation: judges, metrics, picture grids, the task table (the README's Results explain each).

    python eval.py config/toyav_eval.py     # the frozen parts -> out/<exp>/metrics.json, table.md
    python eval.py --tasks=enc --split=val
    python eval.py --ckpt=out/<run> --tasks=i2a,a2i --options.cfg_scale=1   # a run's tasks

Judges are probe classifiers trained on real media of the dataset (python train.py
config/<dataset>_judge_{audio,image}.py); generated media is judged by them and embedded by the
frozen encoders. Task `enc` measures the frozen parts themselves: the judges on real media,
zero-shot source accuracy and retrieval of the toy encoders, the tokenizers' reconstructions, and
the real-vs-real Fréchet floor in each embedding space. A generation task is one of the run's
pipeline (methods/<method>.py): test rows become its conditions, its outputs are judged against the
rows' labels, and the first rows are drawn beside their inputs and the real targets in samples.png.
Generated sound is judged and embedded as the log-mel a generator outputs; the vocoder is measured
on its own (`enc.vocoder.*`), as a ceiling.

References: Fréchet distance of embeddings: Heusel et al. 2017 (FID), Kilgour et al. 2019 (FAD), as
audioldm_eval computes it; Inception score: Salimans et al. 2016, torch-fidelity's splits; CLIP
score: Hessel et al. 2021; the image-to-audio and audio-to-image evaluation protocols of Wang et al.
2024 and Yang et al. 2024.
"""
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg, special, stats
from scipy.spatial.distance import pdist

from configurator import config_keys, configure, defaults, resolve_dtype
from data import check_mel, open_split, prompts, read_json, write_json
from encoders import (GriffinLim, MediaError, MelConfig, StaleCache, load_checkpoint, load_toy,
                      log_mel, parts_of, read_checkpoint, save_png, spectrogram_picture, to_tensor,
                      toy_checkpoint, upscale)
from methods import load_pipeline
from model import FIELDS

# -----------------------------------------------------------------------------
out_dir = 'out/toyav_eval'      # where metrics.json, table.md and samples.png are written
dataset = 'toyav'               # data/<dataset>/
data_dir = 'data'               # where datasets live
ckpt_dir = 'out'                # where trained models live (out/<dataset>_<name>/ckpt.pt)
tasks = 'enc'  # comma-separated: enc, or generation tasks of the run (i2a, a2i, t2a, ...)
ckpt = ''  # the run to evaluate (a training run directory or checkpoint), for all but enc
method = ''  # run this method's pipeline on the run ('': the run's own; e.g. a baseline)
options = {}  # the pipeline's options (methods/<method>.py OPTIONS), e.g. {'cfg_scale': 1.0}
caption = 'caption'  # what a text input reads of a row's caption: 'caption' (all), or a part
curves = ''  # runs (comma-separated) whose train and val loss curves go to out_dir/curves.png
n_eval = 500                    # test samples judged per generation task (at most the split's size)
n_diverse = 16                  # inputs given several outputs each for the diversity metric
n_outputs = 4                   # outputs per input for the diversity metric
n_grid = 8                      # test rows drawn per task in samples.png
split = 'test'                  # split whose media is judged
sources = ''                    # judge only rows holding one of these sources (comma-separated)
batch_size = 250                # batch size for judging, encoding and generating
seed = 1337                     # seed of any sampling
device = 'cpu'                  # 'cpu' or 'cuda'
dtype = 'auto'  # generation: 'auto' (bfloat16 where native, else float32), 'float32', 'bfloat16'
# -----------------------------------------------------------------------------
CONFIG_KEYS = config_keys(globals())


def default_config():
    """The defaults above as a fresh dict."""
    return defaults(globals(), CONFIG_KEYS)


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------

def _np(x):
    """Tensor, array or list -> float64 numpy array."""
    if torch.is_tensor(x):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def frechet_distance(x, y):
    """Fréchet distance of Gaussians fit to embeddings x (N, D) and y (M, D), as audioldm_eval."""
    x = _np(x)
    y = _np(y)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("frechet_distance needs >= 2 embeddings per set, got "
                         f"{len(x)} and {len(y)}")
    mu1 = x.mean(0)                                                     # (D,)
    mu2 = y.mean(0)
    s1 = np.atleast_2d(np.cov(x, rowvar=False))                         # (D, D)
    s2 = np.atleast_2d(np.cov(y, rowvar=False))
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            imaginary = np.abs(covmean.imag).max()
            raise ValueError(f"frechet_distance: imaginary component {imaginary:.3g} in sqrtm")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def accuracy(pred, target):
    """Fraction of pred (N,) labels or (N, C) scores (argmax) equal to target labels (N,)."""
    pred = _np(pred)
    if pred.ndim == 2:
        pred = pred.argmax(-1)
    return float((pred == _np(target)).mean())


def multilabel_set_accuracy(probs, target_multi_hot, threshold=0.5):
    """Fraction of rows whose predicted set (probs (N, C) >= threshold) is exactly the target."""
    predicted = _np(probs) >= threshold                                 # (N, C)
    target = _np(target_multi_hot) > 0.5
    return float((predicted == target).all(-1).mean())


def recall_at_k(query_emb, key_emb, query_labels, key_labels, k):
    """Fraction of queries (Q, D) with a key (K, D) of their label among the k most similar keys."""
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    similarity = unit(_np(query_emb)) @ unit(_np(key_emb)).T            # (Q, K) cosines
    top = np.argsort(-similarity, axis=-1, kind='stable')[:, :k]        # (Q, k)
    hits = _np(key_labels)[top] == _np(query_labels)[:, None]           # (Q, k)
    return float(hits.any(-1).mean())


def spearman(x, y):
    """Spearman rank correlation of two paired sequences (N,)."""
    return float(stats.spearmanr(_np(x), _np(y)).statistic)


def inception_score(logits, splits=10):
    """exp(E KL(p(y|x) || p(y))) of logits (N, C): the mean of torch-fidelity's shuffled splits."""
    p = special.softmax(_np(logits), axis=-1)  # (N, C)
    p = p[np.random.RandomState(2020).permutation(len(p))]
    scores = []
    for chunk in np.array_split(p, min(splits, len(p))):
        marginal = chunk.mean(0, keepdims=True)  # (1, C)
        kl = (special.xlogy(chunk, chunk) - special.xlogy(chunk, marginal)).sum(-1)     # (n,)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores))


def kl_divergence(logits_p, logits_q):
    """Mean KL(softmax(p_i) || softmax(q_i)) over pairs of logits (N, C); p the reference (real)."""
    log_p = special.log_softmax(_np(logits_p), -1)
    log_q = special.log_softmax(_np(logits_q), -1)
    return float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean())


def mean_pairwise_distance(emb):
    """Mean Euclidean distance over all pairs of embeddings (N, D), N >= 2."""
    emb = _np(emb)
    if len(emb) < 2:
        raise ValueError(f"mean_pairwise_distance needs >= 2 embeddings, got {len(emb)}")
    return float(pdist(emb).mean())


def cosine_score(a, b):
    """100 x mean cosine similarity of paired embeddings a (N, D) and b (N, D)."""
    a = _np(a)
    b = _np(b)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)    # (N,)
    cos = (a * b).sum(-1) / np.maximum(norms, 1e-12)
    return float(100 * cos.mean())


# ---------------------------------------------------------------------------------------------
# judges
# ---------------------------------------------------------------------------------------------

def toy(name, cfg, meta):
    """A frozen toy model of the dataset (encoders.load_toy), refused if trained on other mels."""
    frozen = load_toy(name, parts_of(meta), cfg['ckpt_dir'], cfg['device'])
    run_dir = os.path.join(cfg['ckpt_dir'], f"{parts_of(meta)}_{name}")
    check_mel(run_dir, frozen.mel_config.dict(), meta)
    return frozen


class Judges:
    """The dataset's audio and image judges (frozen): media -> logits per head."""

    def __init__(self, meta, ckpt_dir, device='cpu'):
        self.nets = {}
        for m in ('audio', 'image'):
            path = toy_checkpoint(f"judge_{m}", parts_of(meta), ckpt_dir)
            net, ckpt = load_checkpoint(path, device)
            check_mel(path, ckpt['data']['mel'], meta)
            self.nets[m] = net.requires_grad_(False)
        self.device = device

    @torch.no_grad()
    def logits(self, modality, media, batch_size=250):
        """uint8 images (N, H, W, 3) or log-mels (N, n_mels, frames) -> {head: logits (N, n)}."""
        net = self.nets[modality]
        parts = []
        for i in range(0, len(media), batch_size):
            batch = to_tensor(media[i:i + batch_size]).to(self.device)
            parts.append(net.forward_logits(batch))
        return {k: torch.cat([p[k] for p in parts]).cpu() for k in parts[0]}

    def source_sets(self, modality, logits):
        """The judged source set of each sample (N, K) bool: sigmoid > 0.5, or the one choice of a
        judge trained on one source per sample (cross-entropy, e.g. avmnist's digits)."""
        scores = logits['sources']                                       # (N, K)
        if 'sources' in self.nets[modality].multilabel:
            return scores.sigmoid() > 0.5
        return F.one_hot(scores.argmax(-1), scores.shape[-1]).bool()


def label_fields(meta):
    """Label fields with class names (toyav: sources, env, loud; avmnist: sources, speaker)."""
    return [k for k in meta['classes'] if k in meta['fields']]


def judged(judges, modality, media, labels, prefix=''):
    """Judge media against its labels (a condition's, for generated media) -> {prefix + metric}.

    The metrics: the exact source set, every other head the judge and the labels share (toyav:
    environment, loudness or size class and its rank correlation), and the recall of the sources
    of two-source samples where there are any, and their exact source sets apart (mix_exact)."""
    logits = judges.logits(modality, media)
    pred = judges.source_sets(modality, logits).numpy()                 # (N, K)
    true = np.asarray(labels['sources']).astype(bool)
    two = true.sum(1) == 2
    out = {'source_acc': multilabel_set_accuracy(pred, true)}
    if two.any():
        out['mix_recall'] = float((pred & true)[two].sum() / true[two].sum())
        out['mix_exact'] = multilabel_set_accuracy(pred[two], true[two])
    for head in logits:
        if head != 'sources' and head in labels:
            out[f"{head}_acc"] = accuracy(logits[head], labels[head])
    if 'loud' in logits and 'loud' in labels and len(np.unique(labels['loud'])) > 1:
        probs = logits['loud'].softmax(-1)                              # (N, classes)
        level = (probs * torch.arange(probs.shape[-1])).sum(-1).numpy()  # (N,) expected class
        name = 'loudness_rho' if modality == 'audio' else 'size_rho'
        out[name] = spearman(labels['loud'], level)
    return {prefix + k: v for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------

def batched(fn, x, n):
    """fn over x in chunks of n (memmaps are read chunk by chunk) -> concatenated tensor."""
    return torch.cat([fn(np.asarray(x[i:i + n])) for i in range(0, len(x), n)])


def embedder(enc, modality):
    """A toy encoder's function media -> embeddings (N, D) for log-mels ('audio') or pictures."""
    encode = enc.encode_mel if modality == 'audio' else enc.encode_image
    return lambda x: encode(x).emb


def prompt_classes(enc, class_prompts):
    """Unit class embeddings (K, D): each class's prompts embedded as text, averaged (ensembles)."""
    ensembles = [F.normalize(enc.encode_text(p).emb, dim=-1).mean(0) for p in class_prompts]
    return F.normalize(torch.stack(ensembles), dim=-1)


def set_codes(multi_hot):
    """Multi-hot rows (N, K) -> one integer per distinct set (N,)."""
    return (np.asarray(multi_hot).astype(np.int64) << np.arange(multi_hot.shape[1])).sum(1)


def split_data(cfg):
    """The judged split's media and labels, val's media (Fréchet floors), the split's captions."""
    _, meta = open_split(cfg['data_dir'], cfg['dataset'], cfg['split'], [])
    raw = ['wave'] if 'wave' in meta['fields'] else []      # the sound a published encoder reads
    fields = ['image', 'mel'] + raw + label_fields(meta)
    data, _ = open_split(cfg['data_dir'], cfg['dataset'], cfg['split'], fields)
    val, _ = open_split(cfg['data_dir'], cfg['dataset'], 'val', ['image', 'mel'])
    captions = read_json(os.path.join(cfg['data_dir'], cfg['dataset'], 'captions.json'))
    return data, val, captions[cfg['split']], meta


def task_enc(cfg, judges):
    """The frozen parts on real media: judges, zero-shot encoders, tokenizers, Fréchet floors."""
    data, val, captions, meta = split_data(cfg)
    n = cfg['batch_size']
    labels = {k: np.asarray(data[k]) for k in label_fields(meta)}
    single = labels['sources'].sum(1) == 1
    single_source = labels['sources'][single].argmax(1)
    codes = set_codes(labels['sources'])
    out = {}
    for m, field in (('audio', 'mel'), ('image', 'image')):
        out.update(judged(judges, m, data[field], labels, f"judge_{m}."))
    class_prompts = prompts(cfg['dataset'])
    for name in ('clip', 'clap', 'imagebind'):
        enc = toy(name, cfg, meta)
        classes = prompt_classes(enc, class_prompts)                    # (K, D)
        caption_emb = enc.encode_text([c['caption'] for c in captions]).emb
        texts = F.normalize(caption_emb, dim=-1)                        # (N, D)
        for m, field in (('image', 'image'), ('audio', 'mel')):
            if m not in enc.roles:
                continue
            embed = embedder(enc, m)
            raw = batched(embed, data[field], n)                        # (N, D)
            emb = F.normalize(raw, dim=-1)
            zero_shot = (emb @ classes.T).argmax(-1).numpy()            # (N,) the nearest class
            key = f"{name}.{m}"
            out[f"{key}_source_acc"] = accuracy(zero_shot[single], single_source)
            out[f"{key}_text_r_at_5"] = recall_at_k(emb.numpy(), texts.numpy(), codes, codes, 5)
            floor_emb = batched(embed, val[field], n)
            out[f"{key}_fd_floor"] = frechet_distance(floor_emb.numpy(), raw.numpy())
    out['clip.source_acc'] = out['clip.image_source_acc']
    out['clap.source_acc'] = out['clap.audio_source_acc']
    mel_cfg = MelConfig(**meta['mel'])
    vocoder = GriffinLim(mel_cfg)
    vocoded = lambda mel: log_mel(vocoder(to_tensor(mel)), mel_cfg)  # through the waveform
    out.update(judged(judges, 'audio', batched(vocoded, data['mel'], n), labels, 'vocoder.'))
    for name in ('vq_image', 'vq_audio', 'ae_image', 'ae_audio'):  # tokenizers, autoencoders
        if not os.path.exists(toy_checkpoint(name, parts_of(meta), cfg['ckpt_dir'])):
            continue
        tok = toy(name, cfg, meta)
        round_trip = lambda x: tok.decode(tok.encode(x))
        recon = batched(round_trip, data[FIELDS[tok.modality]], n)
        media = batched(vocoded, recon, n) if tok.modality == 'audio' else recon
        out.update(judged(judges, tok.modality, media, labels, f"{name}."))
    if os.path.exists(toy_checkpoint('ast', parts_of(meta), cfg['ckpt_dir'])):
        out.update(probe_audio_tokens(cfg, meta, toy('ast', cfg, meta), data, labels))
    return {f"enc.{k}": float(v) for k, v in out.items()}


def linear_probe(train_x, train_y, test_x, test_y, steps=500, lr=0.05):
    """Test accuracy of a linear classifier fitted to standardised training features (Adam)."""
    mean = train_x.mean(0)
    std = train_x.std(0) + 1e-6
    x = (train_x - mean) / std                                              # (N, D)
    y = torch.as_tensor(np.array(train_y)).long()
    head = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    torch.manual_seed(0)
    for _ in range(steps):
        loss = F.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = head((test_x - mean) / std).argmax(-1)
    return accuracy(pred, test_y)


def probe_audio_tokens(cfg, meta, ast, data, labels):
    """What the toy AST's mean-pooled tokens keep: linear probes (fitted on the train split) for
    loudness, which it was not trained on, and environment, which it was."""
    train, _ = open_split(cfg['data_dir'], cfg['dataset'], 'train', ['mel'] + label_fields(meta))
    tokens = lambda x: ast.encode_mel(x).tokens.mean(1)                      # (B, D)
    train_x = batched(tokens, train['mel'], cfg['batch_size'])
    test_x = batched(tokens, data['mel'], cfg['batch_size'])
    out = {}
    for head in ('loud', 'env'):
        if head in labels:
            train_y = np.asarray(train[head])
            out[f"ast.{head}_probe_acc"] = linear_probe(train_x, train_y, test_x, labels[head])
    return out


# ---------------------------------------------------------------------------------------------
# generation tasks
# ---------------------------------------------------------------------------------------------

class Spaces:
    """The named embedding spaces of generated media: toy CLAP (audio), CLIP (images), ImageBind."""

    def __init__(self, cfg, meta):
        self.clap = toy('clap', cfg, meta)
        self.clip = toy('clip', cfg, meta)
        self.bind = toy('imagebind', cfg, meta)
        self.n = cfg['batch_size']

    def fd_space(self, modality, media):
        """Embeddings (N, D) for Fréchet distance, diversity: CLAP for sound, CLIP for pictures."""
        enc = self.clap if modality == 'audio' else self.clip
        return batched(embedder(enc, modality), media, self.n).numpy()

    def joint_space(self, modality, media):
        """ImageBind embeddings (N, D) of captions, sounds or pictures (cross-modal similarity)."""
        if modality == 'text':
            return self.bind.encode_text(list(media)).emb.numpy()
        return batched(embedder(self.bind, modality), media, self.n).numpy()


REAL = {'audio': 'mel', 'image': 'image'}     # the dataset field of each generated modality


def conditions(rows, captions, inputs):
    """Test rows -> a pipeline's condition: {image uint8, audio log-mels, wave, text captions}."""
    cond = {m: torch.from_numpy(np.array(rows[REAL[m]])) for m in inputs if m in REAL}
    if 'audio' in inputs and 'wave' in rows:
        cond['wave'] = torch.from_numpy(np.array(rows['wave']))          # (B, T)
    if 'text' in inputs:
        cond['text'] = list(captions)
    return cond


def as_float(media):
    """Generated media for judging: pictures stay uint8, the rest float32 (bf16 autocast's too)."""
    return media if media.dtype == torch.uint8 else media.float()


def generate_rows(cfg, pipeline, task, rows, captions, rng, dtype):
    """The pipeline's outputs {modality: (n, ...)} for the conditions of n rows, in batches."""
    inputs = pipeline.tasks[task][0]
    size = cfg['batch_size']
    bf16 = dtype == 'bfloat16'
    parts = []
    for i in range(0, len(captions), size):
        part = {k: v[i:i + size] for k, v in rows.items()}
        cond = conditions(part, captions[i:i + size], inputs)
        with torch.autocast(cfg['device'].split(':')[0], torch.bfloat16, enabled=bf16):
            out = pipeline.generate(task, cond, rng, n=len(part['sources']))
        parts.append({m: as_float(torch.as_tensor(v).cpu()) for m, v in out.items()})
    return {m: torch.cat([p[m] for p in parts]) for m in parts[0]}


def load_run(cfg):
    """The configured run's pipeline with its options."""
    if not cfg['ckpt']:
        raise SystemExit("generation tasks need --ckpt=out/<run>")
    pipeline, _ = load_pipeline(cfg['ckpt'], cfg['ckpt_dir'], cfg['device'], cfg['method'] or None,
                                **cfg['options'])
    return pipeline


def task_generate(cfg, judges, pipeline, spaces, task, dtype):
    """Generate from test conditions with the run; judge, embed and time the outputs; their grid."""
    if task not in pipeline.tasks:
        raise SystemExit(f"task {task!r}: this run does {', '.join(pipeline.tasks)}")
    inputs, outputs = pipeline.tasks[task]
    data, val, captions, meta = split_data(cfg)
    chosen = chosen_rows(cfg, meta, data)[:cfg['n_eval']]                # (n,) row indices
    n = len(chosen)
    rows = {k: np.asarray(v)[chosen] for k, v in data.items()}
    parts = sorted(captions[0]) if captions else []
    if captions and cfg['caption'] not in parts:
        raise ValueError(f"caption={cfg['caption']!r}: data/{cfg['dataset']}'s captions give "
                         f"{', '.join(parts)}")
    texts = [captions[i][cfg['caption']] for i in chosen]      # all, or a part ('text', 'visual')
    rng = torch.Generator().manual_seed(cfg['seed'])
    out = generate_rows(cfg, pipeline, task, rows, texts, rng, dtype)
    metrics = {}
    for m in outputs:
        media = out[m]
        prefix = '' if len(outputs) == 1 else f"{m}_"
        if task == 'inpaint':  # judge the regenerated span alone, and the real span beside it
            span = pipeline.options['span']
            media = span_tiled(media, span)
            real_span = span_tiled(to_tensor(rows['mel']), span)
            metrics.update(judged(judges, m, real_span, rows, 'real_span_'))
        metrics.update(judged(judges, m, media, rows, prefix))
        real_emb = spaces.fd_space(m, rows[REAL[m]])                   # (n, D)
        val_media = np.asarray(val[REAL[m]][:n])
        metrics[prefix + 'fd'] = frechet_distance(spaces.fd_space(m, media), real_emb)
        metrics[prefix + 'fd_floor'] = frechet_distance(spaces.fd_space(m, val_media), real_emb)
        if m == 'image':
            metrics.update(image_scores(spaces, media, rows, cfg['dataset']))
        for kind, subset in kinds(meta, rows).items():     # a controllability set's kinds apart
            part = {k: v[subset] for k, v in rows.items()}
            metrics.update(judged(judges, m, media[torch.from_numpy(subset)], part,
                                  f"{kind}.{prefix}"))
        if len(inputs) == 1 and inputs[0] != m:   # cross-modal similarity of input and output
            given = inputs[0]
            given_media = texts if given == 'text' else rows[REAL[given]]
            given_emb = spaces.joint_space(given, given_media)         # (n, D)
            metrics['cs'] = cosine_score(given_emb, spaces.joint_space(m, media))
    if task == 'joint':   # both judged the same source set
        heard = judges.source_sets('audio', judges.logits('audio', out['audio']))   # (n, K)
        seen = judges.source_sets('image', judges.logits('image', out['image']))
        metrics['source_acc'] = float((heard == seen).all(1).float().mean())
    metrics.update(diversity_and_speed(cfg, pipeline, spaces, task, rows, texts, dtype))
    grid = task_grid(task, inputs, outputs, rows, texts, out, cfg['n_grid'])
    return {f"{task}.{k}": float(v) for k, v in metrics.items()}, grid


def chosen_rows(cfg, meta, data):
    """Indices of the split's rows to judge: all, or those holding one of cfg['sources']."""
    holders = np.ones(len(data['sources']), dtype=bool)
    if cfg['sources']:
        names = meta['classes']['sources']
        wanted = [names.index(s) for s in cfg['sources'].split(',')]
        holders = np.asarray(data['sources'])[:, wanted].any(1)
    return np.flatnonzero(holders)


def kinds(meta, rows):
    """{kind name: row mask} of a split with a 'kind' label (toyav_ctrl), else {}."""
    if 'kind' not in rows or 'kind' not in meta['classes']:
        return {}
    names = meta['classes']['kind']
    return {names[k]: rows['kind'] == k for k in np.unique(rows['kind'])}


def image_scores(spaces, images, rows, dataset):
    """iis: mean toy-CLIP cosine of each generated picture and its real one; r_at_5: the share
    of pictures with one of their sources among the 5 classes nearest their CLIP embedding."""
    generated = F.normalize(torch.from_numpy(spaces.fd_space('image', images)), dim=-1)   # (N, D)
    real = F.normalize(torch.from_numpy(spaces.fd_space('image', rows['image'])), dim=-1)
    out = {'iis': float((generated * real).sum(-1).mean())}
    try:
        classes = prompt_classes(spaces.clip, prompts(dataset))                      # (K, D)
    except ValueError:                                                              # no prompts
        return out
    top = (generated @ classes.T).topk(min(5, len(classes)), dim=-1).indices       # (N, 5)
    holds = np.take_along_axis(np.asarray(rows['sources']), top.numpy(), 1)         # (N, 5)
    out['r_at_5'] = float(holds.any(1).mean())
    return out


def span_tiled(mels, span):
    """The time span (start, end fractions) of log-mels (N, n_mels, frames) repeated to fill the
    clip: a judge trained on whole clips reads a span this way far better than with the rest
    silenced (toyav real spans: 0.89 vs 0.42 sources)."""
    lo, hi = span
    frames = mels.shape[-1]
    a = int(lo * frames)
    b = max(int(hi * frames), a + 1)
    return torch.as_tensor(mels)[..., a + torch.arange(frames) % (b - a)]   # (N, n_mels, frames)


def diversity_and_speed(cfg, pipeline, spaces, task, rows, texts, dtype):
    """Mean pairwise distance among n_outputs outputs per input (first output modality); seconds
    per sample at batch 1 and at batch 32."""
    m = pipeline.tasks[task][1][0]
    rng = torch.Generator().manual_seed(cfg['seed'] + 1)
    run = lambda part, part_texts: generate_rows(cfg, pipeline, task, part, part_texts, rng, dtype)
    dists = []
    for j in range(min(cfg['n_diverse'], len(texts))):
        repeat = {k: np.repeat(v[j:j + 1], cfg['n_outputs'], 0) for k, v in rows.items()}
        outputs = run(repeat, texts[j:j + 1] * cfg['n_outputs'])[m]
        dists.append(mean_pairwise_distance(spaces.fd_space(m, outputs)))
    n_timed = 3
    t0 = time.time()
    for j in range(n_timed):
        run({k: v[j:j + 1] for k, v in rows.items()}, texts[j:j + 1])
    t1 = time.time()
    n_batch = min(32, len(texts))
    run({k: v[:n_batch] for k, v in rows.items()}, texts[:n_batch])
    speed = {'sec_per_sample': (t1 - t0) / n_timed,
             'sec_per_sample_b32': (time.time() - t1) / n_batch}
    if not dists:                                                      # n_diverse=0: none
        return speed
    return {'diversity': float(np.mean(dists)), **speed}


def picture(modality, media):
    """One cell of samples.png: a picture as it is, a sound as its spectrogram, both 128 px."""
    media = np.asarray(media)
    return spectrogram_picture(media, 128) if modality == 'audio' else upscale(media, 128)


def task_grid(task, inputs, outputs, rows, texts, out, n):
    """Rows of [input(s) | generated output(s) | real target(s)] for the first n test rows -> uint8.
    """
    n = min(n, len(texts))
    lines = []
    for j in range(n):
        cells = [picture(m, rows[REAL[m]][j]) for m in inputs if m in REAL]
        cells += [picture(m, out[m][j]) for m in outputs]
        cells += [picture(m, rows[REAL[m]][j]) for m in outputs]
        lines.append(np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0))) for c in cells], 1))
    columns = [m for m in inputs if m in REAL] + [f"generated {m}" for m in outputs]
    columns += [f"real {m}" for m in outputs]
    return f"{task}: " + ' | '.join(columns), np.concatenate(lines, 0)


def write_grids(path, grids):
    """samples.png: each task's grid under a line naming its columns, atomically."""
    from PIL import Image, ImageDraw
    width = max(g.shape[1] for _, g in grids)
    blocks = []
    for title, g in grids:
        head = Image.new('RGB', (width, 16), 'white')
        ImageDraw.Draw(head).text((4, 2), title, fill='black')
        body = np.pad(g, ((0, 8), (0, width - g.shape[1]), (0, 0)), constant_values=255)
        blocks += [np.asarray(head), body]
    save_png(path, np.concatenate(blocks, 0))


def write_curves(path, runs, size=(320, 200), pad=28):
    """curves.png: each run's train (grey) and val (blue) loss by iteration, a panel per run."""
    from PIL import Image, ImageDraw
    panels = []
    for run in runs:
        history = np.array(read_checkpoint(os.path.join(run, 'ckpt.pt'))['history'])  # (E, 3)
        if len(history) < 2:
            raise SystemExit(f"{run}: fewer than two evaluations in its checkpoint, no curve")
        panel = Image.new('RGB', size, 'white')
        draw = ImageDraw.Draw(panel)
        iters = history[:, 0]
        low = history[:, 1:].min()
        high = history[:, 1:].max()
        x = pad + (iters - iters[0]) / (iters[-1] - iters[0]) * (size[0] - 2 * pad)   # (E,)
        for column, colour in ((1, 'grey'), (2, 'blue')):
            height = (history[:, column] - low) / (high - low + 1e-12)                     # (E,)
            y = size[1] - pad - height * (size[1] - 2 * pad)
            draw.line(list(zip(x, y)), fill=colour, width=2)
        best = history[:, 2].argmin()
        draw.text((4, 2), f"{os.path.basename(run.rstrip('/'))}: val min {history[best, 2]:.4g} "
                  f"at {int(iters[best])}", fill='black')
        draw.text((4, size[1] - 14), f"iter {int(iters[0])}..{int(iters[-1])}, loss "
                  f"{low:.3g}..{high:.3g}", fill='black')
        panels.append(np.asarray(panel))
    save_png(path, np.concatenate(panels, 1))


def write_table(path, metrics):
    """A markdown table of the metrics, a `| key | value |` row each, written atomically -> text."""
    rows = [f"| {k} | {v:.4g} |" for k, v in sorted(metrics.items())]
    lines = ['| key | value |', '|---|---|'] + rows
    with open(path + '.tmp', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(path + '.tmp', path)
    return '\n'.join(lines)


def evaluate(cfg):
    """Run the configured tasks; write metrics.json, table.md and samples.png into out_dir."""
    torch.manual_seed(cfg['seed'])
    _, meta = open_split(cfg['data_dir'], cfg['dataset'], cfg['split'], [])
    judges = Judges(meta, cfg['ckpt_dir'], cfg['device'])
    metrics = {}
    grids = []
    pipeline = None
    spaces = None
    dtype = resolve_dtype(cfg['dtype'], cfg['device'])
    if cfg['curves']:
        os.makedirs(cfg['out_dir'], exist_ok=True)
        write_curves(os.path.join(cfg['out_dir'], 'curves.png'), cfg['curves'].split(','))
    for task in filter(None, cfg['tasks'].split(',')):
        t0 = time.time()
        if task == 'enc':
            metrics.update(task_enc(cfg, judges))
        else:
            pipeline = pipeline or load_run(cfg)
            spaces = spaces or Spaces(cfg, meta)
            task_metrics, grid = task_generate(cfg, judges, pipeline, spaces, task, dtype)
            metrics.update(task_metrics)
            grids.append(grid)
        metrics[f"{task}.eval_seconds"] = time.time() - t0
    if not metrics:                                        # curves alone: nothing else to write
        return metrics
    os.makedirs(cfg['out_dir'], exist_ok=True)
    write_json(os.path.join(cfg['out_dir'], 'metrics.json'), metrics)
    if grids:
        write_grids(os.path.join(cfg['out_dir'], 'samples.png'), grids)
    print(write_table(os.path.join(cfg['out_dir'], 'table.md'), metrics))
    return metrics


if __name__ == '__main__':
    try:
        evaluate(configure(default_config(), script=__file__))
    except (StaleCache, MediaError, FileNotFoundError, ValueError) as e:   # one line, no traceback
        sys.exit(f"error: {e}")
