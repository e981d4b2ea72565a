"""Learning-rate schedules, EMA, gradient accumulation and the sharding rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glide_jax import config as config_lib
from glide_jax import sharding
from glide_jax.train import optim
from glide_jax.train import step as step_lib


def _optim(**overrides):
    o = config_lib.optim_defaults()
    o.update(overrides)
    return o


def test_warmup_then_cosine_decay():
    schedule = optim.learning_rate_schedule(
        _optim(learning_rate=1e-3, warmup_steps=10, schedule="cosine", end_learning_rate_factor=0.1), 110)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(5e-4)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(60)) == pytest.approx(1e-4 + 0.5 * 9e-4, rel=1e-5)
    assert float(schedule(110)) == pytest.approx(1e-4)


def test_constant_and_linear_schedules():
    assert float(optim.learning_rate_schedule(_optim(learning_rate=2e-4), 100)(77)) == pytest.approx(2e-4)
    linear = optim.learning_rate_schedule(_optim(learning_rate=1e-3, schedule="linear"), 100)
    assert float(linear(50)) == pytest.approx(5e-4)


def test_ema_update_per_rate():
    params = {"w": jnp.ones(3)}
    emas = ({"w": jnp.zeros(3)}, {"w": jnp.full(3, 2.0)})
    out = optim.update_ema(emas, params, (0.9, 0.5))
    np.testing.assert_allclose(out[0]["w"], 0.1, rtol=1e-6)
    np.testing.assert_allclose(out[1]["w"], 1.5)


def test_ema_warmup_caps_the_rate_early_and_not_late():
    params, ema = {"w": jnp.ones(3)}, ({"w": jnp.zeros(3)},)
    first = optim.update_ema(ema, params, (0.99,), step=jnp.int32(0))  # rate (1 + 0) / 10 = 0.1
    np.testing.assert_allclose(first[0]["w"], 0.9, rtol=1e-6)
    late = optim.update_ema(ema, params, (0.99,), step=jnp.int32(10_000))  # the cap is above 0.99
    np.testing.assert_allclose(late[0]["w"], 0.01, rtol=1e-4)


def test_gradient_accumulation_equals_full_batch():
    def loss_fn(params, batch, rng):
        del rng
        err = batch["x"] @ params["w"] - batch["y"]
        loss = jnp.mean(err ** 2)
        return loss, {"loss": loss}

    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((4, 2)), jnp.float32)}
    batch = {"x": jnp.asarray(rng.standard_normal((8, 4)), jnp.float32),
             "y": jnp.asarray(rng.standard_normal((8, 2)), jnp.float32)}
    full, full_metrics = step_lib._gradients(loss_fn, params, batch, jax.random.PRNGKey(0), 1)
    accum, accum_metrics = step_lib._gradients(loss_fn, params, batch, jax.random.PRNGKey(0), 4)
    np.testing.assert_allclose(accum["w"], full["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(accum_metrics["loss"], full_metrics["loss"], rtol=1e-5)


def test_mesh_shapes_and_batch_sharding():
    mesh_config = config_lib.mesh_defaults()
    mesh_config.fsdp = 4
    mesh = sharding.create_mesh(mesh_config)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert sharding.batch_sharding(mesh, mesh_config).spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    mesh_config.fsdp = 3
    with pytest.raises(ValueError, match="does not divide the 8 devices"):
        sharding.create_mesh(mesh_config)


def test_fsdp_fallback_places_fsdp_where_rules_leave_it_off():
    mesh_config = config_lib.mesh_defaults()
    mesh_config.fsdp, mesh_config.tensor = 2, 2
    mesh = sharding.create_mesh(mesh_config)
    P = jax.sharding.PartitionSpec
    fit = lambda spec, shape: sharding._fit_spec(P(*spec), shape, mesh, fallback=True)  # noqa: E731
    assert fit((None, None, None, None), (3, 3, 64, 32)) == P(None, None, "fsdp")  # largest free dim
    assert fit(("tensor",), (128,)) == P(("tensor", "fsdp"))  # no free dim: split the split one further
    assert fit(("tensor",), (6,)) == P("tensor")  # 6 is not divisible by 2 x 2
    assert fit(("fsdp", "tensor"), (64, 128)) == P("fsdp", "tensor")  # a rule already uses fsdp
    assert fit(("tensor", None), (8, 5)) == P(("tensor", "fsdp"))
    assert sharding._fit_spec(P("tensor"), (128,), mesh, fallback=False) == P("tensor")


def test_constrain_pins_only_inside_constraints():
    mesh_config = config_lib.mesh_defaults()
    mesh_config.fsdp, mesh_config.tensor = 2, 2
    mesh = sharding.create_mesh(mesh_config)
    P = jax.sharding.PartitionSpec
    stored = lambda rows: jax.device_put(jnp.ones((rows, 8)), jax.sharding.NamedSharding(mesh, P(None, "fsdp")))  # noqa: E731
    # The context acts when a function is traced: a fresh function each time, so no cached trace.
    spec = lambda x: jax.jit(lambda y: sharding.constrain(y, ("vocab", None)) * 2)(x).sharding.spec  # noqa: E731
    assert spec(stored(8)) == P(None, "fsdp")  # outside: no constraint
    with sharding.constraints(mesh, mesh_config):
        # "vocab" -> "tensor" where 2 divides the rows; the embedding axis is whole
        assert spec(stored(8)) == P("tensor")
        assert spec(stored(5)) == P()
    assert spec(stored(8)) == P(None, "fsdp")  # the context has ended
