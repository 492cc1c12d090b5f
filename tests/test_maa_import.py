"""The full-scale parts of the maa method, offline on tiny random models: Make-An-Audio's CompVis
checkpoint through generators.py's importers against diffusers' own CompVis converters, and the hf
suite's imagebind role against the CLIPModel it wraps.

References: Make-An-Audio (Huang et al. 2023; Text-to-Audio/Make-An-Audio,
configs/text_to_audio/txt2audio_args.yaml), latent diffusion (Rombach et al. 2022; CompVis layout),
diffusers.loaders.single_file_utils (create_*_diffusers_config_from_ldm, convert_ldm_*_checkpoint),
ImageBind (Girdhar et al. 2023; facebookresearch/ImageBind).
"""
import copy
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import generators as G
import model as M
from conftest import CAPTIONS, check_vae, close, randomize, save_hf, tiny_hf_clip
from encoders import IMAGEBIND_CLIP, IMAGEBIND_LN_EPS, HFClip, HFImageBind, load_hf

diffusers = pytest.importorskip('diffusers')
ldm = pytest.importorskip('diffusers.loaders.single_file_utils')
pytestmark = pytest.mark.usefixtures('one_thread')

# Make-An-Audio's configs/text_to_audio/txt2audio_args.yaml, the parts the converters read, verbatim
MAA_UNET = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320,
                attention_resolutions=[1, 2], num_res_blocks=2, channel_mult=[1, 2], num_heads=8,
                use_spatial_transformer=True, transformer_depth=1, context_dim=1024,
                use_checkpoint=True, legacy=False)
MAA_VAE = dict(double_z=True, z_channels=4, resolution=624, in_channels=1, out_ch=1, ch=128,
               ch_mult=[1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[78, 156], dropout=0.0)
MAA_YAML = {'model': {'params': {
    'linear_start': 0.00085, 'linear_end': 0.0120, 'timesteps': 1000, 'channels': 4,
    'conditioning_key': 'crossattn', 'scale_by_std': True,
    'unet_config': {'params': MAA_UNET},
    'first_stage_config': {'params': {'embed_dim': 4, 'ddconfig': MAA_VAE}}}}}


def _tiny_yaml(channel_mult, attention_resolutions):
    """Make-An-Audio's yaml at width 32 (CompVis's GroupNorm has 32 groups), 2 heads, context 12."""
    tiny = copy.deepcopy(MAA_YAML)
    params = tiny['model']['params']
    params['unet_config']['params'].update(
        model_channels=32, channel_mult=channel_mult, attention_resolutions=attention_resolutions,
        num_heads=2, context_dim=12)
    # attention at levels 2 and 3, as Make-An-Audio's 156 and 78 of 624
    params['first_stage_config']['params']['ddconfig'].update(ch=32, resolution=32,
                                                              attn_resolutions=[8, 4])
    return tiny


def _rename(sd, rules):
    """Ordered (regex, replacement) rules over every key."""
    out = {}
    for k, v in sd.items():
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


def _same_state(a, b):
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _with_other_parts(part, prefix):
    """A Lightning LatentDiffusion checkpoint around one part: other parts and buffers beside it."""
    other = {G.LDM_UNET: G.LDM_VAE + 'encoder.conv_in.weight',
             G.LDM_VAE: G.LDM_UNET + 'out.2.weight'}
    sd = {prefix + k: v for k, v in part.items()}
    sd[other[prefix]] = torch.rand(2, 2)
    sd['cond_stage_model.caption_encoder.projection.linear1.weight'] = torch.rand(4, 3)
    sd['betas'] = torch.rand(1000)
    sd['scale_factor'] = torch.tensor(0.8)
    return {'state_dict': sd, 'epoch': 3, 'global_step': 10}

# ----------------------------------------------------------------------------- configs


def test_maa_config():
    unet = G.maa_unet_config(MAA_YAML)
    assert unet == dict(in_ch=4, out_ch=4, channels=(320, 640), layers=2, attn=(True, True),
                        heads=8, groups=32, eps=1e-5, depth=1, ctx_dim=1024)
    assert G.maa_unet_config(MAA_UNET) == unet
    vae = G.maa_vae_config(MAA_YAML)
    assert vae == dict(in_ch=1, out_ch=1, channels=(128, 256, 256, 512), layers=2, latent=4,
                       groups=32, scaling_factor=1.0,
                       attn=(False, False, True, True))  # sides 624, 312 | 156, 78
    learned = copy.deepcopy(MAA_YAML)
    learned['model']['params']['scale_factor'] = 0.8   # the checkpoint's buffer, put in the yaml
    assert G.maa_vae_config(learned)['scaling_factor'] == 0.8


def test_maa_unet_config_agrees_with_diffusers():
    # diffusers' reading of the same yaml: block types, widths, heads, context, depths
    ref = ldm.create_unet_diffusers_config_from_ldm(MAA_YAML, {})
    ours = G.maa_unet_config(MAA_YAML)
    assert ref['block_out_channels'] == list(ours['channels'])
    assert [t.startswith('CrossAttn') for t in ref['down_block_types']] == list(ours['attn'])
    assert ref['attention_head_dim'] == ours['heads']  # diffusers' legacy name for the head count
    assert ref['cross_attention_dim'] == ours['ctx_dim']
    assert ref['layers_per_block'] == ours['layers']
    assert ref['transformer_layers_per_block'] == ours['depth']

# ----------------------------------------------------------------------------- U-Net parity


def _compvis_unet(ref):
    """diffusers UNet2DConditionModel -> CompVis UNetModel keys (diffusers' converter, inverted)."""
    step = ref.config.layers_per_block + 1
    attn = [t.startswith('CrossAttn') for t in ref.config.up_block_types]
    sub = lambda m: int(m[2] == 'attentions')  # ResBlock 0, SpatialTransformer 1
    down = lambda m: f'input_blocks.{1 + int(m[1]) * step + int(m[3])}.{sub(m)}.'
    op = lambda m: f'input_blocks.{(int(m[1]) + 1) * step}.0.op.'
    up = lambda m: f'output_blocks.{int(m[1]) * step + int(m[3])}.{sub(m)}.'
    upsample = lambda m: f'output_blocks.{(int(m[1]) + 1) * step - 1}.{1 + attn[int(m[1])]}.conv.'
    return _rename(ref.state_dict(), [
        (r'(resnets\.\d+\.)norm1\.', r'\1in_layers.0.'),
        (r'(resnets\.\d+\.)conv1\.', r'\1in_layers.2.'),
        (r'(resnets\.\d+\.)time_emb_proj\.', r'\1emb_layers.1.'),
        (r'(resnets\.\d+\.)norm2\.', r'\1out_layers.0.'),
        (r'(resnets\.\d+\.)conv2\.', r'\1out_layers.3.'),
        (r'(resnets\.\d+\.)conv_shortcut\.', r'\1skip_connection.'),
        (r'^time_embedding\.linear_1\.', 'time_embed.0.'),
        (r'^time_embedding\.linear_2\.', 'time_embed.2.'),
        (r'^conv_in\.', 'input_blocks.0.0.'),
        (r'^conv_norm_out\.', 'out.0.'), (r'^conv_out\.', 'out.2.'),
        (r'^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.', down),
        (r'^down_blocks\.(\d+)\.downsamplers\.0\.conv\.', op),
        (r'^mid_block\.resnets\.(\d)\.', lambda m: f'middle_block.{2 * int(m[1])}.'),
        (r'^mid_block\.attentions\.0\.', 'middle_block.1.'),
        (r'^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.', up),
        (r'^up_blocks\.(\d+)\.upsamplers\.0\.conv\.', upsample)])


def _maa_unet(yaml):
    """A random diffusers U-Net of a yaml, as a CompVis checkpoint, and diffusers' reading of it."""
    config = ldm.create_unet_diffusers_config_from_ldm(yaml, {})
    src = randomize(diffusers.UNet2DConditionModel(**config))
    ckpt = _with_other_parts(_compvis_unet(src), G.LDM_UNET)
    ref = diffusers.UNet2DConditionModel(**config)
    converted = ldm.convert_ldm_unet_checkpoint(ckpt['state_dict'], config)
    ref.load_state_dict(converted, strict=True)
    _same_state(ref.state_dict(), src.state_dict())  # the test's CompVis keys are diffusers'
    return ckpt, ref.eval()


def _check_maa_unet(ours, ref):
    x = torch.randn(2, 4, 8, 12)
    t = torch.tensor([10, 900])
    ctx = torch.randn(2, 5, 12)
    with torch.no_grad():
        close(ours(x, t, ctx=ctx), ref(x, t, encoder_hidden_states=ctx).sample)


@pytest.mark.parametrize('mult, attn', [([1, 2], [1, 2]),        # Make-An-Audio's levels
                                        ([1, 2, 2], [2, 4])])    # a first level without attention
def test_maa_unet_parity(mult, attn):
    yaml = _tiny_yaml(mult, attn)
    ckpt, ref = _maa_unet(yaml)
    ours = G.load_state(M.UNet(**G.maa_unet_config(yaml)), G.import_maa_unet(ckpt)).eval()
    _check_maa_unet(ours, ref)


def test_load_generator_reads_a_maa_checkpoint(tmp_path):
    yaml = _tiny_yaml([1, 2], [1, 2])
    ckpt, ref = _maa_unet(yaml)
    torch.save(ckpt, tmp_path / 'maa1_full.ckpt')
    ours = G.load_generator('maa_unet', str(tmp_path / 'maa1_full.ckpt'), yaml)
    assert type(ours) is M.UNet
    assert not ours.training
    _check_maa_unet(ours, ref)

# ----------------------------------------------------------------------------- VAE parity


def _compvis_vae(ref):
    """diffusers AutoencoderKL -> CompVis AutoencoderKL keys, attention projections as 1x1 convs."""
    n = len(ref.config.block_out_channels)
    top_down = lambda m: f'decoder.up.{n - 1 - int(m[1])}.'
    sd = _rename(ref.state_dict(), [
        (r'(attentions\.\d+\.)group_norm\.', r'\1norm.'),
        (r'(attentions\.\d+\.)to_(q|k|v)\.', r'\1\2.'),
        (r'(attentions\.\d+\.)to_out\.0\.', r'\1proj_out.'),
        (r'\.conv_shortcut\.', '.nin_shortcut.'),
        (r'^encoder\.down_blocks\.(\d+)\.resnets\.', r'encoder.down.\1.block.'),
        (r'^encoder\.down_blocks\.(\d+)\.attentions\.', r'encoder.down.\1.attn.'),
        (r'^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.', r'encoder.down.\1.downsample.'),
        (r'^decoder\.up_blocks\.(\d+)\.', top_down),
        (r'(decoder\.up\.\d+\.)resnets\.', r'\1block.'),
        (r'(decoder\.up\.\d+\.)attentions\.', r'\1attn.'),
        (r'(decoder\.up\.\d+\.)upsamplers\.0\.', r'\1upsample.'),
        (r'\.mid_block\.resnets\.0\.', '.mid.block_1.'),
        (r'\.mid_block\.resnets\.1\.', '.mid.block_2.'),
        (r'\.mid_block\.attentions\.0\.', '.mid.attn_1.'), (r'\.conv_norm_out\.', '.norm_out.')])
    conv = re.compile(r'(attn\.\d+|attn_1)\.(q|k|v|proj_out)\.weight$')
    return {k: v[:, :, None, None] if conv.search(k) else v for k, v in sd.items()}


def _diffusers_vae_state(ckpt, config):
    """diffusers' converter, and its attention-block converter for the level attentions it skips."""
    part = {k[len(G.LDM_VAE):]: v for k, v in ckpt.items() if k.startswith(G.LDM_VAE)}
    skipped = re.compile(r'\.(down|up)\.\d+\.attn\.')
    converted = ldm.convert_ldm_vae_checkpoint(ckpt, config)
    out = {k: v for k, v in converted.items() if not skipped.search(k)}
    n = len(config['block_out_channels'])
    for i in range(n):
        for old, new in ((f'encoder.down.{i}.attn', f'encoder.down_blocks.{i}.attentions'),
                         (f'decoder.up.{i}.attn', f'decoder.up_blocks.{n - 1 - i}.attentions')):
            keys = [k for k in part if k.startswith(old + '.')]
            ldm.update_vae_attentions_ldm_to_diffusers(keys, out, part, {'old': old, 'new': new})
    return out


def _maa_vae(yaml):
    """A random diffusers VAE of a yaml, as a CompVis checkpoint, and diffusers' reading of it."""
    attn = G.maa_vae_config(yaml)['attn']
    config = ldm.create_vae_diffusers_config_from_ldm(yaml, {}, scaling_factor=1.0)
    # diffusers' config ignores the yaml's attn_resolutions: the attention levels are set here
    down = ['AttnDownEncoderBlock2D' if a else 'DownEncoderBlock2D' for a in attn]
    up = ['AttnUpDecoderBlock2D' if a else 'UpDecoderBlock2D' for a in attn[::-1]]
    config.update(down_block_types=down, up_block_types=up)
    src = randomize(diffusers.AutoencoderKL(**config))
    ckpt = _with_other_parts(_compvis_vae(src), G.LDM_VAE)
    ref = diffusers.AutoencoderKL(**config)
    ref.load_state_dict(_diffusers_vae_state(ckpt['state_dict'], config), strict=True)
    _same_state(ref.state_dict(), src.state_dict())
    return ckpt, ref.eval()


def test_maa_vae_parity():
    yaml = _tiny_yaml([1, 2], [1, 2])
    ckpt, ref = _maa_vae(yaml)
    assert sum(k.endswith('.attn.0.q.weight') for k in ckpt['state_dict']) == 4  # 2 levels, 2 sides
    ours = G.load_state(M.KLAutoencoder(**G.maa_vae_config(yaml)), G.import_maa_vae(ckpt)).eval()
    check_vae(ours, ref, torch.randn(2, 1, 32, 16))


def test_maa_vae_alone():
    # a VAE training run's checkpoint (configs/train/vae.yaml): no prefix, its loss under loss.*
    ckpt, _ = _maa_vae(_tiny_yaml([1, 2], [1, 2]))
    sd = ckpt['state_dict']
    part = {k[len(G.LDM_VAE):]: v for k, v in sd.items() if k.startswith(G.LDM_VAE)}
    part['loss.discriminator.main.0.weight'] = torch.zeros(4, 1, 4, 4)
    _same_state(G.import_maa_vae({'state_dict': part}), G.import_maa_vae(sd))

# ----------------------------------------------------------------------------- imagebind role


def test_imagebind_is_normalised_clip(imagebind):
    clip = HFClip(imagebind.model, imagebind.processor, imagebind.tokenizer)
    images = np.random.default_rng(0).integers(0, 256, (2, 20, 28, 3), dtype=np.uint8)
    ours = imagebind.encode_image(images)
    ref = clip.encode_image(images)
    torch.testing.assert_close(ours.emb, F.normalize(ref.emb, dim=-1))
    torch.testing.assert_close(ours.tokens, ref.tokens)
    assert not torch.allclose(ref.emb.norm(dim=-1), torch.ones(2))  # so the normalisation is ours
    text = imagebind.encode_text(CAPTIONS)
    ref_text = clip.encode_text(CAPTIONS)
    torch.testing.assert_close(text.emb, F.normalize(ref_text.emb, dim=-1))
    torch.testing.assert_close(text.tokens, ref_text.tokens)
    assert torch.equal(text.mask, ref_text.mask)


def test_imagebind_from_pretrained(imagebind, tmp_path):
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
    assert HFImageBind.from_pretrained.__func__.__defaults__ == (IMAGEBIND_CLIP,)
    clip = tiny_hf_clip()   # imagebind's weights with OpenCLIP's LayerNorm eps, as laion's has
    assert clip.model.config.text_config.layer_norm_eps == 1e-5
    loaded = load_hf('imagebind', save_hf(clip, tmp_path))
    assert type(loaded) is HFImageBind
    norms = [m for m in loaded.model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 7                                  # text 3, vision 4
    assert all(m.eps == IMAGEBIND_LN_EPS for m in norms)
    proc = loaded.processor   # ImageBind's transform at the model's side (32 here, 224 for ViT-H)
    assert (proc.size.shortest_edge, proc.crop_size.height, proc.crop_size.width) == (32, 32, 32)
    assert proc.resample == PILImageResampling.BICUBIC
    assert tuple(proc.image_mean) == tuple(OPENAI_CLIP_MEAN)
    assert tuple(proc.image_std) == tuple(OPENAI_CLIP_STD)
    images = np.random.default_rng(1).integers(0, 256, (2, 40, 30, 3), dtype=np.uint8)
    torch.testing.assert_close(loaded.encode_image(images).emb, imagebind.encode_image(images).emb)
    text = loaded.encode_text(CAPTIONS)
    torch.testing.assert_close(text.emb, imagebind.encode_text(CAPTIONS).emb)
