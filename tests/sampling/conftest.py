"""Tiny exported checkpoints for the sampling tests (freshly initialised models).

Each model is a few hundred thousand parameters: 16 px base/inpaint models,
32 px upsamplers (x2), a 16 px noised CLIP with CLIP's real vocabulary, all
saved with `glide_jax.checkpoints.save_model`, the format training exports.
"""

import numpy as np
import pytest
from flax import traverse_util

from glide_jax import checkpoints
from glide_jax import config as config_lib
from glide_jax.models import factory

BASE_SIZE = 16
UP_SIZE = 32


def tiny_unet_config(kind: str, size: int):
    config = config_lib.base_config()
    m = config.model
    m.kind, m.image_size, m.model_channels, m.num_res_blocks = kind, size, 32, 1
    m.channel_mult, m.num_head_channels, m.dropout = (1, 2), 16, 0.0
    m.attention_resolutions = (size // 2,) if kind in ("base", "inpaint") else ()
    t = config.text
    t.text_ctx, t.xf_width, t.xf_layers, t.xf_heads = 8, 32, 1, 2
    if kind.startswith("upsample"):
        config.diffusion.noise_schedule = "linear"
        config.data.low_res_size = BASE_SIZE  # a cascade: upsamples the base model's output
    return config_lib.validate(config)


def tiny_clip_config():
    return config_lib.clip_config_from_glide(dict(
        image_size=BASE_SIZE, patch_size=4, n_embd=32, n_head_state_image=16, n_head_image=2,
        n_xf_blocks_image=1, n_head_state_text=16, n_head_text=2, n_xf_blocks_text=1,
        n_vocab=49408, max_text_len=16, n_timesteps=1000, logit_scale=100.0))


def random_params(config, seed: int = 0):
    """Params of the right shapes without compiling `init` (slow on 2 cores).

    As in the reference fixtures: weights N(0, 1) / sqrt(fan_in), 1-D
    parameters 0.1 N(0, 1) (norm scales 1 + 0.1 N(0, 1)).
    """
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(factory.abstract_params(config))
    params = {}
    for path, leaf in flat.items():
        shape = leaf.shape
        if len(shape) >= 2:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        else:
            value = 0.1 * rng.standard_normal(shape) + (1.0 if path[-1] == "scale" else 0.0)
        params[path] = value.astype(np.float32)
    return traverse_util.unflatten_dict(params)


def save_tiny(directory, config, seed: int = 0):
    return checkpoints.save_model(directory, config, random_params(config, seed))


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """{"base", "upsample", "inpaint", "upsample_inpaint", "clip"} -> checkpoint dir."""
    root = tmp_path_factory.mktemp("tiny_checkpoints")
    paths = {}
    for seed, (kind, size) in enumerate([("base", BASE_SIZE), ("upsample", UP_SIZE),
                                         ("inpaint", BASE_SIZE), ("upsample_inpaint", UP_SIZE)]):
        paths[kind] = save_tiny(root / kind, tiny_unet_config(kind, size), seed)
    paths["clip"] = save_tiny(root / "clip", tiny_clip_config(), 7)
    return paths
