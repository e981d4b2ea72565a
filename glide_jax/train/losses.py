"""Per-kind training losses: `loss_fn(params, batch, rng) -> (loss, metrics)`.

  base, upsample, inpaint, upsample_inpaint
      The improved-DDPM hybrid loss of GaussianDiffusion.training_losses
      (simple eps MSE + lambda * variational bound, GLIDE §4) at a uniform
      random step. Conditioning is bound into `model_fn`: caption tokens
      (already dropped to empty for 20% of rows by the data pipeline, which
      trains the unconditional branch for classifier-free guidance), the
      low-resolution image for upsamplers, and for inpainting the known pixels
      `image * inpaint_mask` with the mask (GLIDE §4.3).
  clip
      The noised CLIP (GLIDE §2.3): images are noised with q_sample at a
      uniform step and the symmetric InfoNCE loss of CLIP is taken between
      image and caption embeddings, scaled by the learned temperature
      exp(logit_scale) (capped at 100, as CLIP does).

All metrics are batch means (float32 scalars).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from glide_jax.config import INPAINT_KINDS, UPSAMPLE_KINDS
from glide_jax.models import clip as clip_lib

LossFn = Callable[[Any, dict[str, jax.Array], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def model_conditioning(kind: str, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Keyword arguments of the U-Net call for `kind`, taken from a batch.

    Args:
      kind: `config.model.kind` (not "clip").
      batch: `image` (B, H, W, 3), `tokens` (B, L) int32, `mask` (B, L) bool,
        plus `low_res` (B, h, w, 3) for upsamplers and `inpaint_mask`
        (B, H, W, 1) float (1 = known pixel) for inpainting.

    Returns:
      tokens/mask, and low_res and inpaint_image/inpaint_mask where the kind needs them.
    """
    cond = {"tokens": batch["tokens"], "mask": batch["mask"]}
    if kind in UPSAMPLE_KINDS:
        cond["low_res"] = batch["low_res"]
    if kind in INPAINT_KINDS:
        known = batch["inpaint_mask"].astype(batch["image"].dtype)
        cond["inpaint_image"] = batch["image"] * known
        cond["inpaint_mask"] = known
    return cond


def _quartile_sums(values: jax.Array, t: jax.Array, num_timesteps: int, name: str) -> dict[str, jax.Array]:
    """Sum and count of `values` over the rows whose step falls in each quarter of the schedule.

    `{name}_q{q}_sum` and `{name}_q{q}_count`: averaging both over micro-batches
    and steps keeps their ratio the quarter's mean, and a quarter no row fell
    in has count 0 instead of a mean of 0 (`metrics.ratio_metrics`).
    """
    quarter = jnp.minimum(4 * t // num_timesteps, 3)
    out = {}
    for q in range(4):
        hit = (quarter == q).astype(jnp.float32)
        out[f"{name}_q{q}_sum"] = jnp.sum(values * hit)
        out[f"{name}_q{q}_count"] = jnp.sum(hit)
    return out


def diffusion_loss_fn(config: ml_collections.ConfigDict, model: nn.Module, diffusion: Any,
                      deterministic: bool = False) -> LossFn:
    """The hybrid diffusion loss for the U-Net kinds.

    Args:
      config: the full config (`model.kind`).
      model: the U-Net from `create_model(config)`.
      diffusion: a GaussianDiffusion (`training_losses`, `num_timesteps`).
      deterministic: no dropout (evaluation).

    Returns:
      loss_fn(params, batch, rng) -> (scalar loss, metrics with loss, mse, vb
      and the loss's sum and count per quarter of the schedule, which the
      metrics rows turn into `loss_q0`..`loss_q3`).
    """
    kind = config.model.kind

    def loss_fn(params, batch, rng):
        image = batch["image"]
        t_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
        t = jax.random.randint(t_rng, (image.shape[0],), 0, diffusion.num_timesteps)
        noise = jax.random.normal(noise_rng, image.shape, jnp.float32)
        cond = model_conditioning(kind, batch)

        def model_fn(x_t, timesteps):
            out = model.apply({"params": params}, x_t, timesteps, deterministic=deterministic,
                              rngs={"dropout": dropout_rng}, **cond)
            return out.astype(jnp.float32)

        terms = diffusion.training_losses(model_fn, image, t, noise)
        metrics = {name: jnp.mean(value) for name, value in terms.items()}
        metrics.update(_quartile_sums(terms["loss"], t, diffusion.num_timesteps, "loss"))
        return metrics["loss"], metrics

    return loss_fn


def clip_loss_fn(config: ml_collections.ConfigDict, model: nn.Module, diffusion: Any) -> LossFn:
    """The contrastive loss of the noised CLIP on q_sample-noised images.

    Args:
      config: the full config.
      model: the NoisedCLIP from `create_model(config)`, called as
        `model.apply(vars, x_t, t, tokens, lens)` -> {image_emb, text_emb, logit_scale}.
      diffusion: the GaussianDiffusion whose forward process noises the images.

    Returns:
      loss_fn(params, batch, rng) -> (scalar loss, metrics with loss, accuracy
      of the image->text match and the temperature exp(logit_scale)).
    """
    del config

    def loss_fn(params, batch, rng):
        image = batch["image"]
        t_rng, noise_rng = jax.random.split(rng)
        t = jax.random.randint(t_rng, (image.shape[0],), 0, diffusion.num_timesteps)
        noise = jax.random.normal(noise_rng, image.shape, jnp.float32)
        x_t = diffusion.q_sample(image, t, noise)
        model_t = diffusion.original_timesteps(t)  # the CLIP embeds original step indices
        lens = jnp.sum(batch["mask"].astype(jnp.int32), axis=-1)
        out = model.apply({"params": params}, x_t, model_t, batch["tokens"], lens)
        scale = clip_lib.logit_scale_value(out["logit_scale"])
        logits = scale * (out["image_emb"] @ out["text_emb"].T)
        labels = jnp.arange(image.shape[0])
        image_to_text = -jnp.mean(jax.nn.log_softmax(logits, axis=1)[labels, labels])
        text_to_image = -jnp.mean(jax.nn.log_softmax(logits, axis=0)[labels, labels])
        loss = 0.5 * (image_to_text + text_to_image)
        accuracy = jnp.mean((jnp.argmax(logits, axis=1) == labels).astype(jnp.float32))
        return loss, {"loss": loss, "accuracy": accuracy, "temperature": scale}

    return loss_fn


def create_loss_fn(config: ml_collections.ConfigDict, model: nn.Module, diffusion: Any,
                   deterministic: bool = False) -> LossFn:
    """The loss for `config.model.kind`."""
    if config.model.kind == "clip":
        return clip_loss_fn(config, model, diffusion)
    return diffusion_loss_fn(config, model, diffusion, deterministic)
