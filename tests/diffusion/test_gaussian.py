"""GaussianDiffusion ops and training losses against glide-text2im / guided-diffusion."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glide_jax.diffusion import (GaussianDiffusion, LossType, ModelMeanType, ModelVarType,
                                 create_gaussian_diffusion)
from glide_jax.tools.parity import to_nchw, to_nhwc

OPS_RTOL = 1e-5


@pytest.fixture(scope="module")
def ops(fixtures_dir):
    meta = json.loads((fixtures_dir / "diffusion_meta.json").read_text())
    with np.load(fixtures_dir / "diffusion_ops.npz") as data:
        arrays = {k: data[k] for k in data.files}
    diffusion = create_gaussian_diffusion(meta["steps"], meta["ops_schedule"], meta["ops_respacing"])
    return meta, arrays, diffusion


class Recorder:
    """A model_fn returning a fixed output and recording the timesteps it got."""

    def __init__(self, output):
        self.output, self.seen = output, []

    def __call__(self, x, t):
        self.seen.append(np.asarray(t))
        return self.output


def _assert_close(actual, expected, name, rtol=OPS_RTOL):
    # Relative to each array's scale: entries far below its largest magnitude
    # are differences of large float32 terms.
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=name)


@pytest.mark.parametrize("clip", [True, False])
def test_p_mean_variance_matches_reference(ops, clip):
    _, a, diffusion = ops
    model = Recorder(to_nhwc(a["model_output"]))
    out = diffusion.p_mean_variance(model, to_nhwc(a["x_t"]), jnp.asarray(a["t"], jnp.int32),
                                    clip_denoised=clip)
    tag = "pmv_clip" if clip else "pmv_noclip"
    for key in ("mean", "variance", "log_variance", "pred_xstart"):
        _assert_close(to_nchw(out[key]), a[f"{tag}__{key}"], f"{tag}__{key}")
    # The model sees ORIGINAL step indices, never respaced or rescaled ones.
    np.testing.assert_array_equal(model.seen[0], a["model_timesteps"])
    assert model.seen[0].dtype == np.int32


def test_q_sample_and_posterior_match_reference(ops):
    meta, a, diffusion = ops
    x_start, noise, t = to_nhwc(a["x_start"]), to_nhwc(a["noise"]), jnp.asarray(a["t"], jnp.int32)
    _assert_close(to_nchw(diffusion.q_sample(x_start, t, noise)), a["q_sample"], "q_sample")
    full = create_gaussian_diffusion(meta["steps"], meta["ops_schedule"])
    _assert_close(to_nchw(full.q_sample(x_start, jnp.asarray(a["t_full"], jnp.int32), noise)),
                  a["q_sample_full"], "q_sample_full")
    mean, var, log_var = diffusion.q_posterior_mean_variance(x_start, to_nhwc(a["x_t"]), t)
    for name, got in (("mean", mean), ("variance", var), ("log_variance", log_var)):
        _assert_close(to_nchw(got), a[f"q_posterior_{name}"], name)


def test_condition_mean_and_score_match_reference(ops):
    _, a, diffusion = ops
    x_t, t = to_nhwc(a["x_t"]), jnp.asarray(a["t"], jnp.int32)
    pmv = diffusion.p_mean_variance(Recorder(to_nhwc(a["model_output"])), x_t, t)
    cond_fn = Recorder(to_nhwc(a["cond_grad"]))
    _assert_close(to_nchw(diffusion.condition_mean(cond_fn, pmv, x_t, t)), a["condition_mean"], "mean")
    np.testing.assert_array_equal(cond_fn.seen[0], a["cond_timesteps"])
    score = diffusion.condition_score(cond_fn, pmv, x_t, t)
    _assert_close(to_nchw(score["mean"]), a["condition_score__mean"], "score mean")
    _assert_close(to_nchw(score["pred_xstart"]), a["condition_score__pred_xstart"], "score x0")


def test_condition_mean_is_variance_times_gradient(ops):
    _, a, diffusion = ops
    x_t, t = to_nhwc(a["x_t"]), jnp.asarray(a["t"], jnp.int32)
    pmv = diffusion.p_mean_variance(Recorder(to_nhwc(a["model_output"])), x_t, t)
    grad = jnp.full(x_t.shape, 2.0)
    shifted = diffusion.condition_mean(lambda x, tt: grad, pmv, x_t, t)
    np.testing.assert_allclose(shifted - pmv["mean"], 2.0 * pmv["variance"], rtol=1e-5, atol=1e-7)


def test_condition_score_shifts_eps_and_does_not_clamp(ops):
    _, a, diffusion = ops
    x_t, t = to_nhwc(a["x_t"]), jnp.asarray(a["t"], jnp.int32)
    pmv = diffusion.p_mean_variance(Recorder(to_nhwc(a["model_output"])), x_t, t, clip_denoised=True)
    zero = diffusion.condition_score(lambda x, tt: jnp.zeros_like(x), pmv, x_t, t)
    np.testing.assert_allclose(zero["pred_xstart"], pmv["pred_xstart"], rtol=1e-4, atol=1e-4)
    shifted = diffusion.condition_score(lambda x, tt: jnp.full(x.shape, 50.0), pmv, x_t, t)
    # A large gradient pushes x0 outside [-1, 1]: the new x0 is not clamped.
    assert float(jnp.abs(shifted["pred_xstart"]).max()) > 1.5
    assert shifted["variance"] is pmv["variance"]


def test_denoised_fn_runs_before_clamp(ops):
    _, a, diffusion = ops
    x_t, t = to_nhwc(a["x_t"]), jnp.asarray(a["t"], jnp.int32)
    model = Recorder(to_nhwc(a["model_output"]))
    out = diffusion.p_mean_variance(model, x_t, t, denoised_fn=lambda x0: x0 * 0 + 3.0)
    np.testing.assert_array_equal(out["pred_xstart"], 1.0)


@pytest.mark.parametrize("var_type, table", [
    (ModelVarType.FIXED_SMALL, "posterior_variance"), (ModelVarType.FIXED_LARGE, None)])
def test_fixed_variances(var_type, table):
    diffusion = create_gaussian_diffusion(20, "squaredcos_cap_v2", model_var_type=var_type)
    x = jnp.ones((3, 4, 4, 2))
    t = jnp.array([0, 5, 19], jnp.int32)
    out = diffusion.p_mean_variance(lambda xx, tt: jnp.zeros_like(xx), x, t)
    if table:
        expected = diffusion.posterior_variance[[0, 5, 19]]
    else:  # beta_t, with the posterior variance at t = 0
        expected = np.array([diffusion.posterior_variance[1], diffusion.betas[5], diffusion.betas[19]])
    np.testing.assert_allclose(out["variance"][:, 0, 0, 0], expected.astype(np.float32), rtol=1e-6)


def test_learned_variance_and_start_x_mean():
    diffusion = create_gaussian_diffusion(20, "squaredcos_cap_v2", model_mean_type="start_x",
                                          model_var_type="LEARNED")
    assert diffusion.model_mean_type == ModelMeanType.START_X
    x = jnp.zeros((2, 4, 4, 1))
    output = jnp.concatenate([jnp.full(x.shape, 0.5), jnp.full(x.shape, -3.0)], axis=-1)
    out = diffusion.p_mean_variance(lambda xx, tt: output, x, jnp.array([3, 7], jnp.int32))
    np.testing.assert_allclose(out["log_variance"], -3.0)
    np.testing.assert_allclose(out["pred_xstart"], 0.5)


def test_bad_inputs_are_named():
    diffusion = create_gaussian_diffusion(10, "squaredcos_cap_v2")
    x = jnp.zeros((2, 4, 4, 3))
    with pytest.raises(ValueError, match="model output"):
        diffusion.p_mean_variance(lambda xx, tt: xx, x, jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match="t must have shape"):
        diffusion.q_sample(x, jnp.zeros((3,), jnp.int32), x)
    with pytest.raises(ValueError, match="model_var_type"):
        create_gaussian_diffusion(10, "squaredcos_cap_v2", model_var_type="wide")
    with pytest.raises(ValueError, match="at least 50 steps"):
        create_gaussian_diffusion(10, "linear")


def test_diffusion_is_immutable_and_hashable():
    diffusion = create_gaussian_diffusion(10, "squaredcos_cap_v2")
    with pytest.raises(Exception):
        diffusion.betas = None
    with pytest.raises(ValueError):
        diffusion.betas[0] = 0.5
    assert hash(diffusion) == hash(diffusion)
    assert isinstance(diffusion, GaussianDiffusion)


# ---------------------------------------------------------------- losses


@pytest.fixture(scope="module")
def loss_case(fixtures_dir):
    meta = json.loads((fixtures_dir / "training_losses_meta.json").read_text())
    with np.load(fixtures_dir / "training_losses.npz") as data:
        arrays = {k: data[k] for k in data.files}
    diffusion = create_gaussian_diffusion(
        meta["steps"], meta["schedule"], model_mean_type=meta["model_mean_type"],
        model_var_type=meta["model_var_type"], loss_type=meta["loss_type"])
    return arrays, diffusion


def test_training_losses_match_guided_diffusion(loss_case):
    a, diffusion = loss_case
    model = Recorder(to_nhwc(a["model_output"]))
    terms = diffusion.training_losses(model, to_nhwc(a["x_start"]), jnp.asarray(a["t"], jnp.int32),
                                      to_nhwc(a["noise"]))
    np.testing.assert_array_equal(model.seen[0], a["model_timesteps"])
    for key in ("mse", "vb", "loss"):
        # Elementwise: the t = 0 decoder term (vb[0]) must match on its own.
        np.testing.assert_allclose(terms[key], a[key], rtol=OPS_RTOL, err_msg=key)


def _loss_model(diffusion, a):
    """A tiny differentiable model: output = w * fixture output."""
    base = to_nhwc(a["model_output"])
    x_start, noise = to_nhwc(a["x_start"]), to_nhwc(a["noise"])
    t = jnp.asarray(a["t"], jnp.int32)

    def loss(w_eps, w_var, key="loss"):
        def model_fn(x, tt):
            channels = x.shape[-1]
            return jnp.concatenate([w_eps * base[..., :channels], w_var * base[..., channels:]], -1)
        return diffusion.training_losses(model_fn, x_start, t, noise)[key].mean()
    return loss


def test_training_loss_is_differentiable(loss_case):
    a, diffusion = loss_case
    grads = jax.jit(jax.grad(_loss_model(diffusion, a), argnums=(0, 1)))(1.0, 1.0)
    assert all(np.isfinite(float(g)) and float(g) != 0.0 for g in grads)


def test_vb_term_does_not_train_eps(loss_case):
    a, diffusion = loss_case
    loss = _loss_model(diffusion, a)
    grads = jax.jit(lambda e, v: (jax.grad(lambda e, v: loss(e, v, "vb"), argnums=(0, 1))(e, v),
                                  jax.grad(lambda e: loss(e, v, "mse"))(e),
                                  jax.grad(lambda e: loss(e, v))(e)))
    (d_vb_eps, d_vb_var), d_mse_eps, d_loss_eps = grads(1.0, 1.0)
    assert float(d_vb_eps) == 0.0 and float(d_vb_var) != 0.0
    np.testing.assert_allclose(d_loss_eps, d_mse_eps, rtol=1e-6)


def test_rescaled_and_kl_loss_types():
    x = jnp.linspace(-1, 1, 2 * 4 * 4 * 3).reshape(2, 4, 4, 3)
    t = jnp.array([0, 30], jnp.int32)
    noise = jnp.cos(x * 7)

    def model_fn(xx, tt):
        return jnp.concatenate([0.9 * xx, 0.1 * xx], -1)

    def terms(loss_type):
        d = create_gaussian_diffusion(1000, "linear", "50", loss_type=loss_type)
        return jax.jit(lambda x, noise: d.training_losses(model_fn, x, t, noise))(x, noise)

    plain, rescaled = terms(LossType.MSE), terms(LossType.RESCALED_MSE)
    np.testing.assert_allclose(rescaled["vb"], plain["vb"] * 50 / 1000, rtol=1e-6)
    kl, rescaled_kl = terms(LossType.KL), terms(LossType.RESCALED_KL)
    assert set(kl) == {"loss"}
    np.testing.assert_allclose(kl["loss"], plain["vb"], rtol=1e-6)
    np.testing.assert_allclose(rescaled_kl["loss"], plain["vb"] * 50, rtol=1e-6)


def test_constructor_mistakes_are_named():
    from glide_jax import config as config_lib
    from glide_jax.diffusion import create_gaussian_diffusion, diffusion_from_config

    assert create_gaussian_diffusion(1000, "squaredcos_cap_v2", 4).num_timesteps == 4  # an int, like "4"
    with pytest.raises(KeyError, match="pass config.diffusion, not the whole config"):
        diffusion_from_config(config_lib.base_config())
