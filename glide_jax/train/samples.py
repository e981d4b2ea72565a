"""Sample grids during training: EMA params, classifier-free guidance, few steps.

Every `config.train.sample_every` steps the loop draws one picture per row
of a fixed preview set with the first EMA rate's params and writes the grid
to `workdir/samples/step_<step>.png` (and TensorBoard). The noise seed is
fixed, so successive grids show the same scenes getting better.

  base           rows are `config.train.sample_prompts`
  upsample,      rows are the first examples of the first training batch:
  inpaint, ...   their captions, low-resolution images and masks

The conditional rows and the same number of empty-caption rows form one batch
for `classifier_free_guidance` (GLIDE eq. 3). Inpainting pastes the known
pixels into every x_0 prediction, as glide-text2im's notebook does. The noised
CLIP has no samples.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from glide_jax import diffusion as diffusion_lib
from glide_jax import text as text_lib
from glide_jax.sampling import images as images_lib
from glide_jax.train import losses


def preview_rows(config: ml_collections.ConfigDict, first_batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The conditioning of the grid's rows (host numpy arrays).

    Args:
      config: the full config.
      first_batch: a training batch (this host's rows), for the kinds that
        need images as input.

    Returns:
      tokens (N, L), mask (N, L), and low_res / inpaint_image / inpaint_mask for those kinds.
    """
    kind = config.model.kind
    if kind == "base":
        tokenizer = text_lib.get_tokenizer(config.text)
        tokens, mask = text_lib.tokenize_batch(tokenizer, list(config.train.sample_prompts), config.text.text_ctx)
        return {"tokens": tokens, "mask": mask}
    count = min(len(config.train.sample_prompts), first_batch["image"].shape[0])
    first_rows = {key: np.asarray(value[:count]) for key, value in first_batch.items()}
    return {key: np.asarray(value) for key, value in losses.model_conditioning(kind, first_rows).items()}


def _with_unconditional(config: ml_collections.ConfigDict, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Appends one empty-caption row per row (same images) for guidance."""
    doubled = {key: np.concatenate([value, value], axis=0) for key, value in rows.items()}
    count = rows["tokens"].shape[0]
    tokens, mask = text_lib.get_tokenizer(config.text).padded_tokens_and_mask([], config.text.text_ctx)
    doubled["tokens"][count:] = tokens
    doubled["mask"][count:] = mask
    return doubled


class SampleGridMaker:
    """Jits the guided sampler once; `__call__(params)` returns a uint8 grid.

    Args:
      config: the full config (train.sample_*, model, diffusion).
      model: the U-Net.
      mesh: the training mesh (params arrive sharded on it).
      rows: from `preview_rows`.
      param_shardings: NamedShardings of the params tree.
    """

    def __init__(self, config: ml_collections.ConfigDict, model: Any, mesh: Mesh, rows: dict[str, np.ndarray],
                 param_shardings: Any):
        train = config.train
        respacing = f"ddim{train.sample_steps}" if train.sample_sampler == "ddim" else str(train.sample_steps)
        self.diffusion = diffusion_lib.diffusion_from_config(config.diffusion, timestep_respacing=respacing)
        self.count = rows["tokens"].shape[0]
        self.rows = jax.device_put(_with_unconditional(config, rows), NamedSharding(mesh, P()))
        self.key = jax.random.PRNGKey(int(train.sample_seed))
        size = int(config.model.image_size)
        loop = diffusion_lib.ddim_sample_loop if train.sample_sampler == "ddim" else diffusion_lib.p_sample_loop
        scale = float(train.sample_guidance_scale)
        diffusion = self.diffusion

        def sample(params, rows, key):
            cond = {k: v for k, v in rows.items() if k not in ("tokens", "mask")}
            text_emb = model.apply({"params": params}, rows["tokens"], rows["mask"], method="encode_text")

            def model_fn(x, t):
                return model.apply({"params": params}, x, t, text_emb=text_emb, **cond).astype(jnp.float32)

            denoised_fn = None
            if "inpaint_mask" in cond:
                known, keep = cond["inpaint_image"], cond["inpaint_mask"]
                denoised_fn = lambda x0: x0 * (1.0 - keep) + known  # noqa: E731
            guided = diffusion_lib.classifier_free_guidance(model_fn, scale)
            out = loop(diffusion, guided, (2 * self.count, size, size, 3), key=key, denoised_fn=denoised_fn)
            return out[: self.count]

        self._sample = jax.jit(sample, in_shardings=(param_shardings, None, None),
                               out_shardings=NamedSharding(mesh, P()))

    def __call__(self, params: Any) -> np.ndarray:
        """Samples the rows with `params`; returns a uint8 (H', W', 3) grid."""
        images = np.asarray(jax.device_get(self._sample(params, self.rows, self.key)))
        return images_lib.make_grid(images_lib.to_uint8(images))


def write_grid(workdir: str | pathlib.Path, step: int, grid: np.ndarray) -> pathlib.Path:
    """Writes workdir/samples/step_<step>.png; returns its path."""
    path = pathlib.Path(workdir) / "samples" / f"step_{step:08d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    images_lib.save_png(path, grid)
    return path
