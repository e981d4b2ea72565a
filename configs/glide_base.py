"""GLIDE's released base model ("base.pt", filtered data): 64 px text-to-image.

The smaller model OpenAI released with glide-text2im (GLIDE §4 and the model
card): an ADM U-Net with 192 base channels, 3 residual blocks per level,
channel multipliers (1, 2, 3, 4), attention at 32, 16 and 8 px with 64
channels per head, and a 16-block, 512-wide text transformer over 128 GPT-2
BPE tokens. These are glide-text2im's `model_and_diffusion_defaults()`, so
OpenAI's `base.pt` converts onto this config:

  python -m glide_jax.convert base.pt --kind base --output exported/base

Count the parameters (jax.eval_shape, nothing allocated):

  python -m glide_jax.tools.count_params configs/glide_base.py

Expected: `params: 385030726` (text transformer and embeddings 76.3M, U-Net 308.7M).
"""

import ml_collections

from glide_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    m = config.model
    m.kind = "base"  # Text2ImUNet: x_t only
    m.image_size = 64  # output resolution
    m.model_channels = 192  # base width ("num_channels")
    m.num_res_blocks = 3  # residual blocks per level
    m.channel_mult = (1, 2, 3, 4)  # glide-text2im's default for 64 px
    m.attention_resolutions = (32, 16, 8)  # pixel sizes with attention
    m.num_head_channels = 64  # heads = channels / 64
    m.dropout = 0.1  # as released
    t = config.text
    t.text_ctx = 128  # GPT-2 BPE tokens per caption
    t.xf_width = 512  # transformer width
    t.xf_layers = 16  # transformer blocks
    t.xf_heads = 8  # 64 channels per head
    config.diffusion.noise_schedule = "squaredcos_cap_v2"  # cosine schedule, 1000 steps
    # Training (GLIDE §4). The paper gives no optimizer settings; these are
    # guided-diffusion's TrainLoop defaults, which have no warm-up and no
    # gradient clipping (add --config.optim.grad_clip_norm=1.0 for a safety net).
    config.optim.learning_rate = 1e-4  # AdamW, constant
    config.optim.warmup_steps = 0  # no warm-up
    config.optim.grad_clip_norm = None  # no clipping
    config.optim.ema_rates = (0.9999,)  # EMA of the weights used for sampling
    config.data.batch_size = 2048  # GLIDE §4: base model batch size
    # GLIDE App. B: the released (filtered) model pretrained for 1.1M iterations
    # (the 3.5B model of configs/paper_base.py for 2.5M).
    config.train.num_steps = 1_100_000
    config.train.checkpoint_every = 10_000  # steps between checkpoints
    config.train.log_every = 100  # steps between metric rows
    return config_lib.validate(config)
