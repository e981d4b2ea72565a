"""A tiny text-to-image GLIDE on glide_shapes that trains on a laptop CPU.

The embedded default of train.py: a 32 px U-Net and a small text transformer
(4.3M parameters, 3.2M of them GPT-2 token embeddings; `python -m
glide_jax.tools.count_params configs/shapes_base.py`) on procedurally drawn
coloured shapes, with the GPT-2
BPE tokenizer that ships inside the package (no extra files to fetch or
train). The hybrid loss, 20% caption dropout (the data pipeline's default)
and classifier-free guidance are those of GLIDE; only the sizes shrink.

  python train.py --config configs/shapes_base.py --workdir runs/shapes_base

Expected (measured on the 2-core development machine): the first run builds
glide_shapes (about a minute); 1.2-2 s per step at batch 32, so the default
3000 steps take about 60-90 minutes. Scenes hold one shape
(`data.shapes_max_objects = 1`). The U-Net uses 8 GroupNorm groups, not
GLIDE's 32: with one channel per group the model cannot follow the mean of
x_t, and samples got backgrounds found nowhere in the data (docs/ARCHITECTURE.md,
"Norm groups"). Grids of one 3000-step run (DDPM 100 steps, guidance 3):
step 250 right background colours with faint blobs; 1000 blobs in roughly the
prompt's colour; 3000 (docs/images/shapes_base_3000.png) a red circle in the
center, a yellow triangle on the left, a green shape on the right, and a blue
blob in the center (the square still rounded). runs/shapes_base/export is
ready for sample.py after the first checkpoint.
"""

import ml_collections

from glide_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    m = config.model
    m.kind = "base"  # text-to-image U-Net
    m.image_size = 32  # output resolution in pixels
    m.model_channels = 32  # base width (a multiple of norm_groups)
    m.norm_groups = 8  # 4 channels per group: with GLIDE's 32, each channel's mean is lost (module doc)
    m.num_res_blocks = 1  # residual blocks per resolution level
    m.channel_mult = (1, 1, 2)  # 32 -> 16 -> 8 px levels (widths 32, 32, 64)
    m.attention_resolutions = (8,)  # attention (with text tokens) at 8 px
    m.num_head_channels = 32  # one head per 32 channels
    m.dropout = 0.0  # no dropout: the run is far too short to overfit
    m.dtype = "float32"  # CPU: bfloat16 brings no speed-up there
    t = config.text
    t.tokenizer = "gpt2"  # packaged BPE: nothing to download or train
    t.n_vocab = config_lib.GPT2_VOCAB_SIZE  # embedding rows for GPT-2 ids
    t.text_ctx = 24  # shapes captions fit in 24 tokens
    t.xf_width = 64  # text transformer width
    t.xf_layers = 2  # text transformer blocks
    t.xf_heads = 2  # text transformer heads
    d = config.diffusion
    d.steps = 1000  # training diffusion steps, as GLIDE
    d.noise_schedule = "squaredcos_cap_v2"  # GLIDE's cosine schedule
    data = config.data
    data.dataset = "glide_shapes"  # procedural shapes with captions
    data.batch_size = 32  # global batch
    data.shapes_resolution = 32  # render at the model size (no resize)
    data.shapes_max_objects = 1  # one shape per scene: learnable in minutes on a CPU
    data.shapes_train_size = 10_000  # scenes in the train split
    data.shuffle_buffer = 2_000  # examples in the shuffle buffer
    o = config.optim
    o.learning_rate = 1e-3  # a small model learns fast at a high rate
    o.warmup_steps = 100  # linear warm-up
    o.schedule = "cosine"  # decay to end_learning_rate_factor * lr
    o.end_learning_rate_factor = 0.1  # final lr = 1e-4
    o.ema_rates = (0.99,)  # short run: a fast EMA
    o.ema_warmup = True  # early steps: the EMA follows the weights, not their random start
    tr = config.train
    tr.num_steps = 3000  # 60-90 minutes on 2 CPU cores
    tr.log_every = 25  # steps between metric rows
    tr.checkpoint_every = 500  # steps between checkpoints
    tr.sample_every = 500  # steps between sample grids
    tr.sample_prompts = ("a large red circle in the center", "a large blue square in the center",
                         "a large yellow triangle on the left", "a large green hexagon on the right")  # grid rows
    tr.sample_steps = 100  # DDPM steps for the grid
    tr.sample_sampler = "ddpm"  # an undertrained model gives noise with 25 DDIM steps, blobs with DDPM
    tr.sample_guidance_scale = 3.0  # classifier-free guidance for the grid
    return config_lib.validate(config)
