"""A tiny GLIDE inpainting model on glide_shapes, fine-tuned from shapes_base (GLIDE §4.3).

The inpainting U-Net gets four extra input channels: the known pixels and
the mask (1 = known). The data pipeline hides random rectangles or brush
strokes. As in GLIDE, it starts from the text-to-image model: matching
weights are copied and the new input channels of the first convolution
start at zero, so step 0 behaves exactly like the base model.

  python train.py --config configs/shapes_base.py --workdir runs/shapes_base
  python train.py --config configs/shapes_inpaint.py --workdir runs/shapes_inpaint \
      --config.train.init_from=runs/shapes_base

Expected: the loss starts near the base model's final loss (not at ~1) and
keeps falling; samples/ shows the hidden regions filled consistently with the
visible pixels and the caption. About 5 minutes on a 2-core CPU for the
default 500 steps. Without init_from it trains from scratch, more slowly.
"""

import ml_collections

from glide_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    m = config.model
    m.kind = "inpaint"  # Text2ImUNet with known pixels + mask as extra input channels
    m.image_size = 32  # as shapes_base, so its weights fit
    m.model_channels = 32  # as shapes_base
    m.norm_groups = 8  # as shapes_base
    m.num_res_blocks = 1  # as shapes_base
    m.channel_mult = (1, 1, 2)  # as shapes_base
    m.attention_resolutions = (8,)  # as shapes_base
    m.num_head_channels = 32  # as shapes_base
    m.dropout = 0.0  # short run: no dropout
    m.dtype = "float32"  # CPU: bfloat16 brings no speed-up there
    t = config.text
    t.tokenizer = "gpt2"  # as shapes_base
    t.n_vocab = config_lib.GPT2_VOCAB_SIZE  # as shapes_base
    t.text_ctx = 24  # as shapes_base
    t.xf_width = 64  # as shapes_base
    t.xf_layers = 2  # as shapes_base
    t.xf_heads = 2  # as shapes_base
    d = config.diffusion
    d.steps = 1000  # training diffusion steps
    d.noise_schedule = "squaredcos_cap_v2"  # as the base model
    data = config.data
    data.dataset = "glide_shapes"  # procedural shapes with captions
    data.batch_size = 32  # global batch
    data.shapes_resolution = 32  # render at the model size
    data.shapes_max_objects = 1  # the scenes shapes_base learned
    data.shapes_train_size = 10_000  # scenes in the train split
    data.shuffle_buffer = 2_000  # examples in the shuffle buffer
    o = config.optim
    o.learning_rate = 3e-4  # fine-tuning: lower than from scratch
    o.warmup_steps = 50  # linear warm-up
    o.schedule = "constant"  # constant after warm-up
    o.ema_rates = (0.99,)  # short run: a fast EMA
    o.ema_warmup = True  # early steps: the EMA follows the weights, not their random start
    tr = config.train
    tr.num_steps = 500  # optimizer steps
    tr.log_every = 25  # steps between metric rows
    tr.checkpoint_every = 250  # steps between checkpoints
    tr.sample_every = 250  # steps between sample grids (first batch's masked images)
    tr.sample_steps = 25  # DDIM steps for the grid
    tr.sample_guidance_scale = 3.0  # classifier-free guidance for the grid
    tr.init_from = None  # e.g. "runs/shapes_base" (its export/) or an exported model dir
    return config_lib.validate(config)
