"""Shared set-up for the training tests: tiny configs, a tiny glide_shapes, one base run.

Compiling a train step dominates these tests, so (1) a session-wide
persistent compilation cache lets the subprocesses of the resume test reuse
what this process compiled, and (2) the base run is trained once
(`base_run`) and shared by the learning, checkpoint, export, mismatch and
fine-tuning tests.
"""

from __future__ import annotations

import pathlib

import jax
import ml_collections
import pytest

from glide_jax import config as config_lib

TINY_IMAGE = 16


def tiny_config(kind: str, data_dir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """A config of `kind` small enough to compile and train in seconds on CPU."""
    c = config_lib.base_config()
    m = c.model
    m.kind = kind
    m.image_size = TINY_IMAGE
    m.model_channels = 32
    m.num_res_blocks = 1
    m.channel_mult = (1, 2)
    m.attention_resolutions = (8,)
    m.num_head_channels = 32
    m.dropout = 0.0
    t = c.text
    t.text_ctx = 8
    t.xf_width = 32
    t.xf_layers = 1
    t.xf_heads = 2
    c.diffusion.steps = 10
    d = c.data
    d.data_dir = str(data_dir)
    d.batch_size = 8
    d.shapes_train_size = 64
    d.shapes_validation_size = 8
    d.shapes_resolution = TINY_IMAGE
    d.shuffle_buffer = 64
    d.num_threads = 1
    d.prefetch = 1
    o = c.optim
    o.learning_rate = 1e-3
    o.ema_rates = (0.9, 0.99)
    tr = c.train
    tr.num_steps = 6
    tr.log_every = 1
    tr.checkpoint_every = 3
    tr.sample_every = None
    tr.progress_bar = False
    tr.async_checkpointing = True
    if kind == "clip":
        t.tokenizer = "clip"
        cl = c.clip
        cl.image_size = TINY_IMAGE
        cl.patch_size = 4
        cl.n_embd = 32
        cl.n_head_state_image = cl.n_head_state_text = 16
        cl.n_head_image = cl.n_head_text = 2
        cl.n_xf_blocks_image = cl.n_xf_blocks_text = 1
        cl.max_text_len = 16
        cl.n_timesteps = c.diffusion.steps
    return config_lib.validate(c)


def pytest_collection_modifyitems(items):
    """Under pytest-xdist (--dist loadgroup), one worker runs every user of `base_run`, so it trains once."""
    for item in items:
        if "base_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("base_run"))


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory) -> pathlib.Path:
    """A persistent XLA cache shared by this session and its subprocesses."""
    path = tmp_path_factory.mktemp("jax_cache")
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> pathlib.Path:
    """TFDS data dir for the tiny glide_shapes (built on first use by the pipeline)."""
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def make_config(shapes_dir):
    """kind -> a fresh tiny config reading the session's glide_shapes."""
    return lambda kind="base": tiny_config(kind, shapes_dir)


@pytest.fixture(scope="session")
def base_run(tmp_path_factory, make_config):
    """A finished 12-step base run (mesh data=8) with a sample grid: (workdir, config, last row)."""
    from glide_jax.train import loop

    workdir = tmp_path_factory.mktemp("base_run")
    config = make_config("base")
    config.train.num_steps = 12
    config.train.checkpoint_every = 6
    config.train.sample_every = 12
    config.train.sample_steps = 2
    config.train.sample_prompts = ("a large red circle", "a large blue square")
    row = loop.train_and_evaluate(config, workdir)
    return workdir, config, row
