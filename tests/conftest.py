"""Shared test fixtures and tiny random instances of the published models' classes.

Nothing downloads.
"""
import os
import shutil
from pathlib import Path

import pytest
import torch
import transformers as tf
from tokenizers import Tokenizer, models, pre_tokenizers, processors


@pytest.fixture(scope='session')
def real_data():
    """The real data folder (NANOAV_REAL_DATA).

    Skips when the variable is unset, fails when it points nowhere.
    """
    root = os.environ.get('NANOAV_REAL_DATA')
    if not root:
        pytest.skip('NANOAV_REAL_DATA is not set')
    path = Path(root)
    if not path.is_dir():
        pytest.fail(f'NANOAV_REAL_DATA={root} is set but is not a directory')
    return path


TINY_CONTRASTIVE = dict(embed_dim=32, width=32, n_layer=1, n_head=2)
TINY_VQ = dict(width=16, codebook_size=32, code_dim=8)
JUDGE_HEADS = (('sources', 10), ('env', 3), ('loud', 3))
TINY_ECHOES = dict(width=32, n_layer=1, n_dec_layer=1, n_head=2)   # Visual Echoes on the toy data
TINY_UNET = dict(in_ch=2, out_ch=2, channels=(8, 16), layers=1, attn=(False, True), heads=2,
                 groups=4)
# text-to-audio latent diffusion on the toy autoencoder's latents, conditioned on CLAP
TINY_T2A = dict(method='ldm', model_args=dict(net='unet', shape=(2, 32, 32),
                                              target='ae_audio_latent', vec='clap_audio_emb',
                                              net_args=dict(TINY_UNET, vec_dim=32)))


def tiny_v2a(prior, n_layer=1):
    """An MLP V2A-Mapper run, CLIP (32) to CLAP (32), with a diffusion prior or a regression."""
    return dict(method='v2a', model_args=dict(kind='mlp', prior=prior, in_dim=32, out_dim=32,
                                              width=16, n_layer=n_layer))


def tiny_contrastive(modalities, pairs):
    return dict(method='contrastive',
                model_args=dict(modalities=modalities, pairs=pairs, **TINY_CONTRASTIVE))


TINY = {  # model_args that make every toy network train in a second
    'clip': tiny_contrastive(('image', 'text'), (('image', 'text'),)),
    'clap': tiny_contrastive(('audio', 'text'), (('audio', 'text'),)),
    'imagebind': tiny_contrastive(('image', 'text', 'audio'),
                                  (('image', 'text'), ('image', 'audio'))),
    'vq_image': dict(method='vq', model_args=dict(modality='image', **TINY_VQ)),
    'vq_audio': dict(method='vq', model_args=dict(modality='audio', **TINY_VQ)),
    'judge_audio': dict(method='judge',
                        model_args=dict(modality='audio', heads=JUDGE_HEADS, width=32, n_head=2)),
    'judge_image': dict(method='judge',
                        model_args=dict(modality='image', heads=JUDGE_HEADS, width=32, n_head=2)),
    'ae_audio': dict(method='autoencoder', model_args=dict(modality='audio', channels=(8, 16),
                                                           layers=1, latent=2, groups=4)),
    'ast': dict(method='tagger', model_args=dict(width=32, n_layer=1, n_head=2)),
}


def tiny_config(root, name, **overrides):
    """train.py's defaults for a tiny toy model writing under root/out."""
    import train
    cfg = train.default_config()
    cfg.update(TINY[name], out_dir=str(root / 'out' / f"toyav_{name}"),
               data_dir=str(root / 'data'), ckpt_dir=str(root / 'out'), batch_size=8,
               max_iters=4, eval_interval=4, eval_iters=1, log_interval=100, warmup_iters=1,
               dtype='float32')
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope='session')
def tiny(tmp_path_factory):
    """A tiny prepared toyav, every toy model trained for a few steps, and its toy feature cache."""
    import prepare
    import train
    root = tmp_path_factory.mktemp('tiny')
    data_dir = str(root / 'data')
    prepare.main(['toyav', '--data_dir', data_dir, '--n_train', '48', '--n_val', '16',
                  '--n_test', '16'])
    for name in TINY:
        train.train(tiny_config(root, name))
    prepare.main(['toyav', '--features', 'toy', '--data_dir', data_dir,
                  '--out_dir', str(root / 'out'), '--batch_size', '16'])
    return root


def prepare_derived(tiny, dataset, *options):
    """A dataset made from tiny's toyav world (toyav_ctrl, toyav_maa) and its toy feature cache."""
    import prepare
    data = str(tiny / 'data')
    prepare.main([dataset, '--data_dir', data, *options])
    prepare.main([dataset, '--features', 'toy', '--data_dir', data, '--out_dir',
                  str(tiny / 'out'), '--batch_size', '16'])


SPECIAL_WORDS = ['<unk>', '<pad>', '<s>', '</s>']
WORDS = SPECIAL_WORDS + 'a the dog cat bell ringing barking in large hall loud'.split()
UNK, PAD, BOS, EOS = range(4)
CAPTIONS = ['a dog barking', 'a loud bell ringing in the large hall']
TEXT_LEN = 12


def word_tokenizer():
    """A hub-free fast tokenizer: whitespace WordLevel with <s> ... </s> around every caption."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token='<unk>'))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = [('<s>', BOS), ('</s>', EOS)]
    tok.post_processor = processors.TemplateProcessing(single='<s> $A </s>', special_tokens=special)
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token='<unk>', pad_token='<pad>',
                                      bos_token='<s>', eos_token='</s>')


def tiny_clip_text_config(layer_norm_eps=1e-5):
    """A 1-layer CLIP text tower of width 32 over WORDS, TEXT_LEN positions."""
    return dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=TEXT_LEN, bos_token_id=BOS,
                eos_token_id=EOS, pad_token_id=PAD, layer_norm_eps=layer_norm_eps)


def tiny_t5_config():
    """A 1-layer T5 encoder of width 16 over WORDS."""
    return dict(vocab_size=len(WORDS), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                pad_token_id=PAD, eos_token_id=EOS)


def tiny_hf_ast():
    """encoders.HFAst around a random 1-layer ASTModel (width 32), 16 mels x 64 frames: 9 tokens."""
    from encoders import HFAst
    torch.manual_seed(0)
    cfg = tf.ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=37, num_mel_bins=16, max_length=64, patch_size=16,
                       frequency_stride=8, time_stride=8)
    return HFAst(tf.ASTModel(cfg), tf.ASTFeatureExtractor(num_mel_bins=16, max_length=64))


def tiny_hf_flux_clip():
    """encoders.HFFluxClip around a random CLIPTextModel (tiny_clip_text_config): pooled (B, 32)."""
    from encoders import HFFluxClip
    torch.manual_seed(0)
    config = tf.CLIPTextConfig(**tiny_clip_text_config())
    return HFFluxClip(tf.CLIPTextModel(config), word_tokenizer())


def tiny_hf_flux_t5():
    """encoders.HFFluxT5 around a random T5EncoderModel (tiny_t5_config): tokens (B, 512, 16)."""
    from encoders import HFFluxT5
    torch.manual_seed(0)
    return HFFluxT5(tf.T5EncoderModel(tf.T5Config(**tiny_t5_config())), word_tokenizer())


def tiny_hf_clip(dim=24, cls=None, layer_norm_eps=1e-5):
    """encoders.HFClip (or subclass cls) around a random 1-layer CLIPModel on 32x32 pictures.

    It projects to dim.
    """
    from encoders import HFClip
    torch.manual_seed(0)
    text = tiny_clip_text_config(layer_norm_eps)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8, layer_norm_eps=layer_norm_eps)
    model = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=dim))
    crop = {'height': 32, 'width': 32}
    proc = tf.CLIPImageProcessorPil(size={'shortest_edge': 32}, crop_size=crop)
    return (cls or HFClip)(model, proc, word_tokenizer())


def tiny_hf_imagebind(dim=24):
    """encoders.HFImageBind around tiny_hf_clip's CLIPModel with ImageBind's LayerNorm eps."""
    from encoders import IMAGEBIND_LN_EPS, HFImageBind
    return tiny_hf_clip(dim, HFImageBind, IMAGEBIND_LN_EPS)


@pytest.fixture(scope='module')
def imagebind():
    """tiny_hf_imagebind, once per test module."""
    return tiny_hf_imagebind()


def tiny_clap_text_config(max_positions=TEXT_LEN + PAD + 1):
    return dict(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=37, max_position_embeddings=max_positions, pad_token_id=PAD,
                bos_token_id=BOS, eos_token_id=EOS)


def tiny_hf_clap(dim=24):
    """encoders.HFClap around a random 2-stage HTSAT + 1-layer RoBERTa ClapModel, to dim."""
    from encoders import HFClap
    torch.manual_seed(0)
    audio = dict(num_mel_bins=16, spec_size=32, window_size=4, patch_size=4, hidden_size=32,
                 depths=(1, 1), num_attention_heads=(2, 2), patch_embeds_hidden_size=16)
    # loaded back from a folder, HFClap pads to 77 tokens
    text = tiny_clap_text_config(77 + PAD + 1)
    model = tf.ClapModel(tf.ClapConfig(text_config=text, audio_config=audio, projection_dim=dim))
    fe = tf.ClapFeatureExtractor(feature_size=16, sampling_rate=48000, hop_length=1920,
                                 max_length_s=1)  # 26 frames
    return HFClap(model, fe, word_tokenizer(), max_length=TEXT_LEN)


def tiny_hf_maa_text(dim=12):
    """encoders.HFMaaText: a random 1-layer BERT (width 16, 80 positions) projecting to dim."""
    from encoders import ClapProjection, HFMaaText
    torch.manual_seed(0)
    bert = tf.BertModel(tf.BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=20,
                                      max_position_embeddings=80))
    return HFMaaText(bert, randomize(ClapProjection(16, dim), 1), word_tokenizer())


def maa_text_state(enc):
    """An HFMaaText's weights as Make-An-Audio's checkpoint keeps them, position_ids included (older
    transformers saved it)."""
    from encoders import MAA_TEXT
    positions = enc.model.config.max_position_embeddings
    sd = {f"{MAA_TEXT}base.{k}": v for k, v in enc.model.state_dict().items()}
    sd[f"{MAA_TEXT}base.embeddings.position_ids"] = torch.arange(positions)[None]
    sd.update({f"{MAA_TEXT}projection.{k}": v for k, v in enc.projection.state_dict().items()})
    return sd


def tiny_sd_vae(folder):
    """encoders.HFPictureLatents of a random 2-level AutoencoderKL (x2, 4 latent channels) saved
    in folder, scaled as PixArt-alpha's VAE."""
    import diffusers
    from encoders import HFPictureLatents
    vae = randomize(diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D',) * 2,
        up_block_types=('UpDecoderBlock2D',) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, scaling_factor=0.18215), seed=2, std=0.1)
    vae.save_pretrained(folder)
    return HFPictureLatents.from_pretrained(str(folder))


def randomize(module, seed=0, std=0.2):
    """Re-draw every parameter so no zero-initialised layer can hide a wiring mistake; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module.eval()


def save_hf(enc, path):
    """Write an hf-suite encoder's model and preprocessing where its from_pretrained reads them.

    Returns the folder.
    """
    from encoders import MAA_CKPT, HFClapText, HFHifiGan, HFMaaText
    if hasattr(enc, 'folder'):            # a diffusers model read by an importer: copied
        shutil.copytree(enc.folder, path, dirs_exist_ok=True)
        return str(path)
    if isinstance(enc, HFMaaText):    # Make-An-Audio's layout: its checkpoint, bert/ beside it
        path.mkdir(parents=True, exist_ok=True)
        torch.save({'state_dict': maa_text_state(enc)}, path / MAA_CKPT)
        enc.model.config.save_pretrained(path / 'bert')
        enc.tokenizer.save_pretrained(path / 'bert')
        return str(path)
    subfolders = {HFHifiGan: ('vocoder', ''), HFClapText: ('text_encoder', 'tokenizer')}
    sub = subfolders.get(type(enc), ('', ''))
    enc.model.save_pretrained(path / sub[0])
    for part in ('processor', 'feature_extractor', 'tokenizer'):
        if getattr(enc, part, None) is not None:
            getattr(enc, part).save_pretrained(path / sub[1])
    return str(path)


# ----------------------------------------------------------------------------- generators' tests

ATOL = 1e-4   # parity with diffusers in fp32


@pytest.fixture(scope='module')
def one_thread():
    """Tiny ops on a shared 2-core machine: a second thread only adds synchronisation cost."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def close(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    gap = (a - b).abs().max().item()
    assert torch.allclose(a, b, atol=ATOL), f'max abs diff {gap:.3g}'


def check_vae(ours, ref, x):
    """Our KLAutoencoder against a diffusers AutoencoderKL: the posterior and the decoding."""
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
        mean, logvar = ours.encode(x)
        close(mean, dist.mean)
        close(logvar, dist.logvar)
        close(ours.decode(mean), ref.decode(mean).sample)


def mean_loss(loss_fn, n_seeds=4):
    """loss_fn(generator) without gradients, averaged over generators seeded 0 .. n_seeds - 1."""
    with torch.no_grad():
        losses = [loss_fn(torch.Generator().manual_seed(s)).item() for s in range(n_seeds)]
    return sum(losses) / n_seeds


def overfit_one_batch(net, loss_fn, steps, lr=3e-3):
    """AdamW on loss_fn(generator) for steps; the mean loss before and after."""
    before = mean_loss(loss_fn)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss = loss_fn(g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return before, mean_loss(loss_fn)


def tiny_flux(guidance=True, seed=0, ctx_dim=12, vec_dim=10):
    """A random diffusers FluxTransformer2DModel: 4 latent channels packed to 16, width 32."""
    import diffusers
    # two blocks of each kind, so that a block index mapped wrong shows; heads of 16 = 4 + 6 + 6
    return randomize(diffusers.FluxTransformer2DModel(
        in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=ctx_dim, pooled_projection_dim=vec_dim,
        guidance_embeds=guidance, axes_dims_rope=(4, 6, 6)), seed)


FLUX_DEV_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
FLUX_SCHNELL_SCHEDULER = dict(shift=1.0, use_dynamic_shifting=False)


def tiny_flux_pipeline(guidance=True, ctx_dim=12, vec_dim=10):
    """A FluxPipeline of tiny random parts, its text encoders absent (it is given embeddings).

    Transformer: tiny_flux's, reading ctx_dim tokens and a vec_dim vector; VAE: 2 levels (x2),
    4 latent channels, shifted and scaled as FLUX.1's; scheduler: FLUX.1-dev's (or -schnell's).
    """
    import diffusers
    vae = randomize(diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D',) * 2,
        up_block_types=('UpDecoderBlock2D',) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, scaling_factor=0.3611, shift_factor=0.1159,
        use_quant_conv=False, use_post_quant_conv=False), seed=2, std=0.1)
    config = FLUX_DEV_SCHEDULER if guidance else FLUX_SCHNELL_SCHEDULER
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**config)
    transformer = tiny_flux(guidance, seed=3, ctx_dim=ctx_dim, vec_dim=vec_dim)
    return diffusers.FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
                                  text_encoder_2=None, tokenizer_2=None, transformer=transformer)
