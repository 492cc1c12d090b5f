"""FLUX.1 in model.py: its 16-channel KLAutoencoder against a tiny random diffusers model through
generators' importer and load_generator (offline, fp32)."""
import pytest
import torch

import generators as E
import model as M
from conftest import randomize
from test_generators import _close, one_thread  # noqa: F401 (one_thread: an autouse fixture)

diffusers = pytest.importorskip('diffusers')

# ----------------------------------------------------------------------------- FLUX.1's VAE

def test_flux_vae_parity(tmp_path):
    # 16 latent channels, no quant / post-quant convs, latents shifted before scaling
    ref = randomize(diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D',) * 2,
        up_block_types=('UpDecoderBlock2D',) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=16, norm_num_groups=4, scaling_factor=0.3611, shift_factor=0.1159,
        use_quant_conv=False, use_post_quant_conv=False))
    ref.save_pretrained(tmp_path)
    ours = E.load_generator('flux_vae', str(tmp_path))
    assert (ours.scaling_factor, ours.shift_factor) == (0.3611, 0.1159)
    x = torch.randn(2, 3, 16, 12)
    with torch.no_grad():
        dist, (mean, logvar) = ref.encode(x).latent_dist, ours.encode(x)
        _close(mean, dist.mean)
        _close(logvar, dist.logvar)
        _close(ours.decode(mean), ref.decode(mean).sample)
