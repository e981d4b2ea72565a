"""The batching and sharding plan (glide_jax.sampling.batching)."""

import jax
import pytest

from glide_jax.sampling import batching


def test_padded_batch_size():
    assert batching.padded_batch_size(3, 8) == 8
    assert batching.padded_batch_size(8, 8) == 8
    assert batching.padded_batch_size(9, 8) == 16
    assert batching.padded_batch_size(5, 1) == 5
    with pytest.raises(ValueError):
        batching.padded_batch_size(0, 8)


def test_plan_pads_every_batch_to_one_size():
    prompts = [f"p{i}" for i in range(7)]
    plan = batching.plan_batches(prompts, batch_size=3, num_devices=2)
    assert [b.num_real for b in plan] == [3, 3, 1]
    assert {len(b.prompts) for b in plan} == {4}
    assert [b.index for b in plan] == [0, 1, 2]
    assert plan[2].prompts == ("p6", "", "", "")
    assert [p for b in plan for p in b.prompts[:b.num_real]] == prompts


def test_plan_does_not_pad_beyond_the_prompts():
    plan = batching.plan_batches(["one"], batch_size=64, num_devices=8)
    assert len(plan) == 1 and len(plan[0].prompts) == 8


def test_mesh_and_shardings():
    mesh = batching.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.devices.size == jax.local_device_count()
    x = jax.device_put(jax.numpy.zeros((16, 2)), batching.batch_sharding(mesh))
    assert len(x.sharding.device_set) == jax.local_device_count()
    assert batching.replicated(mesh).is_fully_replicated
