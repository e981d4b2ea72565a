"""A tiny noised CLIP on glide_shapes (GLIDE §2.3), for CLIP-guided sampling.

The image encoder sees images noised with q_sample at a uniform random step,
plus the step itself, and learns with CLIP's contrastive loss against the
captions (tokenised with CLIP's BPE, which ships in the package); the
temperature exp(logit_scale) is learned. Such a CLIP's gradient can then guide
the base model towards a caption at every noise level.

  python train.py --config configs/shapes_clip.py --workdir runs/shapes_clip

Expected: the loss falls from log(64) = 4.16 (chance over a batch of 64)
towards 2 and the image->text accuracy in metrics.jsonl climbs well above
chance (1/64) within a few hundred steps. About 5 minutes on a 2-core CPU for the default 1000 steps.
"""

import ml_collections

from glide_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    config.model.kind = "clip"  # glide_jax.models.clip.NoisedCLIP
    config.model.image_size = 32  # resolution of the images it sees
    config.model.dtype = "float32"  # CPU: bfloat16 brings no speed-up there
    config.text.tokenizer = "clip"  # CLIP's BPE, shipped with the package
    c = config.clip
    c.image_size = 32  # ViT input resolution (= model.image_size)
    c.patch_size = 4  # 8 x 8 patches
    c.n_embd = 64  # joint embedding width
    c.n_head_state_image = 32  # channels per head, image encoder
    c.n_head_image = 2  # heads, image encoder (width 64)
    c.n_xf_blocks_image = 2  # blocks, image encoder
    c.n_head_state_text = 32  # channels per head, text encoder
    c.n_head_text = 2  # heads, text encoder (width 64)
    c.n_xf_blocks_text = 2  # blocks, text encoder
    c.n_vocab = 49408  # CLIP BPE vocabulary
    c.max_text_len = 32  # caption tokens including start and end
    c.n_timesteps = 1000  # one start token per diffusion step
    c.logit_scale = 10.0  # initial temperature; learned from here
    d = config.diffusion
    d.steps = 1000  # diffusion steps of the noise it must see through
    d.noise_schedule = "squaredcos_cap_v2"  # the base model's schedule
    data = config.data
    data.dataset = "glide_shapes"  # procedural shapes with captions
    data.shapes_max_objects = 1  # one shape per scene, as shapes_base makes (and its captions fit the context)
    data.batch_size = 64  # global batch: the contrastive negatives
    data.shapes_resolution = 32  # render at the model size
    data.shapes_train_size = 10_000  # scenes in the train split
    data.shuffle_buffer = 2_000  # examples in the shuffle buffer
    o = config.optim
    o.learning_rate = 5e-4  # peak learning rate
    o.warmup_steps = 100  # linear warm-up
    o.schedule = "cosine"  # decay to end_learning_rate_factor * lr
    o.end_learning_rate_factor = 0.1  # final lr
    o.weight_decay = 0.05  # CLIP-style decoupled weight decay
    o.ema_rates = (0.99,)  # short run: a fast EMA
    o.ema_warmup = True  # early steps: the EMA follows the weights, not their random start
    tr = config.train
    tr.num_steps = 1000  # optimizer steps
    tr.log_every = 25  # steps between metric rows
    tr.checkpoint_every = 500  # steps between checkpoints
    tr.sample_every = None  # a CLIP has no samples of its own
    return config_lib.validate_clip(config_lib.validate(config))
