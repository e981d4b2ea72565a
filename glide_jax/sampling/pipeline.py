"""GLIDE's sampling cascade: exported checkpoints -> prompts -> uint8 images.

    pipe = load_pipeline("ckpt/base", upsample="ckpt/upsample")
    images = pipe.generate(["a red circle", "a blue square"], {"seed": 1})
    # images: uint8 (2, 256, 256, 3)

Modes, chosen by the checkpoints given (as in glide-text2im's notebooks):

* text2im: base model with classifier-free guidance (`guidance_scale`);
* CLIP guidance: with a noised CLIP checkpoint the base model runs without
  classifier-free guidance and the CLIP gradient shifts each step's mean;
* inpainting: an `inpaint` base model (and an `upsample_inpaint` upsampler)
  with a source image and mask (`load_inpaint_inputs`); every x_0
  prediction gets the known pixels pasted in.

Upsamplers may be chained (64 -> 256 -> 1024, say): each upsamples the
output of the stage before it, with the same upsampler settings.

Speed: prompts are tokenized once; each batch is one call of a jitted
program per stage, which encodes the text once and then runs the whole
reverse loop (`lax.scan`) on device. A program is traced and compiled once
per (stage, respacing, sampler, batch shape) and reused by every later batch
(the last batch is padded to the same size). The batch axis is sharded over a
1-D mesh of all local devices; parameters are replicated. The guidance
scales and the temperature are traced values, so changing them does not
recompile.

Randomness: batch i uses `fold_in(PRNGKey(seed), i)`, split into the base and
upsampler keys, so a run is reproducible from its seed and batch layout.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from flax import traverse_util
from tqdm import tqdm

from glide_jax import checkpoints
from glide_jax import config as config_lib
from glide_jax.diffusion import diffusion_from_config
from glide_jax.models import factory
from glide_jax.sampling import batching, prompts as prompts_lib, stages
from glide_jax.sampling import images as images_lib
from glide_jax.sampling.errors import SamplingError

# role (the sample.py flag) -> model kinds it accepts
ROLE_KINDS = {"base": ("base", "inpaint"), "upsample": ("upsample", "upsample_inpaint"), "clip": ("clip",)}


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedModel:
    """One exported checkpoint, ready to sample with.

    Attributes:
      path: the checkpoint directory.
      role: "base", "upsample" or "clip" (names the flag in errors).
      stage: the position of an upsampler in a chain (0 for the first).
      config: its full config (config.json).
      module: the Flax module built from it.
      variables: {"params": tree}, replicated over the mesh.
      tokenizer: the tokenizer of its text encoder.
      low_res_size: for an upsampler, the side of the low-resolution images it
        was trained on (`config.low_res_size` of its training config).
    """

    path: pathlib.Path
    role: str
    config: ml_collections.ConfigDict
    module: Any
    variables: Any
    tokenizer: Any
    low_res_size: int | None = None
    stage: int = 0

    @property
    def kind(self) -> str:
        return self.config.model.kind

    @property
    def name(self) -> str:
        """The role, numbered from the second upsampler of a chain on ("upsample_2")."""
        return self.role if self.stage == 0 else f"{self.role}_{self.stage + 1}"

    @property
    def what(self) -> str:
        nth = f" (upsampler {self.stage + 1})" if self.stage else ""
        return f"--{self.role} checkpoint {self.path}{nth}"


def model_config(stored: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The network sections of a checkpoint's config over today's defaults, validated.

    Fields added to the defaults after the checkpoint was written keep their
    default; the training-only sections are dropped, so a checkpoint stays
    loadable when those sections change.
    """
    defaults = config_lib.base_config()
    config = ml_collections.ConfigDict({name: defaults[name] for name in config_lib.NETWORK_SECTIONS})
    for name in config_lib.NETWORK_SECTIONS:
        if name in stored:  # plain values: ml_collections cannot update one FieldReference from another
            section = stored[name]
            config[name].update(section.to_dict() if isinstance(section, ml_collections.ConfigDict) else section)
    return config_lib.validate(config)


def _read_checkpoint(path: pathlib.Path, role: str):
    flag = f"--{role}"
    if not path.exists():
        raise SamplingError(f"{flag} checkpoint {path} does not exist")
    hint = checkpoints.missing_export_hint(path)
    if hint:
        raise SamplingError(f"{flag} {hint}")
    if path.is_dir() and not (path / checkpoints.CONFIG_FILE).is_file():
        raise SamplingError(f"{flag} {path} holds no {checkpoints.CONFIG_FILE}: {flag} takes an exported model (a "
                            f"folder with {checkpoints.CONFIG_FILE} and {checkpoints.PARAMS_FILE}) or a training "
                            f"workdir (its {checkpoints.EXPORT_DIR}/ is used)")
    try:
        stored, params = checkpoints.load_model(path)
        config = model_config(stored)
    except (checkpoints.CheckpointError, config_lib.ConfigError, OSError, ValueError) as exc:
        raise SamplingError(f"cannot load {flag} checkpoint {path}: {exc}") from None
    kind = config.model.kind
    if kind not in ROLE_KINDS[role]:
        wanted = " or ".join(repr(k) for k in ROLE_KINDS[role])
        raise SamplingError(f"{flag} checkpoint {path} holds a model of kind {kind!r} (config.json model.kind); "
                            f"{flag} needs {wanted}")
    return config, params, config_lib.low_res_size(stored)


def _check_params(module, config, params, what: str) -> None:
    """Fails with the first differences if params do not fit the module of config."""
    expected = factory.abstract_params(config, module)
    flat_expected = {k: v.shape for k, v in traverse_util.flatten_dict(expected, sep="/").items()}
    flat_actual = {k: np.shape(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
    problems = [f"missing {k}" for k in flat_expected if k not in flat_actual]
    problems += [f"unexpected {k}" for k in flat_actual if k not in flat_expected]
    problems += [f"{k} has shape {flat_actual[k]}, expected {s}" for k, s in flat_expected.items()
                 if k in flat_actual and tuple(flat_actual[k]) != tuple(s)]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise SamplingError(f"{what}: params do not match its config.json: {'; '.join(problems[:3])}{more}")


def _tokenizer(config, what: str):
    from glide_jax import text  # the tokenizers load vocabulary files; import when needed

    try:
        return text.model_tokenizer(config)  # checks that its ids fit the embedding
    except (KeyError, ValueError, OSError) as exc:
        raise SamplingError(f"{what}: cannot build its tokenizer: {exc}") from None


def load_model(path: str | pathlib.Path, role: str, mesh=None, dtype: Any = None, stage: int = 0) -> LoadedModel:
    """Reads, checks and places one exported checkpoint (see `ROLE_KINDS`).

    `mesh` defaults to all local devices (`batching.make_mesh()`). `dtype`
    ("bfloat16", or a dtype such as `jnp.bfloat16`) overrides the compute
    dtype (config.model.dtype); params stay float32. `stage` numbers the
    upsamplers of a chain.
    """
    mesh = batching.make_mesh() if mesh is None else mesh
    path = checkpoints.resolve_export(path)
    config, params, low_res_size = _read_checkpoint(path, role)
    if dtype is not None:
        if not isinstance(dtype, str):
            try:
                dtype = np.dtype(dtype).name
            except TypeError:
                raise SamplingError(f"dtype {dtype!r}: must be one of {', '.join(config_lib.DTYPES)}") from None
        config.model.dtype = dtype
        try:
            config_lib.validate(config)
        except config_lib.ConfigError as exc:
            raise SamplingError(f"dtype={dtype!r}: {exc}") from None
    what = f"--{role} checkpoint {path}"
    if config.model.dtype == "float16" and jax.default_backend() == "cpu":
        raise SamplingError(f"{what} computes in float16, which XLA:CPU cannot run (its attention has no "
                            "float16 kernel); pass --dtype bfloat16 or float32 on a CPU")
    module = factory.create_model(config)
    _check_params(module, config, params, what)
    tokenizer = _tokenizer(config, what)
    variables = jax.device_put(stages.as_variables(params), batching.replicated(mesh))
    return LoadedModel(path, role, config, module, variables, tokenizer, low_res_size, stage)


def load_pipeline(base: str | pathlib.Path,
                  upsample: str | pathlib.Path | Sequence[str | pathlib.Path] | None = None,
                  clip: str | pathlib.Path | None = None, *,
                  devices: Sequence[jax.Device] | None = None, dtype: Any = None) -> "Pipeline":
    """Loads the cascade from exported checkpoints (glide_jax.checkpoints format).

    Args:
      base: the base ("base") or inpainting ("inpaint") model.
      upsample: optional upsampler ("upsample", or "upsample_inpaint" with an
        inpainting base), or a sequence of upsamplers, each trained on the
        previous stage's output size (inpainting takes one).
      clip: optional noised CLIP ("clip"): CLIP guidance instead of
        classifier-free guidance.
      devices: devices of the 1-D batch mesh; default all local devices.
      dtype: compute dtype of every model ("float32", "bfloat16", "float16",
        or the dtype itself); None keeps each checkpoint's config.model.dtype.

    Raises:
      SamplingError: a missing or unreadable checkpoint, a model of the wrong
        kind, params that do not fit their config, or mismatched models.
    """
    mesh = batching.make_mesh(devices)
    base_model = load_model(base, "base", mesh, dtype)
    if upsample is None:
        upsample = []
    elif isinstance(upsample, (str, os.PathLike)):
        upsample = [upsample]
    upsamplers = [load_model(path, "upsample", mesh, dtype, stage) for stage, path in enumerate(upsample)]
    clip_model = load_model(clip, "clip", mesh, dtype) if clip is not None else None
    return Pipeline(base_model, upsamplers, clip_model, mesh)


def _check_inpaint_array(name: str, array, shape: tuple[int, ...], low: float) -> None:
    """An inpainting input built by hand: float, of `shape`, within [low, 1]."""
    array = np.asarray(array)
    if array.shape != shape or not np.issubdtype(array.dtype, np.floating):
        raise SamplingError(f"{name} is {array.dtype} {array.shape}; expected float {shape} "
                            "(images_lib.load_inpaint_inputs makes them)")
    if array.size and not (low <= float(array.min()) and float(array.max()) <= 1.0):
        raise SamplingError(f"{name} holds values in [{float(array.min()):g}, {float(array.max()):g}]; expected "
                            f"[{low:g}, 1]" + (" (pixels / 127.5 - 1)" if low < 0 else " (1 = keep)"))


def _ticks_each_step(mesh) -> bool:
    return mesh.devices.flat[0].platform == "cpu"


class _StepBar:
    """A tqdm bar over the diffusion steps of every stage of every batch.

    With `per_step`, the stage programs call `step_done` from the device after
    each step; otherwise `stages_dispatched` waits for each stage in turn and
    adds its steps (all are dispatched first, so a later stage still compiles
    while an earlier one runs).
    """

    def __init__(self, batches: int, stage_steps: Sequence[int], *, enabled: bool, per_step: bool):
        self.batches, self.stage_steps, self.per_step = batches, list(stage_steps), per_step
        self._bar = tqdm(total=batches * sum(self.stage_steps), desc="sampling (the first batch compiles)",
                         unit="step", disable=not enabled)

    def start_batch(self, index: int) -> None:
        if self.batches > 1:
            self._bar.set_postfix_str(f"batch {index + 1}/{self.batches}")

    def step_done(self) -> None:
        self._advance(1)

    def stages_dispatched(self, outputs: Sequence[jax.Array]) -> None:
        if not self.per_step and not self._bar.disable:
            for samples, steps in zip(outputs, self.stage_steps):
                jax.block_until_ready(samples)
                self._advance(steps)

    def _advance(self, steps: int) -> None:
        if self._bar.n == 0:  # the device is stepping, so the compilation is done
            self._bar.set_description("sampling", refresh=False)
        self._bar.update(steps)

    def close(self) -> None:
        self._bar.close()


class Pipeline:
    """The loaded models, the mesh and the compiled per-stage programs.

    Attributes:
      base, clip: `LoadedModel`s (clip may be None).
      upsamplers: the chain of upsampler `LoadedModel`s (often one, or none).
      mesh: the 1-D "data" mesh the batch is sharded over.
      trace_counts: stage name -> how many times its program was traced
        (each trace is one compilation); a run of many batches traces each
        stage once.
    """

    def __init__(self, base: LoadedModel, upsamplers: LoadedModel | Sequence[LoadedModel] | None = None,
                 clip: LoadedModel | None = None, mesh=None):
        if isinstance(upsamplers, LoadedModel):
            upsamplers = [upsamplers]
        # Numbered by position: each stage compiles its own program (models loaded by hand all say stage 0).
        upsamplers = tuple(dataclasses.replace(model, stage=i) for i, model in enumerate(upsamplers or ()))
        self.base, self.upsamplers, self.clip = base, upsamplers, clip
        self.mesh = mesh if mesh is not None else batching.make_mesh()
        self.trace_counts: collections.Counter = collections.Counter()
        self._programs: dict = {}
        self._on_step: Callable[[], None] | None = None  # what a ticking program's steps call
        self._check_models()

    def _check_models(self) -> None:
        wanted = "upsample_inpaint" if self.base.kind == "inpaint" else "upsample"
        if self.base.kind == "inpaint" and len(self.upsamplers) > 1:
            raise SamplingError(f"an inpainting cascade takes one upsampler, not {len(self.upsamplers)}")
        previous = self.base
        for upsampler in self.upsamplers:
            if upsampler.kind != wanted:
                raise SamplingError(f"{upsampler.what} is of kind {upsampler.kind!r} but the base "
                                    f"model is {self.base.kind!r}; it needs a {wanted!r} upsampler")
            low, made = upsampler.low_res_size, previous.module.image_size
            if low is not None and low != made:
                source = "the base model" if previous is self.base else "the upsampler before it"
                raise SamplingError(f"{upsampler.what} was trained to upsample {low} px images "
                                    f"(data.low_res_size, or a quarter of its output where its config.json has "
                                    f"none) but {source} makes {made} px")
            previous = upsampler
        if self.clip is not None and self.clip.config.clip.image_size != self.base.module.image_size:
            raise SamplingError(f"{self.clip.what} sees {self.clip.config.clip.image_size} px images but the "
                                f"base model makes {self.base.module.image_size} px")
        if self.clip is not None:
            keys = ("noise_schedule", "steps")
            theirs = {k: self.clip.config.diffusion.get(k) for k in keys}
            ours = {k: self.base.config.diffusion.get(k) for k in keys}
            if theirs != ours:
                warnings.warn(f"{self.clip.what} was trained on diffusion {theirs} but the base model uses {ours}: "
                              "it judges x_t at noise levels it did not learn", stacklevel=3)

    @property
    def num_devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def image_size(self) -> int:
        """Side of the generated images (the last upsampler's, if any)."""
        return (self.upsamplers[-1] if self.upsamplers else self.base).module.image_size

    def mode(self, inpaint=None) -> str:
        """The mode: "inpaint", "clip" or "text2im" (classifier-free guidance)."""
        if inpaint is not None or self.base.kind == "inpaint":
            return "inpaint"
        return "clip" if self.clip is not None else "text2im"

    def load_inpaint_inputs(self, image_path, mask_path) -> images_lib.InpaintInputs:
        """The source image and mask (white = keep) at the base and upsampler sizes."""
        up_size = self.upsamplers[0].module.image_size if self.upsamplers else None
        return images_lib.load_inpaint_inputs(image_path, mask_path, self.base.module.image_size, up_size)

    # ----------------------------------------------------------------- programs

    def _diffusion(self, model: LoadedModel, respacing: str, key: str):
        try:
            return diffusion_from_config(model.config.diffusion, respacing)
        except ValueError as exc:  # named for API and sample.py users alike
            flag = "--" + key.replace("_", "-")
            raise SamplingError(f"sample setting {key!r} = {respacing!r} (sample.py {flag}): {exc}") from None

    def _program(self, model: LoadedModel, respacing: str, sampler: str, ticks: bool = False):
        """The jitted program of a stage; jit compiles it once per input shape.

        A `ticks` program calls `self._on_step` (from the device, through
        `jax.debug.callback`) after each step's model evaluation, for a
        progress bar over steps; the plain one has no host callbacks.
        """
        key = (model.name, respacing, sampler, ticks)
        if key not in self._programs:
            wrap = self._ticking if ticks else None
            if model is self.base:
                self._programs[key] = self._build_base(respacing, sampler, wrap)
            else:
                self._programs[key] = self._build_upsample(model, respacing, sampler, wrap)
        return self._programs[key]

    def _ticking(self, model_fn: Callable) -> Callable:
        def ticked(*args, **kwargs):
            out = model_fn(*args, **kwargs)
            jax.debug.callback(self._step_done)
            return out

        return ticked

    def _step_done(self) -> None:
        if self._on_step is not None:
            self._on_step()

    def _constrain(self):
        sharding = batching.batch_sharding(self.mesh)
        return lambda a: jax.lax.with_sharding_constraint(a, sharding)

    def _build_base(self, respacing: str, sampler: str, wrap_model_fn: Callable | None):
        diffusion = self._diffusion(self.base, respacing, "steps")
        model, clip, constrain = self.base, self.clip, self._constrain()

        def run(variables, clip_variables, inputs, key):
            self.trace_counts["base"] += 1
            cond_fn = None
            if clip is not None:
                from glide_jax.models.clip import clip_cond_fn

                cond_fn = clip_cond_fn(clip.module, clip_variables, inputs["clip_tokens"],
                                       inputs["clip_lens"], inputs["clip_scale"])
            inpaint = None
            if "inpaint_image" in inputs:
                inpaint = stages.InpaintArrays(inputs["inpaint_image"], inputs["inpaint_mask"])
            scale = inputs.get("guidance_scale")
            samples = stages.sample_base(model.module, variables, diffusion, sampler,
                                         tokens=inputs["tokens"], mask=inputs["mask"],
                                         guidance_scale=scale, cond_fn=cond_fn, inpaint=inpaint,
                                         key=key, constrain=constrain, wrap_model_fn=wrap_model_fn)
            rows = inputs["tokens"].shape[0] // (2 if scale is not None else 1)
            return samples[:rows]

        return jax.jit(run, out_shardings=batching.batch_sharding(self.mesh))

    def _build_upsample(self, model: LoadedModel, respacing: str, sampler: str, wrap_model_fn: Callable | None):
        diffusion = self._diffusion(model, respacing, "upsample_steps")
        constrain = self._constrain()

        def run(variables, inputs, base_samples, key):
            self.trace_counts[model.name] += 1
            inpaint = None
            if "inpaint_image" in inputs:
                inpaint = stages.InpaintArrays(inputs["inpaint_image"], inputs["inpaint_mask"])
            return stages.sample_upsample(model.module, variables, diffusion, sampler,
                                          base_samples=base_samples, tokens=inputs["tokens"],
                                          mask=inputs["mask"], temperature=inputs["temperature"],
                                          inpaint=inpaint, key=key, constrain=constrain,
                                          wrap_model_fn=wrap_model_fn)

        return jax.jit(run, out_shardings=batching.batch_sharding(self.mesh))

    # ------------------------------------------------------------------ inputs

    def _put(self, batch_arrays: Mapping[str, Any], replicated_arrays: Mapping[str, Any]) -> dict:
        rows = batching.batch_sharding(self.mesh)
        same = batching.replicated(self.mesh)
        placed = {k: jax.device_put(np.asarray(v), rows) for k, v in batch_arrays.items()}
        placed.update({k: jax.device_put(np.asarray(v, np.float32), same) for k, v in replicated_arrays.items()})
        return placed

    def _base_inputs(self, batch: batching.Batch, settings, inpaint) -> dict:
        config = self.base.config
        tokens, mask = prompts_lib.tokenize(self.base.tokenizer, batch.prompts, config.text.text_ctx,
                                            "the base model")
        shared = {}
        if self.clip is None:
            # Classifier-free guidance: [B captions; B empty captions].
            empty_tokens, empty_mask = prompts_lib.tokenize(
                self.base.tokenizer, [""] * len(batch.prompts), config.text.text_ctx, "the base model")
            tokens, mask = np.concatenate([tokens, empty_tokens]), np.concatenate([mask, empty_mask])
            shared["guidance_scale"] = settings.guidance_scale
        batch_arrays = {"tokens": tokens, "mask": mask}
        if self.clip is not None:
            clip_tokens, clip_lens = prompts_lib.tokenize_clip(
                self.clip.tokenizer, batch.prompts, self.clip.config.clip.max_text_len)
            batch_arrays.update(clip_tokens=clip_tokens, clip_lens=clip_lens)
            shared["clip_scale"] = settings.clip_guidance_scale
        if inpaint is not None:
            shared.update(inpaint_image=inpaint.image, inpaint_mask=inpaint.mask)
        return self._put(batch_arrays, shared)

    def _upsample_inputs(self, model: LoadedModel, batch: batching.Batch, settings, inpaint) -> dict:
        tokens, mask = prompts_lib.tokenize(model.tokenizer, batch.prompts, model.config.text.text_ctx,
                                            "the upsampler")
        shared = {"temperature": settings.upsample_temp}
        if inpaint is not None:
            shared.update(inpaint_image=inpaint.image_up, inpaint_mask=inpaint.mask_up)
        return self._put({"tokens": tokens, "mask": mask}, shared)

    # ---------------------------------------------------------------- generate

    def settings(self, sample_config=None) -> ml_collections.ConfigDict:
        """config.sample defaults overridden by `sample_config` (a mapping), validated.

        With an inpainting base model the defaults are those of
        glide-text2im's inpaint notebook (`config.INPAINT_SAMPLE_DEFAULTS`:
        guidance 5, a DDPM upsampler). Respacings may be given as integers
        (100 for "100") and integer settings as numpy integers.
        """
        config = ml_collections.ConfigDict({"sample": config_lib.sample_defaults()})
        if self.base.kind == "inpaint":
            config.sample.update(config_lib.INPAINT_SAMPLE_DEFAULTS)
        for key, value in dict(sample_config or {}).items():
            if key not in config.sample:
                raise SamplingError(f"unknown sample setting {key!r}; known: {', '.join(config.sample)}")
            if isinstance(value, np.generic):
                value = value.item()
            if key in ("steps", "upsample_steps") and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            try:
                config.sample[key] = value
            except TypeError:
                raise SamplingError(f"sample setting {key!r} = {value!r}: must be of type "
                                    f"{type(config.sample[key]).__name__}") from None
        config_lib.validate_sample(config)
        return config.sample

    def _check_inpaint(self, inpaint) -> None:
        if self.base.kind == "inpaint" and inpaint is None:
            raise SamplingError(f"{self.base.what} is an inpainting model: give a source image and mask "
                                "(--image and --mask)")
        if self.base.kind != "inpaint" and inpaint is not None:
            raise SamplingError(f"inpainting (--image/--mask) needs an 'inpaint' base model; "
                                f"{self.base.what} is {self.base.kind!r}")
        if inpaint is not None and self.upsamplers and inpaint.image_up is None:
            raise SamplingError("the inpainting inputs lack the upsampler's resolution; "
                                "load them with Pipeline.load_inpaint_inputs")
        if inpaint is not None:
            sizes = [("image", "mask", self.base.module.image_size)]
            if self.upsamplers:
                sizes.append(("image_up", "mask_up", self.upsamplers[0].module.image_size))
            for image_name, mask_name, size in sizes:
                _check_inpaint_array(f"inpaint.{image_name}", getattr(inpaint, image_name), (size, size, 3), -1.0)
                _check_inpaint_array(f"inpaint.{mask_name}", getattr(inpaint, mask_name), (size, size, 1), 0.0)

    def generate(self, prompts: Sequence[str], sample_config=None, *,
                 inpaint: images_lib.InpaintInputs | None = None, progress: bool = False) -> np.ndarray:
        """Samples one image per prompt.

        Args:
          prompts: N >= 1 strings (longer ones than a model's text context are
            truncated with a PromptTruncatedWarning).
          sample_config: overrides of `config.sample` (a mapping or ConfigDict:
            steps, sampler, guidance_scale, clip_guidance_scale,
            upsample_steps, upsample_sampler, upsample_temp, batch_size, seed).
          inpaint: source image and mask from `load_inpaint_inputs` (required
            exactly when the base model inpaints).
          progress: show a tqdm bar over the sampling steps of all stages
            and batches (on a CPU it moves each step; on an accelerator, once
            per finished stage).

        Returns:
          uint8 (N, S, S, 3) images, S = `image_size`. Image i depends on the
          seed and on the batch it falls in (batch_size), not on the devices.
        """
        return np.concatenate([images for _, images in self.iter_batches(prompts, sample_config, inpaint=inpaint,
                                                                         progress=progress)])

    def iter_batches(self, prompts: Sequence[str], sample_config=None, *,
                     inpaint: images_lib.InpaintInputs | None = None,
                     progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """`generate` batch by batch: yields (index of the batch's first prompt, its uint8 images).

        For writing each batch as soon as it is sampled (sample.py does, so an
        interrupted run keeps what it finished).
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not a single string")
        prompts = list(prompts)
        bad = [i for i, prompt in enumerate(prompts) if not isinstance(prompt, str)]
        if bad:
            raise TypeError(f"prompts must be strings; prompt {bad[0]} is {prompts[bad[0]]!r}")
        settings = self.settings(sample_config)
        self._check_inpaint(inpaint)
        plan = batching.plan_batches(prompts, settings.batch_size, self.num_devices)
        stage_steps = [self._diffusion(self.base, settings.steps, "steps").num_timesteps] + [
            self._diffusion(model, settings.upsample_steps, "upsample_steps").num_timesteps
            for model in self.upsamplers]
        # Per-step ticks where a stage can take minutes (CPU); on an accelerator a host
        # callback would split the compiled loop, so the bar moves once per finished stage.
        bar = _StepBar(len(plan), stage_steps, enabled=progress, per_step=progress and _ticks_each_step(self.mesh))
        base_run = self._program(self.base, settings.steps, settings.sampler, bar.per_step)
        up_runs = [self._program(model, settings.upsample_steps, settings.upsample_sampler, bar.per_step)
                   for model in self.upsamplers]
        root = jax.random.PRNGKey(settings.seed)
        clip_variables = self.clip.variables if self.clip is not None else None
        start = 0
        self._on_step = bar.step_done if bar.per_step else None
        try:
            for batch in plan:
                bar.start_batch(batch.index)
                images = self._sample_batch(batch, settings, inpaint, base_run, up_runs, root,
                                            clip_variables, bar.stages_dispatched)
                yield start, images
                start += batch.num_real
        finally:
            self._on_step = None
            bar.close()

    def _sample_batch(self, batch: batching.Batch, settings, inpaint, base_run, up_runs, root,
                      clip_variables, dispatched: Callable[[list], None]) -> np.ndarray:
        """One batch through the base stage and the upsamplers: its real rows as uint8 images.

        `dispatched` gets every stage's (future) samples, base first, once all are dispatched.
        """
        base_key, up_key = jax.random.split(jax.random.fold_in(root, batch.index))
        samples = base_run(self.base.variables, clip_variables,
                           self._base_inputs(batch, settings, inpaint), base_key)
        outputs = [samples]
        for model, up_run in zip(self.upsamplers, up_runs):
            key = up_key if model.stage == 0 else jax.random.fold_in(up_key, model.stage)
            samples = up_run(model.variables, self._upsample_inputs(model, batch, settings, inpaint),
                             samples, key)
            outputs.append(samples)
        dispatched(outputs)
        return images_lib.to_uint8(jax.device_get(samples))[: batch.num_real]
