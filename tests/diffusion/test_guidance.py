"""Classifier-free guidance wrapper semantics (glide-text2im notebook model_fn)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glide_jax.diffusion import classifier_free_guidance


def _conditional_model(calls):
    """Rows 0..B/2-1 are 'conditional' (+1 offset), the rest unconditional."""

    def model_fn(x, t):
        calls.append((x, t))
        half = x.shape[0] // 2
        offset = jnp.concatenate([jnp.ones((half,)), jnp.zeros((half,))])[:, None, None, None]
        eps = x * 2.0 + offset
        var = x * 0.0 + jnp.arange(x.shape[0], dtype=jnp.float32)[:, None, None, None]
        return jnp.concatenate([eps, var], axis=-1)

    return model_fn


def test_guided_eps_for_both_halves_and_per_row_variance():
    calls = []
    guided = classifier_free_guidance(_conditional_model(calls), 3.0)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 2, 3))
    t = jnp.array([7, 7, 7, 7], jnp.int32)
    out = np.asarray(guided(x, t))
    assert out.shape == (4, 2, 2, 6)
    # The model saw the first half twice, and the full batch of timesteps.
    seen_x, seen_t = (np.asarray(v) for v in calls[0])
    np.testing.assert_array_equal(seen_x, np.concatenate([x[:2], x[:2]]))
    np.testing.assert_array_equal(seen_t, t)
    cond, uncond = np.asarray(x[:2]) * 2 + 1, np.asarray(x[:2]) * 2
    expected_eps = uncond + 3.0 * (cond - uncond)
    np.testing.assert_allclose(out[:2, ..., :3], expected_eps, rtol=1e-6)
    np.testing.assert_allclose(out[2:, ..., :3], expected_eps, rtol=1e-6)
    # Variance channels stay per row: row i keeps the model's row i.
    np.testing.assert_array_equal(out[..., 3:], np.broadcast_to(
        np.arange(4, dtype=np.float32)[:, None, None, None], (4, 2, 2, 3)))


@pytest.mark.parametrize("scale, pick", [(1.0, "cond"), (0.0, "uncond")])
def test_scale_one_is_conditional_and_zero_unconditional(scale, pick):
    guided = classifier_free_guidance(_conditional_model([]), scale)
    x = jnp.ones((2, 1, 1, 3))
    eps = np.asarray(guided(x, jnp.zeros((2,), jnp.int32)))[..., :3]
    np.testing.assert_allclose(eps, 3.0 if pick == "cond" else 2.0)


def test_traced_scale_under_jit():
    guided = lambda s, x: classifier_free_guidance(_conditional_model([]), s)(  # noqa: E731
        x, jnp.zeros((2,), jnp.int32))
    out = jax.jit(guided)(jnp.float32(5.0), jnp.ones((2, 1, 1, 3)))
    np.testing.assert_allclose(out[..., :3], 2.0 + 5.0)


def test_odd_batch_is_rejected():
    guided = classifier_free_guidance(_conditional_model([]), 2.0)
    with pytest.raises(ValueError, match="even batch"):
        guided(jnp.ones((3, 1, 1, 3)), jnp.zeros((3,), jnp.int32))
