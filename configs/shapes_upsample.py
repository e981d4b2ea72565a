"""A tiny GLIDE upsampler on glide_shapes: 32 px -> 64 px, the second stage of the
shapes cascade (shapes_base makes 32 px images; GLIDE's stage is x4, 64 -> 256).

The super-resolution U-Net sees the noised 64 px image and the 32 px image,
upsampled and concatenated as three extra input channels (the data pipeline
makes the low-resolution copy by area downsampling), plus the caption. It
uses the linear noise schedule, as GLIDE's upsampler does.

  python train.py --config configs/shapes_upsample.py --workdir runs/shapes_upsample

Expected: glide_shapes is built at 64 px on first use, the loss falls below
about 0.1 within a few hundred steps (the low-resolution input gives most of
the picture away), and samples/ shows sharp-edged shapes matching the blurry
inputs. About 20 minutes on a 2-core CPU for the default 1000 steps. Then
the two shapes presets sample as a cascade:

  python sample.py --base runs/shapes_base --upsample runs/shapes_upsample \
      --prompt "a large red circle in the center" --out out/
"""

import ml_collections

from glide_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    m = config.model
    m.kind = "upsample"  # Text2ImUNet with the low-res image as extra input channels
    m.image_size = 64  # output resolution in pixels
    m.model_channels = 32  # base width (a multiple of norm_groups)
    m.norm_groups = 8  # 4 channels per group; 32 groups of 32 channels drop each channel's mean (shapes_base)
    m.num_res_blocks = 1  # residual blocks per resolution level
    m.channel_mult = (1, 1, 2, 2)  # 64 -> 32 -> 16 -> 8 px levels
    m.attention_resolutions = (8,)  # attention (with text tokens) at 8 px only
    m.num_head_channels = 32  # one head per 32 channels
    m.dropout = 0.0  # short run: no dropout
    m.dtype = "float32"  # CPU: bfloat16 brings no speed-up there
    t = config.text
    t.tokenizer = "gpt2"  # packaged BPE: nothing to download or train
    t.n_vocab = config_lib.GPT2_VOCAB_SIZE  # embedding rows for GPT-2 ids
    t.text_ctx = 24  # shapes captions fit in 24 tokens
    t.xf_width = 64  # text transformer width
    t.xf_layers = 1  # text transformer blocks
    t.xf_heads = 2  # text transformer heads
    d = config.diffusion
    d.steps = 1000  # training diffusion steps
    d.noise_schedule = "linear"  # GLIDE's upsampler schedule
    data = config.data
    data.dataset = "glide_shapes"  # procedural shapes with captions
    data.shapes_max_objects = 1  # one shape per scene, as shapes_base makes (and its captions fit the context)
    data.batch_size = 16  # global batch
    data.shapes_resolution = 64  # render at the output size
    data.shapes_train_size = 10_000  # scenes in the train split
    data.shuffle_buffer = 2_000  # examples in the shuffle buffer
    data.low_res_size = 32  # the upsampler's input size: shapes_base's output (x2)
    o = config.optim
    o.learning_rate = 1e-3  # a small model learns fast at a high rate
    o.warmup_steps = 100  # linear warm-up
    o.schedule = "cosine"  # decay to end_learning_rate_factor * lr
    o.end_learning_rate_factor = 0.1  # final lr = 1e-4
    o.ema_rates = (0.99,)  # short run: a fast EMA
    o.ema_warmup = True  # early steps: the EMA follows the weights, not their random start
    tr = config.train
    tr.num_steps = 1000  # optimizer steps
    tr.log_every = 25  # steps between metric rows
    tr.checkpoint_every = 500  # steps between checkpoints
    tr.sample_every = 500  # steps between sample grids (first batch's low-res inputs)
    tr.sample_steps = 25  # DDIM steps for the grid
    tr.sample_guidance_scale = 1.0  # upsamplers sample unguided, as in GLIDE's notebook
    return config_lib.validate(config)
