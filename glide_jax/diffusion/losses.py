"""Likelihood terms of the variational bound (Ho et al. 2020, section 3.3).

All functions are elementwise in float32 and follow the reference's order of
operations, so that results match it to float32 rounding.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

# Half-width of one 8-bit pixel bin in [-1, 1] units.
_BIN_HALF_WIDTH = 1.0 / 255.0
# Edge bins: values this close to +-1 are the first/last of the 256 levels.
_EDGE = 0.999
_LOG_FLOOR = 1e-12


def normal_kl(mean1: jnp.ndarray, logvar1: jnp.ndarray, mean2: jnp.ndarray,
              logvar2: jnp.ndarray) -> jnp.ndarray:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats.

    Arguments broadcast against each other.
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                  + ((mean1 - mean2) ** 2) * jnp.exp(-logvar2))


def approx_standard_normal_cdf(x: jnp.ndarray) -> jnp.ndarray:
    """The tanh approximation of the standard normal CDF used by the reference."""
    return 0.5 * (1.0 + _tanh_near_one(math.sqrt(2.0 / math.pi) * (x + 0.044715 * jnp.power(x, 3))))


# Beyond this |y|, float32 tanh(y) is exactly +-1 (1 - tanh(20) ~ 8e-18).
_TANH_SATURATION = 20.0


def _tanh_near_one(y: jnp.ndarray) -> jnp.ndarray:
    """tanh, accurate to float32 rounding where it approaches +-1.

    In the tails the CDF is 0.5 * (1 + tanh(y)) with tanh(y) within a few
    float32 steps of -1, so its log depends on the exact rounding of tanh.
    XLA's CPU tanh is a few ulp off there (and saturates early), while the
    reference's is nearly correctly rounded. Writing tanh(|y|) as
    1 - 2 / (exp(2|y|) + 1) makes the small correction exact to within its
    own tiny ulp, so the final rounding matches a correctly rounded tanh.
    Near 0 this form loses relative accuracy, which is harmless here because
    1 is added to it. |y| is clamped so that exp never overflows (which would
    give NaN gradients).
    """
    magnitude = jnp.minimum(jnp.abs(y), _TANH_SATURATION)
    t = 1.0 - 2.0 / (jnp.exp(2.0 * magnitude) + 1.0)
    return jnp.where(y < 0, -t, t)


def discretized_gaussian_log_likelihood(x: jnp.ndarray, means: jnp.ndarray,
                                        log_scales: jnp.ndarray) -> jnp.ndarray:
    """Log-probability of 8-bit images under a Gaussian discretised into 256 bins.

    The decoder term L_0 of the bound (Ho et al. 2020, eq. 13): the mass of
    the bin of width 2/255 around each pixel, with the outermost bins extended
    to -inf / +inf.

    Args:
      x: images in [-1, 1] that were 8-bit values; any shape.
      means: Gaussian means, same shape.
      log_scales: log standard deviations, same shape.

    Returns:
      Log-probabilities in nats, same shape as `x`.
    """
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(f"shapes differ: x {x.shape}, means {means.shape}, "
                         f"log_scales {log_scales.shape}")
    centered = x - means
    inv_stdv = jnp.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + _BIN_HALF_WIDTH))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - _BIN_HALF_WIDTH))
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, _LOG_FLOOR))
    log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, _LOG_FLOOR))
    log_cdf_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, _LOG_FLOOR))
    return jnp.where(x < -_EDGE, log_cdf_plus,
                     jnp.where(x > _EDGE, log_one_minus_cdf_min, log_cdf_delta))


def mean_flat(x: jnp.ndarray) -> jnp.ndarray:
    """Mean over every axis but the first: (B, ...) -> (B,)."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))
