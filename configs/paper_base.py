"""GLIDE's full-size base model as described in the paper (never released).

GLIDE §4 (Nichol et al. 2021): "a 3.5 billion parameter text-conditional
diffusion model at 64 x 64 resolution": the ADM 64 px architecture widened to
512 base channels, conditioned through a text transformer of 24 residual
blocks of width 2048 (about 1.2B of the parameters). The paper gives no head
counts; this preset keeps the released models' 64 channels per head in both
the U-Net and the transformer (heads do not change the parameter count).

Count the parameters (jax.eval_shape, nothing allocated):

  python -m glide_jax.tools.count_params configs/paper_base.py

Expected: `params: 3554414086` (3.55B; the paper's "3.5 billion").
"""

import ml_collections

from glide_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    m = config.model
    m.kind = "base"  # Text2ImUNet at 64 px
    m.image_size = 64  # output resolution
    m.model_channels = 512  # GLIDE §4: base width 512
    m.num_res_blocks = 3  # ADM 64 px
    m.channel_mult = (1, 2, 3, 4)  # ADM 64 px
    m.attention_resolutions = (32, 16, 8)  # ADM 64 px
    m.num_head_channels = 64  # as in the released models
    m.dropout = 0.1  # as in the released models
    m.dtype = "bfloat16"  # compute dtype at this size; params stay float32
    m.remat = True  # rematerialise residual blocks to fit activations
    t = config.text
    t.text_ctx = 128  # GPT-2 BPE tokens per caption
    t.xf_width = 2048  # GLIDE §4: transformer width 2048
    t.xf_layers = 24  # GLIDE §4: 24 residual blocks
    t.xf_heads = 32  # 64 channels per head
    config.diffusion.noise_schedule = "squaredcos_cap_v2"  # cosine schedule, 1000 steps
    # Training (GLIDE §4). The paper gives no optimizer settings; these are
    # guided-diffusion's TrainLoop defaults, which have no warm-up and no
    # gradient clipping (add --config.optim.grad_clip_norm=1.0 for a safety net).
    config.optim.learning_rate = 1e-4  # AdamW, constant
    config.optim.warmup_steps = 0  # no warm-up
    config.optim.grad_clip_norm = None  # no clipping
    config.optim.ema_rates = (0.9999,)  # EMA of the weights used for sampling
    config.data.batch_size = 2048  # GLIDE §4: base model batch size
    config.train.num_steps = 2_500_000  # GLIDE §4: 2.5M iterations
    config.train.checkpoint_every = 10_000  # steps between checkpoints
    config.train.log_every = 100  # steps between metric rows
    config.mesh.fsdp = 8  # 3.5B params: shard params, moments and EMA 8 ways
    return config_lib.validate(config)
