"""FLUX.1: generators.FluxTransformer and model.py's 16-channel KLAutoencoder against tiny random
diffusers models through the importers and load_generator (offline, fp32); FlowMatching against
diffusers' FlowMatchEulerDiscreteScheduler and an exact velocity field; generators.Flux against
FluxPipeline."""
import inspect

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import generators as E
from conftest import (check_vae, close, overfit_one_batch, randomize, tiny_flux,
                      tiny_flux_pipeline)

diffusers = pytest.importorskip('diffusers')
pytestmark = pytest.mark.usefixtures('one_thread')

# ----------------------------------------------------------------------------- Flux transformer

def _reference(ref, x, t, ctx, vec, guidance, mask=None):
    """diffusers' transformer on x (B, C, H, W) as FluxPipeline drives it: packed, its ids."""
    B, C, H, W = x.shape
    pipe = diffusers.FluxPipeline
    packed = pipe._pack_latents(x, B, C, H, W)  # (B, H/2 * W/2, 4C)
    img_ids = pipe._prepare_latent_image_ids(B, H // 2, W // 2, x.device, x.dtype)  # (N, 3)
    txt_ids = torch.zeros(ctx.shape[1], 3)
    kwargs = None
    if mask is not None:  # the pipeline masks nothing; the attention processor takes a mask
        keep = torch.cat([mask, torch.ones(B, packed.shape[1], dtype=torch.bool)], 1)  # (B, L + N)
        kwargs = dict(attention_mask=keep[:, None, None, :])
    out = ref(packed, ctx, vec, t, img_ids, txt_ids, guidance, joint_attention_kwargs=kwargs).sample
    return pipe._unpack_latents(out, 8 * H, 8 * W, 8)  # (B, C, H, W)


def _check_flux(ours, ref):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 6, generator=g)  # H != W: a row / column mix-up shows
    ctx = torch.randn(2, 5, 12, generator=g)
    vec = torch.randn(2, 10, generator=g)
    t = torch.tensor([0.3, 0.9])  # flow times, the pipeline's timestep / 1000
    guidance = torch.tensor([3.5, 1.0]) if ref.config.guidance_embeds else None
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    with torch.no_grad():
        full = ours(x, t, ctx=ctx, vec=vec, guidance=guidance)
        close(full, _reference(ref, x, t, ctx, vec, guidance))
        masked = ours(x, t, ctx=ctx, ctx_mask=mask, vec=vec, guidance=guidance)
        close(masked, _reference(ref, x, t, ctx, vec, guidance, mask))
        assert not torch.allclose(masked[0], full[0])


@pytest.mark.parametrize('guidance', [True, False])  # FLUX.1-dev embeds the guidance; schnell not
def test_flux_parity(guidance):
    ref = tiny_flux(guidance)
    net = E.FluxTransformer(**E.flux_config(ref.config))
    ours = E.load_state(net, E.import_flux(ref.state_dict()))
    _check_flux(ours.eval(), ref)


def test_rope_matches_diffusers():
    # all three axes in use (the pipeline's text ids are all 0): FluxPosEmbed, apply_rotary_emb
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (7, 3), generator=g)
    cos, sin = E.rope_angles(ids, (4, 6, 6))
    want_cos, want_sin = FluxPosEmbed(10000, (4, 6, 6))(ids)
    close(cos, want_cos)
    close(sin, want_sin)
    q = torch.randn(2, 3, 7, 16, generator=g)  # (B, heads, S, head_dim)
    close(E.rotate(q, cos, sin), apply_rotary_emb(q, (want_cos, want_sin), sequence_dim=2))
    patches = [[0, i, j] for i in range(2) for j in range(3)]  # (text, row, column)
    assert E.flux_positions(2, 2, 3).tolist() == [[0, 0, 0]] * 2 + patches


def _bfl_state(ref):
    """diffusers FluxTransformer2DModel -> black-forest-labs/flux's names (fused qkv, linear1)."""
    sd = ref.state_dict()
    names = {'x_embedder': 'img_in', 'context_embedder': 'txt_in', 'proj_out': 'final_layer.linear'}
    for src, dst in (('timestep', 'time_in'), ('text', 'vector_in'), ('guidance', 'guidance_in')):
        names[f'time_text_embed.{src}_embedder.linear_1'] = f'{dst}.in_layer'
        names[f'time_text_embed.{src}_embedder.linear_2'] = f'{dst}.out_layer'
    out = {'final_layer.adaLN_modulation.1.' + w: E._swap_halves(sd['norm_out.linear.' + w])
           for w in ('weight', 'bias')}
    for i in range(len(ref.transformer_blocks)):
        src = f'transformer_blocks.{i}.'
        dst = f'double_blocks.{i}.'
        names.update({src + a: dst + b for a, b in (
            ('norm1.linear', 'img_mod.lin'), ('norm1_context.linear', 'txt_mod.lin'),
            ('attn.to_out.0', 'img_attn.proj'), ('attn.to_add_out', 'txt_attn.proj'),
            ('ff.net.0.proj', 'img_mlp.0'), ('ff.net.2', 'img_mlp.2'),
            ('ff_context.net.0.proj', 'txt_mlp.0'), ('ff_context.net.2', 'txt_mlp.2'))})
        for w in ('weight', 'bias'):
            img = [sd[f'{src}attn.to_{n}.{w}'] for n in 'qkv']
            txt = [sd[f'{src}attn.add_{n}_proj.{w}'] for n in 'qkv']
            out[f'{dst}img_attn.qkv.{w}'] = torch.cat(img)
            out[f'{dst}txt_attn.qkv.{w}'] = torch.cat(txt)
        for stream, added in (('img', ''), ('txt', 'added_')):
            for n, name in (('q', 'query'), ('k', 'key')):
                norm = sd[f'{src}attn.norm_{added}{n}.weight']
                out[f'{dst}{stream}_attn.norm.{name}_norm.scale'] = norm
    for i in range(len(ref.single_transformer_blocks)):
        src = f'single_transformer_blocks.{i}.'
        dst = f'single_blocks.{i}.'
        names[src + 'norm.linear'] = dst + 'modulation.lin'
        names[src + 'proj_out'] = dst + 'linear2'
        for w in ('weight', 'bias'):
            parts = [sd[f'{src}attn.to_{n}.{w}'] for n in 'qkv'] + [sd[f'{src}proj_mlp.{w}']]
            out[f'{dst}linear1.{w}'] = torch.cat(parts)
        out[dst + 'norm.query_norm.scale'] = sd[src + 'attn.norm_q.weight']
        out[dst + 'norm.key_norm.scale'] = sd[src + 'attn.norm_k.weight']
    for src, dst in names.items():
        out.update({f'{dst}.{w}': sd[f'{src}.{w}'] for w in ('weight', 'bias')})
    return out


def _diffusers_converter(width):
    """diffusers' BFL -> diffusers converter, its hard-coded FLUX.1 width (3072) set to `width`."""
    from diffusers.loaders import single_file_utils
    source = inspect.getsource(single_file_utils.convert_flux_transformer_checkpoint_to_diffusers)
    assert 'inner_dim = 3072' in source
    namespace = dict(vars(single_file_utils))
    exec(source.replace('inner_dim = 3072', f'inner_dim = {width}'), namespace)
    return namespace['convert_flux_transformer_checkpoint_to_diffusers']


def test_flux_bfl_checkpoint(tmp_path):
    # black-forest-labs/flux's layout (flux1-dev.safetensors) read by load_generator with the
    # diffusers config; the BFL state dict is checked first: diffusers' converter gives ref's back
    ref = tiny_flux(guidance=True, seed=1)
    bfl = _bfl_state(ref)
    back = _diffusers_converter(ref.inner_dim)(dict(bfl))
    assert back.keys() == ref.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in ref.state_dict().items())
    save_file(bfl, tmp_path / 'flux1-tiny.safetensors')
    ours = E.load_generator('flux', str(tmp_path / 'flux1-tiny.safetensors'), dict(ref.config))
    _check_flux(ours, ref)


def test_load_generator_reads_a_saved_flux(tmp_path):
    ref = tiny_flux(guidance=False)
    ref.save_pretrained(tmp_path)
    ours = E.load_generator('flux', str(tmp_path))
    assert not ours.training
    assert type(ours) is E.FluxTransformer
    assert ours.guidance_embedder is None
    _check_flux(ours, ref)


def _tiny_ours(**kw):
    return E.FluxTransformer(in_channels=4, hidden_size=32, num_heads=2, depth=1, depth_single=1,
                             ctx_dim=12, vec_dim=10, axes_dim=(4, 6, 6), **kw)


def test_flux_zero_init_output_is_zero():
    net = _tiny_ours()
    x = torch.randn(2, 4, 8, 6)
    t = torch.tensor([0.1, 1.0])
    ctx = torch.randn(2, 3, 12)
    vec = torch.randn(2, 10)
    out = net(x, t, ctx=ctx, vec=vec, guidance=torch.tensor([3.5, 3.5]))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))
    with pytest.raises(AssertionError, match='guidance'):
        net(x, t, ctx=ctx, vec=vec)


def test_flux_runs_in_bfloat16():
    # q and k leave the fp32 rotation in their own dtype, so a bf16 model's attention gets one dtype
    net = randomize(_tiny_ours(guidance_embed=False))
    x = torch.randn(2, 4, 8, 6)
    t = torch.tensor([0.1, 1.0])
    ctx = torch.randn(2, 3, 12)
    vec = torch.randn(2, 10)
    with torch.no_grad():
        full = net(x, t, ctx=ctx, vec=vec)
        half = net.to(torch.bfloat16)(x.bfloat16(), t, ctx=ctx.bfloat16(), vec=vec.bfloat16())
    assert half.dtype == torch.bfloat16
    assert (half.float() - full).abs().max() < 0.05 * full.abs().max()


def test_flux_learns_one_batch():
    torch.manual_seed(0)
    net = _tiny_ours(guidance_embed=False)
    flow = E.FlowMatching()
    x0 = torch.randn(4, 4, 8, 8)
    cond = dict(ctx=torch.randn(4, 3, 12), vec=torch.randn(4, 10))
    before, after = overfit_one_batch(net, lambda g: flow.loss(net, x0, cond, g), steps=300)
    assert after < 0.5 * before, (before, after)  # about 2.0 -> 0.54 here

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
    check_vae(ours, ref, torch.randn(2, 3, 16, 12))

# ----------------------------------------------------------------------------- the pipeline

@pytest.mark.parametrize('guidance', [True, False])   # FLUX.1-dev's and -schnell's layouts
def test_flux_pipeline_matches_diffusers(guidance, tmp_path):
    pipe = tiny_flux_pipeline(guidance)
    pipe.save_pretrained(tmp_path)
    ours = E.Flux.from_pretrained(str(tmp_path))
    assert not ours.training
    assert not any(p.requires_grad for p in ours.parameters())
    g = torch.Generator().manual_seed(0)
    cond = dict(ctx=torch.randn(2, 5, 12, generator=g), vec=torch.randn(2, 10, generator=g))
    height = 24                                  # H != W: latents 12 x 8, 24 packed tokens
    width = 16
    assert ours.latent_shape(height, width) == (4, 12, 8)
    z = torch.randn(2, 4, 12, 8, generator=torch.Generator().manual_seed(1))  # our first draw
    packed = pipe._pack_latents(z, 2, 4, 12, 8)                                # (2, 24, 16)
    with torch.no_grad():
        ref = pipe(prompt_embeds=cond['ctx'], pooled_prompt_embeds=cond['vec'], latents=packed,
                   height=height, width=width, num_inference_steps=3, guidance_scale=4.0,
                   output_type='np').images                                   # (2, H, W, 3)
    z_ours = ours.sample(cond, 3, 4.0, torch.Generator().manual_seed(1), height, width)
    pictures = ours.decode(z_ours)
    np.testing.assert_allclose(pictures.numpy(), ref, atol=1e-4)
    assert pictures.std() > 1e-3                 # the random weights do draw something
    images = ours.generate(cond, 3, 4.0, torch.Generator().manual_seed(1), height, width)
    assert images.dtype == torch.uint8
    assert images.shape == (2, height, width, 3)
    assert np.abs(images.numpy() - np.round(ref * 255)).max() <= 1   # rounding of a float gap

# ----------------------------------------------------------------------------- flow matching

def _velocity(x, t):
    return 0.3 * x + 0.5 * t.view(-1, 1, 1, 1) - 0.1


@pytest.mark.parametrize('config', [
    dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),  # FLUX.1-dev's
    dict(shift=1.0, use_dynamic_shifting=False),  # FLUX.1-schnell's
    dict(shift=3.0)])  # SD3's
def test_flow_matching_matches_diffusers(config):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift
    sched = diffusers.FlowMatchEulerDiscreteScheduler(**config)
    steps = 7
    x_T = torch.randn(2, 4, 48, 40, generator=torch.Generator().manual_seed(0))
    mu = calculate_shift(48 * 40 // 4)  # as FluxPipeline: from the number of packed tokens
    sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    x = x_T
    for t in sched.timesteps:
        x = sched.step(_velocity(x, (t / 1000).expand(2)), t, x).prev_sample
    flow = E.FlowMatching(**E.flow_config(sched.config))
    close(flow.times(steps, x_T), sched.sigmas)
    close(flow.sample(_velocity, x_T, steps=steps), x)


def test_flow_matching_oracle():
    # the exact velocity of the straight paths to one data point: Euler lands on it, the loss is 0
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8, generator=g)
    noise = torch.randn(2, 4, 8, 8, generator=g)
    exact = lambda x, t: (x - x0) / t.view(-1, 1, 1, 1)
    for flow in (E.FlowMatching(dynamic_shift=True), E.FlowMatching(shift=3.0, logit_normal=False)):
        for steps in (1, 4, 28):
            close(flow.sample(exact, noise, steps=steps), x0)
        assert flow.loss(exact, x0, rng=torch.Generator().manual_seed(1)).item() < 1e-10
        still = lambda x, t: torch.zeros_like(x)
        loss = flow.loss(still, x0, rng=torch.Generator().manual_seed(1))
        assert 1 < loss.item() < 3  # E|noise - x0|^2 = 2
