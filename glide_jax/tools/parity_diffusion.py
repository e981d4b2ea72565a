"""Parity group `diffusion`: schedules, single ops, training losses, a replayed sampler.

Compares glide_jax.diffusion with the glide-text2im / guided-diffusion
fixtures described in tests/fixtures/FORMAT.md:

* `diffusion_schedules.npz`: every schedule table, for every schedule and
  respacing listed in `diffusion_meta.json` (rel 1e-12; indices exact);
* `diffusion_ops.npz`: p_mean_variance, q_sample, q_posterior,
  condition_mean/score, p_sample and ddim_sample (rel 1e-5; outputs that
  are sums of O(1) terms relative to each batch row's scale, see
  `compare_per_row`);
* `training_losses.npz`: guided-diffusion's training_losses with the options
  of `training_losses_meta.json` (rel 1e-5);
* `sample_inpaint.npz`: the whole jitted p_sample_loop, replaying the
  recorded per-step model outputs and noises (abs 1e-4).

Fixture arrays are NCHW; they are moved to NHWC for glide_jax and results
back to NCHW for comparison. Every shape and option comes from the files.
"""

from __future__ import annotations

import json
import pathlib
from typing import Callable, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.diffusion import gaussian, samplers, schedules
from glide_jax.tools.parity import Check, compare, failed, to_nchw, to_nhwc

SCHEDULE_TOL = 1e-12
OPS_TOL = 1e-5
REPLAY_ATOL = 1e-4
_DEFAULT_TABLES = ("betas",) + gaussian._TABLES


def checks(fixture_dir) -> Iterator[Check]:
    """Yields one row per compared quantity (see the module docstring)."""
    fixture_dir = pathlib.Path(fixture_dir)
    yield from _schedule_checks(fixture_dir)
    yield from _ops_checks(fixture_dir)
    yield from _training_loss_checks(fixture_dir)
    yield from _inpaint_replay_checks(fixture_dir)


# ----------------------------------------------------------------- helpers


def _load_json(path: pathlib.Path) -> dict:
    with open(path) as f:
        return json.load(f)


def _rows(prefix: str, names: Iterable[str], expected: Mapping[str, np.ndarray],
          compute: Callable[[], Mapping[str, np.ndarray]], tol: float, metric: str = "rel",
          exact: Iterable[str] = (), per_row: Iterable[str] = ()) -> Iterator[Check]:
    """Computes `compute()` once and compares each named result.

    Names in `exact` must match exactly; names in `per_row` use
    `compare_per_row`; the rest use `metric`. A failure to compute
    (including a missing input array) fails every row; a missing expected
    array fails its own row.
    """
    names, exact, per_row = list(names), set(exact), set(per_row)
    try:
        actual = compute()
    except Exception as exc:  # one broken op must not hide the others
        for name in names:
            yield failed(f"{prefix}{name}", f"{type(exc).__name__}: {exc}")
        return
    for name in names:
        row = f"{prefix}{name}"
        if name not in expected:
            yield failed(row, f"array {name!r} missing from the fixture")
        elif name not in actual:
            yield failed(row, f"glide_jax produced no {name!r}")
        elif name in exact:
            yield compare(row, actual[name], expected[name], 0.0, "exact")
        elif name in per_row:
            yield compare_per_row(row, actual[name], expected[name], tol)
        else:
            yield compare(row, actual[name], expected[name], tol, metric)


def compare_per_row(name: str, actual, expected, tol: float) -> Check:
    """Max |a - e| / max |e[b]| over each batch row b (metric "rowrel").

    For outputs that are sums of O(1) float32 terms (a sample is mean +
    sigma * noise, a DDIM step x0 * sqrt(abar) + sqrt(1 - abar) * eps), an
    entry near zero carries the rounding of the terms, not of itself; the
    reference's float32 sqrt and exp are themselves 1 ulp off for ~10-20% of
    inputs. Each row (one timestep) is judged relative to its own scale, so
    a small-valued row is not hidden behind a large one.
    """
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    if a.shape != e.shape or e.ndim < 1:
        return compare(name, actual, expected, tol)
    diff = np.abs(a - e)
    axes = tuple(range(1, e.ndim))
    scale = np.maximum(np.abs(e).max(axis=axes, keepdims=True, initial=0.0), 1e-30)
    rel = float((diff / scale).max()) if diff.size else 0.0
    return Check(name, float(diff.max(initial=0.0)), rel, tol, "rowrel",
                 bool(np.isfinite(rel) and rel <= tol))


def _npz(path: pathlib.Path) -> dict:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


# --------------------------------------------------------------- schedules


def _respacing_tag(meta: dict, respacing: str) -> str:
    tags = meta.get("respacing_tags", {})
    if respacing in tags:
        return tags[respacing]
    return "full" if not respacing else respacing.replace(",", "-")


def _schedule_checks(fixture_dir: pathlib.Path) -> Iterator[Check]:
    prefix = "diffusion_schedules:"
    try:
        meta = _load_json(fixture_dir / "diffusion_meta.json")
        expected = _npz(fixture_dir / "diffusion_schedules.npz")
        steps = int(meta["steps"])
    except Exception as exc:
        yield failed(f"{prefix} (files)", f"{type(exc).__name__}: {exc}")
        return
    listed = [name.split()[0] for name in meta.get("schedule_arrays", ())]
    tables = [n for n in listed if n not in ("raw_betas", "use_timesteps", "timestep_map")]
    tables = tables or list(_DEFAULT_TABLES)
    for schedule in meta["schedules"]:
        raw_key = f"{schedule}__raw_betas"
        raw = {"raw_betas": expected[raw_key]} if raw_key in expected else {}
        yield from _rows(f"{prefix}{schedule}__", ["raw_betas"], raw,
                         lambda: {"raw_betas": schedules.get_named_beta_schedule(schedule, steps)},
                         SCHEDULE_TOL)
        for respacing in meta["respacings"]:
            key = f"{schedule}__{_respacing_tag(meta, respacing)}__"
            present = {k[len(key):]: v for k, v in expected.items() if k.startswith(key)}
            names = ["use_timesteps", "timestep_map"] + sorted(
                set(tables) | (set(present) - {"use_timesteps", "timestep_map"}))
            yield from _rows(f"{prefix}{key}", names, present,
                             lambda: _schedule_arrays(steps, schedule, respacing, names),
                             SCHEDULE_TOL, exact=("use_timesteps", "timestep_map"))


def _schedule_arrays(steps: int, schedule: str, respacing: str, names) -> dict:
    diffusion = gaussian.create_gaussian_diffusion(steps, schedule, respacing)
    arrays = {"use_timesteps": np.array(schedules.space_timesteps(steps, respacing)),
              "timestep_map": diffusion.timestep_map}
    for name in names:
        if name not in arrays and hasattr(diffusion, name):
            arrays[name] = np.asarray(getattr(diffusion, name))
    return arrays


# --------------------------------------------------------------------- ops

_PMV = ("mean", "variance", "log_variance", "pred_xstart")


class _Recorder:
    """A fixed-output `model_fn` / `cond_fn` that records the timesteps it got."""

    def __init__(self, output: jnp.ndarray):
        self.output = output
        self.timesteps: list[np.ndarray] = []

    def __call__(self, x, t):
        self.timesteps.append(np.asarray(t))
        return self.output


def _ops_checks(fixture_dir: pathlib.Path) -> Iterator[Check]:
    prefix = "diffusion_ops:"
    try:
        meta = _load_json(fixture_dir / "diffusion_meta.json")
        a = _npz(fixture_dir / "diffusion_ops.npz")
        steps, schedule = int(meta["steps"]), meta["ops_schedule"]
        diffusion = gaussian.create_gaussian_diffusion(steps, schedule, meta["ops_respacing"])
    except Exception as exc:
        yield failed(f"{prefix} (files)", f"{type(exc).__name__}: {exc}")
        return
    if "ops_num_timesteps" in meta:
        yield compare(f"{prefix}num_timesteps", diffusion.num_timesteps,
                      int(meta["ops_num_timesteps"]), 0.0, "exact")
    x_t = lambda: to_nhwc(a["x_t"])  # noqa: E731  (missing arrays fail inside _rows)
    t = lambda: jnp.asarray(a["t"], jnp.int32)  # noqa: E731
    model = lambda: _Recorder(to_nhwc(a["model_output"]))  # noqa: E731

    def pmv(clip):
        recorder = model()
        out = diffusion.p_mean_variance(recorder, x_t(), t(), clip_denoised=clip)
        return out, recorder.timesteps[0]

    def pmv_rows(clip):
        out, seen = pmv(clip)
        rows = {f"pmv_{'clip' if clip else 'noclip'}__{k}": to_nchw(v) for k, v in out.items()}
        return dict(rows, model_timesteps=seen)

    names = lambda tag, keys: [f"{tag}__{k}" for k in keys]  # noqa: E731
    yield from _rows(prefix, names("pmv_clip", _PMV) + ["model_timesteps"], a,
                     lambda: pmv_rows(True), OPS_TOL, exact=("model_timesteps",))
    yield from _rows(prefix, names("pmv_noclip", _PMV), a, lambda: pmv_rows(False), OPS_TOL)
    yield from _rows(prefix, ["q_sample"], a, lambda: {"q_sample": to_nchw(diffusion.q_sample(
        to_nhwc(a["x_start"]), t(), to_nhwc(a["noise"])))}, OPS_TOL)
    yield from _rows(prefix, ["q_sample_full"], a, lambda: _q_sample_full(steps, schedule, a),
                     OPS_TOL)
    yield from _rows(prefix, [f"q_posterior_{k}" for k in ("mean", "variance", "log_variance")],
                     a, lambda: _q_posterior(diffusion, a), OPS_TOL)
    yield from _rows(prefix, ["condition_mean", "cond_timesteps", "condition_score__mean",
                              "condition_score__pred_xstart"], a,
                     lambda: _conditioning(diffusion, pmv(True)[0], a), OPS_TOL,
                     exact=("cond_timesteps",),
                     per_row=("condition_mean", "condition_score__mean",
                              "condition_score__pred_xstart"))
    yield from _rows(prefix, names("p_sample", ("sample", "pred_xstart")), a,
                     lambda: _step_rows("p_sample", samplers.p_sample(
                         diffusion, model(), x_t(), t(), to_nhwc(a["p_sample_noise"]))), OPS_TOL,
                     per_row=("p_sample__sample",))
    for tag, eta in (("ddim_sample_eta0", lambda: 0.0),
                     ("ddim_sample_eta", lambda: float(a.get("ddim_eta", meta.get("ddim_eta"))))):
        yield from _rows(prefix, names(tag, ("sample", "pred_xstart")), a,
                         lambda: _step_rows(tag, samplers.ddim_sample(
                             diffusion, model(), x_t(), t(), to_nhwc(a["ddim_noise"]), eta=eta())),
                         OPS_TOL, per_row=(f"{tag}__sample",))


def _step_rows(tag: str, out: dict) -> dict:
    return {f"{tag}__{k}": to_nchw(v) for k, v in out.items()}


def _q_sample_full(steps: int, schedule: str, a: dict) -> dict:
    full = gaussian.create_gaussian_diffusion(steps, schedule, None)
    t_full = jnp.asarray(a["t_full"], jnp.int32)
    return {"q_sample_full": to_nchw(full.q_sample(to_nhwc(a["x_start"]), t_full, to_nhwc(a["noise"])))}


def _q_posterior(diffusion, a: dict) -> dict:
    out = diffusion.q_posterior_mean_variance(to_nhwc(a["x_start"]), to_nhwc(a["x_t"]),
                                              jnp.asarray(a["t"], jnp.int32))
    return {f"q_posterior_{k}": to_nchw(v) for k, v in zip(("mean", "variance", "log_variance"), out)}


def _conditioning(diffusion, pmv_clip: dict, a: dict) -> dict:
    x_t, t = to_nhwc(a["x_t"]), jnp.asarray(a["t"], jnp.int32)
    cond_fn = _Recorder(to_nhwc(a["cond_grad"]))
    mean = diffusion.condition_mean(cond_fn, pmv_clip, x_t, t)
    score = diffusion.condition_score(cond_fn, pmv_clip, x_t, t)
    return {"condition_mean": to_nchw(mean), "cond_timesteps": cond_fn.timesteps[0],
            "condition_score__mean": to_nchw(score["mean"]),
            "condition_score__pred_xstart": to_nchw(score["pred_xstart"])}


# ---------------------------------------------------------- training losses


def _training_loss_checks(fixture_dir: pathlib.Path) -> Iterator[Check]:
    prefix = "training_losses:"
    try:
        meta = _load_json(fixture_dir / "training_losses_meta.json")
        a = _npz(fixture_dir / "training_losses.npz")
        if meta.get("rescale_timesteps", False):
            raise ValueError("rescale_timesteps=True is not part of GLIDE and not supported")
        diffusion = gaussian.create_gaussian_diffusion(
            int(meta["steps"]), meta["schedule"], meta.get("timestep_respacing"),
            model_mean_type=meta["model_mean_type"], model_var_type=meta["model_var_type"],
            loss_type=meta["loss_type"])
    except Exception as exc:
        yield failed(f"{prefix} (files)", f"{type(exc).__name__}: {exc}")
        return
    terms = [k for k in ("mse", "vb", "loss") if k in a] or ["loss"]
    yield from _rows(prefix, ["x_t", "model_timesteps"] + terms, a,
                     lambda: _training_losses(diffusion, a), OPS_TOL,
                     exact=("model_timesteps",))


def _training_losses(diffusion, a: dict) -> dict:
    x_start, noise = to_nhwc(a["x_start"]), to_nhwc(a["noise"])
    t = jnp.asarray(a["t"], jnp.int32)
    model = _Recorder(to_nhwc(a["model_output"]))
    terms = diffusion.training_losses(model, x_start, t, noise)
    out = {k: np.asarray(v) for k, v in terms.items()}
    out["x_t"] = to_nchw(diffusion.q_sample(x_start, t, noise))
    out["model_timesteps"] = model.timesteps[0]
    return out


# ------------------------------------------------------------ sampler replay

# The inpainting notebook's denoised_fn, as sampling_meta.json spells it.
_INPAINT_DENOISED_FN = "x0*(1-m)+img*m"


def _inpaint_replay_checks(fixture_dir: pathlib.Path) -> Iterator[Check]:
    prefix = "sample_inpaint(replay):"
    try:
        settings = _load_json(fixture_dir / "sampling_meta.json")["sample_inpaint"]
        a = _npz(fixture_dir / "sample_inpaint.npz")
        steps = _diffusion_steps(fixture_dir, settings.get("model"))
        diffusion = gaussian.create_gaussian_diffusion(steps, settings["schedule"],
                                                       settings["respacing"])
        if settings.get("denoised_fn", _INPAINT_DENOISED_FN) != _INPAINT_DENOISED_FN:
            raise ValueError(f"unknown denoised_fn {settings['denoised_fn']!r}")
    except Exception as exc:
        yield failed(f"{prefix} (files)", f"{type(exc).__name__}: {exc}")
        return
    yield from _rows(prefix, ["model_timesteps", "step_samples", "final"], a,
                     lambda: _replay(diffusion, a, bool(settings.get("clip_denoised", True))),
                     REPLAY_ATOL, metric="abs", exact=("model_timesteps",))


def _diffusion_steps(fixture_dir: pathlib.Path, model: str | None) -> int:
    """Training steps of the sampled model, from its options file if present."""
    options_path = fixture_dir / f"{model}_options.json"
    if model and options_path.exists():
        options = _load_json(options_path)["model_and_diffusion_options"]
        if "diffusion_steps" in options:
            return int(options["diffusion_steps"])
    return int(_load_json(fixture_dir / "diffusion_meta.json")["steps"])


def _replay(diffusion, a: dict, clip_denoised: bool) -> dict:
    """Runs the jitted p_sample_loop with the recorded model outputs and noises.

    The model_fn returns the recorded output of the step whose recorded
    timesteps equal the ones it receives; the timesteps it really receives
    are captured with a debug callback and compared separately.
    """
    outputs = to_nhwc(a["step_model_outputs"])
    recorded_t = jnp.asarray(a["model_timesteps"], jnp.int32)
    image, mask = to_nhwc(a["inpaint_image"]), to_nhwc(a["inpaint_mask"])
    noise, step_noises = to_nhwc(a["noise"]), to_nhwc(a["step_noises"])
    seen: list[np.ndarray] = []

    def model_fn(x, t):
        jax.debug.callback(lambda tt: seen.append(np.asarray(tt)), t, ordered=True)
        step = jnp.argmax(jnp.all(recorded_t == t[None, :], axis=1))
        return outputs[step]

    def denoised_fn(x0):
        return x0 * (1 - mask) + image * mask

    @jax.jit
    def run(noise, step_noises):
        return samplers.p_sample_loop(diffusion, model_fn, noise.shape, noise=noise,
                                      step_noises=step_noises, clip_denoised=clip_denoised,
                                      denoised_fn=denoised_fn, return_all_steps=True)

    final, history = run(noise, step_noises)
    final = np.asarray(final)
    jax.effects_barrier()
    return {"final": to_nchw(final), "step_samples": to_nchw(np.asarray(history["sample"])),
            "model_timesteps": np.stack(seen) if seen else np.zeros((0,))}
