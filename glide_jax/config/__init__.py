"""The config of every glide-jax run: shared defaults, validation, loading.

Every experiment file in `configs/` starts from `base_config()` and overrides a
few keys. Each section maps onto one constructor:

  model      -> the U-Net (or, with kind "clip", the noised CLIP; see `clip`)
  text       -> the text transformer and its tokenizer
  clip       -> the noised CLIP encoders (used when model.kind == "clip")
  diffusion  -> glide_jax.diffusion.create_gaussian_diffusion
  data, optim, train, sample, mesh -> input pipeline, optimizer, loop,
                sampler and device mesh.

`validate(config)` checks types and ranges and raises `ConfigError` naming the
offending key. Loading a config has no side effects.

Modules: `defaults` (the sections and the names of their choices), `checks`
(validation), `files` (experiment files and `--config.KEY=VALUE` overrides),
`glide_options` (glide-text2im's option dicts -> configs). Everything public
is imported here, so callers write `config_lib.validate(...)`.
"""

from glide_jax.config.checks import check_keys, validate, validate_clip, validate_sample
from glide_jax.config.defaults import (
    ATTENTION_IMPLS,
    DATASETS,
    DTYPES,
    GPT2_VOCAB_SIZE,
    INPAINT_KINDS,
    INPAINT_SAMPLE_DEFAULTS,
    LR_SCHEDULES,
    MESH_AXES,
    MODEL_KINDS,
    NETWORK_SECTIONS,
    NOISE_SCHEDULES,
    SAMPLERS,
    TOKENIZERS,
    UPSAMPLE_KINDS,
    ConfigError,
    base_config,
    clip_defaults,
    data_defaults,
    diffusion_defaults,
    image_size,
    low_res_size,
    mesh_defaults,
    model_defaults,
    optim_defaults,
    optional_field,
    sample_defaults,
    text_defaults,
    text_length,
    train_defaults,
)
from glide_jax.config.files import (OVERRIDE_PREFIX, OVERRIDES_HELP, apply_overrides, load_cli_config,
                                    load_config_file, split_overrides)
from glide_jax.config.glide_options import clip_config_from_glide, config_from_glide_options

__all__ = [
    "ATTENTION_IMPLS", "DATASETS", "DTYPES", "GPT2_VOCAB_SIZE", "INPAINT_KINDS", "INPAINT_SAMPLE_DEFAULTS",
    "LR_SCHEDULES", "MESH_AXES", "MODEL_KINDS", "NETWORK_SECTIONS", "NOISE_SCHEDULES", "OVERRIDE_PREFIX",
    "OVERRIDES_HELP", "SAMPLERS", "TOKENIZERS", "UPSAMPLE_KINDS", "ConfigError", "apply_overrides",
    "base_config", "check_keys", "clip_config_from_glide", "clip_defaults", "config_from_glide_options",
    "data_defaults", "diffusion_defaults", "image_size", "load_cli_config", "load_config_file", "low_res_size",
    "mesh_defaults", "model_defaults", "optim_defaults", "optional_field", "sample_defaults", "split_overrides",
    "text_defaults", "text_length", "train_defaults", "validate", "validate_clip", "validate_sample",
]
