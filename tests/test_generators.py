"""Generators of model.py: parity with diffusers on tiny random models (offline, fp32) through the
importers and load_generator of generators.py, and diffusion-process sanity."""
import re

import pytest
import torch
from safetensors.torch import save_file

import generators as E
import model as M
from conftest import check_vae, close, overfit_one_batch, randomize

diffusers = pytest.importorskip('diffusers')
pytestmark = pytest.mark.usefixtures('one_thread')

# ----------------------------------------------------------------------------- parity

def _audioldm_unet():
    # AudioLDM layout: DownBlock2D + 3 cross-attention levels attending to themselves, the CLAP
    # vector concatenated
    return randomize(diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16, 16, 24),
        layers_per_block=2, down_block_types=('DownBlock2D',) + ('CrossAttnDownBlock2D',) * 3,
        up_block_types=('CrossAttnUpBlock2D',) * 3 + ('UpBlock2D',),
        cross_attention_dim=(8, 16, 16, 24), attention_head_dim=2, norm_num_groups=4,
        class_embed_type='simple_projection', projection_class_embeddings_input_dim=6,
        class_embeddings_concat=True))


def _check_audioldm_unet(ours, ref):
    x = torch.randn(2, 4, 16, 12)                           # width 12 -> 3: an odd level
    t = torch.tensor([10, 900])
    vec = torch.randn(2, 6)
    with torch.no_grad():
        want = ref(x, t, encoder_hidden_states=None, class_labels=vec).sample
        close(ours(x, t, vec=vec), want)


def _imported_unet(ref):
    """Our UNet with the weights of a diffusers UNet2DConditionModel, in eval mode."""
    net = M.UNet(**E.audioldm_unet_config(ref.config))
    return E.load_state(net, E.import_audioldm_unet(ref.state_dict())).eval()


def test_unet_audioldm_parity():
    ref = _audioldm_unet()
    _check_audioldm_unet(_imported_unet(ref), ref)


def test_unet_tokens_parity():
    # Make-An-Audio route: a token sequence through cross-attention (masked), the vector added to
    # the time embedding
    ref = randomize(diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), cross_attention_dim=12,
        attention_head_dim=2, norm_num_groups=4, class_embed_type='simple_projection',
        projection_class_embeddings_input_dim=5, class_embeddings_concat=False), seed=1)
    ours = _imported_unet(ref)
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([0, 999])
    vec = torch.randn(2, 5)
    ctx = torch.randn(2, 4, 12)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    with torch.no_grad():
        want = ref(x, t, encoder_hidden_states=ctx, class_labels=vec,
                   encoder_attention_mask=mask).sample
        close(ours(x, t, vec=vec, ctx=ctx, ctx_mask=mask), want)


def _audioldm_vae():
    return randomize(diffusers.AutoencoderKL(
        in_channels=1, out_channels=1, down_block_types=('DownEncoderBlock2D',) * 3,
        up_block_types=('UpDecoderBlock2D',) * 3, block_out_channels=(8, 16, 16),
        layers_per_block=2, latent_channels=4, norm_num_groups=4, scaling_factor=0.9))


def _check_audioldm_vae(ours, ref):
    assert ours.scaling_factor == 0.9
    check_vae(ours, ref, torch.randn(2, 1, 16, 8))


def test_vae_parity():
    ref = _audioldm_vae()
    kwargs = E.audioldm_vae_config(ref.config)
    ours = E.load_state(M.KLAutoencoder(**kwargs), E.import_audioldm_vae(ref.state_dict()))
    _check_audioldm_vae(ours.eval(), ref)
    # diffusers < 0.15, still on the hub
    old_names = {'q': 'query.', 'k': 'key.', 'v': 'value.', 'out.0': 'proj_attn.'}
    new_name = re.compile(r'(attentions\.0\.)to_(q|k|v|out\.0)\.')
    old = {new_name.sub(lambda m: m[1] + old_names[m[2]], k): v
           for k, v in ref.state_dict().items()}
    assert sum('.proj_attn.' in k for k in old) == 4  # weight and bias, encoder and decoder
    ours = E.load_state(M.KLAutoencoder(**kwargs), E.import_audioldm_vae(old))
    _check_audioldm_vae(ours.eval(), ref)


def _pixart(**extra):
    return randomize(diffusers.PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=8, num_layers=2,
        sample_size=8, patch_size=2, caption_channels=10, cross_attention_dim=24, **extra))


def _check_pixart(ours, ref):
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([3, 700])
    ctx = torch.randn(2, 5, 10)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    hw = torch.tensor([[64., 64.], [64., 96.]])
    ar = torch.tensor([[1.], [1.5]])
    with torch.no_grad():
        want = ref(x, encoder_hidden_states=ctx, timestep=t, encoder_attention_mask=mask,
                   added_cond_kwargs=dict(resolution=hw, aspect_ratio=ar)).sample
        close(ours(x, t, ctx=ctx, ctx_mask=mask, size=torch.cat([hw, ar], 1)), want)


@pytest.mark.parametrize('extra', [dict(),
                                   dict(use_additional_conditions=True, interpolation_scale=2)])
def test_pixart_parity(extra):
    ref = _pixart(**extra)
    ours = E.load_state(M.DiT(**E.pixart_config(ref.config)), E.import_pixart(ref.state_dict()))
    _check_pixart(ours.eval(), ref)


def _official_dit_state(ref):
    """diffusers DiTTransformer2DModel -> facebookresearch/DiT key names.

    The inverse of diffusers' conversion script.
    """
    sd = ref.state_dict()
    emb = 'transformer_blocks.0.norm1.emb.'
    names = {'pos_embed.proj': 'x_embedder.proj',
             emb + 'timestep_embedder.linear_1': 't_embedder.mlp.0',
             emb + 'timestep_embedder.linear_2': 't_embedder.mlp.2',
             'proj_out_1': 'final_layer.adaLN_modulation.1',
             'proj_out_2': 'final_layer.linear'}
    block_names = (('attn1.to_out.0', 'attn.proj'), ('ff.net.0.proj', 'mlp.fc1'),
                   ('ff.net.2', 'mlp.fc2'), ('norm1.linear', 'adaLN_modulation.1'))
    for b in range(len(ref.transformer_blocks)):
        for src, dst in block_names:
            names[f'transformer_blocks.{b}.{src}'] = f'blocks.{b}.{dst}'
    out = {f'{dst}.{w}': sd[f'{src}.{w}'] for src, dst in names.items() for w in ('weight', 'bias')}
    for b in range(len(ref.transformer_blocks)):
        for w in ('weight', 'bias'):
            qkv = [sd[f'transformer_blocks.{b}.attn1.to_{n}.{w}'] for n in 'qkv']
            out[f'blocks.{b}.attn.qkv.{w}'] = torch.cat(qkv)
    out['y_embedder.embedding_table.weight'] = sd[emb + 'class_embedder.embedding_table.weight']
    out['pos_embed'] = ref.pos_embed.pos_embed.clone()  # (1, N, d), fixed sin-cos
    return out


def test_dit_official_parity(tmp_path):
    # diffusers' DiT given the official model's shared embedders and timestep frequencies (its port
    # shifts them by 1), saved as facebookresearch/DiT's .pt and read back by load_generator with
    # the diffusers config
    ref = randomize(diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=8, num_layers=2,
        sample_size=8, patch_size=2, num_embeds_ada_norm=10, norm_eps=1e-6))
    for block in ref.transformer_blocks:
        block.norm1.emb.load_state_dict(ref.transformer_blocks[0].norm1.emb.state_dict())
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    official = _official_dit_state(ref)
    # x (2), t (4), y, pos; 10 per block; final (4)
    assert len(official) == 8 + 10 * len(ref.transformer_blocks) + 4
    torch.save(official, tmp_path / 'DiT-tiny.pt')
    ours = E.load_generator('dit', str(tmp_path / 'DiT-tiny.pt'), ref.config)
    x = torch.randn(3, 4, 8, 8)
    t = torch.tensor([0, 250, 999])
    y = torch.tensor([1, 9, 10])                            # 10 = the null class
    with torch.no_grad():
        close(ours(x, t, y=y), ref(x, timestep=t, class_labels=y).sample)
    close(M.pos_embed_2d(24, 4, 4), official['pos_embed'][0])


@pytest.mark.parametrize('kind, build, check, shard', [
    ('audioldm_unet', _audioldm_unet, _check_audioldm_unet, '10GB'),
    # several safetensors files and their index
    ('audioldm_unet', _audioldm_unet, _check_audioldm_unet, '20KB'),
    ('audioldm_vae', _audioldm_vae, _check_audioldm_vae, '10GB'),
    ('pixart', _pixart, _check_pixart, '10GB')])
def test_load_generator_reads_a_saved_diffusers_model(tmp_path, kind, build, check, shard):
    ref = build()
    ref.save_pretrained(tmp_path, max_shard_size=shard)
    assert (len(list(tmp_path.glob('*.safetensors'))) > 1) == (shard == '20KB')
    ours = E.load_generator(kind, str(tmp_path))
    assert not ours.training
    assert type(ours) is E.IMPORTERS[kind][0]
    check(ours, ref)


def test_load_generator_needs_the_config_of_a_single_file(tmp_path):
    ref = _pixart()
    path = tmp_path / 'pixart.safetensors'
    save_file(ref.state_dict(), path)
    with pytest.raises(ValueError, match='config'):
        E.load_generator('pixart', str(path))
    _check_pixart(E.load_generator('pixart', str(path), dict(ref.config)), ref)


def test_load_state_names_first_offender():
    net = M.DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=24, depth=1, num_heads=2,
                num_classes=3)
    sd = net.state_dict()
    without_y = {k: v for k, v in sd.items() if k != 'y_embedder.weight'}
    with pytest.raises(AssertionError, match='y_embedder.weight'):
        E.load_state(net, without_y)
    with pytest.raises(RuntimeError, match='size mismatch for y_embedder.weight'):
        E.load_state(net, {**sd, 'y_embedder.weight': torch.zeros(5, 24)})
    with pytest.raises(AssertionError, match='unexpected'):
        E.load_state(net, {**sd, 'extra.weight': torch.zeros(1)})

# ----------------------------------------------------------------------------- diffusion process

@pytest.mark.parametrize('kind', ['linear', 'scaled_linear', 'squaredcos_cap_v2'])
def test_schedules(kind):
    betas = M.noise_schedule(kind, 1000, 0.0015, 0.0195)
    ref = diffusers.DDPMScheduler(beta_schedule=kind, beta_start=0.0015, beta_end=0.0195)
    close(betas.float(), ref.betas)
    ab = torch.cumprod(1 - betas, 0)
    assert (ab[1:] < ab[:-1]).all()
    assert 0 < ab[-1]
    assert ab[0] < 1
    if kind == 'squaredcos_cap_v2':                         # cosine ends near 0 and starts near 1
        assert ab[-1] < 1e-6
        assert abs(ab[0] - 1) < 1e-3
    with pytest.raises(ValueError):
        M.noise_schedule('nope')


def _toy_net(x, t):
    return 0.3 * x + 1e-3 * t.float().view(-1, 1, 1, 1) - 0.1


@pytest.mark.parametrize('prediction, name',
                         [('eps', 'epsilon'), ('x0', 'sample'), ('v', 'v_prediction')])
def test_ddim_matches_diffusers(prediction, name):
    D = M.Diffusion('scaled_linear', 1000, prediction, 0.0015, 0.0195)
    sched = diffusers.DDIMScheduler(beta_schedule='scaled_linear', beta_start=0.0015,
                                    beta_end=0.0195, clip_sample=False, set_alpha_to_one=True,
                                    timestep_spacing='trailing', prediction_type=name)
    # diffusers' DDIM steps back by T // steps: trailing spacing only when steps divides T
    sched.set_timesteps(8)
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    x = x_T
    for t in sched.timesteps:
        x = sched.step(_toy_net(x, t.expand(2)), t, x, eta=0.0).prev_sample
    close(D.sample(_toy_net, x_T, steps=8), x)


def test_ddpm_matches_diffusers():
    D = M.Diffusion('linear', 1000, 'eps')
    sched = diffusers.DDPMScheduler(clip_sample=False, timestep_spacing='trailing')
    sched.set_timesteps(6)
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    x = x_T
    theirs = torch.Generator().manual_seed(1)
    for t in sched.timesteps:
        x = sched.step(_toy_net(x, t.expand(2)), t, x, generator=theirs).prev_sample
    ours = torch.Generator().manual_seed(1)                 # the same noise draws
    close(D.sample(_toy_net, x_T, steps=6, sampler='ddpm', rng=ours), x)


@pytest.mark.parametrize('prediction', ['eps', 'x0', 'v'])
def test_samplers_reconstruct_with_an_oracle(prediction):
    # a network that knows the one data point: DDIM (steps = T, or any, η = 0 or 0.5) and DDPM
    # land exactly on it
    D = M.Diffusion('cosine', 1000, prediction)
    x0 = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))

    def oracle(x, t):
        a = D.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return {'eps': eps, 'x0': x0, 'v': a.sqrt() * eps - (1 - a).sqrt() * x0}[prediction]
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    close(D.sample(oracle, x_T, steps=D.T), x0)
    g = torch.Generator().manual_seed(2)
    close(D.sample(oracle, x_T, steps=13, eta=0.5, rng=g), x0)
    close(D.sample(oracle, x_T, steps=9, sampler='ddpm'), x0)


def test_ddim_is_deterministic():
    D = M.Diffusion('linear', 100)
    x_T = torch.randn(1, 2, 4, 4)
    a = D.sample(_toy_net, x_T, steps=100, rng=torch.Generator().manual_seed(0))
    b = D.sample(_toy_net, x_T, steps=100, rng=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def _tiny_dit(**kw):
    return M.DiT(input_size=8, patch_size=2, in_channels=2, hidden_size=24, depth=2, num_heads=2,
                 **kw)


def test_dit_zero_init_output_is_zero():
    class_net = _tiny_dit(num_classes=5)
    text_net = _tiny_dit(ctx_dim=7, vec_dim=3, adaln='single', size_cond=True)
    for net in (class_net, text_net):
        x = torch.randn(2, 2, 8, 8)
        t = torch.tensor([1, 500])
        out = net(x, t, y=torch.tensor([0, 5]), ctx=torch.randn(2, 4, 7), vec=torch.randn(2, 3),
                  size=torch.tensor([[64., 64., 1.], [64., 64., 1.]]))
        assert out.shape == (2, 4, 8, 8)
        assert torch.equal(out, torch.zeros_like(out))


def test_attention_loads_separate_q_k_v():
    """Separate to_q, to_k, to_v (published layouts, older checkpoints) load into the fused qkv."""
    src = randomize(M.Block(32, 4))
    fused = src.state_dict()
    separate = {k: v for k, v in fused.items() if '.qkv.' not in k}
    for name, part in zip('qkv', fused['attn.qkv.weight'].chunk(3)):
        separate[f'attn.to_{name}.weight'] = part
    dst = M.Block(32, 4)
    dst.load_state_dict(separate)
    x = torch.randn(2, 7, 32)
    close(dst(x), src(x))
    with pytest.raises(RuntimeError, match='qkv.weight'):   # an incomplete set: refused, named
        M.Block(32, 4).load_state_dict({k: v for k, v in separate.items() if 'to_v' not in k})


def test_attention_cpu_product_matches_sdpa():
    """On a CPU Attention takes the plain product to train in bf16, SDPA otherwise; all give SDPA's.

    Self and cross attention, with a padding mask.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 32, generator=g)
    ctx = torch.randn(2, 5, 24, generator=g)
    pad = torch.tensor([[True, True, True, False, False], [True] * 5])
    ctx_self = torch.randn(2, 5, 32, generator=g)                  # a self-attention's own width
    cases = [(M.Attention(32, 4), None, None),
             (M.Attention(32, 4), ctx_self, pad),
             (M.Attention(32, 4, ctx_dim=24), ctx, None),
             (M.Attention(32, 4, ctx_dim=24), ctx, pad)]
    heads = lambda y: y.view(2, -1, 4, 8).transpose(1, 2)    # (2, L, 32) -> (2, 4, L, 8)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for att, c, mask in cases:
        att = randomize(att)
        src = x if c is None else c
        if hasattr(att, 'qkv'):                                 # rows [q; k; v]
            w_q, w_k, w_v = att.qkv.weight.chunk(3)
        else:
            w_q, w_k, w_v = att.to_q.weight, att.to_k.weight, att.to_v.weight
        q = heads(x @ w_q.T)
        k = heads(src @ w_k.T)
        v = heads(src @ w_v.T)
        bias = None if mask is None else (~mask)[:, None, None, :].float() * -1e4
        y = sdpa(q, k, v, attn_mask=bias)                                   # (2, 4, 7, 8)
        expected = att.to_out(y.transpose(1, 2).reshape(2, 7, 32))
        close(att(x, c, mask), expected)
        with torch.autocast('cpu', dtype=torch.bfloat16):                   # the plain product
            product = att(x, c, mask)
        assert product.dtype == torch.bfloat16
        torch.testing.assert_close(product.float(), expected, atol=0.1, rtol=0.05)
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):  # sampling: SDPA
            sampled = att(x, c, mask)
        torch.testing.assert_close(sampled.float(), expected, atol=0.1, rtol=0.05)
    assert not torch.allclose(att(x, ctx, pad), att(x, ctx))


def test_guidance():
    net = randomize(_tiny_dit(num_classes=5, ctx_dim=7, vec_dim=3))
    x = torch.randn(2, 2, 8, 8)
    t = torch.tensor([1, 500])
    y = torch.tensor([0, 4])
    keep = torch.zeros(2, dtype=torch.bool)
    drop = torch.ones(2, dtype=torch.bool)
    cond = dict(y=y, ctx=torch.randn(2, 4, 7), vec=torch.randn(2, 3),
                drop_y=keep, drop_ctx=keep, drop_vec=keep)
    null = dict(drop_y=drop, drop_ctx=drop, drop_vec=drop)
    with torch.no_grad():
        c = net(x, t, **cond)
        u = net(x, t, **{**cond, **null})
        assert not torch.allclose(c, u)
        close(M.guided(net, 1.0, null)(x, t, **cond), c)
        close(M.guided(net, 0.0, null)(x, t, **cond), u)
        close(M.guided(net, 3.0, null)(x, t, **cond), u + 3 * (c - u))
        small = randomize(_tiny_dit(num_classes=5))  # class-only: a dropped label = the null class
        close(small(x, t, y=y, drop_y=drop), small(x, t, y=torch.full((2,), 5)))


def test_dit_drops_each_condition_alone_to_its_own_null():
    """Single-branch ablations: the tokens, the pooled vector or the class replaced by its null.

    The rest is kept.
    """
    net = randomize(_tiny_dit(num_classes=5, ctx_dim=7, vec_dim=3))
    x = torch.randn(2, 2, 8, 8)
    t = torch.tensor([1, 500])
    y = torch.tensor([0, 4])
    ctx = torch.randn(2, 4, 7)
    vec = torch.randn(2, 3)
    drop = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        full = net(x, t, y=y, ctx=ctx, vec=vec)
        outputs = {}
        for role in ('y', 'ctx', 'vec'):
            outputs[role] = net(x, t, y=y, ctx=ctx, vec=vec, **{f"drop_{role}": drop})
        for role, out in outputs.items():
            assert not torch.allclose(out, full), role     # each role alone changes the output
        other_vec = net(x, t, y=y, ctx=ctx, vec=torch.randn(2, 3), drop_vec=drop)
        close(other_vec, outputs['vec'])                  # a dropped vector is not read at all
        other_ctx = net(x, t, y=y, ctx=torch.randn(2, 4, 7), vec=vec, drop_ctx=drop)
        close(other_ctx, outputs['ctx'])
        close(net(x, t, y=torch.tensor([3, 1]), ctx=ctx, vec=vec, drop_y=drop), outputs['y'])
        half = torch.tensor([True, False])
        mixed = net(x, t, y=y, ctx=ctx, vec=vec, drop_ctx=half)   # row by row
        close(mixed[0], outputs['ctx'][0])
        close(mixed[1], full[1])


def test_ema_update():
    a = torch.nn.Linear(3, 3)
    b = torch.nn.Linear(3, 3)
    w = a.weight.detach().clone()
    M.ema_update(a, b, 1.0)
    assert torch.equal(a.weight, w)
    M.ema_update(a, b, 0.75)
    close(a.weight, 0.75 * w + 0.25 * b.weight)
    M.ema_update(a, b, 0.0)
    assert torch.equal(a.weight, b.weight)


def test_unet_overfits_one_batch():
    torch.manual_seed(0)
    net = M.UNet(in_ch=2, out_ch=2, channels=(8, 16), layers=1, attn=(False, True), heads=2,
                 groups=4, vec_dim=4)
    D = M.Diffusion('scaled_linear', 1000, 'eps', 0.0015, 0.0195)
    x0 = torch.randn(4, 2, 8, 8)
    cond = dict(vec=torch.randn(4, 4))
    before, after = overfit_one_batch(net, lambda g: D.loss(net, x0, cond, g), steps=100)
    assert after < 0.5 * before, (before, after)  # about 1.05 -> 0.32 here
