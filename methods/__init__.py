"""The one registry of nanoAV: a method key -> its network and pipeline; train/sample/eval read it.

A method lives in one file, methods/<key>.py, read top to bottom like its paper. It defines:

    Model      an nn.Module: Model(**model_args); .fields, the dataset fields a batch holds;
               forward(batch) -> its training loss. Optional hooks the loop calls when they exist:
                 setup(run)        once before training from scratch (run: the training config)
                 transform(run)    -> fn(batch, rng) -> batch, run on every training batch, or None
                 param_groups()    -> {group name: [parameters]}; the config's lr_groups sets rates
                 metrics(batch)    -> {name: float}, averaged over val batches at each evaluation
    Pipeline   Pipeline(model, ckpt, ckpt_dir, device, **options): the frozen parts around a model.
                 OPTIONS = {name: (default, help)}: its sampling settings and defaults, stated once
                 tasks = {task: (input modalities, output modalities)},
                   e.g. 'i2a': (('image',), ('audio',))
                 mel_config: the log-mel settings of its sound
                 generate(task, cond, rng, n=1) -> {modality: media}; cond maps input modalities to
                   media: 'image' uint8 (B, H, W, 3) (a video: (B, F, H, W, 3)), 'audio' log-mels
                   (B, n_mels, frames), 'text' a list of B captions; beside 'audio', 'wave': the
                   same sounds as raw mono waves float32 (B, T) at mel_config's sample rate, where
                   the caller has them (sample.py and eval.py do: a published encoder reads
                   waves); n: the batch of a task without inputs

The frozen parts this repository trains itself (toy CLIP/CLAP/ImageBind, tokenizers, autoencoders,
judges) go through the same loop; their networks are model.py's and only the codecs have a pipeline
(a round trip). To add a method: write methods/<key>.py with Model and Pipeline, add it to METHODS
below, add config/<key>.py, and tests/test_<key>.py.
"""
import os

from encoders import FROZEN_NETWORKS, MediaError, ToyTokenizer
from encoders import load_checkpoint as load_network
from methods import echoes, ldm, maa, seeingsounds, sonify, v2a

# key -> the module with its Model and Pipeline
METHODS = {'v2a': v2a, 'echoes': echoes, 'ldm': ldm, 'seeingsounds': seeingsounds,
           'maa': maa, 'sonify': sonify}


class Reconstruction:
    """A trained tokenizer or autoencoder as a pipeline: media -> its codes -> media again."""

    OPTIONS = {}

    def __init__(self, model, ckpt, ckpt_dir='out', device='cpu', **options):
        self.codec = ToyTokenizer(model.to(device), ckpt)
        self.mel_config = self.codec.mel_config
        modality = self.codec.modality
        self.tasks = {'reconstruct': ((modality,), (modality,))}

    def generate(self, task, cond, rng=None, n=1):
        """{modality: media (B, ...)} -> {modality: the media rebuilt from its codes}."""
        modality, media = next(iter(cond.items()))
        return {modality: self.codec.decode(self.codec.encode(media))}


NETWORKS = {**FROZEN_NETWORKS, **{key: module.Model for key, module in METHODS.items()}}
PIPELINES = {'vq': Reconstruction, 'autoencoder': Reconstruction,
             **{key: module.Pipeline for key, module in METHODS.items()}}

# What `python sample.py` runs without --ckpt, by the inputs it is given: (run directory, the
# command that trains it); the Quick start trains the first.
DEFAULT_RUNS = {
    ('image',): ('out/toyav_echoes', 'python train.py config/echoes.py'),
    ('audio',): ('out/toyav_echoes', 'python train.py config/echoes.py'),
    ('audio', 'image'): ('out/toyav_echoes', 'python train.py config/echoes.py'),
    ('text',): ('out/toyav_t2a', 'python train.py config/ldm.py'),
    ('image', 'text'): ('out/toyav_maa', 'python train.py config/maa.py'),
}


def checkpoint_path(run):
    """A run directory (out/<exp>) or a checkpoint file -> the checkpoint file."""
    return run if run.endswith('.pt') else os.path.join(run, 'ckpt.pt')


def load_checkpoint(run, device='cpu'):
    """Rebuild a trained network from its checkpoint alone (EMA weights if any) -> (model, ckpt)."""
    return load_network(checkpoint_path(run), device, NETWORKS)


def options(pipeline, overrides):
    """A pipeline's OPTIONS defaults with overrides applied; an unknown one is a one-line error."""
    known = pipeline.OPTIONS
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        names = ', '.join(known) or 'none'
        raise ValueError(f"{pipeline.__name__} has no option {', '.join(unknown)} "
                         f"(its options: {names})")
    return {name: overrides.get(name, default) for name, (default, _) in known.items()}


def pipeline_class(ckpt, path, method=None):
    """The pipeline class of a checkpoint's method (or of `method`); refuses a frozen part's."""
    key = method or ckpt['method']
    if key not in PIPELINES:
        runnable = ', '.join(PIPELINES)
        raise MediaError(f"{path}: a {key} checkpoint (a frozen part other models read), not one "
                         f"that generates; pipelines exist for {runnable}")
    return PIPELINES[key]


def load_pipeline(run, ckpt_dir='out', device='cpu', method=None, **overrides):
    """The pipeline of a trained run (or of `method`, on another's run), its options resolved."""
    model, ckpt = load_checkpoint(run, device)
    cls = pipeline_class(ckpt, checkpoint_path(run), method)
    return cls(model, ckpt, ckpt_dir, device, **options(cls, overrides)), ckpt
