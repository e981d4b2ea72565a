"""GLIDE's released inpainting upsampler ("upsample_inpaint.pt"): 64 -> 256 px.

GLIDE §3.3/§4: the upsampler fine-tuned for inpainting, i.e. glide-text2im's
`model_and_diffusion_defaults_upsampler()` with `inpaint=True`; the first conv
sees [x_t, image * mask, mask, bilinear(low_res)] (10 channels):

  python -m glide_jax.convert upsample_inpaint.pt --kind upsample-inpaint --output exported/upsample_inpaint

Count the parameters (jax.eval_shape, nothing allocated):

  python -m glide_jax.tools.count_params configs/glide_upsample_inpaint.py

Expected: `params: 398368198` (the upsampler plus a wider first conv).
"""

import pathlib

import ml_collections

from glide_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("glide_upsample.py")))
    config.model.kind = "upsample_inpaint"  # [x_t, image * mask, mask, bilinear(low_res)]
    # A fine-tuning run (--config.train.init_from=a plain run or export), not
    # a pretraining one: the filtered GLIDE fine-tuned for 500K iterations.
    config.train.num_steps = 500_000
    return config_lib.validate(config)
