"""Samplers: single steps against glide-text2im, the replayed inpainting loop, jit reuse."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glide_jax.diffusion import (create_gaussian_diffusion, ddim_sample, ddim_sample_loop,
                                 p_sample, p_sample_loop)
from glide_jax.tools.parity import to_nchw, to_nhwc


@pytest.fixture(scope="module")
def ops(fixtures_dir):
    meta = json.loads((fixtures_dir / "diffusion_meta.json").read_text())
    with np.load(fixtures_dir / "diffusion_ops.npz") as data:
        arrays = {k: data[k] for k in data.files}
    diffusion = create_gaussian_diffusion(meta["steps"], meta["ops_schedule"], meta["ops_respacing"])
    return arrays, diffusion


def _close_to_scale(actual, expected, rtol=1e-5):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def test_p_sample_step_matches_reference(ops):
    a, diffusion = ops
    model_fn = lambda x, t: to_nhwc(a["model_output"])  # noqa: E731
    out = p_sample(diffusion, model_fn, to_nhwc(a["x_t"]), jnp.asarray(a["t"], jnp.int32),
                   to_nhwc(a["p_sample_noise"]))
    _close_to_scale(to_nchw(out["sample"]), a["p_sample__sample"])
    _close_to_scale(to_nchw(out["pred_xstart"]), a["p_sample__pred_xstart"])


@pytest.mark.parametrize("tag", ["eta0", "eta"])
def test_ddim_step_matches_reference(ops, tag):
    a, diffusion = ops
    eta = 0.0 if tag == "eta0" else float(a["ddim_eta"])
    model_fn = lambda x, t: to_nhwc(a["model_output"])  # noqa: E731
    out = ddim_sample(diffusion, model_fn, to_nhwc(a["x_t"]), jnp.asarray(a["t"], jnp.int32),
                      to_nhwc(a["ddim_noise"]), eta=eta)
    _close_to_scale(to_nchw(out["sample"]), a[f"ddim_sample_{tag}__sample"])
    _close_to_scale(to_nchw(out["pred_xstart"]), a[f"ddim_sample_{tag}__pred_xstart"])


def test_inpaint_loop_replays_reference(fixtures_dir):
    """The jitted p_sample_loop, fed the recorded CFG outputs and noises."""
    settings = json.loads((fixtures_dir / "sampling_meta.json").read_text())["sample_inpaint"]
    options = json.loads((fixtures_dir / "inpaint_options.json").read_text())
    with np.load(fixtures_dir / "sample_inpaint.npz") as data:
        a = {k: data[k] for k in data.files}
    diffusion = create_gaussian_diffusion(options["model_and_diffusion_options"]["diffusion_steps"],
                                          settings["schedule"], settings["respacing"])
    outputs = to_nhwc(a["step_model_outputs"])
    by_timestep = {int(ts[0]): k for k, ts in enumerate(a["model_timesteps"])}
    table = np.zeros(diffusion.original_num_steps, np.int32)  # original t -> recorded step
    for timestep, k in by_timestep.items():
        table[timestep] = k
    image, mask = to_nhwc(a["inpaint_image"]), to_nhwc(a["inpaint_mask"])

    def model_fn(x, t):
        return outputs[jnp.asarray(table)[t[0]]]

    run = jax.jit(lambda noise, step_noises: p_sample_loop(
        diffusion, model_fn, noise.shape, noise=noise, step_noises=step_noises,
        clip_denoised=settings["clip_denoised"], return_all_steps=True,
        denoised_fn=lambda x0: x0 * (1 - mask) + image * mask))
    final, steps = run(to_nhwc(a["noise"]), to_nhwc(a["step_noises"]))
    # The loop visits the recorded timesteps in order, noisiest first.
    np.testing.assert_array_equal(diffusion.timestep_map[::-1], a["model_timesteps"][:, 0])
    np.testing.assert_allclose(to_nchw(steps["sample"]), a["step_samples"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(to_nchw(final), a["final"], rtol=0, atol=1e-4)
    assert steps["pred_xstart"].shape == steps["sample"].shape


def _tiny_model(counter):
    """A smooth stand-in network with 2C outputs; counts its traces."""

    def model_fn(x, t):
        counter.append(1)  # runs only while tracing
        scale = 1.0 + t.astype(jnp.float32)[:, None, None, None] / 1000.0
        eps = jnp.tanh(x * 0.5) * scale
        return jnp.concatenate([eps, jnp.sin(x)], axis=-1)

    return model_fn


@pytest.mark.parametrize("loop", [p_sample_loop, ddim_sample_loop])
def test_jitted_loop_traces_once_and_reuses(loop):
    diffusion = create_gaussian_diffusion(1000, "squaredcos_cap_v2", "10")
    traces = []
    model_fn = _tiny_model(traces)
    shape = (2, 8, 8, 3)
    run = jax.jit(lambda key: loop(diffusion, model_fn, shape, key=key))
    first = np.asarray(run(jax.random.PRNGKey(0)))
    assert len(traces) == 1
    second = np.asarray(run(jax.random.PRNGKey(1)))
    assert len(traces) == 1, "a new key must reuse the compiled loop"
    assert first.shape == shape and np.isfinite(first).all()
    assert np.abs(first - second).max() > 1e-2
    again = np.asarray(run(jax.random.PRNGKey(0)))
    np.testing.assert_array_equal(first, again)


def test_jitted_loop_with_explicit_noise_reuses_trace():
    diffusion = create_gaussian_diffusion(1000, "squaredcos_cap_v2", "ddim10")
    traces = []
    run = jax.jit(lambda noise: ddim_sample_loop(diffusion, _tiny_model(traces), noise.shape,
                                                 noise=noise))
    a = run(jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3)))
    b = run(jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3)))
    assert len(traces) == 1
    assert float(jnp.abs(a - b).max()) > 1e-2


def test_step_noises_replay_matches_python_loop():
    """The scanned loop equals stepping by hand with the same noises."""
    diffusion = create_gaussian_diffusion(1000, "squaredcos_cap_v2", "5")
    model_fn = _tiny_model([])
    keys = jax.random.split(jax.random.PRNGKey(3), 6)
    shape = (2, 4, 4, 3)
    noise = jax.random.normal(keys[0], shape)
    step_noises = jnp.stack([jax.random.normal(k, shape) for k in keys[1:]])
    final, steps = p_sample_loop(diffusion, model_fn, shape, noise=noise, step_noises=step_noises,
                                 return_all_steps=True)
    step = jax.jit(lambda x, t, n: p_sample(diffusion, model_fn, x, t, n)["sample"])
    x = noise
    for k, index in enumerate(range(4, -1, -1)):
        x = step(x, jnp.full((2,), index, jnp.int32), step_noises[k])
        np.testing.assert_allclose(steps["sample"][k], x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final, x, rtol=1e-5, atol=1e-5)


def test_last_step_adds_no_noise():
    diffusion = create_gaussian_diffusion(1000, "squaredcos_cap_v2", "3")
    model_fn = _tiny_model([])
    shape = (1, 4, 4, 3)
    noise = jnp.ones(shape)
    base = jnp.zeros((3,) + shape)
    bumped = base.at[-1].set(100.0)
    a = p_sample_loop(diffusion, model_fn, shape, noise=noise, step_noises=base)
    b = p_sample_loop(diffusion, model_fn, shape, noise=noise, step_noises=bumped)
    np.testing.assert_array_equal(a, b)
    c = p_sample_loop(diffusion, model_fn, shape, noise=noise, step_noises=base.at[0].set(1.0))
    assert float(jnp.abs(a - c).max()) > 1e-3


def test_cond_fn_gets_original_timesteps_and_shifts_samples():
    diffusion = create_gaussian_diffusion(1000, "squaredcos_cap_v2", "4")
    seen = []

    def cond_fn(x, t):
        jax.debug.callback(lambda tt: seen.append(np.asarray(tt)), t, ordered=True)
        return jnp.full(x.shape, 5.0)

    shape = (2, 4, 4, 3)
    model_fn = _tiny_model([])
    for loop in (p_sample_loop, ddim_sample_loop):
        seen.clear()
        plain, guided = jax.jit(lambda key: (
            loop(diffusion, model_fn, shape, key=key),
            loop(diffusion, model_fn, shape, key=key, cond_fn=cond_fn)))(jax.random.PRNGKey(0))
        jax.effects_barrier()
        np.testing.assert_array_equal(np.stack(seen)[:, 0], diffusion.timestep_map[::-1])
        assert float((guided - plain).mean()) > 1e-3  # a positive gradient raises the sample


def test_missing_noise_source_is_an_error():
    diffusion = create_gaussian_diffusion(1000, "squaredcos_cap_v2", "4")
    with pytest.raises(ValueError, match="key"):
        p_sample_loop(diffusion, _tiny_model([]), (1, 4, 4, 3), noise=jnp.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="step_noises has shape"):
        p_sample_loop(diffusion, _tiny_model([]), (1, 4, 4, 3), noise=jnp.zeros((1, 4, 4, 3)),
                      step_noises=jnp.zeros((3, 1, 4, 4, 3)))
    # Deterministic DDIM needs no per-step noise.
    out = ddim_sample_loop(diffusion, _tiny_model([]), (1, 4, 4, 3), noise=jnp.zeros((1, 4, 4, 3)))
    assert np.isfinite(np.asarray(out)).all()
