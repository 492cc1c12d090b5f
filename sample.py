"""Run a trained model on input files (or a test sample of its dataset); write wav / png outputs.

    python sample.py --image cat.jpg                  # the default run for a picture: -> sound
    python sample.py --audio dog.wav                  # the default run for a sound: -> picture
    python sample.py --text "a loud dog barking in a tunnel" --n 4    # the default text -> sound
    python sample.py --ckpt out/toyav_vq_audio --index 3      # the 4th test sample through a run
    python sample.py --ckpt out/<run> --image cat.jpg --cfg_scale=1   # a run; --<option>=<value>
                                                  # for its pipeline's options (listed below)

Inputs become a condition ({image, audio, text}); the run's pipeline (methods/<method>.py) turns
it into media, written next to --out as <name>.<task>.wav + .spec.png for sound and
<name>.<task>.png for pictures (256 px, nearest neighbour; .raw.png at the model's size), each
atomically. Without --ckpt the default run for the given inputs is named in one line. --gain,
--reverb, --mix (with --mix_gain, --sequence) change an input sound before it is encoded. A frozen
part behind a run whose checkpoint is not the one its features were made by is refused.
"""
import argparse
import os
import sys
import textwrap

import numpy as np
import torch

from configurator import HelpFormatter, parse_value, resolve_dtype
from data import open_split, read_json, toyav
from encoders import (GriffinLim, MediaError, StaleCache, fit_length, load_audio, load_image,
                      load_video_frames, log_mel, resize_image, save_png, save_wav,
                      spectrogram_picture, upscale)
from methods import (DEFAULT_RUNS, PIPELINES, checkpoint_path, load_checkpoint, options,
                     pipeline_class)
from model import FIELDS

VIDEO_FRAMES = 10     # frames taken uniformly from a --video, as prepare.py vggsound does
FLAGS = {'image': '--image', 'audio': '--audio', 'text': '--text'}   # the input of each modality


def write_media(stem, out, mel_config):
    """Write one sample's outputs {audio: log-mel, wave?: (T,), image: uint8} -> their paths."""
    written = []
    if 'audio' in out:
        mel = np.asarray(out['audio'])
        wave = out.get('wave')
        if wave is None:
            wave = GriffinLim(mel_config)(torch.as_tensor(mel)[None])[0].numpy()
        save_wav(stem + '.wav', wave, mel_config.sample_rate)
        save_png(stem + '.spec.png', spectrogram_picture(mel))
        written += [stem + '.wav', stem + '.spec.png']
    if 'image' in out:
        image = np.asarray(out['image'])
        save_png(stem + '.png', upscale(image))
        save_png(stem + '.raw.png', image)
        written += [stem + '.png', stem + '.raw.png']
    return written


def edit_sound(wave, args, mel_config):
    """The input sound as --gain, --reverb and --mix ask: with another over it (at --mix_gain) or
    after it (--sequence), in a room, scaled."""
    if args.mix:
        other = fit_length(load_audio(args.mix, mel_config.sample_rate), len(wave))
        other = other * args.mix_gain
        if args.sequence:                     # each sound's first half, one after the other
            half = len(wave) // 2
            wave = np.concatenate([wave[:half], other[:len(wave) - half]])
        else:
            wave = wave + other
    if args.reverb:
        rng = np.random.default_rng(args.seed)
        env = [name for name, _ in toyav.ENVS].index(args.reverb)
        room = toyav.impulse_response(env, mel_config.sample_rate, rng)
        wave = np.convolve(wave, room)[:len(wave)].astype(np.float32)
    return wave * args.gain


def indexed_inputs(index, dataset, data_dir):
    """Test sample `index` -> ({image, audio, wave: media (1, ...), text: [caption]}, a name)."""
    root = os.path.join(data_dir, dataset)
    _, meta = open_split(data_dir, dataset, 'test', [])
    modalities = [m for m in ('image', 'audio') if FIELDS[m] in meta['fields']]
    if 'audio' in modalities and 'wave' in meta['fields']:
        modalities.append('wave')                  # the raw sound beside its log-mels
    fields = {m: FIELDS.get(m, m) for m in modalities}
    split, _ = open_split(data_dir, dataset, 'test', list(fields.values()))
    n = meta['counts']['test']
    if not 0 <= index < n:
        sys.exit(f"error: --index {index}: the test split of {root} has {n} samples")
    cond = {m: np.array(split[field][index])[None] for m, field in fields.items()}
    captions = read_json(os.path.join(root, 'captions.json'))['test']
    cond['text'] = [captions[index]['caption']]
    return cond, f"{dataset}_test{index}"


def file_inputs(args, image_size, mel_config):
    """The input files and text -> ({modality: media (1, ...) or [text]}, an output name)."""
    cond = {}
    names = []
    if args.audio:
        wave = load_audio(args.audio, mel_config.sample_rate)
        wave = fit_length(wave, mel_config.hop * mel_config.frames)   # one clip, as prepare.py cuts
        wave = edit_sound(wave, args, mel_config)
        mel = log_mel(torch.from_numpy(wave)[None], mel_config)      # (1, n_mels, frames)
        cond['audio'] = mel.numpy()
        cond['wave'] = wave[None]                                    # (1, T)
        names.append(os.path.basename(args.audio))
    if args.image:
        cond['image'] = load_image(args.image, image_size)[None]                     # (1, S, S, 3)
        names.append(os.path.basename(args.image))
    if args.video:
        frames = load_video_frames(args.video, VIDEO_FRAMES)                          # (F, H, W, 3)
        resized = np.stack([resize_image(f, image_size) for f in frames])             # (F, S, S, 3)
        cond['image'] = resized[None]
        names.append(os.path.basename(args.video))
    if args.text:
        cond['text'] = [args.text]
        names.append('_'.join(args.text.split()[:6]))
    name = os.path.splitext(names[0])[0] if names else 'sample'
    return cond, name


def repeat(media, n):
    """One input (1, ...) or [text] as a batch of n."""
    return media * n if isinstance(media, list) else np.repeat(media, n, 0)


def task_batch(cond, inputs, n):
    """A task's inputs as batches of n, and the raw wave beside log-mels when there is one."""
    names = list(inputs)
    if 'audio' in inputs and 'wave' in cond:
        names.append('wave')
    return {m: repeat(cond[m], n) for m in names}


def item(media, j):
    """Output j of a batch as an array (pictures stay uint8)."""
    x = torch.as_tensor(media[j])
    return x.numpy() if x.dtype == torch.uint8 else x.float().numpy()


def choose_tasks(tasks, cond, args):
    """--task, else for a test sample every task of one input modality, else the task whose inputs
    are exactly the given ones (a task without inputs when none are given)."""
    if args.task:
        if args.task not in tasks:
            sys.exit(f"error: --task {args.task}: this run does {', '.join(tasks)}")
        return [args.task]
    given = set(cond) - {'wave'}                   # the raw sound goes with 'audio'
    if args.index is not None:
        chosen = [t for t, (ins, _) in tasks.items() if len(ins) == 1 and ins[0] in given]
    else:
        chosen = [t for t, (ins, _) in tasks.items() if set(ins) == given]
    if not chosen:
        flags = lambda ms: ' + '.join(FLAGS[m] for m in ms) or 'nothing'
        takes = ' or '.join(f"{flags(ins)} ({t})" for t, (ins, _) in tasks.items())
        run = args.ckpt or 'the run'
        sys.exit(f"error: {run} takes {takes} or --index, not {flags(sorted(given))}")
    return chosen


def default_run(args):
    """The run for inputs given without --ckpt, named in one line, or exit naming its training
    command."""
    flags = {'audio': args.audio, 'image': args.image or args.video, 'text': args.text}
    given = tuple(sorted(m for m, flag in flags.items() if flag))
    inputs = ' + '.join(given)
    if given not in DEFAULT_RUNS:
        sys.exit(f"error: no default run for {inputs or 'no input'}; give --ckpt out/<run>")
    run, command = DEFAULT_RUNS[given]
    if not os.path.exists(checkpoint_path(run)):
        sys.exit(f"error: the default run for {inputs}, {run}, is not trained yet: {command}")
    print(f"using {run} (the default run for {inputs}; --ckpt picks another)")
    return run


def option_help():
    """Every pipeline's options with their defaults, for --help."""
    lines = ['pipeline options, given after the others as --name=value:']
    for key, cls in PIPELINES.items():
        for name, (default, text) in cls.OPTIONS.items():
            lines.append(f"  {key} --{name}={default!r}")
            lines += textwrap.wrap(text, 96, initial_indent=' ' * 6, subsequent_indent=' ' * 6)
    return '\n'.join(lines)


def parse_options(rest, cls):
    """--name=value (or --name value) leftovers -> typed overrides of the pipeline's options."""
    overrides = {}
    known = ', '.join(f"--{n}" for n in cls.OPTIONS) or 'none'
    args = list(rest)
    while args:
        arg = args.pop(0)
        name, eq, raw = arg[2:].partition('=')
        if not eq and args and not args[0].startswith('--'):
            raw = args.pop(0)
        if not arg.startswith('--') or name not in cls.OPTIONS or not (eq or raw):
            sys.exit(f"error: {arg}: not an option of this run (its options: {known})")
        overrides[name] = parse_value(name, raw, cls.OPTIONS[name][0])
    return overrides


def arguments():
    """The command line's parser; each pipeline's own options are parsed apart (parse_options)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter,
                                     epilog=option_help(), allow_abbrev=False)
    add = parser.add_argument
    add('--ckpt', help='a training run directory (out/<exp>) or a checkpoint file (default '
        '%(default)s: the run registered for the inputs)')
    add('--audio', help='input sound: any audio file, or a video whose sound is used')
    add('--image', help='input picture: any image file')
    add('--video', help='input video: its frames, uniformly spaced, as the picture')
    add('--text', help='input caption ("a loud dog barking in a tunnel")')
    add('--index', type=int, help="this test-split sample of the run's dataset as the input")
    add('--method', help="run this method's pipeline on the run (a baseline that trains nothing, "
        "on a generator's run; default %(default)s: the run's own)")
    add('--task', help="what to generate, one of the tasks of the run's pipeline: i2a, a2i, joint, "
        "inpaint, t2a, t2i, reconstruct, ... (default %(default)s: by the inputs)")
    add('--n', type=int, default=1, help='samples to generate for the input (new noise each)')
    add('--gain', type=float, default=1.0, help='input sound: scale it by this factor')
    add('--reverb', choices=['hall', 'tunnel'], help="input sound: play it in toyav's room")
    add('--mix', help='input sound: add this other sound file to it')
    add('--mix_gain', type=float, default=1.0, help='the --mix sound: scale it by this factor')
    add('--sequence', action='store_true',
        help='the --mix sound after the input sound (each for half the clip), not over it')
    add('--ckpt_dir', default='out', help='where the frozen parts live (out/<dataset>_<name>)')
    add('--data_dir', default='data', help='where datasets live (for --index)')
    add('--out', help='output stem (default %(default)s: out/samples/<input>.<run>)')
    add('--seed', type=int, default=1337, help='seed of any sampling')
    add('--device', default='cpu', help="'cpu' or 'cuda'")
    add('--dtype', default='auto', help="'auto' (bfloat16 where native, else float32), "
        "'float32' or 'bfloat16'")
    return parser


def main(argv=None):
    """Command line: inputs -> the run's pipeline -> files."""
    parser = arguments()
    args, rest = parser.parse_known_args(argv)
    if args.index is not None and (args.audio or args.image or args.video or args.text):
        parser.error('give --index or input files, not both')
    try:
        run = args.ckpt or default_run(args)
        model, ckpt = load_checkpoint(run, args.device)
        cls = pipeline_class(ckpt, checkpoint_path(run), args.method)
        if args.video and not getattr(cls, 'VIDEO', False):
            sys.exit(f"error: --video: {run} is a {ckpt['method']} run whose pipeline takes no "
                     "video (--audio takes a video's sound)")
        overrides = parse_options(rest, cls)
        pipeline = cls(model, ckpt, args.ckpt_dir, args.device, **options(cls, overrides))
        data = ckpt['data']
        if args.index is not None:
            cond, name = indexed_inputs(args.index, data['dataset'], args.data_dir)
        else:
            cond, name = file_inputs(args, data['image_size'], pipeline.mel_config)
        tasks = choose_tasks(pipeline.tasks, cond, args)
        run_name = os.path.basename(os.path.dirname(checkpoint_path(run)))
        stem = args.out or os.path.join('out', 'samples', f"{name}.{run_name}")
        os.makedirs(os.path.dirname(stem) or '.', exist_ok=True)
        bf16 = resolve_dtype(args.dtype, args.device) == 'bfloat16'
        rng = torch.Generator().manual_seed(args.seed)
        for task in tasks:
            batch = task_batch(cond, pipeline.tasks[task][0], args.n)
            with torch.autocast(args.device.split(':')[0], torch.bfloat16, enabled=bf16):
                out = pipeline.generate(task, batch, rng, n=args.n)
            for j in range(args.n):
                sample = {m: item(media, j) for m, media in out.items()}
                suffix = f".{j}" if args.n > 1 else ''
                for path in write_media(f"{stem}.{task}{suffix}", sample, pipeline.mel_config):
                    print(f"wrote {path}")
    except (MediaError, FileNotFoundError, StaleCache, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == '__main__':
    main()
