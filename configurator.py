"""Plain-Python configuration, nanoGPT style.

Usage from a script that has its defaults as module-level globals:
    from configurator import configure; configure(globals())
    $ python train.py config/toyav_clip.py --batch_size=64 --device=cpu

A positional argument is a config file of plain assignments, executed over the defaults;
`--key=value` overrides a default, type-checked against it; an unknown key is an error.
"""
import argparse
import ast
import copy
import re
import sys


def parse_value(key, raw, default):
    """Parse one override string into the type of its default."""
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    if default is None or value is None or isinstance(default, str) and isinstance(value, str):
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, int):
        return float(value)
    elif isinstance(value, type(default)):
        return value
    raise SystemExit(f"--{key}={raw}: expected {type(default).__name__} "
                     f"like the default {default!r}")


def usage(script):
    """The help text of a script: its docstring, then every default with its trailing comment."""
    src = open(script).read()
    doc = ast.get_docstring(ast.parse(src)) or ''
    block = src
    if src.count('\n# ---') >= 2:          # the defaults between the rules
        block = src.split('\n# ---')[1]
    rows = re.findall(r"^([a-z_][a-z0-9_]*) = (.+?)(?:  # (.*))?$", block, re.M)
    lines = []
    for key, value, comment in rows:
        line = f"  --{key}={value.strip()}".ljust(44)
        if comment:
            line += f" {comment}"
        lines.append(line)
    head = "options (config files may set any of them; --key.sub=value sets one entry of a dict):"
    return f"{doc}\n\n{head}\n" + "\n".join(lines)


def configure(config, argv=None, script=None):
    """Apply config files and --key=value overrides from argv to the dict `config` (in place)."""
    argv = sys.argv[1:] if argv is None else argv
    if script and ('-h' in argv or '--help' in argv):
        print(usage(script))
        raise SystemExit(0)
    keys = set(config)
    for arg in argv:
        if not arg.startswith('--'):
            scope = {}
            with open(arg) as f:
                exec(f.read(), {}, scope)
            unknown = set(scope) - keys
            if unknown:
                raise SystemExit(f"{arg}: unknown config keys {sorted(unknown)}")
            config.update(scope)
        else:
            key, eq, raw = arg[2:].partition('=')
            if not eq:
                raise SystemExit(f"{arg}: overrides are written --key=value")
            head, _, sub = key.partition('.')
            if head not in keys or sub and not isinstance(config[head], dict):
                raise SystemExit(f"--{key}: unknown config key (known: {', '.join(sorted(keys))})")
            if sub:
                config[head] = {**config[head], sub: parse_value(key, raw, config[head].get(sub))}
            else:
                config[key] = parse_value(key, raw, config[key])
    return config


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help of an argparse script keeps the docstring's layout and shows every default."""


def native_bf16(device):
    """Why bfloat16 is native on a device ('' if not): CUDA bf16, a CPU with AMX or AVX512-BF16."""
    import torch
    kind = device.split(':')[0]
    if kind == 'cuda' and torch.cuda.is_bf16_supported():
        return 'CUDA with bf16'
    if kind != 'cpu':
        return ''
    if torch.cpu._is_amx_tile_supported():
        return 'CPU with AMX'
    if torch.cpu._is_avx512_bf16_supported():
        return 'CPU with AVX512-BF16'
    return ''         # elsewhere (AVX2-only CPUs, most laptops) bf16 is ~100x slower than float32


def resolve_dtype(dtype, device, verbose=True):
    """'auto' -> 'bfloat16' where the device computes it natively, else 'float32' (said once)."""
    if dtype not in ('auto', 'float32', 'bfloat16'):
        raise SystemExit(f"dtype={dtype!r}: expected 'auto', 'float32' or 'bfloat16'")
    if dtype != 'auto':
        return dtype
    why = native_bf16(device)
    resolved = 'bfloat16' if why else 'float32'
    if verbose:
        reason = why or f'no native bfloat16 on this {device}'
        print(f"dtype auto -> {resolved} ({reason})", flush=True)
    return resolved


CONFIG_TYPES = (int, float, bool, str, dict, list)  # the globals a script's config is made of


def config_keys(namespace):
    """The names of a script's defaults: its lower-case module globals of the config types."""
    return [k for k, v in namespace.items()
            if not k.startswith('_') and k.islower() and isinstance(v, CONFIG_TYPES)]


def defaults(namespace, keys):
    """A fresh dict of a script's defaults (deep copies, so a run cannot change them)."""
    return {k: copy.deepcopy(namespace[k]) for k in keys}
