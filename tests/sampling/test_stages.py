"""The reverse loop of a sampling stage does no work on the caption."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from glide_jax.diffusion import create_gaussian_diffusion
from glide_jax.models import factory
from glide_jax.sampling import stages
from tests.models.test_unet import tiny_config


def _sub_jaxprs(eqn):
    """The jaxprs an equation calls (loop bodies, pjit/remat/custom-vjp calls)."""
    subs = [v.jaxpr if isinstance(v, jex_core.ClosedJaxpr) else v for v in eqn.params.values()]
    return [sub for sub in subs if isinstance(sub, jex_core.Jaxpr)]


def _loop_bodies(jaxpr):
    """The jaxprs of every while/scan loop in `jaxpr`, nested calls included."""
    for eqn in jaxpr.eqns:
        for sub in _sub_jaxprs(eqn):
            yield from ([sub] if eqn.primitive.name in ("while", "scan") else _loop_bodies(sub))


def _dot_operand_shapes(jaxpr):
    """The shapes of every dot_general's first operand in `jaxpr`, recursively."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield tuple(eqn.invars[0].aval.shape)
        for sub in _sub_jaxprs(eqn):
            yield from _dot_operand_shapes(sub)


def _caption_dots_in_loops(fn, *args, caption_shape) -> int:
    """How many matmuls inside `fn`'s loops take a (rows, text_ctx, xf_width) input."""
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    bodies = list(_loop_bodies(jaxpr))
    assert bodies, "no loop found"
    return sum(shape == caption_shape for body in bodies for shape in _dot_operand_shapes(body))


def test_the_reverse_loop_does_not_project_the_caption():
    config = tiny_config(**{"model.dtype": "bfloat16"})
    model = factory.create_model(config)
    inputs = factory.example_inputs(config, 2)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), **inputs))
    tokens, mask = (jnp.concatenate([inputs[k]] * 2) for k in ("tokens", "mask"))  # cond + uncond rows
    caption = (tokens.shape[0], config.text.text_ctx, config.text.xf_width)
    diffusion = create_gaussian_diffusion(1000, "squaredcos_cap_v2", "ddim4")

    def sample(p):
        return stages.sample_base(model, p, diffusion, "ddim", tokens=tokens, mask=mask, guidance_scale=3.0,
                                  key=jax.random.PRNGKey(1))

    assert _caption_dots_in_loops(sample, params, caption_shape=caption) == 0

    # The check sees caption work where there is some: a loop that runs the whole
    # model, text transformer and attention blocks' text keys/values, every step.
    def naive(p):
        x = jnp.zeros((tokens.shape[0],) + inputs["x"].shape[1:])
        step = lambda i, x: x + model.apply(p, x, jnp.full((x.shape[0],), i), tokens, mask)[..., :3]  # noqa: E731
        return jax.lax.fori_loop(0, 2, step, x)

    attention_blocks = sum("qkv" in layer for layer in params["params"].values())
    assert _caption_dots_in_loops(naive, params, caption_shape=caption) > attention_blocks > 0
