"""Parity group `sampling`: whole reverse loops against glide-text2im's trajectories.

Each `sample_*.npz` fixture is replayed end to end through the functions the
pipeline runs (`glide_jax.sampling.stages`), with the models converted from
the fixture `<case>_state.npz` files by the user-facing converter and the
recorded initial noise and per-step noises. Settings (model case, respacing,
schedule, guidance and gradient scales, temperature) come from
`sampling_meta.json` and the arrays; shapes from the arrays. Fixture arrays
are NCHW; the models get NHWC.

Tolerances (tests/fixtures/FORMAT.md, "Reproducibility"): at the noisiest
ancestral step the x_0 prediction multiplies eps by ~2e4 before the clamp, so
a 1e-6 difference in the model output can move a DDPM step sample by ~1e-2;
DDPM trajectories are compared with max |diff| <= 2e-2. DDIM (eta 0) has no
such amplification and is held to 5e-4 (we see <= 7e-5). The timesteps
the model and cond_fn receive must be exact. For inpainting, the recorded
model outputs are also replayed through the sampler alone, which isolates
the sampler and `denoised_fn` from model rounding and allows 1e-4.
"""

from __future__ import annotations

import json
import pathlib
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax import config as config_lib
from glide_jax.convert import clip as clip_convert
from glide_jax.convert import core as convert_core
from glide_jax.convert import unet as unet_convert
from glide_jax.diffusion import create_gaussian_diffusion
from glide_jax.models import clip as clip_model
from glide_jax.models import factory
from glide_jax.sampling import stages
from glide_jax.tools.parity import Check, compare, failed, to_nchw, to_nhwc

DDPM_ATOL = 2e-2
DDIM_ATOL = 5e-4
REPLAY_ATOL = 1e-4
EXACT_ATOL = 1e-6


def _unet(fixture_dir: pathlib.Path, case: str):
    """(module, params) of a fixture U-Net case, through the converter."""
    options = json.loads((fixture_dir / f"{case}_options.json").read_text())
    config = config_lib.config_from_glide_options(options["model_and_diffusion_options"])
    config.text.n_vocab = int(options["tokenizer_n_vocab"])
    state = convert_core.load_state(fixture_dir / f"{case}_state.npz")
    return factory.create_model(config), unet_convert.convert_unet(state, config), config


def _clip(fixture_dir: pathlib.Path):
    options = json.loads((fixture_dir / "clip_options.json").read_text())
    config = config_lib.clip_config_from_glide(options["config"])
    image_state = convert_core.load_state(fixture_dir / "clip_image_enc_state.npz")
    text_state = convert_core.load_state(fixture_dir / "clip_text_enc_state.npz")
    return clip_model.create_clip(config), clip_convert.convert_clip(image_state, text_state, config)


def _diffusion(config, meta: dict):
    return create_gaussian_diffusion(int(config.diffusion.steps), meta["schedule"], meta["respacing"])


class _Recorder:
    """Wraps a model_fn / cond_fn and records the timesteps, inputs and outputs it sees."""

    def __init__(self):
        self.timesteps: list[np.ndarray] = []
        self.inputs: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []

    def _save(self, x, t, out):
        self.inputs.append(np.asarray(x))
        self.timesteps.append(np.asarray(t))
        self.outputs.append(np.asarray(out))

    def wait(self) -> "_Recorder":
        """Blocks until every callback has run (they run asynchronously)."""
        jax.effects_barrier()
        return self

    def wrap(self, fn: Callable) -> Callable:
        def recorded(x, t, **kwargs):
            out = fn(x, t, **kwargs)
            jax.debug.callback(self._save, x, t, out, ordered=True)
            return out
        return recorded


def _name(case: str, what: str) -> str:
    return f"sampling: {case} {what}"


def _timesteps_check(case: str, recorder: _Recorder, expected: np.ndarray, what="model_timesteps") -> Check:
    recorder.wait()
    got = np.stack(recorder.timesteps) if recorder.timesteps else np.zeros((0,))
    return compare(_name(case, what), got.astype(np.int64), expected, 0.0, "exact")


def _cfg_case(fixture_dir, case: str, meta: dict) -> Iterator[Check]:
    """sample_cfg_p (DDPM, with step samples) and sample_cfg_ddim."""
    data = np.load(fixture_dir / f"{case}.npz")
    module, params, config = _unet(fixture_dir, meta["model"])
    sampler = "ddim" if meta["respacing"].startswith("ddim") else "ddpm"
    recorder = _Recorder()
    step_noises = to_nhwc(data["step_noises"]) if "step_noises" in data.files else None
    final, history = stages.sample_base(
        module, params, _diffusion(config, meta), sampler,
        tokens=jnp.asarray(data["tokens"], jnp.int32), mask=jnp.asarray(data["mask"]),
        guidance_scale=float(data["guidance_scale"]), noise=to_nhwc(data["noise"]),
        step_noises=step_noises, wrap_model_fn=recorder.wrap, return_all_steps=True)
    atol = DDPM_ATOL if sampler == "ddpm" else DDIM_ATOL
    yield _timesteps_check(case, recorder, data["model_timesteps"])
    if "step_samples" in data.files:
        yield compare(_name(case, "step_samples"), to_nchw(history["sample"]), data["step_samples"],
                      atol, "abs")
    if "first_step_sample" in data.files:
        yield compare(_name(case, "first_step_sample"), to_nchw(history["sample"][0]),
                      data["first_step_sample"], atol, "abs")
    yield compare(_name(case, "final"), to_nchw(final), data["final"], atol, "abs")


def _clip_case(fixture_dir, case: str, meta: dict) -> Iterator[Check]:
    data = np.load(fixture_dir / f"{case}.npz")
    module, params, config = _unet(fixture_dir, meta["model"])
    clip_module, clip_vars = _clip(fixture_dir)
    cond_fn = clip_model.clip_cond_fn(clip_module, clip_vars, jnp.asarray(data["clip_tokens"], jnp.int32),
                                      jnp.asarray(data["clip_lens"], jnp.int32), float(data["grad_scale"]))
    recorder = _Recorder()
    final, history = stages.sample_base(
        module, params, _diffusion(config, meta), "ddpm",
        tokens=jnp.asarray(data["tokens"], jnp.int32), mask=jnp.asarray(data["mask"]),
        guidance_scale=None, cond_fn=recorder.wrap(cond_fn), noise=to_nhwc(data["noise"]),
        step_noises=to_nhwc(data["step_noises"]), return_all_steps=True)
    yield _timesteps_check(case, recorder, data["cond_timesteps"], "cond_timesteps")
    yield compare(_name(case, "first_step_sample"), to_nchw(history["sample"][0]),
                  data["first_step_sample"], DDPM_ATOL, "abs")
    yield compare(_name(case, "final"), to_nchw(final), data["final"], DDPM_ATOL, "abs")


def _inpaint_case(fixture_dir, case: str, meta: dict) -> Iterator[Check]:
    data = np.load(fixture_dir / f"{case}.npz")
    module, params, config = _unet(fixture_dir, meta["model"])
    diffusion = _diffusion(config, meta)
    inpaint = stages.InpaintArrays(to_nhwc(data["inpaint_image"]), to_nhwc(data["inpaint_mask"]))
    common = dict(tokens=jnp.asarray(data["tokens"], jnp.int32), mask=jnp.asarray(data["mask"]),
                  guidance_scale=float(data["guidance_scale"]), inpaint=inpaint,
                  noise=to_nhwc(data["noise"]), step_noises=to_nhwc(data["step_noises"]),
                  return_all_steps=True)
    recorder = _Recorder()
    final, history = stages.sample_base(module, params, diffusion, "ddpm",
                                        wrap_model_fn=recorder.wrap, **common)
    yield _timesteps_check(case, recorder, data["model_timesteps"])
    yield compare(_name(case, "step_model_outputs"), to_nchw(np.stack(recorder.wait().outputs)),
                  data["step_model_outputs"], DDPM_ATOL, "abs")
    yield compare(_name(case, "step_samples"), to_nchw(history["sample"]), data["step_samples"],
                  DDPM_ATOL, "abs")
    yield compare(_name(case, "final"), to_nchw(final), data["final"], DDPM_ATOL, "abs")
    # Replay: the sampler and denoised_fn alone, fed the reference's model outputs.
    outputs = to_nhwc(data["step_model_outputs"])
    steps = iter(range(outputs.shape[0]))

    def replay(unused_fn):
        def model_fn(x, t):
            return outputs[next(steps)]
        return model_fn

    common["return_all_steps"] = False
    replayed = _unrolled(lambda: stages.sample_base(module, params, diffusion, "ddpm",
                                                    wrap_model_fn=replay, **common))
    yield compare(_name(case, "final (replayed model outputs)"), to_nchw(replayed), data["final"],
                  REPLAY_ATOL, "abs")


def _unrolled(fn):
    """Runs fn with lax.scan unrolled in Python, so a model_fn may differ per step."""
    with jax.disable_jit():
        return fn()


def _upsample_case(fixture_dir, case: str, meta: dict) -> Iterator[Check]:
    data = np.load(fixture_dir / f"{case}.npz")
    module, params, config = _unet(fixture_dir, meta["model"])
    base_samples = to_nhwc(data["samples_lowres_raw"])
    yield compare(_name(case, "low_res"), to_nchw(stages.quantize_low_res(base_samples)),
                  data["low_res"], EXACT_ATOL, "abs")
    temperature = float(meta["upsample_temp"])
    sampler = "ddim" if "eta" in meta else "ddpm"
    recorder = _Recorder()
    final, history = stages.sample_upsample(
        module, params, _diffusion(config, meta), sampler, base_samples=base_samples,
        tokens=jnp.asarray(data["tokens"], jnp.int32), mask=jnp.asarray(data["mask"]),
        temperature=temperature, noise=to_nhwc(data["noise_raw"]), wrap_model_fn=recorder.wrap,
        return_all_steps=True)
    yield _timesteps_check(case, recorder, data["model_timesteps"])
    yield compare(_name(case, "x_T = noise_raw * temp"), to_nchw(recorder.wait().inputs[0]),
                  data["noise"], EXACT_ATOL, "abs")
    yield compare(_name(case, "first_step_sample"), to_nchw(history["sample"][0]),
                  data["first_step_sample"], DDIM_ATOL, "abs")
    yield compare(_name(case, "final"), to_nchw(final), data["final"], DDIM_ATOL, "abs")


_CASES = {
    "sample_cfg_p": _cfg_case,
    "sample_cfg_ddim": _cfg_case,
    "sample_clip_guided": _clip_case,
    "sample_inpaint": _inpaint_case,
    "sample_upsample_ddim": _upsample_case,
}


def checks(fixture_dir: pathlib.Path, cases: tuple[str, ...] | None = None) -> Iterator[Check]:
    """Yields the rows of the sampling fixtures (all of `_CASES` unless `cases` is given)."""
    fixture_dir = pathlib.Path(fixture_dir)
    meta = json.loads((fixture_dir / "sampling_meta.json").read_text())
    for case in cases or tuple(_CASES):
        run = _CASES[case]
        if case not in meta:
            yield failed(_name(case, "(missing)"), f"{case} not in sampling_meta.json")
            continue
        try:
            # float32 like the reference; accelerators would otherwise use bf16 passes.
            with jax.default_matmul_precision("float32"):
                rows = list(run(fixture_dir, case, meta[case]))
        except Exception as exc:  # one broken case must not hide the others
            rows = [failed(_name(case, "(crashed)"), f"{type(exc).__name__}: {exc}")]
        yield from rows
