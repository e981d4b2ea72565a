"""Sharded train steps equal single-device ones; FSDP splits the state 8 ways."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

from glide_jax import diffusion as diffusion_lib
from glide_jax import sharding
from glide_jax.models import factory
from glide_jax.train import losses, optim
from glide_jax.train import state as state_lib
from glide_jax.train import step as step_lib

BATCH = 8


def _batches(config, count=2):
    rng = np.random.default_rng(0)
    size, ctx = config.model.image_size, config.text.text_ctx
    out = []
    for _ in range(count):
        lengths = rng.integers(0, ctx + 1, BATCH)
        out.append({
            "image": rng.uniform(-1, 1, (BATCH, size, size, 3)).astype(np.float32),
            "tokens": rng.integers(0, config.text.n_vocab, (BATCH, ctx)).astype(np.int32),
            "mask": np.arange(ctx)[None, :] < lengths[:, None],
        })
    return out


def _pieces(config, devices):
    mesh = sharding.create_mesh(config.mesh, devices)
    model = factory.create_model(config)
    optimizer = optim.create_optimizer(config)
    diffusion = diffusion_lib.diffusion_from_config(config.diffusion)
    step = step_lib.make_train_step(config, losses.create_loss_fn(config, model, diffusion), optimizer)
    return mesh, model, optimizer, step


def _two_steps(config, devices):
    mesh, model, optimizer, step = _pieces(config, devices)
    state, shardings = state_lib.create_train_state(config, model, optimizer, factory.example_inputs(config, 1), mesh)
    batch_sharding = sharding.batch_sharding(mesh, config.mesh)
    train_step = step_lib.jit_train_step(step, shardings, batch_sharding, config.mesh)
    for i, batch in enumerate(_batches(config)):
        state, metrics = train_step(state, sharding.shard_batch(batch, batch_sharding), jax.random.PRNGKey(i))
    return state, jax.device_get(metrics)


def _compiled_step(config):
    """(compiled step, abstract state, abstract batch, abstract rng) for all of jax.devices()."""
    mesh, model, optimizer, step = _pieces(config, jax.devices())
    shardings, abstract = state_lib.abstract_train_state(config, model, optimizer,
                                                         factory.example_inputs(config, 1), mesh)
    batch_sharding = sharding.batch_sharding(mesh, config.mesh)
    train_step = step_lib.jit_train_step(step, shardings, batch_sharding, config.mesh)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
             for k, v in _batches(config, 1)[0].items()}
    rng = jax.ShapeDtypeStruct((2,), np.uint32)
    return train_step.lower(abstract, batch, rng).compile(), abstract, batch, rng


def _relative_error(a, b) -> float:
    """||a - b|| / ||b|| over the whole tree.

    Taken over the tree, not per array: the biases feeding straight into a
    GroupNorm have a true gradient of zero, so theirs is rounding noise that
    differs between reduction orders, and Adam scales that noise up to
    lr-sized steps. Those arrays are tiny next to the rest of the model.
    """
    flat = lambda t: np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(t)])  # noqa: E731
    x, y = flat(a), flat(b)
    return float(np.linalg.norm(x - y) / np.linalg.norm(y))


@pytest.fixture(scope="module")
def config(make_config):
    c = make_config("base")
    c.model.dropout = 0.1  # dropout masks must not depend on the sharding either
    return c


@pytest.fixture(scope="module")
def single_device(config):
    c = config.copy_and_resolve_references()
    c.mesh.data, c.mesh.fsdp = 1, 1
    return jax.device_get(_two_steps(c, jax.devices()[:1]))


@pytest.mark.parametrize("data, fsdp, tensor", [(8, 1, 1), (2, 2, 2)])
def test_sharded_steps_match_single_device(config, single_device, data, fsdp, tensor):
    c = config.copy_and_resolve_references()
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = data, fsdp, tensor
    state, metrics = _two_steps(c, jax.devices())
    if fsdp > 1:
        leaves = jax.tree_util.tree_leaves(state.params)
        axes = lambda spec: {a for entry in spec for a in (entry if isinstance(entry, tuple) else (entry,))}  # noqa: E731
        unsharded = [leaf.shape for leaf in leaves if "fsdp" not in axes(leaf.sharding.spec)]
        assert not any(d % fsdp == 0 for shape in unsharded for d in shape), unsharded
    reference_state, reference_metrics = single_device
    state = jax.device_get(state)
    for name in ("params", "ema_params", "opt_state"):
        error = _relative_error(getattr(state, name), getattr(reference_state, name))
        assert error < 1e-5, (name, error)
    assert int(state.step) == 2
    np.testing.assert_allclose(metrics["loss"], reference_metrics["loss"], rtol=1e-5)


def test_fsdp_splits_params_and_optimizer_state(config):
    c = config.copy_and_resolve_references()
    c.mesh.data, c.mesh.fsdp = 1, 8
    compiled, abstract, batch, rng = _compiled_step(c)
    nbytes = lambda tree: sum(x.size * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree))  # noqa: E731
    state_total = nbytes(abstract)
    per_device_args = compiled.memory_analysis().argument_size_in_bytes
    per_device_state = per_device_args - nbytes(batch) / 8 - nbytes(rng)
    assert abs(per_device_state - state_total / 8) <= 0.1 * state_total / 8, (per_device_state, state_total / 8)
    # The step updates the state in place: its output aliases the donated input.
    assert compiled.memory_analysis().alias_size_in_bytes >= 0.9 * per_device_state


def test_mixed_mesh_gathers_parameters_not_activations(config):
    """On a (data, fsdp, tensor) = (2, 2, 2) mesh the step all-gathers only parameters.

    The caption's gradient reaches the token table batch-split, while the
    table's embedding axis is split over fsdp; unless the lookup reads a
    table gathered over fsdp (`sharding.constrain` in the text encoder), XLA
    can only move that gradient by replicating it ("involuntary full
    rematerialization"), and all-gathers of (B, L, W) text activations show
    in the program. Parameters here have rank 1, 2 or 4.
    """
    c = config.copy_and_resolve_references()
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, 2
    text = _compiled_step(c)[0].as_text()
    gathered = re.findall(r"= \w+\[([\d,]*)\][^=\n]*? all-gather\(", text)
    assert gathered, "no all-gather at all: the mesh did not shard the step"
    rank3 = [shape for shape in gathered if shape.count(",") == 2]
    assert not rank3, f"all-gathers of activations: {rank3}"
