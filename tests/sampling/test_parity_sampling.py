"""The `sampling` parity group on the two 16 px trajectories (the full group runs in `make parity`)."""

import pytest

from glide_jax.tools import parity_sampling


@pytest.mark.parametrize("case", ["sample_inpaint", "sample_upsample_ddim"])
def test_reference_trajectory_replays(fixtures_dir, case):
    rows = list(parity_sampling.checks(fixtures_dir, cases=(case,)))
    assert len(rows) >= 4
    bad = [f"{r.name}: max_abs {r.max_abs} > {r.tol} {r.error or ''}" for r in rows if not r.passed]
    assert not bad, bad
