"""GLIDE's full-size 64 -> 256 upsampler as described in the paper (never released).

GLIDE §4 (Nichol et al. 2021): "a 1.5 billion parameter text-conditional
upsampling diffusion model": the ADM upsampler with 384 base channels and a
text encoder of width 1024 (instead of 2048). The paper does not give the
upsampler's text depth; this preset keeps the released upsampler's 16 blocks,
which lands on 1.54B (24 blocks, as in the base model, would give 1.64B).
Heads keep the released 64 channels per head.

Count the parameters (jax.eval_shape, nothing allocated):

  python -m glide_jax.tools.count_params configs/paper_upsample.py

Expected: `params: 1540932998` (1.54B, within 3% of the paper's "1.5 billion").
"""

import ml_collections

from glide_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    m = config.model
    m.kind = "upsample"  # SuperResText2ImUNet: [x_t, bilinear(low_res)]
    m.image_size = 256  # output resolution; low_res is 64 px
    m.model_channels = 384  # GLIDE §4: base width 384
    m.num_res_blocks = 2  # ADM / released upsampler
    m.channel_mult = (1, 1, 2, 2, 4, 4)  # 256 px
    m.attention_resolutions = (32, 16, 8)  # as released
    m.num_head_channels = 64  # as released
    m.dropout = 0.1  # as released
    m.dtype = "bfloat16"  # compute dtype at this size; params stay float32
    m.remat = True  # rematerialise residual blocks to fit activations
    t = config.text
    t.text_ctx = 128  # GPT-2 BPE tokens per caption
    t.xf_width = 1024  # GLIDE §4: width 1024
    t.xf_layers = 16  # not in the paper: the released upsampler's depth
    t.xf_heads = 16  # 64 channels per head
    config.diffusion.noise_schedule = "linear"  # the upsampler's schedule
    # Training (GLIDE §4). The paper gives no optimizer settings; these are
    # guided-diffusion's TrainLoop defaults, which have no warm-up and no
    # gradient clipping (add --config.optim.grad_clip_norm=1.0 for a safety net).
    config.optim.learning_rate = 1e-4  # AdamW, constant
    config.optim.warmup_steps = 0  # no warm-up
    config.optim.grad_clip_norm = None  # no clipping
    config.optim.ema_rates = (0.9999,)  # EMA of the weights used for sampling
    config.data.batch_size = 512  # GLIDE §4: upsampler batch size
    config.train.num_steps = 1_600_000  # GLIDE §4: 1.6M iterations
    config.train.checkpoint_every = 10_000  # steps between checkpoints
    config.train.log_every = 100  # steps between metric rows
    config.train.sample_guidance_scale = 1.0  # upsamplers sample unguided
    config.mesh.fsdp = 8  # shard params, moments and EMA 8 ways
    return config_lib.validate(config)
