"""Building blocks: timestep embedding, norms, head layout, resampling."""

import flax.linen as nn
import numpy as np
import jax
import jax.numpy as jnp
import pytest

from glide_jax.models import layers
from glide_jax.models.unet import resize_bilinear


def test_timestep_embedding_matches_fixture(fixtures_dir):
    io = np.load(fixtures_dir / "base_io.npz")
    ours = layers.timestep_embedding(jnp.asarray(io["timesteps"]), io["timestep_embedding"].shape[1])
    assert ours.dtype == jnp.float32
    # cos first; float32 cos/sin of arguments up to ~1e3 differ by ~1e-6 between libraries.
    np.testing.assert_allclose(ours, io["timestep_embedding"], atol=5e-6)


def test_timestep_embedding_odd_dim_pads_zero():
    emb = layers.timestep_embedding(jnp.array([0, 7]), 5)
    assert emb.shape == (2, 5)
    np.testing.assert_array_equal(emb[:, -1], 0.0)
    np.testing.assert_allclose(emb[0, :2], 1.0)  # cos(0) = 1 comes first


def test_group_norm_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 64)).astype(np.float32) * 3 + 1
    module = layers.GroupNorm32(dtype=jnp.bfloat16)
    params = module.init(jax.random.PRNGKey(0), x)
    ours = module.apply(params, x)
    assert ours.dtype == jnp.bfloat16  # computed in float32, returned in the compute dtype
    ours32 = layers.GroupNorm32().apply(params, x)
    ref = torch.nn.functional.group_norm(torch.from_numpy(x).permute(0, 3, 1, 2), 32, eps=1e-5)
    np.testing.assert_allclose(ours32, ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_group_norm_one_pass_matches_two_pass_and_picks_itself_on_cuda(monkeypatch):
    x = np.random.default_rng(5).normal(size=(3, 8, 8, 64)).astype(np.float32) * 2 - 1
    params = layers.GroupNorm32().init(jax.random.PRNGKey(0), x)
    two_pass = layers.GroupNorm32(one_pass=False).apply(params, x)
    np.testing.assert_allclose(layers.GroupNorm32(one_pass=True).apply(params, x), two_pass, atol=2e-6)
    np.testing.assert_array_equal(layers.GroupNorm32().apply(params, x), two_pass)  # the CPU default
    monkeypatch.setattr(layers, "_on_cuda", lambda: True)
    np.testing.assert_array_equal(layers.GroupNorm32().apply(params, x),
                                  layers.GroupNorm32(one_pass=True).apply(params, x))


def _group_norm_float64(x: np.ndarray, groups: int, eps: float = 1e-5) -> np.ndarray:
    grouped = x.astype(np.float64).reshape(x.shape[0], -1, groups, x.shape[-1] // groups)
    mean, var = grouped.mean(axis=(1, 3), keepdims=True), grouped.var(axis=(1, 3), keepdims=True)
    return ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape)


@pytest.mark.parametrize("one_pass", [False, True])
@pytest.mark.parametrize("offset", [0.0, 100.0, 1e4])
def test_group_norm_statistics_survive_large_means(offset, one_pass):
    # Channels with their own spread and a mean far from zero: the variance
    # must not be lost to cancellation (as an unshifted E[x^2] - E[x]^2 would).
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(2, 8, 8, 64)) * rng.uniform(0.1, 3.0, 64) + rng.normal(size=64) + offset)
    x = x.astype(np.float32)
    module = layers.GroupNorm32(num_groups=8, one_pass=one_pass)
    ours = module.apply(module.init(jax.random.PRNGKey(0), x), x)
    # float32 holds x itself only to |x| * 6e-8; scaled by 1/std, that is the floor.
    floor = 6e-8 * np.abs(x).max() / x.reshape(2, -1, 8, 8).std(axis=(1, 3)).min()
    np.testing.assert_allclose(ours, _group_norm_float64(x, 8), atol=max(2e-5, 8 * floor))


@pytest.mark.parametrize("one_pass", [False, True])
def test_group_norm_gradient_matches_two_pass_formula(one_pass):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(2, 4, 4, 32)) * 2 + 3, jnp.float32)
    weights = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    module = layers.GroupNorm32(num_groups=4, one_pass=one_pass)
    params = jax.tree.map(lambda a: a + 0.3, nn.unbox(module.init(jax.random.PRNGKey(0), x)))

    def two_pass(p, x):
        grouped = x.reshape(2, -1, 4, 8)
        mean = grouped.mean(axis=(1, 3), keepdims=True)
        var = jnp.square(grouped - mean).mean(axis=(1, 3), keepdims=True)
        normed = ((grouped - mean) * jax.lax.rsqrt(var + 1e-5)).reshape(x.shape)
        return (normed * p["params"]["scale"] + p["params"]["bias"]) * weights

    ours = jax.grad(lambda p, x: (module.apply(p, x) * weights).sum(), argnums=(0, 1))(params, x)
    expected = jax.grad(lambda p, x: two_pass(p, x).sum(), argnums=(0, 1))(params, x)
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_split_heads_is_within_each_head():
    # channel = head * parts * d + part * d + i
    heads, parts, d = 2, 3, 4
    projected = jnp.arange(heads * parts * d, dtype=jnp.float32)[None, None]
    q, k, v = layers.split_heads(projected, heads, parts)
    np.testing.assert_array_equal(q[0, 0, 1], [12, 13, 14, 15])
    np.testing.assert_array_equal(k[0, 0, 0], [4, 5, 6, 7])
    np.testing.assert_array_equal(v[0, 0, 1], [20, 21, 22, 23])


def test_attention_matches_explicit_softmax():
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 5 if i == 0 else 7, 3, 8)), jnp.float32) for i in range(3))
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(8)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = np.einsum("bhts,bshd->bthd", weights, v).reshape(2, 5, 24)
    np.testing.assert_allclose(layers.attention(q, k, v, jnp.float32), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(layers.attention(q, k, v, jnp.float32, "xla"),
                                  layers.attention(q, k, v, jnp.float32))


def test_attention_implementation_choice():
    # "auto" takes cuDNN only on a CUDA GPU in 16-bit with head widths it supports.
    on_cuda = layers._on_cuda()
    assert layers.attention_implementation("auto", jnp.bfloat16, 64) == ("cudnn" if on_cuda else "xla")
    assert layers.attention_implementation("auto", jnp.float32, 64) == "xla"
    assert layers.attention_implementation("auto", jnp.bfloat16, 12) == "xla"
    assert layers.attention_implementation("xla", jnp.bfloat16, 64) == "xla"
    with pytest.raises(ValueError, match="attention_impl 'flash'"):
        layers.attention_implementation("flash", jnp.bfloat16, 64)
    with pytest.raises(ValueError, match="attention_impl 'cudnn' cannot run here: .*float32"):
        layers.attention_implementation("cudnn", jnp.float32, 64)


@pytest.mark.parametrize("size_in, size_out", [((4, 4), (16, 16)), ((3, 5), (7, 9)), ((8, 8), (3, 5))])
def test_resize_bilinear_matches_torch(size_in, size_out):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).normal(size=(2, *size_in, 3)).astype(np.float32)
    ours = resize_bilinear(jnp.asarray(x), *size_out)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size_out,
                                          mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(), atol=1e-6)


def test_resample_shapes_and_values():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    up = layers.upsample_nearest(x)
    assert up.shape == (1, 8, 8, 1) and up[0, 1, 1, 0] == x[0, 0, 0, 0]
    down = layers.downsample_avg(x)
    np.testing.assert_allclose(down[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
