"""Beta schedules and respacing against glide-text2im (diffusion_schedules.npz)."""

import json

import numpy as np
import pytest

from glide_jax.diffusion import create_gaussian_diffusion, schedules


@pytest.fixture(scope="module")
def meta(fixtures_dir):
    return json.loads((fixtures_dir / "diffusion_meta.json").read_text())


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    with np.load(fixtures_dir / "diffusion_schedules.npz") as data:
        return {k: data[k] for k in data.files}


def _tag(meta, respacing):
    return meta["respacing_tags"].get(respacing, respacing.replace(",", "-") or "full")


def test_raw_betas_match_reference(meta, reference):
    for name in meta["schedules"]:
        betas = schedules.get_named_beta_schedule(name, meta["steps"])
        assert betas.dtype == np.float64
        np.testing.assert_allclose(betas, reference[f"{name}__raw_betas"], rtol=1e-12, atol=0)


def test_every_respaced_table_matches_reference(meta, reference):
    tables = ("betas",) + tuple(
        n for n in (s.split()[0] for s in meta["schedule_arrays"])
        if n not in ("raw_betas", "use_timesteps", "timestep_map", "betas"))
    assert "posterior_log_variance_clipped" in tables
    for name in meta["schedules"]:
        for respacing in meta["respacings"]:
            key = f"{name}__{_tag(meta, respacing)}__"
            diffusion = create_gaussian_diffusion(meta["steps"], name, respacing)
            np.testing.assert_array_equal(schedules.space_timesteps(meta["steps"], respacing),
                                          reference[key + "use_timesteps"])
            np.testing.assert_array_equal(diffusion.timestep_map, reference[key + "timestep_map"])
            for table in tables:
                got = getattr(diffusion, table)
                assert got.dtype == np.float64, table
                np.testing.assert_allclose(got, reference[key + table], rtol=1e-12, atol=0,
                                           err_msg=key + table)


def test_section_strides_round_half_to_even():
    # "25" is one section of 1000 steps with stride 999 / 24 = 41.625, so
    # position 4 is 166.5, which Python's round() takes to 166, not 167.
    steps = schedules.space_timesteps(1000, "25")
    assert steps[4] == 166
    assert steps[12] == 500  # 12 * 41.625 = 499.5 -> 500 (even)
    assert len(steps) == 25 and steps[0] == 0 and steps[-1] == 999


def test_sections_ddim_and_fast27():
    assert schedules.space_timesteps(300, "10,15,20")[:3] == (0, 11, 22)
    assert len(schedules.space_timesteps(300, (10, 15, 20))) == 45
    assert schedules.space_timesteps(1000, "ddim25") == tuple(range(0, 1000, 40))
    fast = schedules.space_timesteps(1000, "fast27")
    assert len(fast) == 27 and 999 not in fast and fast[-1] == 997
    assert schedules.space_timesteps(10, None) == tuple(range(10))
    assert schedules.space_timesteps(10, "") == tuple(range(10))


def test_respaced_betas_keep_alphas_cumprod():
    full = create_gaussian_diffusion(1000, "linear")
    spaced = create_gaussian_diffusion(1000, "linear", "50")
    kept = np.asarray(spaced.timestep_map)
    np.testing.assert_allclose(spaced.alphas_cumprod, full.alphas_cumprod[kept], rtol=1e-12)
    assert spaced.num_timesteps == 50 and spaced.original_num_steps == 1000


@pytest.mark.parametrize("spec, message", [
    ("ddim600", "no integer stride"), ("2000", "cannot take"), ("1,x", "not an integer"),
    ("0", "keeps no step"), ("0,0", "keeps no step")])
def test_bad_respacing_is_named(spec, message):
    with pytest.raises(ValueError, match=message):
        schedules.space_timesteps(1000, spec)


def test_a_process_of_one_step_is_refused():
    # Step 0's clipped posterior log-variance is step 1's, as in the reference: one step has none.
    with pytest.raises(ValueError, match="needs at least 2 steps, got 1"):
        create_gaussian_diffusion(1000, "squaredcos_cap_v2", "1")
    assert create_gaussian_diffusion(1000, "squaredcos_cap_v2", "2").num_timesteps == 2


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="cosine"):
        schedules.get_named_beta_schedule("cosine", 10)
