"""precast: kernels the model only reads as bf16 are cast once, and nothing changes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.models import factory
from glide_jax.sampling.precast import precast
from tests.models.test_unet import tiny_config


class _Mixed(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8, dtype=jnp.bfloat16, name="narrow")(x)  # kernel and bias cast to bf16
        h = nn.remat(nn.Dense)(8, dtype=jnp.bfloat16, name="narrow_remat")(h)  # inside a remat call
        scale = self.param("scale", nn.initializers.ones, (8,))  # used in float32
        return nn.Dense(4, dtype=jnp.float32, name="wide")(h.astype(jnp.float32) * scale)


def test_only_leaves_always_cast_to_bf16_are_cast():
    model = _Mixed()
    x = jnp.ones((2, 3))
    params = model.init(jax.random.PRNGKey(0), x)
    cast = precast(model.apply, params, x)
    dtypes = {jax.tree_util.keystr(p): leaf.dtype for p, leaf in jax.tree_util.tree_leaves_with_path(cast)}
    assert dtypes == {
        "['params']['narrow']['kernel']": jnp.bfloat16, "['params']['narrow']['bias']": jnp.bfloat16,
        "['params']['narrow_remat']['kernel']": jnp.bfloat16, "['params']['narrow_remat']['bias']": jnp.bfloat16,
        "['params']['scale']": jnp.float32,
        "['params']['wide']['kernel']": jnp.float32, "['params']['wide']['bias']": jnp.float32,
    }
    np.testing.assert_array_equal(model.apply(cast, x), model.apply(params, x))


def test_float32_model_is_left_alone():
    model = nn.Dense(4)
    x = jnp.ones((2, 3))
    params = model.init(jax.random.PRNGKey(0), x)
    cast = precast(model.apply, params, x)
    assert all(a is b for a, b in zip(jax.tree_util.tree_leaves(cast), jax.tree_util.tree_leaves(params)))


def test_bf16_unet_keeps_float32_layers_and_its_output():
    config = tiny_config(**{"model.dtype": "bfloat16"})
    model = factory.create_model(config)
    inputs = factory.example_inputs(config, 2)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), **inputs))
    text_emb = model.apply(params, inputs["tokens"], inputs["mask"], method="encode_text")

    def unet(v, x, t):
        return model.apply(v, x, t, text_emb=text_emb)

    x = jax.random.normal(jax.random.PRNGKey(1), inputs["x"].shape)
    t = jnp.array([3, 700])
    cast = precast(unet, params, x, t)
    dtypes = {jax.tree_util.keystr(p): leaf.dtype for p, leaf in jax.tree_util.tree_leaves_with_path(cast)}
    # Convolutions and attention projections run in bf16; the time embedding,
    # the output head and every GroupNorm stay float32, as the model computes them.
    assert dtypes["['params']['input_blocks_0_0']['kernel']"] == jnp.bfloat16
    assert dtypes["['params']['time_embed_0']['kernel']"] == jnp.float32
    assert dtypes["['params']['out_conv']['kernel']"] == jnp.float32
    assert all(d == jnp.float32 for k, d in dtypes.items() if "norm" in k)
    # The text encoder does not run in a U-Net call: nothing of it is cast.
    assert all(d == jnp.float32 for k, d in dtypes.items() if "text_encoder" in k)
    ours, reference = jax.jit(unet)(cast, x, t), jax.jit(unet)(params, x, t)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))
