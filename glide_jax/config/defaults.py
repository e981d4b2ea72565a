"""The shared defaults: one function per config section, and `base_config()`.

Every experiment file in `configs/` starts from `base_config()` and overrides
a few keys. Every field has a one-line comment; optional fields are typed
placeholders, so `--config.KEY=VALUE` overrides work on them too.
"""

from __future__ import annotations

from typing import Any

import ml_collections

MODEL_KINDS = ("base", "upsample", "inpaint", "upsample_inpaint", "clip")
UPSAMPLE_KINDS = ("upsample", "upsample_inpaint")  # conditioned on a low-resolution image
INPAINT_KINDS = ("inpaint", "upsample_inpaint")  # conditioned on a known image and its mask
NOISE_SCHEDULES = ("linear", "squaredcos_cap_v2")
TOKENIZERS = ("gpt2", "clip", "sentencepiece")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("auto", "xla", "cudnn")
GPT2_VOCAB_SIZE = 50257
DATASETS = ("glide_shapes", "folder", "tfds")
LR_SCHEDULES = ("constant", "cosine", "linear")
SAMPLERS = ("ddpm", "ddim")
# The sections that describe a network (checkpoints and sampling read these;
# the rest is the training run's business).
NETWORK_SECTIONS = ("model", "text", "clip", "diffusion")
MESH_AXES = ("data", "fsdp", "tensor")


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
