"""GLIDE's released inpainting base model ("base_inpaint.pt"): 64 px.

GLIDE §3.3/§4: the base model fine-tuned for inpainting, with four extra
input channels (the known pixels times the mask, and the mask), i.e.
glide-text2im's `model_and_diffusion_defaults()` with `inpaint=True`:

  python -m glide_jax.convert base_inpaint.pt --kind base-inpaint --output exported/base_inpaint

Count the parameters (jax.eval_shape, nothing allocated):

  python -m glide_jax.tools.count_params configs/glide_base_inpaint.py

Expected: `params: 385037638` (the base model plus a wider first conv).
"""

import pathlib

import ml_collections

from glide_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("glide_base.py")))
    config.model.kind = "inpaint"  # [x_t, image * mask, mask]: 7 input channels
    # A fine-tuning run (--config.train.init_from=a plain run or export), not
    # a pretraining one: the filtered GLIDE fine-tuned for 500K iterations.
    config.train.num_steps = 500_000
    return config_lib.validate(config)
