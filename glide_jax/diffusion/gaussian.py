"""Gaussian diffusion (Ho et al. 2020; Nichol & Dhariwal 2021) in JAX.

The math follows glide-text2im's `GaussianDiffusion` / `SpacedDiffusion` and
guided-diffusion's training losses, with these conventions:

* Arrays are NHWC: `x` is (B, H, W, C); a learned-variance model returns
  (B, H, W, 2C), eps (or x0 / x_{t-1}) in the first C channels and the
  variance values in the last C.
* `t` arguments are indices into *this* (possibly respaced) process, (B,)
  int. `model_fn(x, t_original)` and `cond_fn(x, t_original)` always receive
  the ORIGINAL step indices `timestep_map[t]` (0..999 for GLIDE), never
  rescaled values.
* The schedule tables are float64 numpy arrays. A coefficient is gathered at
  `t` and rounded to float32 at use, as the reference's
  `_extract_into_tensor` does. Rounding the whole table to float32 and then
  gathering gives the same numbers, so jitted code embeds float32 copies of
  the tables as constants and never needs jax_enable_x64.

A `GaussianDiffusion` is immutable and hashes by identity, so it can be
closed over or passed as a static argument of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.diffusion import losses, schedules

ModelFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]

_LN2 = float(np.log(2.0))  # nats -> bits


class ModelMeanType(enum.Enum):
    """What the first C output channels of the model predict."""

    PREVIOUS_X = "previous_x"  # the posterior mean of x_{t-1}
    START_X = "start_x"  # x_0
    EPSILON = "epsilon"  # the noise eps (GLIDE)


class ModelVarType(enum.Enum):
    """How the variance of p(x_{t-1} | x_t) is obtained."""

    LEARNED = "learned"  # the model outputs log sigma^2 directly
    FIXED_SMALL = "fixed_small"  # the posterior variance beta-tilde_t
    FIXED_LARGE = "fixed_large"  # beta_t (beta-tilde_1 at t = 0)
    LEARNED_RANGE = "learned_range"  # interpolate log beta-tilde_t .. log beta_t (GLIDE)


class LossType(enum.Enum):
    """Training objective (guided-diffusion's names).

    With a learned variance, MSE and RESCALED_MSE are the "hybrid" objective
    of Nichol & Dhariwal (2021, section 3.1): MSE on the mean output plus the
    variational bound with the mean output frozen. RESCALED_MSE multiplies the
    bound term by num_timesteps / 1000 (a no-op for 1000 training steps).
    """

    MSE = "mse"
    RESCALED_MSE = "rescaled_mse"
    KL = "kl"  # the variational bound alone
    RESCALED_KL = "rescaled_kl"  # the bound times num_timesteps

    @property
    def is_vb(self) -> bool:
        return self in (LossType.KL, LossType.RESCALED_KL)


_TABLES = (
    "alphas_cumprod", "alphas_cumprod_prev", "alphas_cumprod_next", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)


def _field():
    return dataclasses.field(init=False, repr=False)


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianDiffusion:
    """A (possibly respaced) Gaussian diffusion process.

    Attributes:
      betas: (S,) float64 betas of this process (respaced if S < original).
      timestep_map: (S,) int64 original step index of each step.
      model_mean_type, model_var_type, loss_type: see the enums.
      original_num_steps: steps of the process the model was trained on.
      alphas_cumprod ... posterior_mean_coef2: (S,) float64 tables derived
        from `betas` (Ho et al. 2020, eqs. 4 and 7).
    """

    betas: np.ndarray
    timestep_map: np.ndarray
    model_mean_type: ModelMeanType = ModelMeanType.EPSILON
    model_var_type: ModelVarType = ModelVarType.LEARNED_RANGE
    loss_type: LossType = LossType.MSE
    original_num_steps: int | None = None
    alphas_cumprod: np.ndarray = _field()
    alphas_cumprod_prev: np.ndarray = _field()
    alphas_cumprod_next: np.ndarray = _field()
    sqrt_alphas_cumprod: np.ndarray = _field()
    sqrt_one_minus_alphas_cumprod: np.ndarray = _field()
    log_one_minus_alphas_cumprod: np.ndarray = _field()
    sqrt_recip_alphas_cumprod: np.ndarray = _field()
    sqrt_recipm1_alphas_cumprod: np.ndarray = _field()
    posterior_variance: np.ndarray = _field()
    posterior_log_variance_clipped: np.ndarray = _field()
    posterior_mean_coef1: np.ndarray = _field()
    posterior_mean_coef2: np.ndarray = _field()

    def __post_init__(self):
        betas = np.array(self.betas, dtype=np.float64)
        if betas.ndim != 1 or not betas.size or not ((betas > 0).all() and (betas <= 1).all()):
            value_range = f"[{betas.min()}, {betas.max()}]" if betas.size else "empty"
            raise ValueError(f"betas must be 1-D with values in (0, 1], got shape {betas.shape}, "
                             f"range {value_range} (a linear schedule needs at least 50 steps)")
        if betas.size < 2:  # the clipped posterior log-variance of step 0 is step 1's
            raise ValueError(f"a diffusion process needs at least 2 steps, got {betas.size} (a timestep "
                             "respacing such as '1' keeps too few)")
        timestep_map = np.array(self.timestep_map, dtype=np.int64)
        if timestep_map.shape != betas.shape:
            raise ValueError(f"timestep_map {timestep_map.shape} must match betas {betas.shape}")
        tables = _derived_tables(betas)
        tables.update(betas=betas, timestep_map=timestep_map)
        for name, value in tables.items():
            value.flags.writeable = False
            object.__setattr__(self, name, value)
        if self.original_num_steps is None:
            object.__setattr__(self, "original_num_steps", int(timestep_map.max()) + 1)
        for name, enum_type in (("model_mean_type", ModelMeanType),
                                ("model_var_type", ModelVarType), ("loss_type", LossType)):
            object.__setattr__(self, name, _as_enum(enum_type, getattr(self, name), name))

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def learns_sigma(self) -> bool:
        """Whether the model outputs 2C channels (mean part, then variance part)."""
        return self.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE)

    # ------------------------------------------------------------------ helpers

    def original_timesteps(self, t: jnp.ndarray) -> jnp.ndarray:
        """Maps (B,) indices of this process to (B,) int32 original indices."""
        return jnp.asarray(self.timestep_map, dtype=jnp.int32)[t]

    def extract(self, table: np.ndarray | str, t: jnp.ndarray, ndim: int) -> jnp.ndarray:
        """Gathers a float64 table at `t`, rounded to float32, as (B, 1, ..., 1)."""
        if isinstance(table, str):
            table = getattr(self, table)
        values = jnp.asarray(np.asarray(table, dtype=np.float32))[t]
        return values.reshape(values.shape + (1,) * (ndim - 1))

    def _check_t(self, x: jnp.ndarray, t: jnp.ndarray) -> None:
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},) to match x {x.shape}, got {t.shape}")

    # ------------------------------------------------------------ forward process

    def q_mean_variance(self, x_start: jnp.ndarray, t: jnp.ndarray):
        """Mean, variance and log-variance of q(x_t | x_0), each like `x_start`."""
        shape = x_start.shape
        mean = self.extract("sqrt_alphas_cumprod", t, len(shape)) * x_start
        variance = jnp.broadcast_to(self.extract(1.0 - self.alphas_cumprod, t, len(shape)), shape)
        log_variance = jnp.broadcast_to(
            self.extract("log_one_minus_alphas_cumprod", t, len(shape)), shape)
        return mean, variance, log_variance

    def q_sample(self, x_start: jnp.ndarray, t: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
        """Samples x_t ~ q(x_t | x_0) with the given standard normal `noise`.

        Args:
          x_start: (B, H, W, C) clean images.
          t: (B,) int step indices of this process.
          noise: (B, H, W, C) standard normal noise.

        Returns:
          (B, H, W, C) sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (Ho et al. eq. 4).
        """
        if noise.shape != x_start.shape:
            raise ValueError(f"noise {noise.shape} must match x_start {x_start.shape}")
        self._check_t(x_start, t)
        n = x_start.ndim
        return (self.extract("sqrt_alphas_cumprod", t, n) * x_start
                + self.extract("sqrt_one_minus_alphas_cumprod", t, n) * noise)

    def q_posterior_mean_variance(self, x_start: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0).

        Ho et al. 2020, eqs. 6-7. Returns three arrays shaped like `x_t`.
        """
        if x_start.shape != x_t.shape:
            raise ValueError(f"x_start {x_start.shape} must match x_t {x_t.shape}")
        n = x_t.ndim
        mean = (self.extract("posterior_mean_coef1", t, n) * x_start
                + self.extract("posterior_mean_coef2", t, n) * x_t)
        variance = jnp.broadcast_to(self.extract("posterior_variance", t, n), x_t.shape)
        log_variance = jnp.broadcast_to(
            self.extract("posterior_log_variance_clipped", t, n), x_t.shape)
        return mean, variance, log_variance

    # ------------------------------------------------------------ reverse process

    def p_mean_variance(self, model_fn: ModelFn, x: jnp.ndarray, t: jnp.ndarray,
                        clip_denoised: bool = True,
                        denoised_fn: Callable[[jnp.ndarray], jnp.ndarray] | None = None):
        """Runs the model and forms p(x_{t-1} | x_t) and the x_0 prediction.

        Args:
          model_fn: `model_fn(x, t_original) -> output`, output (B, H, W, 2C)
            with a learned variance, else (B, H, W, C).
          x: (B, H, W, C) x_t.
          t: (B,) int step indices of this process.
          clip_denoised: clamp the x_0 prediction to [-1, 1].
          denoised_fn: optional map applied to the x_0 prediction before the
            clamp (e.g. inpainting pastes the known pixels in).

        Returns:
          Dict of (B, H, W, C) float arrays: "mean", "variance",
          "log_variance", "pred_xstart".
        """
        self._check_t(x, t)
        output = model_fn(x, self.original_timesteps(t)).astype(x.dtype)
        return self.p_mean_variance_from_output(output, x, t, clip_denoised, denoised_fn)

    def p_mean_variance_from_output(self, output: jnp.ndarray, x: jnp.ndarray, t: jnp.ndarray,
                                    clip_denoised: bool = True,
                                    denoised_fn: Callable[[jnp.ndarray], jnp.ndarray] | None = None):
        """`p_mean_variance` for an already computed model output (same shapes)."""
        channels = x.shape[-1]
        expected = x.shape[:-1] + ((2 * channels,) if self.learns_sigma else (channels,))
        if output.shape != expected:
            raise ValueError(f"model output {output.shape} must be {expected} for x {x.shape} "
                             f"and {self.model_var_type}")
        mean_out = output[..., :channels]
        variance, log_variance = self._model_variance(output[..., channels:], x, t)

        def process_xstart(x0):
            if denoised_fn is not None:
                x0 = denoised_fn(x0)
            return jnp.clip(x0, -1.0, 1.0) if clip_denoised else x0

        if self.model_mean_type == ModelMeanType.PREVIOUS_X:
            pred_xstart = process_xstart(self._predict_xstart_from_xprev(x, t, mean_out))
            mean = mean_out
        else:
            if self.model_mean_type == ModelMeanType.START_X:
                pred_xstart = process_xstart(mean_out)
            else:
                pred_xstart = process_xstart(self.predict_xstart_from_eps(x, t, mean_out))
            mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance,
                "pred_xstart": pred_xstart}

    def _model_variance(self, var_values: jnp.ndarray, x: jnp.ndarray, t: jnp.ndarray):
        n, shape = x.ndim, x.shape
        if self.model_var_type == ModelVarType.LEARNED:
            return jnp.exp(var_values), var_values
        if self.model_var_type == ModelVarType.LEARNED_RANGE:
            min_log = self.extract("posterior_log_variance_clipped", t, n)
            max_log = self.extract(np.log(self.betas), t, n)
            # The model's value v in [-1, 1] interpolates from the posterior
            # variance (v = -1) to beta_t (v = 1) in log space (Nichol &
            # Dhariwal 2021, eq. 15).
            frac = (var_values + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
            return jnp.exp(log_variance), log_variance
        if self.model_var_type == ModelVarType.FIXED_LARGE:
            # beta_t, except at t = 0 where the posterior variance gives a
            # better decoder likelihood.
            table = np.append(self.posterior_variance[1], self.betas[1:])
            variance, log_variance = table, np.log(table)
        else:
            variance, log_variance = self.posterior_variance, self.posterior_log_variance_clipped
        return (jnp.broadcast_to(self.extract(variance, t, n), shape),
                jnp.broadcast_to(self.extract(log_variance, t, n), shape))

    def predict_xstart_from_eps(self, x_t: jnp.ndarray, t: jnp.ndarray, eps: jnp.ndarray) -> jnp.ndarray:
        """x_0 = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps."""
        n = x_t.ndim
        return (self.extract("sqrt_recip_alphas_cumprod", t, n) * x_t
                - self.extract("sqrt_recipm1_alphas_cumprod", t, n) * eps)

    def predict_eps_from_xstart(self, x_t: jnp.ndarray, t: jnp.ndarray,
                                pred_xstart: jnp.ndarray) -> jnp.ndarray:
        """eps = (sqrt(1/abar_t) x_t - x_0) / sqrt(1/abar_t - 1)."""
        n = x_t.ndim
        return ((self.extract("sqrt_recip_alphas_cumprod", t, n) * x_t - pred_xstart)
                / self.extract("sqrt_recipm1_alphas_cumprod", t, n))

    def _predict_xstart_from_xprev(self, x_t, t, xprev):
        n = x_t.ndim
        return (self.extract(1.0 / self.posterior_mean_coef1, t, n) * xprev
                - self.extract(self.posterior_mean_coef2 / self.posterior_mean_coef1, t, n) * x_t)

    # ----------------------------------------------------------------- guidance

    def condition_mean(self, cond_fn: ModelFn, p_mean_var: Mapping[str, jnp.ndarray],
                       x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
        """Shifts the mean by variance * grad log p(y | x_t) (Sohl-Dickstein et al. 2015).

        Used by ancestral (DDPM) sampling. `cond_fn(x, t_original)` returns the
        gradient, shaped like `x`. Returns the new (B, H, W, C) mean.
        """
        gradient = cond_fn(x, self.original_timesteps(t))
        return p_mean_var["mean"].astype(jnp.float32) + (
            p_mean_var["variance"] * gradient.astype(jnp.float32))

    def condition_score(self, cond_fn: ModelFn, p_mean_var: Mapping[str, jnp.ndarray],
                        x: jnp.ndarray, t: jnp.ndarray) -> dict:
        """Shifts the score: eps' = eps - sqrt(1 - abar_t) grad (Song et al. 2020).

        Used by DDIM. The new x_0 prediction is not clamped. Returns a copy of
        `p_mean_var` with "pred_xstart" and "mean" replaced.
        """
        alpha_bar = self.extract("alphas_cumprod", t, x.ndim)
        eps = self.predict_eps_from_xstart(x, t, p_mean_var["pred_xstart"])
        eps = eps - jnp.sqrt(1 - alpha_bar) * cond_fn(x, self.original_timesteps(t))
        out = dict(p_mean_var)
        out["pred_xstart"] = self.predict_xstart_from_eps(x, t, eps)
        out["mean"], _, _ = self.q_posterior_mean_variance(out["pred_xstart"], x, t)
        return out

    # ------------------------------------------------------------------- losses

    def vb_terms_bpd(self, output: jnp.ndarray, x_start: jnp.ndarray, x_t: jnp.ndarray,
                     t: jnp.ndarray, clip_denoised: bool = False) -> jnp.ndarray:
        """One term of the variational bound in bits per dimension, (B,).

        L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0 and
        the discretised decoder NLL -log p(x_0 | x_1) at t = 0 (Ho et al. 2020,
        eq. 5), given the model `output` at (x_t, t).
        """
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance_from_output(output, x_t, t, clip_denoised=clip_denoised)
        kl = losses.normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
        kl = losses.mean_flat(kl) / _LN2
        decoder_nll = -losses.discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])
        decoder_nll = losses.mean_flat(decoder_nll) / _LN2
        return jnp.where(t == 0, decoder_nll, kl)

    def training_losses(self, model_fn: ModelFn, x_start: jnp.ndarray, t: jnp.ndarray,
                        noise: jnp.ndarray) -> dict:
        """Per-example training losses at one step per example.

        Args:
          model_fn: `model_fn(x_t, t_original) -> output` (see p_mean_variance).
          x_start: (B, H, W, C) clean images in [-1, 1].
          t: (B,) int step indices of this process.
          noise: (B, H, W, C) standard normal noise.

        Returns:
          Dict of (B,) float32 arrays. "loss" always; for MSE losses also
          "mse" (mean squared error of the mean output) and, with a learned
          variance, "vb" (bits per dimension; computed on the mean output
          under stop_gradient so that it only trains the variance).
        """
        x_t = self.q_sample(x_start, t, noise)
        output = model_fn(x_t, self.original_timesteps(t)).astype(x_start.dtype)
        if self.loss_type.is_vb:
            loss = self.vb_terms_bpd(output, x_start, x_t, t)
            if self.loss_type == LossType.RESCALED_KL:
                loss = loss * self.num_timesteps
            return {"loss": loss}
        channels = x_start.shape[-1]
        terms = {}
        if self.learns_sigma:
            frozen = jnp.concatenate(
                [jax.lax.stop_gradient(output[..., :channels]), output[..., channels:]], axis=-1)
            terms["vb"] = self.vb_terms_bpd(frozen, x_start, x_t, t)
            if self.loss_type == LossType.RESCALED_MSE:
                terms["vb"] = terms["vb"] * (self.num_timesteps / 1000.0)
        target = {
            ModelMeanType.PREVIOUS_X: lambda: self.q_posterior_mean_variance(x_start, x_t, t)[0],
            ModelMeanType.START_X: lambda: x_start,
            ModelMeanType.EPSILON: lambda: noise,
        }[self.model_mean_type]()
        terms["mse"] = losses.mean_flat((target - output[..., :channels]) ** 2)
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms


def _derived_tables(betas: np.ndarray) -> dict:
    """The float64 coefficient tables of Ho et al. (2020), eqs. 4 and 7."""
    alphas = 1.0 - betas
    abar = np.cumprod(alphas, axis=0)
    abar_prev = np.append(1.0, abar[:-1])
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    return {
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "alphas_cumprod_next": np.append(abar[1:], 0.0),
        "sqrt_alphas_cumprod": np.sqrt(abar),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
        "log_one_minus_alphas_cumprod": np.log(1.0 - abar),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1),
        "posterior_variance": posterior_variance,
        # The posterior variance is 0 at t = 0; its log is clipped by using
        # the t = 1 value there.
        "posterior_log_variance_clipped": np.log(
            np.append(posterior_variance[1], posterior_variance[1:])),
        "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
    }


def _as_enum(enum_type, value, name: str):
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        for member in enum_type:
            if value.lower() in (member.name.lower(), member.value):
                return member
    raise ValueError(f"{name} = {value!r}: must be one of "
                     f"{', '.join(m.name for m in enum_type)}")


def create_gaussian_diffusion(
    steps: int = 1000,
    noise_schedule: str = "squaredcos_cap_v2",
    timestep_respacing: str | int | Sequence[int] | None = None,
    *,
    model_mean_type: ModelMeanType | str = ModelMeanType.EPSILON,
    model_var_type: ModelVarType | str = ModelVarType.LEARNED_RANGE,
    loss_type: LossType | str = LossType.MSE,
) -> GaussianDiffusion:
    """Builds the (respaced) diffusion used by glide-text2im and its training.

    Args:
      steps: diffusion steps the model is trained with (1000 for GLIDE).
      noise_schedule: "squaredcos_cap_v2" (base models) or "linear"
        (upsamplers).
      timestep_respacing: steps to keep, see `schedules.space_timesteps`
        ("100", "fast27", "ddim50", ...; an int n means "n"); None or ""
        keeps all of them.
      model_mean_type, model_var_type, loss_type: enums or their names.

    Returns:
      The diffusion; its `timestep_map` maps each step to its original index.
    """
    if isinstance(timestep_respacing, int) and not isinstance(timestep_respacing, bool):
        timestep_respacing = str(timestep_respacing)
    base_betas = schedules.get_named_beta_schedule(noise_schedule, steps)
    use_timesteps = schedules.space_timesteps(steps, timestep_respacing)
    betas, timestep_map = schedules.respaced_betas(base_betas, use_timesteps)
    return GaussianDiffusion(betas=betas, timestep_map=timestep_map,
                             model_mean_type=model_mean_type, model_var_type=model_var_type,
                             loss_type=loss_type, original_num_steps=steps)


def diffusion_from_config(diffusion_config, timestep_respacing: str | Sequence[int] | None = None,
                          ) -> GaussianDiffusion:
    """Builds the diffusion of a `config.diffusion` section.

    Args:
      diffusion_config: has `steps`, `noise_schedule`, `learn_sigma` and
        `timestep_respacing`, and optionally `model_mean_type`,
        `model_var_type`, `loss_type` (enum names) which override the
        `learn_sigma` default (LEARNED_RANGE if true, else FIXED_LARGE).
      timestep_respacing: overrides the config's respacing (e.g. a sampler's).
    """
    if "steps" not in diffusion_config and "diffusion" in diffusion_config:
        raise KeyError("diffusion_config has no 'steps': pass config.diffusion, not the whole config")
    get = diffusion_config.get
    var_default = ModelVarType.LEARNED_RANGE if get("learn_sigma", True) else ModelVarType.FIXED_LARGE
    respacing = timestep_respacing if timestep_respacing is not None else get("timestep_respacing")
    return create_gaussian_diffusion(
        steps=int(diffusion_config.steps), noise_schedule=diffusion_config.noise_schedule,
        timestep_respacing=respacing,
        model_mean_type=get("model_mean_type", None) or ModelMeanType.EPSILON,
        model_var_type=get("model_var_type", None) or var_default,
        loss_type=get("loss_type", None) or LossType.MSE)
