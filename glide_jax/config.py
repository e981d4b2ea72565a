"""Shared config defaults, validation, and glide-text2im options -> config.

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
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import math
import pathlib
from typing import Any, Mapping, Sequence

import ml_collections

MODEL_KINDS = ("base", "upsample", "inpaint", "upsample_inpaint", "clip")
UPSAMPLE_KINDS = ("upsample", "upsample_inpaint")  # conditioned on a low-resolution image
INPAINT_KINDS = ("inpaint", "upsample_inpaint")  # conditioned on a known image and its mask
NOISE_SCHEDULES = ("linear", "squaredcos_cap_v2")
TOKENIZERS = ("gpt2", "clip", "sentencepiece")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("auto", "xla", "cudnn")
GPT2_VOCAB_SIZE = 50257


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or out of range.

    Attributes:
      key: the dotted key at fault ("sample.seed"), where validation names one.
      detail: the message without its "config.KEY = " prefix (the value and why).
    """

    def __init__(self, message: str, *, key: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.key = key
        self.detail = message if detail is None else detail


def image_size(config: ml_collections.ConfigDict) -> int:
    """Side of the training images: clip.image_size for kind "clip", else model.image_size."""
    return int(config.clip.image_size if config.model.kind == "clip" else config.model.image_size)


def low_res_size(config: ml_collections.ConfigDict) -> int | None:
    """Side of an upsampler's `low_res` input (data.low_res_size, else a quarter of the
    output as in GLIDE's 64 -> 256); None for the kinds that take none."""
    if config.model.kind not in UPSAMPLE_KINDS:
        return None
    data = config.get("data")  # sampling keeps only the network sections
    return int((data and data.get("low_res_size")) or max(config.model.image_size // 4, 1))


def text_length(config: ml_collections.ConfigDict) -> int:
    """Token row length: text.text_ctx, or clip.max_text_len for kind "clip"."""
    return int(config.clip.max_text_len if config.model.kind == "clip" else config.text.text_ctx)


def model_defaults() -> ml_collections.ConfigDict:
    """The U-Net: glide-text2im's released base model (385M with the text)."""
    return ml_collections.ConfigDict(
        dict(
            kind="base",  # base | upsample | inpaint | upsample_inpaint | clip
            image_size=64,  # output resolution in pixels
            model_channels=192,  # base width of the U-Net ("num_channels")
            num_res_blocks=3,  # residual blocks per resolution level
            channel_mult=(1, 2, 3, 4),  # width multiplier per level
            attention_resolutions=(32, 16, 8),  # pixel sizes that get attention
            num_heads=1,  # heads when num_head_channels is None
            num_head_channels=64,  # channels per head; None -> use num_heads
            num_heads_upsample=optional_field(int),  # decoder heads; None -> same as num_heads
            dropout=0.1,  # dropout in the residual blocks (training only)
            use_scale_shift_norm=True,  # FiLM-style GroupNorm conditioning
            resblock_updown=True,  # resample inside residual blocks
            norm_groups=32,  # GroupNorm groups; every level's width must be a multiple
            dtype="float32",  # compute dtype; parameters stay float32
            remat=False,  # rematerialise residual blocks in the backward pass
            attention_impl="auto",  # auto | xla | cudnn (auto: cuDNN flash attention on CUDA in 16-bit)
        )
    )


def text_defaults() -> ml_collections.ConfigDict:
    """The text transformer and its tokenizer."""
    return ml_collections.ConfigDict(
        dict(
            text_ctx=128,  # caption length in tokens, after padding
            xf_width=512,  # transformer width
            xf_layers=16,  # transformer blocks
            xf_heads=8,  # attention heads
            xf_final_ln=True,  # LayerNorm after the last block
            xf_padding=True,  # learned padding embedding where mask is off
            n_vocab=GPT2_VOCAB_SIZE,  # token embedding rows
            tokenizer="gpt2",  # gpt2 | clip | sentencepiece
            tokenizer_path=optional_field(str),  # SentencePiece model file (sentencepiece only)
            sp_vocab_size=16384,  # ids in a trained SentencePiece model (set n_vocab to match)
            sp_model_type="unigram",  # SentencePiece algorithm: unigram | bpe | char | word
            sp_normalization="nmt_nfkc_cf",  # SentencePiece normaliser; "_cf" also lowercases
            sp_max_captions=optional_field(int),  # train on at most this many captions; None = all
        )
    )


def clip_defaults() -> ml_collections.ConfigDict:
    """The noised CLIP of glide-text2im (ViT-B image side, 64 px).

    Values are those of glide-text2im's released `glide_text2im/clip/config.yaml`
    (image 12 heads x 64, text 8 heads x 64, 12 blocks each, 65536 vocab rows).
    """
    return ml_collections.ConfigDict(
        dict(
            image_size=64,  # input resolution of the image encoder
            patch_size=4,  # ViT patch size
            n_embd=512,  # shared embedding width
            n_head_state_image=64,  # channels per head, image encoder
            n_head_image=12,  # heads, image encoder
            n_xf_blocks_image=12,  # blocks, image encoder
            n_head_state_text=64,  # channels per head, text encoder
            n_head_text=8,  # heads, text encoder
            n_xf_blocks_text=12,  # blocks, text encoder
            n_vocab=65536,  # token embedding rows (released yaml; BPE ids < 49408)
            max_text_len=77,  # text context including start and end tokens
            n_timesteps=1000,  # rows of the per-timestep token w_t
            logit_scale=100.0,  # exp(learned log scale) at initialisation
        )
    )


def diffusion_defaults() -> ml_collections.ConfigDict:
    """Gaussian diffusion as GLIDE trained it (improved-DDPM hybrid loss)."""
    return ml_collections.ConfigDict(
        dict(
            steps=1000,  # training diffusion steps
            noise_schedule="squaredcos_cap_v2",  # linear | squaredcos_cap_v2
            learn_sigma=True,  # model predicts eps and the variance value v
            timestep_respacing=optional_field(str),  # training respacing; None = every step
        )
    )


def data_defaults() -> ml_collections.ConfigDict:
    """The input pipeline (glide_jax.data): dataset source, augmentation, batching.

    Optional fields are typed placeholders (None until set) so that
    `--config.data.data_dir=...` overrides work from the command line.
    """
    placeholder = ml_collections.config_dict.placeholder
    return ml_collections.ConfigDict(
        dict(
            dataset="glide_shapes",  # glide_shapes | folder | tfds
            data_dir=placeholder(str),  # TFDS data dir; None -> ~/tensorflow_datasets
            batch_size=64,  # global batch size, split evenly over hosts
            shuffle_buffer=10_000,  # examples in the per-host shuffle buffer
            random_crop=False,  # random crop after resizing; False -> centre crop
            random_flip=False,  # horizontal flips (breaks "left"/"right" captions)
            caption_dropout=placeholder(float),  # share of empty captions; None -> 0.2 (0.0 for clip)
            low_res_size=placeholder(int),  # upsampler input size; None -> model.image_size // 4
            num_threads=placeholder(int),  # tf.data worker threads; None -> CPU count, at most 16
            prefetch=2,  # global batches kept ready on the devices
            # glide_shapes: procedural coloured shapes, deterministic from its seed.
            shapes_train_size=10_000,  # examples in the train split
            shapes_validation_size=1_000,  # examples in the validation split
            shapes_resolution=256,  # rendered image size in pixels
            shapes_seed=0,  # seed of the generated scenes
            shapes_max_objects=3,  # objects per scene: 1 to this many (at most 3)
            # folder: the user's own images with captions.
            folder_path=placeholder(str),  # directory of image + same-stem .txt, or a .jsonl/.csv
            folder_validation_fraction=0.0,  # share of the folder held out as validation
            folder_max_short_side=512,  # larger images are stored shrunk to this short side
            # tfds: any catalogue dataset with an image and a text feature.
            tfds_name=placeholder(str),  # e.g. "coco_captions" or "coco_captions/2017:1.1.0"
            image_key="image",  # image feature; nested keys joined by "/"
            text_key="captions/text",  # text feature; a list picks one at random
            # inpainting masks (inpaint and upsample_inpaint kinds).
            mask_rect_prob=0.5,  # chance of a rectangle mask, else free-form strokes
            mask_min_fraction=0.1,  # min side of a hidden rectangle, share of the image
            mask_max_fraction=0.6,  # max side of a hidden rectangle, share of the image
            mask_max_strokes=4,  # free-form masks draw 1..this many strokes
        )
    )


def optional_field(field_type: type, value: Any = None) -> ml_collections.FieldReference:
    """A typed field that may hold None and still takes --config.x=... overrides."""
    return ml_collections.FieldReference(value, field_type=field_type)


def optim_defaults() -> ml_collections.ConfigDict:
    """AdamW with warm-up, decay, clipping and EMA (glide_jax.train.optim)."""
    return ml_collections.ConfigDict(
        dict(
            learning_rate=1e-4,  # peak learning rate, reached after warm-up
            b1=0.9,  # Adam first-moment decay
            b2=0.999,  # Adam second-moment decay
            eps=1e-8,  # Adam denominator epsilon
            weight_decay=0.0,  # decoupled (AdamW) weight decay
            warmup_steps=0,  # linear warm-up from 0 to learning_rate
            schedule="constant",  # after warm-up: constant | cosine | linear
            end_learning_rate_factor=0.0,  # cosine/linear end, share of the peak
            grad_clip_norm=optional_field(float, 1.0),  # clip to this global norm; None = off
            ema_rates=(0.9999,),  # EMA decay rates; the first one is exported
            ema_warmup=False,  # decay min(rate, (1 + step) / (10 + step)): short runs' EMA keeps up
            grad_accum_steps=1,  # micro-batches per optimizer step
        )
    )


def train_defaults() -> ml_collections.ConfigDict:
    """The training loop (glide_jax.train.loop.train_and_evaluate)."""
    return ml_collections.ConfigDict(
        dict(
            num_steps=100_000,  # optimizer steps in the whole run
            seed=0,  # seed of parameter init and of every step's noise
            log_every=50,  # steps between metric rows (JSONL, TensorBoard)
            checkpoint_every=1000,  # steps between checkpoints; one at the end too
            keep_checkpoints=3,  # checkpoints kept; older ones are deleted
            async_checkpointing=True,  # write checkpoints in the background
            export_ema=True,  # write the first EMA rate to workdir/export at saves
            sample_every=optional_field(int, 5000),  # steps between sample grids; None = never
            sample_prompts=("a red circle", "a blue square"),  # grid prompts
            sample_steps=25,  # sampler steps for the grid
            sample_sampler="ddim",  # ddim | ddpm (for the grid)
            sample_guidance_scale=3.0,  # classifier-free guidance for the grid
            sample_seed=0,  # noise seed of the grid, fixed so grids compare
            # Held-out loss of the raw and first-EMA parameters on eval_batches
            # fixed batches of eval_split (same timesteps and noise each time,
            # so the curve compares); None = never.
            eval_every=optional_field(int),
            eval_batches=4,  # batches of data.batch_size per evaluation
            eval_split="validation",  # folder datasets: set data.folder_validation_fraction
            init_from=optional_field(str),  # exported model (or workdir) to fine-tune from
            distributed=False,  # call jax.distributed.initialize() (multi-host)
            # Multi-host set-up where no cluster (SLURM, Open MPI, Kubernetes, Cloud
            # TPU) tells jax.distributed: process 0's host:port, the process count
            # and this process's index. None = jax detects it (or reads
            # JAX_COORDINATOR_ADDRESS); setting any of them implies distributed.
            coordinator_address=optional_field(str),
            num_processes=optional_field(int),
            process_id=optional_field(int),
            progress_bar=True,  # tqdm bar with step/s, img/s and loss
            # False: a resume whose batch order cannot be replayed (another host
            # count, batch size, seed, shuffle buffer or dataset size) goes on
            # after the same number of examples in a new order, with a warning,
            # instead of refusing.
            strict_data_order=True,
        )
    )


def mesh_defaults() -> ml_collections.ConfigDict:
    """Device mesh and logical-axis rules (glide_jax.sharding)."""
    return ml_collections.ConfigDict(
        dict(
            data=optional_field(int),  # devices on the data axis; None = all not used below
            fsdp=1,  # devices that shard parameters and optimizer state
            tensor=1,  # devices that split attention heads and MLP width
            # logical axis -> mesh axes; names not listed stay replicated.
            rules=(
                ("batch", ("data", "fsdp")),
                ("embed", "fsdp"),
                ("conv_out", "fsdp"),
                ("mlp", "tensor"),
                ("heads", "tensor"),
                ("kv", None),
                ("vocab", "tensor"),
            ),
            fsdp_fallback=True,  # shard leftover params on their largest fsdp-divisible dim
        )
    )


# Where glide-text2im's inpaint notebook differs from the text2im one: guidance
# 5 (as in the paper's inpainting samples), and DDPM for the upsampler.
INPAINT_SAMPLE_DEFAULTS = {"guidance_scale": 5.0, "upsample_sampler": "ddpm"}


def sample_defaults() -> ml_collections.ConfigDict:
    """The sampler of glide-text2im's notebooks (glide_jax.sampling, sample.py).

    With an inpainting base model `INPAINT_SAMPLE_DEFAULTS` replace two of
    them (`Pipeline.settings`).
    """
    return ml_collections.ConfigDict(
        dict(
            steps="100",  # base respacing: "N", "a,b,c", "ddimN" or "fast27"
            sampler="ddpm",  # base sampler: ddpm | ddim (eta 0)
            guidance_scale=3.0,  # classifier-free guidance; 1.0 = conditional only
            clip_guidance_scale=3.0,  # CLIP gradient scale (with a CLIP model; no CFG then)
            upsample_steps="fast27",  # upsampler respacing
            upsample_sampler="ddim",  # upsampler sampler: ddpm | ddim (eta 0)
            upsample_temp=0.997,  # scale of the upsampler's initial noise
            batch_size=8,  # prompts per batch (padded to a multiple of the device count)
            seed=0,  # PRNG seed; same seed and settings -> same images
        )
    )


def base_config() -> ml_collections.ConfigDict:
    """Returns the shared defaults; experiment files override a few keys."""
    config = ml_collections.ConfigDict()
    config.model = model_defaults()
    config.text = text_defaults()
    config.clip = clip_defaults()
    config.diffusion = diffusion_defaults()
    config.sample = sample_defaults()
    config.data = data_defaults()
    config.optim = optim_defaults()
    config.train = train_defaults()
    config.mesh = mesh_defaults()
    return config


def _fail(key: str, value: Any, why: str) -> None:
    raise ConfigError(f"config.{key} = {value!r}: {why}", key=key, detail=f"{value!r}: {why}")


def _check_choice(config, key: str, choices) -> None:
    value = _get(config, key)
    if value not in choices:
        _fail(key, value, f"must be one of {', '.join(map(str, choices))}")


def _check_positive_int(config, key: str, allow_none: bool = False) -> None:
    value = _get(config, key)
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        _fail(key, value, "must be a positive integer")


def _check_int_tuple(config, key: str) -> None:
    value = _get(config, key)
    if not isinstance(value, (tuple, list)) or not value:
        _fail(key, value, "must be a non-empty tuple of integers")
    if not all(isinstance(v, int) and v > 0 for v in value):
        _fail(key, value, "must hold positive integers")


def _get(config, key: str):
    node = config
    for part in key.split("."):
        if part not in node:
            raise ConfigError(f"config.{key} is missing")
        node = node[part]
    return node


DATASETS = ("glide_shapes", "folder", "tfds")


def _check_fraction(config, key: str, allow_none: bool = False, upper_open: bool = False) -> None:
    value = _get(config, key)
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0.0 <= value <= 1.0 or (upper_open and value == 1.0):
        _fail(key, value, "must be a number in [0, 1" + (")" if upper_open else "]"))


def _validate_data(config) -> None:
    """Checks config.data (see data_defaults)."""
    _check_choice(config, "data.dataset", DATASETS)
    for key in ("data.batch_size", "data.shuffle_buffer", "data.prefetch", "data.shapes_train_size",
                "data.shapes_validation_size", "data.shapes_resolution", "data.mask_max_strokes",
                "data.folder_max_short_side"):
        _check_positive_int(config, key)
    for key in ("data.low_res_size", "data.num_threads"):
        _check_positive_int(config, key, allow_none=True)
    max_objects = _get(config, "data.shapes_max_objects")
    if not isinstance(max_objects, int) or isinstance(max_objects, bool) or not 1 <= max_objects <= 3:
        _fail("data.shapes_max_objects", max_objects, "must be 1, 2 or 3")
    seed = _get(config, "data.shapes_seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        _fail("data.shapes_seed", seed, "must be a non-negative integer")
    for key in ("data.random_crop", "data.random_flip"):
        if not isinstance(_get(config, key), bool):
            _fail(key, _get(config, key), "must be True or False")
    _check_fraction(config, "data.caption_dropout", allow_none=True)
    _check_fraction(config, "data.mask_rect_prob")
    _check_fraction(config, "data.folder_validation_fraction", upper_open=True)
    _check_fraction(config, "data.mask_min_fraction")
    _check_fraction(config, "data.mask_max_fraction")
    if config.data.mask_min_fraction > config.data.mask_max_fraction:
        _fail("data.mask_min_fraction", config.data.mask_min_fraction, "must not exceed data.mask_max_fraction")
    if config.data.dataset == "folder" and not config.data.folder_path:
        _fail("data.folder_path", config.data.folder_path, "is required with data.dataset='folder'")
    if config.data.dataset == "folder" and config.data.folder_max_short_side < image_size(config):
        _fail("data.folder_max_short_side", config.data.folder_max_short_side,
              f"is below the training image side {image_size(config)}: every image would be stored smaller "
              "and upscaled")
    if config.data.dataset == "tfds":
        for key in ("data.tfds_name", "data.image_key", "data.text_key"):
            if not isinstance(_get(config, key), str) or not _get(config, key):
                _fail(key, _get(config, key), "must be a non-empty string with data.dataset='tfds'")


LR_SCHEDULES = ("constant", "cosine", "linear")
SAMPLERS = ("ddpm", "ddim")
# The sections that describe a network (checkpoints and sampling read these;
# the rest is the training run's business).
NETWORK_SECTIONS = ("model", "text", "clip", "diffusion")
MESH_AXES = ("data", "fsdp", "tensor")


def _check_number(config, key: str, low: float, high: float, allow_none: bool = False) -> None:
    value = _get(config, key)
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        _fail(key, value, f"must be a number in [{low}, {high}]")


def _validate_optim(config) -> None:
    """Checks config.optim (see optim_defaults)."""
    _check_number(config, "optim.learning_rate", 0.0, float("inf"))
    for key in ("optim.b1", "optim.b2", "optim.end_learning_rate_factor"):
        _check_number(config, key, 0.0, 1.0)
    _check_number(config, "optim.eps", 0.0, 1.0)
    _check_number(config, "optim.weight_decay", 0.0, 10.0)
    _check_number(config, "optim.grad_clip_norm", 1e-12, float("inf"), allow_none=True)
    warmup = _get(config, "optim.warmup_steps")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        _fail("optim.warmup_steps", warmup, "must be a non-negative integer")
    _check_choice(config, "optim.schedule", LR_SCHEDULES)
    rates = _get(config, "optim.ema_rates")
    if not isinstance(rates, (tuple, list)) or not rates:
        _fail("optim.ema_rates", rates, "must be a non-empty tuple of rates in [0, 1)")
    if not all(isinstance(r, (int, float)) and 0.0 <= r < 1.0 for r in rates):
        _fail("optim.ema_rates", rates, "must hold rates in [0, 1)")
    if not isinstance(_get(config, "optim.ema_warmup"), bool):
        _fail("optim.ema_warmup", _get(config, "optim.ema_warmup"), "must be True or False")
    _check_positive_int(config, "optim.grad_accum_steps")


def _validate_distributed(config) -> None:
    """Checks the multi-host keys of config.train."""
    address = _get(config, "train.coordinator_address")
    if address is not None and (not isinstance(address, str) or not address.rpartition(":")[2].isdigit()):
        _fail("train.coordinator_address", address, "must be None or 'host:port'")
    _check_positive_int(config, "train.num_processes", allow_none=True)
    process_id = _get(config, "train.process_id")
    if process_id is None:
        return
    count = _get(config, "train.num_processes")
    if not isinstance(process_id, int) or isinstance(process_id, bool) or process_id < 0:
        _fail("train.process_id", process_id, "must be None or a non-negative integer")
    if count is not None and process_id >= count:
        _fail("train.process_id", process_id, f"must be below train.num_processes = {count}")


def _validate_train(config) -> None:
    """Checks config.train (see train_defaults)."""
    for key in ("train.num_steps", "train.log_every", "train.checkpoint_every",
                "train.keep_checkpoints", "train.sample_steps"):
        _check_positive_int(config, key)
    _check_positive_int(config, "train.sample_every", allow_none=True)
    _check_positive_int(config, "train.eval_every", allow_none=True)
    _check_positive_int(config, "train.eval_batches")
    split = _get(config, "train.eval_split")
    if not isinstance(split, str) or not split.strip():
        _fail("train.eval_split", split, "must be the name of a dataset split, such as 'validation'")
    seed = _get(config, "train.seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        _fail("train.seed", seed, "must be an integer in [0, 2**32): a PRNG key holds 32 bits")
    prompts = _get(config, "train.sample_prompts")
    if not isinstance(prompts, (tuple, list)) or not prompts or not all(isinstance(p, str) for p in prompts):
        _fail("train.sample_prompts", prompts, "must be a non-empty tuple of strings")
    _check_choice(config, "train.sample_sampler", SAMPLERS)
    _check_number(config, "train.sample_guidance_scale", 0.0, float("inf"))
    for key in ("train.async_checkpointing", "train.export_ema", "train.distributed", "train.progress_bar",
                "train.strict_data_order"):
        if not isinstance(_get(config, key), bool):
            _fail(key, _get(config, key), "must be True or False")
    _validate_distributed(config)
    init_from = _get(config, "train.init_from")
    if init_from is not None and (not isinstance(init_from, str) or not init_from):
        _fail("train.init_from", init_from, "must be None or a directory path")
    if config.data.batch_size % config.optim.grad_accum_steps:
        _fail("optim.grad_accum_steps", config.optim.grad_accum_steps, "must divide data.batch_size")


def _validate_mesh(config) -> None:
    """Checks config.mesh (see mesh_defaults)."""
    _check_positive_int(config, "mesh.data", allow_none=True)
    _check_positive_int(config, "mesh.fsdp")
    _check_positive_int(config, "mesh.tensor")
    rules = _get(config, "mesh.rules")
    if not isinstance(rules, (tuple, list)):
        _fail("mesh.rules", rules, "must be a tuple of (logical name, mesh axes) pairs")
    for rule in rules:
        if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
            _fail("mesh.rules", rule, "each rule must be a (logical name, mesh axes) pair")
        axes = rule[1] if isinstance(rule[1], (tuple, list)) else (rule[1],)
        if any(axis is not None and axis not in MESH_AXES for axis in axes):
            _fail("mesh.rules", rule, f"mesh axes must be among {', '.join(MESH_AXES)} or None")
    if not isinstance(_get(config, "mesh.fsdp_fallback"), bool):
        _fail("mesh.fsdp_fallback", config.mesh.fsdp_fallback, "must be True or False")


def validate_sample(config) -> None:
    """Checks config.sample (see sample_defaults)."""
    for key in ("sample.steps", "sample.upsample_steps"):
        value = _get(config, key)
        if not isinstance(value, str) or not value.strip():
            _fail(key, value, 'must be a respacing string such as "100", "ddim50" or "fast27"')
    for key in ("sample.sampler", "sample.upsample_sampler"):
        _check_choice(config, key, SAMPLERS)
    for key in ("sample.guidance_scale", "sample.clip_guidance_scale"):
        value = _get(config, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            _fail(key, value, "must be a finite non-negative number")
    temp = _get(config, "sample.upsample_temp")
    if not isinstance(temp, (int, float)) or isinstance(temp, bool) or not 0 < temp < math.inf:
        _fail("sample.upsample_temp", temp, "must be a finite positive number")
    _check_positive_int(config, "sample.batch_size")
    seed = _get(config, "sample.seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        _fail("sample.seed", seed, "must be an integer in [0, 2**32): a PRNG key holds 32 bits")


def check_keys(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a key or section `base_config()` does not have, or a section missing.

    For configs built in Python: `config.train.num_step = 2` (a typo) would
    otherwise add a new key and train with the default `num_steps`.
    """
    reference = base_config()
    missing = [name for name in reference if name not in config]
    if missing:
        raise ConfigError(f"config has no section {missing[0]!r} (start from glide_jax.config.base_config())")
    _check_known(config, reference, "")


def _did_you_mean(key: str, section: ml_collections.ConfigDict, prefix: str) -> str:
    """The hint " (did you mean PREFIXKEY?)" for a misspelt key: its closest in `section`, or ""."""
    close = difflib.get_close_matches(key, list(section.keys()), n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _check_known(node: ml_collections.ConfigDict, reference: ml_collections.ConfigDict, prefix: str) -> None:
    for key in node:
        path = f"{prefix}{key}"
        if key not in reference:
            raise ConfigError(f"config.{path} is not a setting glide-jax knows{_did_you_mean(key, reference, prefix)}")
        value, expected = node[key], reference[key]
        if isinstance(value, ml_collections.ConfigDict) and isinstance(expected, ml_collections.ConfigDict):
            _check_known(value, expected, f"{path}.")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks the sections this module defines; raises ConfigError naming the key.

    Returns the config unchanged so calls can be chained.
    """
    _check_choice(config, "model.kind", MODEL_KINDS)
    for key in ("model.image_size", "model.model_channels", "model.num_res_blocks"):
        _check_positive_int(config, key)
    _check_int_tuple(config, "model.channel_mult")
    halvings = len(config.model.channel_mult) - 1
    if config.model.kind != "clip" and config.model.image_size % 2**halvings:
        _fail("model.image_size", config.model.image_size,
              f"must be divisible by {2**halvings}: the U-Net halves it {halvings} times (model.channel_mult "
              f"has {halvings + 1} levels)")
    attn = _get(config, "model.attention_resolutions")
    if not isinstance(attn, (tuple, list)):
        _fail("model.attention_resolutions", attn, "must be a tuple of pixel sizes")
    _check_positive_int(config, "model.num_heads")
    _check_positive_int(config, "model.num_head_channels", allow_none=True)
    _check_positive_int(config, "model.num_heads_upsample", allow_none=True)
    dropout = _get(config, "model.dropout")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        _fail("model.dropout", dropout, "must be in [0, 1)")
    _check_choice(config, "model.dtype", DTYPES)
    _check_choice(config, "model.attention_impl", ATTENTION_IMPLS)
    _check_positive_int(config, "model.norm_groups")
    widths = [config.model.model_channels * mult for mult in config.model.channel_mult]
    if any(width % config.model.norm_groups for width in widths):
        _fail("model.norm_groups", config.model.norm_groups,
              f"must divide every level's width {widths} (model.model_channels x model.channel_mult)")
    head_ch = config.model.num_head_channels
    if head_ch is not None and config.model.model_channels % head_ch:
        _fail("model.num_head_channels", head_ch, "must divide model.model_channels")
    for key in ("text.text_ctx", "text.xf_layers", "text.xf_heads", "text.n_vocab"):
        _check_positive_int(config, key)
    _check_positive_int(config, "text.xf_width")
    if config.text.xf_width % config.text.xf_heads:
        _fail("text.xf_heads", config.text.xf_heads, "must divide text.xf_width")
    _check_choice(config, "text.tokenizer", TOKENIZERS)
    if config.text.tokenizer == "sentencepiece" and not config.text.tokenizer_path:
        _fail("text.tokenizer_path", None, "is required with text.tokenizer='sentencepiece'")
    _check_positive_int(config, "diffusion.steps")
    if config.diffusion.steps < 2:
        _fail("diffusion.steps", config.diffusion.steps, "must be at least 2 (GLIDE uses 1000)")
    _check_choice(config, "diffusion.noise_schedule", NOISE_SCHEDULES)
    if config.model.kind == "clip":
        validate_clip(config)
    # Sampling keeps only the network sections; the others are checked when present.
    for section, check in (("data", _validate_data), ("optim", _validate_optim), ("train", _validate_train),
                           ("mesh", _validate_mesh), ("sample", validate_sample)):
        if section in config:
            check(config)
    return config


def _parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in str(text).split(",") if part.strip())


def config_from_glide_options(options: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Turns a glide-text2im `create_model_and_diffusion` options dict into a config.

    Args:
      options: the keyword set of glide-text2im's `model_and_diffusion_defaults()`
        (or `model_and_diffusion_defaults_upsampler()`), optionally with
        `inpaint` and `super_res` flags. Comma strings and -1 sentinels are
        turned into tuples and None.

    Returns:
      A validated config with the `model`, `text` and `diffusion` sections set.
    """
    required = ("image_size", "num_channels", "num_res_blocks", "text_ctx", "xf_width", "xf_layers",
                "xf_heads", "xf_final_ln", "xf_padding")
    missing = [key for key in required if key not in options]
    if missing:
        raise ConfigError(f"glide-text2im options are missing key(s) {missing}")
    config = base_config()
    inpaint = bool(options.get("inpaint", False))
    super_res = bool(options.get("super_res", False))
    kind = {(False, False): "base", (False, True): "upsample", (True, False): "inpaint",
            (True, True): "upsample_inpaint"}[(inpaint, super_res)]
    image_size = int(options["image_size"])
    channel_mult = options.get("channel_mult", "")
    if not channel_mult:  # glide-text2im picks by image size when empty
        defaults = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
        if image_size not in defaults:
            raise ConfigError(f"options['channel_mult'] is empty and image_size {image_size} has no default")
        channel_mult = defaults[image_size]
    elif isinstance(channel_mult, str):
        channel_mult = _parse_ints(channel_mult)
    attention = options.get("attention_resolutions", "")
    attention = _parse_ints(attention) if isinstance(attention, str) else tuple(attention)
    m = config.model
    m.kind = kind
    m.image_size = image_size
    m.model_channels = int(options["num_channels"])
    m.num_res_blocks = int(options["num_res_blocks"])
    m.channel_mult = tuple(int(c) for c in channel_mult)
    m.attention_resolutions = attention
    m.num_heads = int(options.get("num_heads", 1))
    head_ch = int(options.get("num_head_channels", -1))
    m.num_head_channels = None if head_ch == -1 else head_ch
    heads_up = int(options.get("num_heads_upsample", -1))
    m.num_heads_upsample = None if heads_up == -1 else heads_up
    m.dropout = float(options.get("dropout", 0.0))
    m.use_scale_shift_norm = bool(options.get("use_scale_shift_norm", True))
    m.resblock_updown = bool(options.get("resblock_updown", True))
    t = config.text
    t.text_ctx = int(options["text_ctx"])
    t.xf_width = int(options["xf_width"])
    t.xf_layers = int(options["xf_layers"])
    t.xf_heads = int(options["xf_heads"])
    t.xf_final_ln = bool(options["xf_final_ln"])
    t.xf_padding = bool(options["xf_padding"])
    d = config.diffusion
    d.steps = int(options.get("diffusion_steps", 1000))
    d.noise_schedule = options.get("noise_schedule", "squaredcos_cap_v2")
    d.timestep_respacing = options.get("timestep_respacing") or None
    return validate(config)


_CLIP_INT_KEYS = ("image_size", "patch_size", "n_embd", "n_head_state_image", "n_head_image",
                  "n_xf_blocks_image", "n_head_state_text", "n_head_text", "n_xf_blocks_text",
                  "n_vocab", "max_text_len", "n_timesteps")


def validate_clip(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks the `clip` section; raises ConfigError naming the bad key.

    Returns the config unchanged so calls can be chained.
    """
    for key in _CLIP_INT_KEYS:
        _check_positive_int(config, f"clip.{key}")
    if config.clip.image_size % config.clip.patch_size:
        _fail("clip.patch_size", config.clip.patch_size, "must divide clip.image_size")
    scale = _get(config, "clip.logit_scale")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
        _fail("clip.logit_scale", scale, "must be a positive number")
    _check_choice(config, "model.dtype", DTYPES)
    return config


def clip_config_from_glide(clip_yaml: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Turns a glide-text2im CLIP config (its `clip/config.yaml`) into a config.

    Args:
      clip_yaml: the parsed yaml dict, with the keys of
        `glide_text2im/clip/config.yaml` (image_size, patch_size, n_vocab, ...,
        logit_scale, beta_schedule, n_timesteps).

    Returns:
      A config with model.kind = "clip", the `clip` section filled in,
      model.image_size = clip.image_size and the diffusion schedule of the yaml.
    """
    config = base_config()
    missing = [key for key in _CLIP_INT_KEYS + ("logit_scale",) if key not in clip_yaml]
    if missing:
        raise ConfigError(f"CLIP config is missing key(s) {missing}")
    for key in _CLIP_INT_KEYS:
        config.clip[key] = int(clip_yaml[key])
    config.clip.logit_scale = float(clip_yaml["logit_scale"])
    config.model.kind = "clip"
    config.model.image_size = config.clip.image_size
    config.diffusion.steps = config.clip.n_timesteps
    config.diffusion.noise_schedule = clip_yaml.get("beta_schedule", "squaredcos_cap_v2")
    validate_clip(config)
    return validate(config)


# --- config files and --config.KEY=VALUE overrides ---
def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Imports an experiment file and returns its `get_config()`.

    Accepts ml_collections `config_flags` syntax: `configs/x.py` or
    `configs/x.py:ARG`, which calls `get_config("ARG")`. The file is executed
    as a fresh module each call (nothing is cached or registered).

    Raises:
      ConfigError: the file does not exist or defines no `get_config`.
    """
    text = str(path)
    arg = None
    file = pathlib.Path(text)
    if not file.is_file() and ":" in text:
        head, arg = text.rsplit(":", 1)
        file = pathlib.Path(head)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    spec = importlib.util.spec_from_file_location(f"_glide_jax_config_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"config file {file} is not a Python file (.py) with a get_config()")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"config file {file} defines no get_config()")
    return get_config() if arg is None else get_config(arg)


OVERRIDE_PREFIX = "--config."
OVERRIDES_HELP = ("--config.KEY=VALUE overrides a key of the config file, parsed by the key's type "
                  "(--config.KEY=None clears an optional key; a bare --config.KEY sets a boolean)")


def _is_flag(arg: str) -> bool:
    """Whether a command-line word is an option rather than a value (-1 and -3e-4 are values)."""
    if not arg.startswith("-"):
        return False
    try:
        float(arg)
    except ValueError:
        return True
    return False


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the other arguments, the overrides), for the argparse tools, which take train.py's syntax.

    `--config.KEY=VALUE` and `--config.KEY VALUE` give "KEY=VALUE"; a bare
    `--config.KEY` (last, or before another option) gives "KEY", which
    `apply_overrides` takes as True for a boolean.
    """
    rest, overrides = [], []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith(OVERRIDE_PREFIX):
            rest.append(arg)
        elif "=" in arg or not args or _is_flag(args[0]):
            overrides.append(arg[len(OVERRIDE_PREFIX):])
        else:
            overrides.append(f"{arg[len(OVERRIDE_PREFIX):]}={args.pop(0)}")
    return rest, overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Sets each "KEY=VALUE" (dotted KEY) on `config`, parsed by the field's type, and returns it.

    Strings are taken as written; numbers and tuples ("1,2,4" or
    "(1, 2, 4)") are Python literals, and a tuple that is not one is split at
    commas into strings ("a cat,a dog"). A boolean takes True/False, 1/0 or
    yes/no in any case, and a bare "KEY" sets it True. "None" clears an
    optional field (validation says whether it may be None).

    Raises:
      ConfigError: naming the override whose key does not exist or whose
        value does not fit the field.
    """
    for override in overrides:
        key, sep, text = override.partition("=")
        *sections, field = key.split(".")
        node = config
        for depth, part in enumerate(sections):
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
            if not isinstance(node, ml_collections.ConfigDict):
                raise ConfigError(f"{OVERRIDE_PREFIX}{override}: config has no section "
                                  f"{'.'.join(sections[:depth + 1])!r}")
        if isinstance(node.get(field), ml_collections.ConfigDict):
            raise ConfigError(f"{OVERRIDE_PREFIX}{override}: config.{key} is a section; set one of its keys, "
                              f"e.g. {OVERRIDE_PREFIX}{key}.{next(iter(node[field]))}=...")
        if field not in node:
            hint = _did_you_mean(field, node, "".join(f"{part}." for part in sections))
            raise ConfigError(f"{OVERRIDE_PREFIX}{override}: config.{key} does not exist{hint}")
        if not sep:
            if node.get_type(field) is not bool:
                raise ConfigError(f"{OVERRIDE_PREFIX}{override}: no value (write {OVERRIDE_PREFIX}{key}=VALUE)")
            text = "True"
        try:
            node[field] = _parse_override(text, node.get_type(field))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{OVERRIDE_PREFIX}{override}: config.{key} is of type "
                              f"{node.get_type(field).__name__} ({exc})") from None
    return config


def load_cli_config(path: str | pathlib.Path, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """An experiment file's config with `--config.KEY=VALUE` overrides applied, validated."""
    return validate(apply_overrides(load_config_file(str(path)), overrides))


def _parse_override(text: str, kind: type) -> Any:
    if text == "None":
        return None
    if kind is str:
        return text
    if kind is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.strip().lower() not in words:
            raise ValueError(f"{text!r} is not one of True/False, 1/0, yes/no")
        return words[text.strip().lower()]
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if kind is tuple:
            return tuple(part.strip() for part in text.split(","))
        raise ValueError(f"{text!r} is not a Python literal") from None
    if kind is tuple and not isinstance(value, tuple):
        value = tuple(value) if isinstance(value, list) else (value,)
    return value
