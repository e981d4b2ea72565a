"""init_from: matching params copied, new input channels of the first conv at zero."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from glide_jax import checkpoints
from glide_jax.models import factory
from glide_jax.train import finetune


def _abstract_params(config):
    model = factory.create_model(config)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **factory.example_inputs(config, 1)))
    return jax.tree_util.tree_map(lambda x: getattr(x, "value", x), variables["params"],
                                  is_leaf=lambda x: hasattr(x, "value"))


def _random_like(tree, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda x: rng.standard_normal(x.shape).astype(np.float32), tree)


def test_inpaint_from_base_zero_pads_new_input_channels(make_config):
    base = _random_like(_abstract_params(make_config("base")))
    inpaint_shapes = _abstract_params(make_config("inpaint"))
    merged = finetune.merge_pretrained(inpaint_shapes, base)
    first = merged["input_blocks_0_0"]["kernel"]
    assert first.shape[2] == 3 + 4  # noised image + known image + mask
    np.testing.assert_array_equal(first[:, :, :3], base["input_blocks_0_0"]["kernel"])
    np.testing.assert_array_equal(first[:, :, 3:], 0.0)
    rest_new = jax.tree_util.tree_leaves(merged)
    rest_old = jax.tree_util.tree_leaves(base)
    assert len(rest_new) == len(rest_old)
    equal = sum(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(rest_new, rest_old))
    assert equal == len(rest_old) - 1  # everything but the first conv kernel is copied as is


def test_mismatched_source_lists_the_parameters(make_config):
    wide = make_config("base")
    wide.model.model_channels = 64
    source = _random_like(_abstract_params(wide))
    with pytest.raises(finetune.InitFromError, match=r"input_blocks_0_0/kernel: source \(3, 3, 3, 64\)"):
        finetune.merge_pretrained(_abstract_params(make_config("base")), source)


def test_init_from_reads_export_or_workdir(tmp_path, make_config):
    config = make_config("base")
    params = _random_like(_abstract_params(config))
    checkpoints.save_model(tmp_path / "run" / "export", config, params)
    (tmp_path / "run" / "config.json").write_text("{}")  # a workdir's own config is not an export
    for where in (tmp_path / "run", tmp_path / "run" / "export"):
        loaded = finetune.load_pretrained(where)
        np.testing.assert_array_equal(loaded["out_conv"]["kernel"], params["out_conv"]["kernel"])
    with pytest.raises(finetune.InitFromError, match="no exported model"):
        finetune.resolve_init_from(tmp_path / "nowhere")
