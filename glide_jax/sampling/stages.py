"""The two sampling stages of GLIDE as pure, jittable functions.

`sample_base` runs the 64 px text-conditional model (optionally inpainting)
with classifier-free guidance or CLIP guidance; `sample_upsample` runs the
64 -> 256 upsampler on its output. Each computes the text embedding once
(`encode_text`) and binds it, with the other conditioning, into the
`model_fn` closure that the diffusion samplers call at every step, so the
text transformer never runs inside the loop.

The functions follow glide-text2im's notebooks step by step, so the parity
tool can replay the reference trajectories through them with the recorded
`noise` / `step_noises`; `pipeline.py` jits them with a PRNG key instead.

Classifier-free guidance uses the reference layout: the batch is
[B conditional rows; B unconditional rows] (2B), both halves follow the same
trajectory, and the caller keeps the first B rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from glide_jax.config import SAMPLERS
from glide_jax.diffusion import classifier_free_guidance, ddim_sample_loop, p_sample_loop
from glide_jax.diffusion.gaussian import GaussianDiffusion
from glide_jax.sampling.precast import precast

Constrain = Callable[[jax.Array], jax.Array]


def as_variables(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """`{"params": tree}` for `module.apply`, whether given the tree or the variables."""
    return params if "params" in params else {"params": params}


@dataclasses.dataclass(frozen=True)
class InpaintArrays:
    """Inpainting conditioning at one resolution.

    Attributes:
      image: (H, W, 3) or (N, H, W, 3) float32 source image in [-1, 1].
      mask: (H, W, 1) or (N, H, W, 1) float32, 1 = known pixel.
    """

    image: jax.Array
    mask: jax.Array

    def batched(self, batch: int) -> "InpaintArrays":
        """Broadcasts a single image and mask to `batch` rows."""
        image, mask = jnp.asarray(self.image, jnp.float32), jnp.asarray(self.mask, jnp.float32)
        if image.ndim == 3:
            image = jnp.broadcast_to(image, (batch,) + image.shape)
        if mask.ndim == 3:
            mask = jnp.broadcast_to(mask, (batch,) + mask.shape)
        return InpaintArrays(image, mask)

    def model_kwargs(self) -> dict[str, jax.Array]:
        # The model multiplies by the mask itself; the notebook also passes the
        # pre-multiplied image, which is the same product.
        return {"inpaint_image": self.image * self.mask, "inpaint_mask": self.mask}

    def denoised_fn(self) -> Callable[[jax.Array], jax.Array]:
        """Pastes the known pixels into every x_0 prediction (before the clamp)."""
        known = self.image * self.mask
        return lambda x0: x0 * (1.0 - self.mask) + known


def quantize_low_res(samples: jax.Array) -> jax.Array:
    """The upsampler's input: base samples rounded to 8 bits, as the notebook does.

    Args:
      samples: (B, h, w, 3) float in [-1, 1].

    Returns:
      round((s + 1) * 127.5) / 127.5 - 1, float32.
    """
    return jnp.round((samples.astype(jnp.float32) + 1.0) * 127.5) / 127.5 - 1.0


def conditioned_model_fn(module, params, tokens: jax.Array, mask: jax.Array,
                         constrain: Constrain | None = None, **conditioning) -> Callable:
    """Encodes the text once and returns `model_fn(x, t)` for the samplers.

    Under bf16/fp16 compute the kernels the U-Net would cast at every call
    are cast once, here (`precast`), so the reverse loop reads them at half
    the bytes; the samples are unchanged.

    Args:
      module: a `Text2ImUNet`.
      params: its params tree or variables.
      tokens: (N, L) int32; mask: (N, L) bool.
      constrain: optional sharding constraint applied to x and the output.
      **conditioning: `low_res`, `inpaint_image`, `inpaint_mask` (N rows).

    Returns:
      model_fn(x (N, H, W, 3), t (N,) original steps) -> (N, H, W, 6) float32.
    """
    variables = as_variables(params)
    text_emb = module.apply(variables, tokens, mask, method="encode_text")
    keep = constrain or (lambda a: a)

    def apply(v, x, t, text_emb, conditioning):
        return module.apply(v, x, t, text_emb=text_emb, **conditioning)

    if jnp.dtype(getattr(module, "dtype", jnp.float32)) != jnp.float32:
        # bf16/fp16 compute: round the kernels once here, not at every step of the loop.
        rows, size = tokens.shape[0], module.image_size
        x_spec = jax.ShapeDtypeStruct((rows, size, size, 3), jnp.float32)
        t_spec = jax.ShapeDtypeStruct((rows,), jnp.int32)
        variables = precast(apply, variables, x_spec, t_spec, text_emb, conditioning)

    def model_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        out = apply(variables, keep(x), t, text_emb, conditioning)
        return keep(out.astype(jnp.float32))

    return model_fn


def run_sampler(diffusion: GaussianDiffusion, sampler: str, model_fn: Callable, shape, *,
                key=None, noise=None, step_noises=None, cond_fn=None, denoised_fn=None,
                return_all_steps: bool = False):
    """`p_sample_loop` ("ddpm") or `ddim_sample_loop` with eta 0 ("ddim"), clamping x_0."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r}: must be one of {', '.join(SAMPLERS)}")
    loop = p_sample_loop if sampler == "ddpm" else ddim_sample_loop
    return loop(diffusion, model_fn, shape, key=key, noise=noise, step_noises=step_noises,
                clip_denoised=True, denoised_fn=denoised_fn, cond_fn=cond_fn,
                return_all_steps=return_all_steps)


def sample_base(module, params, diffusion: GaussianDiffusion, sampler: str, *,
                tokens: jax.Array, mask: jax.Array, guidance_scale: float | None,
                cond_fn: Callable | None = None, inpaint: InpaintArrays | None = None,
                key=None, noise=None, step_noises=None, constrain: Constrain | None = None,
                wrap_model_fn: Callable | None = None, return_all_steps: bool = False):
    """The base stage: text -> (B, S, S, 3) samples in [-1, 1].

    Args:
      module, params: the base or inpainting `Text2ImUNet` and its params.
      diffusion: the respaced sampling diffusion.
      sampler: "ddpm" or "ddim".
      tokens, mask: (N, L). With guidance, N = 2B: B captions, then B empty ones.
      guidance_scale: classifier-free guidance scale, or None for no CFG
        (CLIP guidance); N = B then.
      cond_fn: CLIP guidance gradient `cond_fn(x, t)` for N rows, or None.
      inpaint: source image and mask (single or N rows) for inpainting models.
      key / noise / step_noises: as in the diffusion samplers.
      constrain: sharding constraint for x and the model output.
      wrap_model_fn: applied to the final model_fn (the parity tool records
        what the model receives with it).
      return_all_steps: also return every step's {"sample", "pred_xstart"}.

    Returns:
      The (N, S, S, 3) final samples of all N rows (the caller keeps the
      first B under guidance), plus the step history with `return_all_steps`.
    """
    rows = tokens.shape[0]
    size = module.image_size
    conditioning, denoised_fn = {}, None
    if inpaint is not None:
        inpaint = inpaint.batched(rows)
        conditioning = inpaint.model_kwargs()
        denoised_fn = inpaint.denoised_fn()
    model_fn = conditioned_model_fn(module, params, tokens, mask, constrain, **conditioning)
    if guidance_scale is not None:
        model_fn = classifier_free_guidance(model_fn, guidance_scale)
    if wrap_model_fn is not None:
        model_fn = wrap_model_fn(model_fn)
    return run_sampler(diffusion, sampler, model_fn, (rows, size, size, 3), key=key, noise=noise,
                       step_noises=step_noises, cond_fn=cond_fn, denoised_fn=denoised_fn,
                       return_all_steps=return_all_steps)


def sample_upsample(module, params, diffusion: GaussianDiffusion, sampler: str, *,
                    base_samples: jax.Array, tokens: jax.Array, mask: jax.Array,
                    temperature: float, inpaint: InpaintArrays | None = None,
                    key=None, noise=None, step_noises=None, constrain: Constrain | None = None,
                    wrap_model_fn: Callable | None = None, return_all_steps: bool = False):
    """The upsampling stage: (B, s, s, 3) base samples -> (B, S, S, 3).

    As in the text2im notebook: the low-res input is the 8-bit rounding of
    the base samples, the initial noise is a standard normal times
    `temperature` (0.997), and there is no guidance. The inpainting upsampler
    sees the full low-res image and the masked high-res source, and its x_0
    predictions get the known pixels pasted in.

    Args:
      module, params: the `upsample` or `upsample_inpaint` U-Net.
      base_samples: (B, s, s, 3) in [-1, 1].
      tokens, mask: (B, L) captions (no empty rows).
      temperature: scale of the initial noise.
      noise: optional (B, S, S, 3) unscaled initial noise (else drawn from key).
      Others as in `sample_base`.

    Returns:
      (B, S, S, 3) samples (plus the history with `return_all_steps`).
    """
    rows, size = tokens.shape[0], module.image_size
    shape = (rows, size, size, 3)
    if noise is None:
        if key is None:
            raise ValueError("pass `key` or the initial `noise`")
        noise_key, key = jax.random.split(key)
        noise = jax.random.normal(noise_key, shape, jnp.float32)
    conditioning = {"low_res": quantize_low_res(base_samples)}
    denoised_fn = None
    if inpaint is not None:
        inpaint = inpaint.batched(rows)
        conditioning.update(inpaint.model_kwargs())
        denoised_fn = inpaint.denoised_fn()
    model_fn = conditioned_model_fn(module, params, tokens, mask, constrain, **conditioning)
    if wrap_model_fn is not None:
        model_fn = wrap_model_fn(model_fn)
    if step_noises is None and key is None and sampler == "ddpm":
        raise ValueError("ddpm upsampling needs `key` or `step_noises`")
    return run_sampler(diffusion, sampler, model_fn, shape, key=key,
                       noise=jnp.asarray(noise, jnp.float32) * temperature,
                       step_noises=step_noises, denoised_fn=denoised_fn,
                       return_all_steps=return_all_steps)
