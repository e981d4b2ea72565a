"""Text2ImUNet: parity with glide-text2im through the converter, and every option."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glide_jax import config as config_lib
from glide_jax.convert import core
from glide_jax.convert.unet import convert_unet
from glide_jax.models import factory, layers
from glide_jax.models.unet import AttentionBlock, Downsample, ResBlock, Upsample
from glide_jax.tools import parity_models
from glide_jax.tools.parity import to_nhwc

CASES = ("base", "upsample", "inpaint", "upsample_inpaint")


def _rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("case", CASES)
def test_forward_parity_through_converter(fixtures_dir, case):
    ours, expected = parity_models.run_case(fixtures_dir, case)
    for name, value in expected.items():
        assert ours[name].shape == value.shape, name
        assert _rel_l2(ours[name], value) <= 1e-5, name
        assert np.abs(np.asarray(ours[name]) - value).max() <= 1e-4, name


@pytest.fixture(scope="module")
def base_case(fixtures_dir):
    config = parity_models.case_config(fixtures_dir, "base")
    params = convert_unet(core.load_state(fixtures_dir / "base_state.npz"), config)
    io = np.load(fixtures_dir / "base_io.npz")
    return config, params, io


def test_text_emb_path_equals_tokens_path(base_case):
    config, params, io = base_case
    model = factory.create_model(config)
    x, t = to_nhwc(io["x"]), jnp.asarray(io["timesteps"])
    kwargs = parity_models.model_kwargs(io)
    direct = model.apply({"params": params}, x, t, **kwargs)
    text_emb = model.apply({"params": params}, kwargs["tokens"], kwargs["mask"], method="encode_text")
    assert text_emb["xf_out"].shape == (3, config.text.text_ctx, config.text.xf_width)
    assert text_emb["xf_proj"].shape == (3, 4 * config.model.model_channels)
    # One (keys, values) pair per attention block, named as its module, as wide as its q|k|v.
    widths = {name: k.shape[2] * k.shape[3] for name, (k, v) in text_emb["xf_kv"].items()}
    assert len(widths) > 1
    assert {kv.shape[:2] for pair in text_emb["xf_kv"].values() for kv in pair} == {(3, config.text.text_ctx)}
    assert widths == {name: p["qkv"]["kernel"].shape[0] for name, p in params.items() if "qkv" in p}
    cached = model.apply({"params": params}, x, t, text_emb=text_emb)
    np.testing.assert_array_equal(direct, cached)


def test_bfloat16_forward_close_to_float32(base_case):
    config, params, io = base_case
    config = config_lib.validate(config.copy_and_resolve_references())
    config.model.dtype = "bfloat16"
    model = factory.create_model(config)
    out = model.apply({"params": params}, to_nhwc(io["x"]), jnp.asarray(io["timesteps"]),
                      **parity_models.model_kwargs(io))
    assert out.dtype == jnp.float32  # the output head runs in float32
    assert np.isfinite(np.asarray(out)).all()
    assert _rel_l2(out, np.transpose(io["output"], (0, 2, 3, 1))) <= 2e-2


def tiny_config(**overrides):
    """A 16 px model small enough to build in a second."""
    config = config_lib.base_config()
    m, t = config.model, config.text
    m.image_size, m.model_channels, m.num_res_blocks = 16, 32, 1
    m.channel_mult, m.attention_resolutions = (1, 2), (8,)
    m.num_head_channels, m.dropout = 16, 0.0
    t.text_ctx, t.xf_width, t.xf_layers, t.xf_heads, t.n_vocab = 4, 32, 1, 2, 16
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = value
    return config_lib.validate(config)


def _run(config, rng=0, **call):
    model = factory.create_model(config)
    inputs = factory.example_inputs(config, 2)
    keys = jax.random.split(jax.random.PRNGKey(rng), 3)
    inputs["x"] = jax.random.normal(keys[0], inputs["x"].shape)
    inputs["timesteps"] = jnp.array([3, 900])
    inputs["tokens"] = jax.random.randint(keys[1], inputs["tokens"].shape, 0, config.text.n_vocab)
    inputs["mask"] = jnp.array([[True, True, False, False], [True, False, False, False]])
    if "low_res" in inputs:
        inputs["low_res"] = jax.random.normal(keys[2], inputs["low_res"].shape)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(1), **inputs)["params"])
    # Zero-initialised output convs would hide most of the network; randomise all params.
    # (numpy draws: a jax.random call per distinct shape would compile each one.)
    leaves, tree = jax.tree_util.tree_flatten(params)
    draw = np.random.default_rng(rng)
    params = tree.unflatten([jnp.asarray(0.2 * draw.standard_normal(leaf.shape), jnp.float32)
                             + (leaf if leaf.ndim == 1 else 0) for leaf in leaves])
    return model, params, inputs, _apply(model)(params, inputs)


def _apply(model):
    # Eager on purpose: per-op executables are cached across these tiny models,
    # while jitting each whole U-Net costs a fresh XLA compile per config.
    return lambda params, inputs: model.apply({"params": params}, **inputs)


@pytest.mark.parametrize("overrides", [
    {},  # the released flags: scale-shift, up/down ResBlocks, final LN, padding, head channels
    {"model.kind": "upsample_inpaint", "model.use_scale_shift_norm": False,
     "model.resblock_updown": False, "text.xf_final_ln": False},
    {"model.kind": "inpaint", "text.xf_padding": False, "model.num_head_channels": None,
     "model.num_heads": 2, "model.num_heads_upsample": 4},
    {"model.kind": "upsample", "model.channel_mult": (1, 1, 2), "model.attention_resolutions": (16, 4),
     "model.num_res_blocks": 2},
])
def test_every_option_builds_and_runs(overrides):
    model, params, inputs, out = _run(tiny_config(**overrides))
    assert out.shape == (2, 16, 16, 6)
    assert np.isfinite(np.asarray(out)).all() and np.abs(np.asarray(out)).max() > 0


def _bound(config):
    """The model bound to abstract params: structure and shapes without running it."""
    model = factory.create_model(config)
    inputs = factory.example_inputs(config, 1)
    params = jax.eval_shape(lambda: nn.meta.unbox(model.init(jax.random.PRNGKey(0), **inputs)["params"]))
    return model.bind({"params": params}), params


def test_option_structure():
    bound = lambda cfg: _bound(cfg)[0]
    plain = bound(tiny_config(**{"model.resblock_updown": False, "model.use_scale_shift_norm": False,
                                 "model.num_head_channels": None, "model.num_heads": 1,
                                 "model.num_heads_upsample": 4}))
    assert isinstance(plain.input_blocks[2][0], Downsample)
    assert any(isinstance(layer, Upsample) for layer in plain.output_blocks[1])
    assert plain.input_blocks[1][0].variables["params"]["emb_proj"]["kernel"].shape == (128, 32)
    attn_in = [layer for block in plain.input_blocks for layer in block if isinstance(layer, AttentionBlock)]
    attn_out = [layer for block in plain.output_blocks for layer in block if isinstance(layer, AttentionBlock)]
    assert [a.num_heads for a in attn_in] == [1] and {a.num_heads for a in attn_out} == {4}
    assert isinstance(plain.middle_block[1], AttentionBlock) and plain.middle_block[1].num_heads == 1
    updown = bound(tiny_config())
    assert isinstance(updown.input_blocks[2][0], ResBlock) and updown.input_blocks[2][0].down
    assert updown.input_blocks[1][0].variables["params"]["emb_proj"]["kernel"].shape == (128, 64)
    assert all(a.num_heads == 64 // 16 for block in updown.output_blocks[:2] for a in block
               if isinstance(a, AttentionBlock))


def test_norm_groups_reach_every_group_norm():
    # GroupNorm params do not depend on the group count, so the same params serve both.
    model, params, inputs, out = _run(tiny_config())
    grouped = factory.create_model(tiny_config(**{"model.norm_groups": 8}))
    assert np.abs(out - _apply(grouped)(params, inputs)).max() > 1e-3
    # One channel per group (32 groups of a 32-channel head) normalises each channel
    # alone, so the head cannot see a per-channel offset; groups of 4 channels can.
    head = lambda groups, h: layers.GroupNorm32(groups).apply({"params": {"scale": jnp.ones(32),
                                                                          "bias": jnp.zeros(32)}}, h)
    h = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 4, 32))
    offset = jnp.linspace(-1.0, 1.0, 32)
    np.testing.assert_allclose(head(32, h + offset), head(32, h), atol=1e-5)
    assert np.abs(head(8, h + offset) - head(8, h)).max() > 0.1


def test_padding_embedding_replaces_masked_tokens():
    with_padding = tiny_config()
    model, params, inputs, out = _run(with_padding)
    changed = dict(inputs, tokens=inputs["tokens"].at[:, 2:].set(5))  # masked positions only
    np.testing.assert_array_equal(out, model.apply({"params": params}, **changed))
    assert "padding_embedding" in params["text_encoder"]
    model, params, inputs, out = _run(tiny_config(**{"text.xf_padding": False}))
    assert "padding_embedding" not in params["text_encoder"]
    changed = dict(inputs, tokens=inputs["tokens"].at[:, 2:].set(5))
    assert np.abs(out - _apply(model)(params, changed)).max() > 1e-2


def test_final_ln_toggle():
    assert "final_ln" not in _bound(tiny_config(**{"text.xf_final_ln": False}))[1]["text_encoder"]
    assert "final_ln" in _bound(tiny_config())[1]["text_encoder"]


def test_dropout_only_when_not_deterministic():
    model, params, inputs, out = _run(tiny_config(**{"model.dropout": 0.5}))
    train = lambda seed: model.apply({"params": params}, **inputs, deterministic=False,
                                     rngs={"dropout": jax.random.PRNGKey(seed)})
    assert not np.allclose(train(0), out)
    assert not np.allclose(train(0), train(1))
    np.testing.assert_array_equal(train(2), train(2))


def test_remat_matches_plain_forward_and_gradient():
    plain_model, params, inputs, out = _run(tiny_config())
    remat_model = factory.create_model(tiny_config(**{"model.remat": True}))
    np.testing.assert_allclose(_apply(remat_model)(params, inputs), out, rtol=1e-5, atol=1e-5)

    def grad(model):
        return jax.grad(lambda p: jnp.sum(model.apply({"params": p}, **inputs) ** 2))(params)

    # Rematerialisation reorders float32 work; the gradients (values ~10) agree to ~1e-4.
    leaves = zip(jax.tree_util.tree_leaves(grad(plain_model)), jax.tree_util.tree_leaves(grad(remat_model)))
    for a, b in leaves:
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)


def test_params_carry_logical_axis_names():
    config = tiny_config()
    model = factory.create_model(config)
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **factory.example_inputs(config, 1)))
    specs = jax.tree_util.tree_map(lambda x: x.names, boxed["params"],
                                   is_leaf=lambda x: hasattr(x, "names"))
    assert specs["text_encoder"]["token_embedding"]["embedding"] == ("vocab", "embed")
    assert specs["input_blocks_0_0"]["kernel"] == (None, None, "conv_in", "conv_out")
    assert specs["middle_block_1"]["qkv"]["kernel"] == ("embed", "heads")
    assert specs["text_encoder"]["resblocks_0"]["c_fc"]["kernel"] == ("embed", "mlp")
    assert specs["out_norm"]["scale"] == ("norm",)
    names = {n for leaf in jax.tree_util.tree_leaves(specs) for n in ([leaf] if isinstance(leaf, str) else [])}
    assert names <= {"embed", "mlp", "heads", "conv_in", "conv_out", "vocab", "norm"}


def test_missing_conditioning_is_an_error():
    config = tiny_config(**{"model.kind": "upsample"})
    model = factory.create_model(config)
    inputs = factory.example_inputs(config, 1)
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **inputs))
    with pytest.raises(ValueError, match="needs low_res"):
        jax.eval_shape(lambda p: model.apply(p, **dict(inputs, low_res=None)), params)
