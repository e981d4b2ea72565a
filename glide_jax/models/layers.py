"""Building blocks shared by GLIDE's networks: embeddings, norms, attention.

Every parameter carries logical axis names through
`nn.with_logical_partitioning`, so training can shard it with the rules in
the config (see docs/ARCHITECTURE.md, "Logical axis names"):

  embed     model width: U-Net channels at a block's input, text width
  mlp       expanded width: time embedding (4C), transformer MLP hidden,
            ResBlock embedding projection
  heads     attention projections (q|k|v and text k|v outputs, proj_out input)
  conv_in   input channels of a convolution kernel (HWIO "I")
  conv_out  output channels of a convolution kernel (HWIO "O") and its bias
  vocab     rows of the token embedding
  norm      GroupNorm / LayerNorm scale and bias

Mixed precision: convolutions, matmuls and the two attention matmuls take
their inputs in the compute dtype (bfloat16 for speed); matmuls return
float32, convolutions the compute dtype. Normalisation, the attention
softmax and the residual streams of the U-Net and the text transformer stay
float32. Norm outputs are cast to the compute dtype (they only feed
convs/matmuls).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# torch's default Linear/Conv init draws U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
# i.e. variance 1 / (3 fan_in); keeping it makes training from scratch
# behave like the reference.
DEFAULT_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def timestep_embedding(timesteps: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of raw diffusion step indices (cos first).

    Args:
      timesteps: (B,) integer or float step indices, *original* 0..999 values.
      dim: embedding width.
      max_period: lowest frequency is 1 / max_period.

    Returns:
      (B, dim) float32: [cos(t f_0..f_{h-1}), sin(t f_0..f_{h-1})] with
      f_i = exp(-ln(max_period) i / h), h = dim // 2; zero-padded if dim is odd.
    """
    half = dim // 2
    # Same float32 operation order as the reference: (-ln P * i) / h, then exp.
    exponent = (-math.log(max_period) * jnp.arange(half, dtype=jnp.float32)) / half
    freqs = jnp.exp(exponent)
    args = timesteps.astype(jnp.float32)[:, None] * freqs[None]
    embedding = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        embedding = jnp.pad(embedding, ((0, 0), (0, 1)))
    return embedding


# Matmuls take inputs in the compute dtype but return float32 (the
# accumulator's precision, no extra rounding): their results flow into the
# float32 residual streams, LayerNorms or the attention. Convolutions return
# the compute dtype instead: XLA:GPU supports mixed bf16-in/f32-out only for
# dots and would run such a conv entirely in float32 (TPU and CPU would not
# mind). Measured on the fixture models, bf16 vs float32 output (relative L2):
# ~2.2% with every layer rounding its output, ~1.9% with this policy, ~1.3%
# if convs also returned float32.
_dot_general_f32 = functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32)


def dense(features: int, names: tuple[str, str], dtype: Dtype, name: str | None = None,
          zero_init: bool = False) -> nn.Dense:
    """A float32-parameter Dense layer whose kernel and bias carry logical names.

    Args:
      features: output width.
      names: logical names of the kernel's (in, out) axes; the bias takes `out`.
      dtype: compute dtype of the inputs and kernel; the output is float32.
      name: module name.
      zero_init: zero kernel and bias (the reference's `zero_module`).
    """
    kernel_init = nn.initializers.zeros_init() if zero_init else DEFAULT_KERNEL_INIT
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(kernel_init, names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (names[1],)),
        dot_general=_dot_general_f32,
        name=name,
    )


def conv(features: int, kernel: int, dtype: Dtype, name: str | None = None, stride: int = 1,
         zero_init: bool = False) -> nn.Conv:
    """An NHWC convolution with torch-style symmetric padding (kernel // 2).

    The kernel is HWIO, named (None, None, "conv_in", "conv_out"). Inputs,
    kernel and output are in `dtype` (see `_dot_general_f32` for why).
    """
    kernel_init = nn.initializers.zeros_init() if zero_init else DEFAULT_KERNEL_INIT
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(kernel_init, (None, None, "conv_in", "conv_out")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
        name=name,
    )


class GroupNorm32(nn.Module):
    """GroupNorm over the channel axis of NHWC features, computed in float32.

    Attributes:
      num_groups: groups (32 in GLIDE); channels must be divisible by it.
      epsilon: variance epsilon (1e-5, as torch).
      dtype: dtype of the output (the compute dtype).
    """

    num_groups: int = 32
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, ..., C) -> same shape, in `dtype`."""
        channels = x.shape[-1]
        if channels % self.num_groups:
            raise ValueError(f"GroupNorm: {channels} channels are not divisible by {self.num_groups} groups")
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                           (channels,), jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
                          (channels,), jnp.float32)
        x32 = x.astype(jnp.float32)
        grouped = x32.reshape(x.shape[0], -1, self.num_groups, channels // self.num_groups)
        mean = grouped.mean(axis=(1, 3), keepdims=True)
        var = jnp.square(grouped - mean).mean(axis=(1, 3), keepdims=True)
        normed = ((grouped - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
        return (normed * scale + bias).astype(self.dtype)


class LayerNorm32(nn.Module):
    """LayerNorm over the last axis, computed in float32 (eps 1e-5, as torch).

    The output is cast back to the input's dtype, like the reference's
    fp16-friendly LayerNorm.
    """

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (..., W) -> same shape and dtype."""
        width = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                           (width,), jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
                          (width,), jnp.float32)
        x32 = x.astype(jnp.float32)
        mean = x32.mean(axis=-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(axis=-1, keepdims=True)
        normed = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (normed * scale + bias).astype(x.dtype)


def split_heads(projected: jax.Array, num_heads: int, parts: int) -> Sequence[jax.Array]:
    """Splits a fused projection into per-head parts, GLIDE's layout.

    The reference views the projection's channels as (heads, parts * d) and
    splits *within* each head, so channel `h * parts * d + p * d + i` is
    element i of part p (q, k or v) of head h.

    Args:
      projected: (B, T, heads * parts * d).
      num_heads: number of heads.
      parts: 3 for q|k|v, 2 for k|v.

    Returns:
      `parts` arrays of shape (B, T, heads, d).
    """
    batch, length, width = projected.shape
    if width % (num_heads * parts):
        raise ValueError(f"projection width {width} is not divisible by {num_heads} heads x {parts} parts")
    per_head = projected.reshape(batch, length, num_heads, width // num_heads)
    return jnp.split(per_head, parts, axis=-1)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, dtype: Dtype) -> jax.Array:
    """Unmasked multi-head attention with the reference's scaling.

    q and k are each multiplied by d^(-1/4) before the dot product (as GLIDE
    does, for fp16 headroom), so `jax.nn.dot_product_attention` is called with
    scale 1. Its XLA implementation promotes the logits to float32 and runs
    the softmax in float32 for any input dtype (cuDNN, which it may pick for
    bf16/fp16 on GPU, also keeps the softmax in float32).

    Args:
      q: (B, T, heads, d) queries.
      k, v: (B, S, heads, d) keys and values.
      dtype: compute dtype of the two attention matmuls.

    Returns:
      (B, T, heads * d) in `dtype`.
    """
    scale = 1.0 / math.sqrt(math.sqrt(q.shape[-1]))
    q, k = (q * scale).astype(dtype), (k * scale).astype(dtype)
    out = jax.nn.dot_product_attention(q, k, v.astype(dtype), scale=1.0)
    return out.reshape(*out.shape[:2], -1)


def upsample_nearest(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 on NHWC: (B, H, W, C) -> (B, 2H, 2W, C)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def downsample_avg(x: jax.Array) -> jax.Array:
    """2x2 average pooling, stride 2, on NHWC: (B, H, W, C) -> (B, H/2, W/2, C)."""
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"average pooling needs even spatial sizes, got {h}x{w}")
    pooled = x.reshape(b, h // 2, 2, w // 2, 2, c).astype(jnp.float32).mean(axis=(2, 4))
    return pooled.astype(x.dtype)
