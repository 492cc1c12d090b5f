"""Shared test fixtures."""
import os
from pathlib import Path

import pytest


@pytest.fixture(scope='session')
def real_data():
    """The real data folder (NANOAV_REAL_DATA): skip when the variable is unset, fail when it points nowhere."""
    root = os.environ.get('NANOAV_REAL_DATA')
    if not root:
        pytest.skip('NANOAV_REAL_DATA is not set')
    path = Path(root)
    if not path.is_dir():
        pytest.fail(f'NANOAV_REAL_DATA={root} is set but is not a directory')
    return path


TINY = {  # model_args that make every toy network train in a second
    'clip': dict(method='contrastive', model_args=dict(modalities=('image', 'text'), pairs=(('image', 'text'),), embed_dim=32, width=32, n_layer=1, n_head=2)),
    'clap': dict(method='contrastive', model_args=dict(modalities=('audio', 'text'), pairs=(('audio', 'text'),), embed_dim=32, width=32, n_layer=1, n_head=2)),
    'imagebind': dict(method='contrastive', model_args=dict(modalities=('image', 'text', 'audio'), pairs=(('image', 'text'), ('image', 'audio')), embed_dim=32, width=32, n_layer=1, n_head=2)),
    'vq_image': dict(method='vq', model_args=dict(modality='image', width=16, codebook_size=32, code_dim=8)),
    'vq_audio': dict(method='vq', model_args=dict(modality='audio', width=16, codebook_size=32, code_dim=8)),
    'judge_audio': dict(method='judge', model_args=dict(modality='audio', heads=(('sources', 10), ('env', 3), ('loud', 3)), width=32, n_head=2)),
    'judge_image': dict(method='judge', model_args=dict(modality='image', heads=(('sources', 10), ('env', 3), ('loud', 3)), width=32, n_head=2)),
    'ae_audio': dict(method='autoencoder', model_args=dict(modality='audio', channels=(8, 16), layers=1, latent=2, groups=4)),
}


def tiny_config(root, name, **overrides):
    """train.py's defaults for a tiny toy model writing under root/out."""
    import train
    cfg = train.default_config()
    cfg.update(TINY[name], out_dir=str(root / 'out' / f"toyav_{name}"), data_dir=str(root / 'data'), ckpt_dir=str(root / 'out'), batch_size=8,
               max_iters=4, eval_interval=4, eval_iters=1, log_interval=100, warmup_iters=1)
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope='session')
def tiny(tmp_path_factory):
    """A tiny prepared toyav, every toy model trained for a few steps, and its toy feature cache."""
    import prepare
    import train
    root = tmp_path_factory.mktemp('tiny')
    prepare.main(['toyav', '--data_dir', str(root / 'data'), '--n_train', '48', '--n_val', '16', '--n_test', '16'])
    for name in TINY:
        train.train(tiny_config(root, name))
    prepare.main(['toyav', '--features', 'toy', '--data_dir', str(root / 'data'), '--out_dir', str(root / 'out'), '--batch_size', '16'])
    return root
