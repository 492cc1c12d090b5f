"""The layout: one method, one file; the drivers know no method; the registry is the one table."""
import os
import re

import methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVERS = ('train.py', 'sample.py', 'eval.py')
DESIGN_KEYS = ('v2a', 'echoes', 'ldm', 'seeingsounds', 'sonify', 'maa')   # DESIGN.md's method keys


def method_names(source):
    """The method keys a source text names as words (any case: 'Visual Echoes' names echoes)."""
    keys = sorted(set(methods.METHODS) | set(DESIGN_KEYS))
    return [k for k in keys if re.search(rf"\b{k}\b", source, re.IGNORECASE)]


def test_no_driver_names_a_method():
    for name in DRIVERS:
        with open(os.path.join(ROOT, name)) as f:
            assert method_names(f.read()) == [], name


def test_the_check_finds_a_method_named_in_a_driver():
    added = "if ckpt['method'] == 'echoes':\n    steps = JOINT_STEPS  # V2A-Mapper's default\n"
    assert method_names(added) == ['echoes', 'v2a']
    # parts of other names are not keys
    assert method_names('vq_audio_ids, out/toyav_t2a, AudioLDM') == []


def test_every_method_has_a_file_a_config_and_both_halves():
    for key, module in methods.METHODS.items():
        assert module.__file__ == os.path.join(ROOT, 'methods', f"{key}.py")
        assert os.path.exists(os.path.join(ROOT, 'config', f"{key}.py")), key
        assert callable(getattr(module.Model, 'forward')), key
        assert hasattr(module.Pipeline, 'OPTIONS'), key
        assert methods.NETWORKS[key] is module.Model
        assert methods.PIPELINES[key] is module.Pipeline
