"""GLIDE's noised CLIP at the released size (CLIP guidance, Nichol et al. 2021, Sec. 2.3).

A ViT image encoder f(x_t, t) that sees the diffusion step (64 px, patch 4,
12 blocks of 12 heads x 64) and a causal text encoder g(c) (12 blocks of
8 heads x 64, 77 tokens, 65536 embedding rows), both projecting to 512
features. These are the values of glide-text2im's `clip/config.yaml`, so
OpenAI's `clip_image_enc.pt` and `clip_text_enc.pt` convert onto this config.

Count the parameters:

  python -m glide_jax.tools.count_params configs/glide_clip.py

Expected: 158,123,265 parameters = image encoder 86,443,776 + text encoder
71,679,488 + the scalar logit scale.
"""

import ml_collections

from glide_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    config.model.kind = "clip"  # build glide_jax.models.clip.NoisedCLIP
    config.model.image_size = 64  # resolution of the base model CLIP guides
    config.model.dtype = "float32"  # compute dtype; "bfloat16" for speed
    # config.clip keeps the released values of glide_jax.config.clip_defaults().
    # Training. GLIDE App. B: 390K iterations at batch 32K. The paper gives no
    # optimizer settings: AdamW at the base model's rate, with a warm-up of our
    # choosing (large contrastive batches, as OpenAI's CLIP).
    config.optim.learning_rate = 1e-4  # AdamW peak learning rate
    config.optim.warmup_steps = 1000  # linear warm-up
    config.optim.ema_rates = (0.9999,)  # EMA of the weights
    # The contrastive batch: one logits matrix over the whole global batch.
    # optim.grad_accum_steps > 1 would fit it in less memory but contrast each
    # micro-batch only with itself, so scale devices before accumulating.
    config.data.batch_size = 32_768
    config.train.num_steps = 390_000
    config.train.sample_every = None  # a CLIP has no samples of its own
    return config_lib.validate(config_lib.validate_clip(config))
