"""Noised CLIP: parity with glide-text2im through the converter, masks, guidance, dtypes."""

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glide_jax import config as config_lib
from glide_jax.convert import clip as clip_convert
from glide_jax.models import clip
from glide_jax.tools.parity import to_nhwc


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    """(config, variables converted from the fixture state dicts, clip_io arrays)."""
    options = json.loads((fixtures_dir / "clip_options.json").read_text())
    config = config_lib.clip_config_from_glide(options["config"])
    variables = clip_convert.convert_clip(
        dict(np.load(fixtures_dir / "clip_image_enc_state.npz")),
        dict(np.load(fixtures_dir / "clip_text_enc_state.npz")), config)
    return config, variables, dict(np.load(fixtures_dir / "clip_io.npz"))


def _text_inputs(io):
    return jnp.asarray(io["text_tokens"], jnp.int32), jnp.asarray(io["text_lens"], jnp.int32)


def test_image_encoder_matches_reference(reference):
    config, variables, io = reference
    encoder = clip.image_encoder_from_config(config)
    enc_vars = {"params": variables["params"]["image_encoder"]}
    x, t = to_nhwc(io["images"]), jnp.asarray(io["image_t"], jnp.int32)
    np.testing.assert_allclose(encoder.apply(enc_vars, x, t, method="embed"),
                               io["image_input_emb"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(encoder.apply(enc_vars, x, t), io["image_emb_raw"], rtol=1e-4, atol=1e-4)
    emb = clip.create_clip(config).apply(variables, x, t, method="image_embeddings")
    np.testing.assert_allclose(emb, io["image_emb"], rtol=1e-4, atol=1e-5)


def test_text_encoder_matches_reference(reference):
    config, variables, io = reference
    tokens, lens = _text_inputs(io)
    encoder = clip.text_encoder_from_config(config)
    enc_vars = {"params": variables["params"]["text_encoder"]}
    np.testing.assert_allclose(encoder.apply(enc_vars, tokens, method="embed"),
                               io["text_input_emb"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encoder.apply(enc_vars, tokens, lens), io["text_emb_raw"],
                               rtol=1e-4, atol=1e-4)
    emb = clip.create_clip(config).apply(variables, tokens, lens, method="text_embeddings")
    np.testing.assert_allclose(emb, io["text_emb"], rtol=1e-4, atol=1e-5)


def test_text_embedding_ignores_tokens_after_the_end(reference):
    config, variables, io = reference
    tokens, lens = _text_inputs(io)
    model = clip.create_clip(config)
    after_end = jnp.arange(tokens.shape[1])[None, :] >= lens[:, None]
    changed = jnp.where(after_end, 7, tokens)
    assert bool(jnp.any(changed != tokens))
    base = model.apply(variables, tokens, lens, method="text_embeddings")
    np.testing.assert_allclose(model.apply(variables, changed, lens, method="text_embeddings"),
                               base, atol=1e-6)
    # ...but the end position itself matters.
    moved = model.apply(variables, tokens, lens - 1, method="text_embeddings")
    assert float(jnp.max(jnp.abs(moved - base))) > 1e-3


def test_attention_bias_is_the_reference_padded_mask(reference):
    config, _, io = reference
    n_context = 1 + (config.clip.image_size // config.clip.patch_size) ** 2
    np.testing.assert_array_equal(clip.attention_bias(n_context, causal=False), io["image_attn_bias"])
    np.testing.assert_array_equal(clip.attention_bias(config.clip.max_text_len, causal=True),
                                  io["text_attn_bias"])


def test_cond_fn_jits_and_matches_reference_gradient(reference):
    config, variables, io = reference
    tokens, lens = _text_inputs(io)
    model = clip.create_clip(config)
    cond_x, cond_t = to_nhwc(io["cond_x"]), jnp.asarray(io["cond_t"], jnp.int32)
    text_emb = model.apply(variables, tokens, lens, method="text_embeddings")
    loss = model.apply(variables, cond_x, cond_t, text_emb, method="guidance_loss")
    np.testing.assert_allclose(loss, io["cond_loss"], rtol=1e-5)
    cond_fn = jax.jit(clip.clip_cond_fn(model, variables, tokens, lens, float(io["grad_scale"])))
    grad = cond_fn(cond_x, cond_t)
    assert grad.shape == cond_x.shape and grad.dtype == jnp.float32
    np.testing.assert_allclose(np.transpose(np.asarray(grad), (0, 3, 1, 2)), io["cond_grad"],
                               rtol=1e-4, atol=1e-4)



def test_guidance_caps_the_scale_as_training_does(reference):
    """A trained CLIP whose logit scale drifted past log(100) guides with 100, the scale its loss saw."""
    config, variables, io = reference
    model = clip.create_clip(config)
    x, t = to_nhwc(io["cond_x"]), jnp.asarray(io["cond_t"], jnp.int32)
    text_emb = model.apply(variables, *_text_inputs(io), method="text_embeddings")
    drifted = jax.tree_util.tree_map(lambda v: v, variables)
    drifted["params"]["logit_scale"] = jnp.float32(math.log(150.0))
    loss, capped = (model.apply(v, x, t, text_emb, method="guidance_loss") for v in (variables, drifted))
    np.testing.assert_allclose(capped, loss, rtol=1e-6)
    assert float(clip.logit_scale_value(jnp.float32(math.log(50.0)))) == pytest.approx(50.0, rel=1e-6)


def test_bfloat16_compute_stays_close_to_float32(reference):
    config, variables, io = reference
    bf16 = config_lib.clip_config_from_glide(config.clip.to_dict())
    bf16.model.dtype = "bfloat16"
    x, t = to_nhwc(io["images"]), jnp.asarray(io["image_t"], jnp.int32)
    tokens, lens = _text_inputs(io)
    out32 = clip.create_clip(config).apply(variables, x, t, tokens, lens)
    out16 = clip.create_clip(bf16).apply(variables, x, t, tokens, lens)
    for key in ("image_emb", "text_emb"):
        assert out16[key].dtype == jnp.float32
        cosine = jnp.sum(out16[key] * out32[key], axis=-1)
        assert float(jnp.min(cosine)) > 0.995, key
        # Proves the compute dtype took effect (bfloat16 rounding shows).
        assert float(jnp.max(jnp.abs(out16[key] - out32[key]))) > 1e-5, key


def test_init_matches_reference_sizes_and_axes(fixtures_dir, reference):
    config, _, _ = reference
    options = json.loads((fixtures_dir / "clip_options.json").read_text())
    model = clip.create_clip(config)
    variables = model.init(jax.random.key(0), **clip.example_inputs(config, 2))
    params = nn.meta.unbox(variables)["params"]
    count = lambda tree: sum(leaf.size for leaf in jax.tree_util.tree_leaves(tree))
    assert count(params["image_encoder"]) == options["num_parameters_image"]
    assert count(params["text_encoder"]) == options["num_parameters_text"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))
    np.testing.assert_allclose(params["logit_scale"], math.log(config.clip.logit_scale), rtol=1e-7)
    specs = nn.get_partition_spec(variables)["params"]
    assert tuple(specs["image_encoder"]["block_0"]["f_mlp"]["f_1"]["kernel"]) == ("embed", "mlp")
    assert tuple(specs["text_encoder"]["input"]["w_voc"]) == ("vocab", "embed")
    assert tuple(specs["text_encoder"]["block_0"]["f_attn"]["f_q"]["kernel"]) == ("embed", "heads")
    out = model.apply(variables, **clip.example_inputs(config, 2))
    np.testing.assert_allclose(jnp.linalg.norm(out["image_emb"], axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(out["text_emb"], axis=-1), 1.0, rtol=1e-5)


def test_bad_input_shapes_are_named(reference):
    config, variables, _ = reference
    model = clip.create_clip(config)
    size = config.clip.image_size
    with pytest.raises(ValueError, match=f"\\(B, {size}, {size}, 3\\) NHWC"):
        model.apply(variables, jnp.zeros((1, 3, size, size)), jnp.zeros((1,), jnp.int32),
                    method="image_embeddings")
    with pytest.raises(ValueError, match="tokens"):
        model.apply(variables, jnp.zeros((1, config.clip.max_text_len + 1), jnp.int32),
                    jnp.ones((1,), jnp.int32), method="text_embeddings")
