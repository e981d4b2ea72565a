"""Likelihood terms against float64 numpy versions of the same formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.diffusion import losses


def _cdf64(x):
    x = np.asarray(x, np.float64)
    return 0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def test_normal_kl_closed_form():
    kl = losses.normal_kl(jnp.float32(1.0), jnp.float32(0.0), jnp.float32(0.0), jnp.float32(0.0))
    np.testing.assert_allclose(kl, 0.5, rtol=1e-7)
    same = losses.normal_kl(jnp.ones(3), jnp.full(3, -2.0), jnp.ones(3), jnp.full(3, -2.0))
    np.testing.assert_array_equal(same, 0.0)


def test_cdf_tails_round_like_float32_tanh():
    """In the tails 1 + tanh(y) is a few float32 steps; they must be the right ones."""
    x = np.linspace(-6.5, 6.5, 20001).astype(np.float32)
    y = (math.sqrt(2.0 / math.pi) * (x.astype(np.float64) + 0.044715 * x.astype(np.float64) ** 3))
    y32 = np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x * x * x)
    tanh32 = np.tanh(y32.astype(np.float64)).astype(np.float32)  # correctly rounded
    expected = np.float32(0.5) * (np.float32(1.0) + tanh32)
    got = np.asarray(losses.approx_standard_normal_cdf(jnp.asarray(x)))
    tail = np.abs(y) > 5.0
    assert tail.sum() > 1000
    assert (got[tail] == expected[tail]).mean() > 0.999
    np.testing.assert_allclose(got, _cdf64(x), rtol=0, atol=3e-7)


def test_discretized_likelihood_matches_float64_formula():
    rng = np.random.default_rng(0)
    x = (np.round((rng.uniform(-1, 1, 512) + 1) * 127.5) / 127.5 - 1).astype(np.float32)
    x[:4] = [-1.0, 1.0, -1.0, 1.0]
    means = (x + rng.normal(0, 0.02, 512)).astype(np.float32)
    log_scales = np.full(512, np.log(0.05), np.float32)
    got = np.asarray(losses.discretized_gaussian_log_likelihood(
        jnp.asarray(x), jnp.asarray(means), jnp.asarray(log_scales)))
    inv = np.exp(-log_scales.astype(np.float64))
    c = x.astype(np.float64) - means
    plus, minus = _cdf64(inv * (c + 1 / 255)), _cdf64(inv * (c - 1 / 255))
    expected = np.where(x < -0.999, np.log(np.maximum(plus, 1e-12)),
                        np.where(x > 0.999, np.log(np.maximum(1 - minus, 1e-12)),
                                 np.log(np.maximum(plus - minus, 1e-12))))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_likelihood_gradient_is_finite_far_in_the_tails():
    def total(log_scale):
        x = jnp.array([-1.0, 0.0, 0.5, 1.0])
        means = jnp.array([1.0, -1.0, 0.9, -1.0])
        return losses.discretized_gaussian_log_likelihood(
            x, means, jnp.full((4,), log_scale)).sum()

    grad = jax.grad(total)(jnp.float32(-8.0))  # |y| ~ 1e8: saturated tanh
    assert np.isfinite(float(grad))


def test_mean_flat():
    np.testing.assert_allclose(losses.mean_flat(jnp.arange(24.0).reshape(2, 3, 4)), [5.5, 17.5])
