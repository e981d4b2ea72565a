"""init_from: matching params copied, the first conv re-laid out by input with new inputs at zero."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glide_jax import checkpoints
from glide_jax.models import factory
from glide_jax.text import train_sentencepiece
from glide_jax.train import finetune


def _random_like(tree, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda x: rng.standard_normal(x.shape).astype(np.float32), tree)


def test_inpaint_from_base_zero_pads_new_input_channels(make_config):
    base = _random_like(factory.abstract_params(make_config("base")))
    inpaint_shapes = factory.abstract_params(make_config("inpaint"))
    merged = finetune.merge_pretrained(inpaint_shapes, base, source_kind="base", target_kind="inpaint")
    first = merged["input_blocks_0_0"]["kernel"]
    assert first.shape[2] == 3 + 4  # noised image + known image + mask
    np.testing.assert_array_equal(first[:, :, :3], base["input_blocks_0_0"]["kernel"])
    np.testing.assert_array_equal(first[:, :, 3:], 0.0)
    rest_new = jax.tree_util.tree_leaves(merged)
    rest_old = jax.tree_util.tree_leaves(base)
    assert len(rest_new) == len(rest_old)
    equal = sum(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(rest_new, rest_old))
    assert equal == len(rest_old) - 1  # everything but the first conv kernel is copied as is


def _outputs(config, params, inputs):
    model = factory.create_model(config)
    names = {"x", "timesteps", "tokens", "mask"} | set(factory.example_inputs(config, 1))
    return np.asarray(model.apply({"params": params}, **{k: v for k, v in inputs.items() if k in names}))


@pytest.mark.parametrize("source_kind, target_kind", [("base", "inpaint"), ("upsample", "upsample_inpaint")])
def test_finetuned_model_starts_as_its_source(make_config, source_kind, target_kind):
    """Whatever the known image and mask, step 0 of the fine-tune computes what the source did;
    the upsampler's low_res weights follow low_res from channels 3:6 to 7:10."""
    source_config, target_config = make_config(source_kind), make_config(target_kind)
    source = _random_like(factory.abstract_params(source_config), seed=1)
    merged = finetune.merge_pretrained(factory.abstract_params(target_config), source, source_kind=source_kind,
                                       target_kind=target_kind)
    rng = np.random.default_rng(2)
    inputs = {k: jnp.asarray(rng.uniform(-1, 1, v.shape).astype(v.dtype)) if v.dtype == jnp.float32 else v
              for k, v in factory.example_inputs(target_config, 2).items()}
    inputs["timesteps"] = jnp.array([10, 900], jnp.int32)
    inputs["mask"] = jnp.ones_like(inputs["mask"])
    expected = _outputs(source_config, source, inputs)
    # Random N(0, 1) weights give outputs of order 10; the zero-padded first conv sums its taps in
    # another order, so near-zero outputs differ by float32 rounding of that scale (3.5e-5 seen on
    # an AMD EPYC). A wrong merge differs by order one.
    np.testing.assert_allclose(_outputs(target_config, merged, inputs), expected,
                               rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_source_inputs_must_have_a_place(make_config):
    source = _random_like(factory.abstract_params(make_config("upsample")))
    with pytest.raises(finetune.InitFromError, match=r"'upsample' model cannot initialise a 'inpaint' model, "
                                                     r"which has no low_res input"):
        finetune.merge_pretrained(factory.abstract_params(make_config("inpaint")), source, source_kind="upsample",
                                  target_kind="inpaint")


def test_mismatched_source_lists_the_parameters(make_config):
    wide = make_config("base")
    wide.model.model_channels = 64
    source = _random_like(factory.abstract_params(wide))
    with pytest.raises(finetune.InitFromError, match=r"input_blocks_0_0/kernel: source \(3, 3, 3, 64\)"):
        finetune.merge_pretrained(factory.abstract_params(make_config("base")), source, source_kind="base",
                                  target_kind="base")


def test_init_from_reads_export_or_workdir(tmp_path, make_config):
    config = make_config("base")
    params = _random_like(factory.abstract_params(config))
    checkpoints.save_model(tmp_path / "run" / "export", config, params)
    (tmp_path / "run" / "config.json").write_text("{}")  # a workdir's own config is not an export
    for where in (tmp_path / "run", tmp_path / "run" / "export"):
        loaded_config, loaded = finetune.load_pretrained(where)
        assert loaded_config.model.kind == "base"
        np.testing.assert_array_equal(loaded["out_conv"]["kernel"], params["out_conv"]["kernel"])
    with pytest.raises(finetune.InitFromError, match="no exported model"):
        finetune.resolve_init_from(tmp_path / "nowhere")
    (tmp_path / "unexported" / "checkpoints").mkdir(parents=True)
    with pytest.raises(finetune.InitFromError, match=r"unexported is a training workdir that has saved no "
                                                     r"checkpoint yet"):
        finetune.resolve_init_from(tmp_path / "unexported")
    (tmp_path / "unexported" / "checkpoints" / "300").mkdir()  # trained with train.export_ema=False
    with pytest.raises(finetune.InitFromError, match=r"unexported is a training workdir with no export/ yet: .* "
                                                     r"python -m glide_jax.train.export --workdir"):
        finetune.resolve_init_from(tmp_path / "unexported")


def test_source_parameters_without_a_place_are_an_error():
    # A shallower target (one text block fewer) would silently drop the source's last block.
    source = {"text_encoder": {"resblocks_0": {"w": np.ones(2)}, "resblocks_1": {"w": np.ones(2)}}}
    target = {"text_encoder": {"resblocks_0": {"w": np.zeros(2)}}}
    with pytest.raises(finetune.InitFromError, match="resblocks_1.w: in the source model, not in the configured"):
        finetune.merge_pretrained(target, source, source_kind="base", target_kind="base")


def test_same_shape_differences_from_the_source_are_named(make_config, tmp_path):
    source, target = make_config("base"), make_config("inpaint")
    assert finetune.function_differences(source, target) == []  # the kind itself is expected to change
    target.model.num_head_channels = source.model.num_head_channels // 2  # same shapes, other heads
    target.model.num_heads = 7  # unused beside num_head_channels: not reported
    target.text.xf_heads = source.text.xf_heads * 2
    target.diffusion.noise_schedule = "linear"
    lines = finetune.function_differences(source, target)
    assert len(lines) == 3 and lines[0].startswith("config.model.num_head_channels = ")
    assert "config.text.xf_heads" in lines[1] and "'linear', the source model's is 'squaredcos_cap_v2'" in lines[2]

    # SentencePiece models are compared by content, wherever they lie.
    captions = ["a red circle", "a blue square", "two green stars"] * 5
    first = train_sentencepiece(captions, 30, tmp_path / "a.model", model_type="char")
    copy = tmp_path / "copy.model"
    copy.write_bytes(first.read_bytes())
    other = train_sentencepiece(captions + ["purple hexagons"] * 5, 30, tmp_path / "b.model", model_type="char")
    source, target = make_config("base"), make_config("base")
    for config, path in ((source, first), (target, copy)):
        config.text.update(tokenizer="sentencepiece", tokenizer_path=str(path))
    assert finetune.function_differences(source, target) == []
    target.text.tokenizer_path = str(other)
    assert finetune.function_differences(source, target) == [
        f"config.text.tokenizer_path = {str(other)!r} is another SentencePiece model than the source "
        f"model's {str(first)!r}"]
