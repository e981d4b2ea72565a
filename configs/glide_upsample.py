"""GLIDE's released upsampler ("upsample.pt", filtered data): 64 -> 256 px.

glide-text2im's `model_and_diffusion_defaults_upsampler()` (GLIDE §4): the
base model's U-Net and text transformer at 256 px with 2 residual blocks per
level, channel multipliers (1, 1, 2, 2, 4, 4), the linear noise schedule, and
the 64 px image bilinearly upsampled and concatenated to x_t (6 input
channels). OpenAI's `upsample.pt` converts onto this config:

  python -m glide_jax.convert upsample.pt --kind upsample --output exported/upsample

Count the parameters (jax.eval_shape, nothing allocated):

  python -m glide_jax.tools.count_params configs/glide_upsample.py

Expected: `params: 398361286`.
"""

import ml_collections

from glide_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    m = config.model
    m.kind = "upsample"  # SuperResText2ImUNet: [x_t, bilinear(low_res)]
    m.image_size = 256  # output resolution; low_res is 64 px
    m.model_channels = 192  # base width ("num_channels")
    m.num_res_blocks = 2  # residual blocks per level
    m.channel_mult = (1, 1, 2, 2, 4, 4)  # glide-text2im's default for 256 px
    m.attention_resolutions = (32, 16, 8)  # pixel sizes with attention
    m.num_head_channels = 64  # heads = channels / 64
    m.dropout = 0.1  # as released
    t = config.text
    t.text_ctx = 128  # GPT-2 BPE tokens per caption
    t.xf_width = 512  # transformer width
    t.xf_layers = 16  # transformer blocks
    t.xf_heads = 8  # 64 channels per head
    config.diffusion.noise_schedule = "linear"  # the upsampler's schedule
    # Training (GLIDE §4). The paper gives no optimizer settings; these are
    # guided-diffusion's TrainLoop defaults, which have no warm-up and no
    # gradient clipping (add --config.optim.grad_clip_norm=1.0 for a safety net).
    config.optim.learning_rate = 1e-4  # AdamW, constant
    config.optim.warmup_steps = 0  # no warm-up
    config.optim.grad_clip_norm = None  # no clipping
    config.optim.ema_rates = (0.9999,)  # EMA of the weights used for sampling
    config.data.batch_size = 512  # GLIDE §4: upsampler batch size
    # GLIDE §4 gives 1.6M iterations for the 1.5B upsampler; it does not give
    # the released one's, so this preset keeps that number.
    config.train.num_steps = 1_600_000
    config.train.checkpoint_every = 10_000  # steps between checkpoints
    config.train.log_every = 100  # steps between metric rows
    config.train.sample_guidance_scale = 1.0  # upsamplers sample unguided
    return config_lib.validate(config)
