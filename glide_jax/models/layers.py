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

from glide_jax.config import ATTENTION_IMPLS

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
# float32 residual streams, LayerNorms or the attention. The exceptions
# (`out_dtype` below) are the U-Net attention's projections: q|k|v, whose
# three parts are all cast to the compute dtype at once, and the output, which
# joins the residual stream in the compute dtype as a ResBlock's last conv
# does. Convolutions return the compute dtype: XLA:GPU supports mixed
# bf16-in/f32-out only for dots and would run such a conv entirely in float32
# (TPU and CPU would not mind). Measured on the fixture models, bf16 vs
# float32 output (relative L2): ~2.2% with every layer rounding its output,
# ~1.9% with this policy, ~1.3% if convs also returned float32.
def dense(features: int, names: tuple[str, str], dtype: Dtype, name: str | None = None,
          zero_init: bool = False, out_dtype: Dtype = jnp.float32) -> nn.Dense:
    """A float32-parameter Dense layer whose kernel and bias carry logical names.

    Args:
      features: output width.
      names: logical names of the kernel's (in, out) axes; the bias takes `out`.
      dtype: compute dtype of the inputs and kernel.
      name: module name.
      zero_init: zero kernel and bias (the reference's `zero_module`).
      out_dtype: dtype of the output. float32 (the default policy above), or
        the compute dtype for a projection whose every reader casts it to
        that anyway: the result is rounded before the bias is added rather
        than after, and written and read at half the bytes.
    """
    kernel_init = nn.initializers.zeros_init() if zero_init else DEFAULT_KERNEL_INIT
    out_dtype = jnp.dtype(out_dtype)
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(kernel_init, names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (names[1],)),
        dot_general=functools.partial(jax.lax.dot_general, preferred_element_type=out_dtype),
        name=name,
    )


def conv(features: int, kernel: int, dtype: Dtype, name: str | None = None, stride: int = 1,
         zero_init: bool = False) -> nn.Conv:
    """An NHWC convolution with torch-style symmetric padding (kernel // 2).

    The kernel is HWIO, named (None, None, "conv_in", "conv_out"). Inputs,
    kernel and output are in `dtype` (see the note above `dense` for why).
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

    The statistics come from per-channel sums over the spatial axes, which
    keep the channels contiguous (a reduction GPUs run at full bandwidth,
    unlike one over axes 1 and 3 of a (B, HW, G, C/G) view); the groups are
    then combined on the small (B, C) arrays. The normalisation is one
    elementwise pass, `(x - mean) * a + bias`, that fuses with what follows
    (SiLU, scale-shift, the cast).

    Two ways to the statistics, equally exact against cancellation:
      two-pass  the group mean, then the mean squared deviation from it: two
                reads of x (XLA:CPU compiles it fastest);
      one-pass  per-channel sums of d and d^2 for d = x - (x's first pixel
                of that channel), one read of x (the two sums fuse into one
                reduction), then the group's variance by the law of total
                variance over its channels. Shifting by a sample of the
                channel keeps E[d^2] - E[d]^2 free of the cancellation that
                ruins it for raw x with a large mean. On a GPU, where the
                norms are bandwidth-bound, this removes a third of their
                traffic.

    Attributes:
      num_groups: groups (32 in GLIDE); channels must be divisible by it.
      epsilon: variance epsilon (1e-5, as torch).
      dtype: dtype of the output (the compute dtype).
      one_pass: the statistics' algorithm; None picks one-pass on a CUDA GPU
        and two-pass elsewhere (so CPU parity runs are unchanged).
    """

    num_groups: int = 32
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    one_pass: bool | None = None

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
        per_pixel = (slice(None),) + (None,) * (x.ndim - 2) + (slice(None),)  # (B, C) -> (B, 1.., C)
        one_pass = _on_cuda() if self.one_pass is None else self.one_pass
        if one_pass:
            mean, var = self._moments_one_pass(x32)
            centred = x32 - mean[per_pixel]
        else:
            centred = x32 - self._group_mean(x32)[per_pixel]
            var = self._group_mean(jnp.square(centred))
        normed = centred * (jax.lax.rsqrt(var + self.epsilon) * scale)[per_pixel]
        return (normed + bias).astype(self.dtype)

    def _per_group(self, per_channel: jax.Array) -> jax.Array:
        """(B, C) -> (B, G, C/G)."""
        return per_channel.reshape(per_channel.shape[0], self.num_groups, -1)

    @staticmethod
    def _per_channel(per_group: jax.Array, channels: int) -> jax.Array:
        """(B, G, 1) -> (B, C): each group's value repeated for its channels."""
        return jnp.repeat(per_group[..., 0], channels // per_group.shape[1], axis=1)

    def _group_mean(self, x32: jax.Array) -> jax.Array:
        """(B, ..., C) -> (B, C): the mean over each channel's group, repeated per channel."""
        per_channel = x32.sum(axis=tuple(range(1, x32.ndim - 1)))  # (B, C)
        mean = self._per_group(per_channel).mean(-1, keepdims=True) / math.prod(x32.shape[1:-1])
        return self._per_channel(mean, x32.shape[-1])

    def _moments_one_pass(self, x32: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(B, ..., C) -> the group mean and variance, each (B, C) repeated per channel, from one read of x."""
        spatial = tuple(range(1, x32.ndim - 1))
        pixels = math.prod(x32.shape[1:-1])
        # The statistics do not depend on the shift, so neither do their gradients.
        shift = jax.lax.stop_gradient(x32[(slice(None),) + (0,) * len(spatial)])  # (B, C)
        d = x32 - shift[(slice(None),) + (None,) * len(spatial)]
        d_mean = d.sum(axis=spatial) / pixels
        channel_var = jnp.maximum(jnp.square(d).sum(axis=spatial) / pixels - jnp.square(d_mean), 0.0)
        channel_mean = self._per_group(d_mean + shift)
        mean = channel_mean.mean(-1, keepdims=True)
        var = (self._per_group(channel_var) + jnp.square(channel_mean - mean)).mean(-1, keepdims=True)
        return self._per_channel(mean, x32.shape[-1]), self._per_channel(var, x32.shape[-1])


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


def attention_implementation(requested: str, dtype: Dtype, head_dim: int) -> str:
    """Resolves `config.model.attention_impl` for one attention call.

    "auto" picks cuDNN's fused (flash) attention where it applies: a CUDA
    GPU, a 16-bit compute dtype and a head width that is a multiple of 8 up
    to 128 (GLIDE's are 64). Left to itself, `jax.nn.dot_product_attention`
    picks XLA's, which materialises the logits: 5x slower on an H100 for
    1024 queries and 1152 keys. Everything else gets "xla". "cudnn" insists,
    and fails here, naming the setting, where it cannot run.
    """
    if requested not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl {requested!r}: must be one of {', '.join(ATTENTION_IMPLS)}")
    if requested == "xla":
        return "xla"
    reasons = []
    if not _on_cuda():
        reasons.append(f"the backend is {jax.default_backend()!r}, not a CUDA GPU")
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        reasons.append(f"the compute dtype is {jnp.dtype(dtype).name}, not bfloat16/float16")
    if head_dim % 8 or head_dim > 128:
        reasons.append(f"the head width {head_dim} is not a multiple of 8 up to 128")
    if not reasons:
        return "cudnn"
    if requested == "cudnn":
        raise ValueError("attention_impl 'cudnn' cannot run here: " + "; ".join(reasons)
                         + " (use 'auto' to fall back to 'xla')")
    return "xla"


@functools.lru_cache(maxsize=None)
def _on_cuda() -> bool:
    devices = jax.devices()
    return devices[0].platform == "gpu" and "cuda" in devices[0].client.platform_version.lower()


def attention(q: jax.Array, k: jax.Array, v: jax.Array, dtype: Dtype, implementation: str = "auto") -> jax.Array:
    """Unmasked multi-head attention with the reference's scaling.

    q and k are each multiplied by d^(-1/4) before the dot product (as GLIDE
    does, for fp16 headroom), so `jax.nn.dot_product_attention` is called with
    scale 1. Both implementations keep the softmax in float32: XLA's promotes
    the logits to float32 for any input dtype, and cuDNN's accumulates in
    float32.

    Args:
      q: (B, T, heads, d) queries.
      k, v: (B, S, heads, d) keys and values.
      dtype: compute dtype of the two attention matmuls.
      implementation: "auto", "xla" or "cudnn" (see `attention_implementation`).

    Returns:
      (B, T, heads * d) in `dtype`.
    """
    return attend(scale_qk(q, dtype), scale_qk(k, dtype), v.astype(dtype), implementation)


def scale_qk(x: jax.Array, dtype: Dtype) -> jax.Array:
    """A query or key (..., d) times d^(-1/4), cast to `dtype`: `attention`'s operand."""
    return (x * (1.0 / math.sqrt(math.sqrt(x.shape[-1])))).astype(dtype)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, implementation: str = "auto") -> jax.Array:
    """`attention` of operands already scaled (`scale_qk`) and in the compute dtype.

    For keys/values computed ahead of time, e.g. the U-Net's text keys,
    which a sampler computes once rather than at every step.
    """
    impl = attention_implementation(implementation, q.dtype, q.shape[-1])
    out = jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation=impl)
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
