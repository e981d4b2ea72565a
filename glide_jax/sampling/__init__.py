"""Sampling: exported checkpoints -> prompts -> uint8 images (GLIDE's cascade).

    from glide_jax.sampling import load_pipeline
    pipe = load_pipeline("ckpt/base", upsample="ckpt/upsample")
    images = pipe.generate(["a red circle"], {"seed": 0})  # uint8 (1, 256, 256, 3)

`sample.py` is the command line over the same functions. See
docs/ARCHITECTURE.md, section "Sampling".
"""

from glide_jax.sampling.errors import PromptTruncatedWarning, SamplingError
from glide_jax.sampling.images import InpaintInputs, load_inpaint_inputs, make_grid, save_png, to_uint8
from glide_jax.sampling.pipeline import LoadedModel, Pipeline, load_model, load_pipeline

__all__ = [
    "InpaintInputs", "LoadedModel", "Pipeline", "PromptTruncatedWarning", "SamplingError",
    "load_inpaint_inputs", "load_model", "load_pipeline", "make_grid", "save_png", "to_uint8",
]
