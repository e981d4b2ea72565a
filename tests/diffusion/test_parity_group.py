"""The `diffusion` group of the parity tool."""

import shutil

import numpy as np

from glide_jax.tools import parity, parity_diffusion

FILES = ("diffusion_meta.json", "diffusion_ops.npz", "diffusion_schedules.npz",
         "training_losses.npz", "training_losses_meta.json", "sampling_meta.json",
         "sample_inpaint.npz", "inpaint_options.json")


def test_all_rows_pass_on_the_fixtures(fixtures_dir):
    lines = []
    status = parity.main([str(fixtures_dir), "--only", "diffusion"], out=lines.append)
    assert status == 0, "\n".join(line for line in lines if "FAIL" in line)
    assert lines[-1].endswith(" 0 failed")
    assert int(lines[-1].split()[0]) > 200  # every schedule table of every respacing


def test_missing_array_or_file_fails_its_rows(fixtures_dir, tmp_path):
    for name in FILES:
        shutil.copy(fixtures_dir / name, tmp_path / name)
    with np.load(tmp_path / "diffusion_ops.npz") as data:
        arrays = {k: data[k] for k in data.files if k not in ("ddim_noise", "q_sample")}
    np.savez(tmp_path / "diffusion_ops.npz", **arrays)
    (tmp_path / "training_losses.npz").unlink()
    rows = {check.name: check for check in parity_diffusion.checks(tmp_path)}
    assert not rows["diffusion_ops:q_sample"].passed
    assert "missing" in rows["diffusion_ops:q_sample"].error
    assert not rows["diffusion_ops:ddim_sample_eta__sample"].passed
    assert "ddim_noise" in rows["diffusion_ops:ddim_sample_eta__sample"].error
    assert rows["diffusion_ops:p_sample__sample"].passed
    assert not rows["training_losses: (files)"].passed
    assert rows["sample_inpaint(replay):final"].passed


def test_per_row_comparison_judges_each_row_by_its_own_scale():
    expected = np.stack([np.full((2, 2), 1e-3), np.full((2, 2), 1e3)])
    off_small_row = expected.copy()
    off_small_row[0, 0, 0] += 1e-6  # 1e-3 of row 0's scale, 1e-9 of the array's
    check = parity_diffusion.compare_per_row("x", off_small_row, expected, 1e-5)
    assert not check.passed and abs(check.rel - 1e-3) < 1e-6
    near_zero = expected.copy()
    near_zero[1, 0, 0] = 1e-4  # a cancellation result inside a large row
    close = near_zero.copy()
    close[1, 0, 0] += 1e-4  # 1e-7 of row 1's scale
    assert parity_diffusion.compare_per_row("x", close, near_zero, 1e-5).passed


def test_group_selection_is_checked(fixtures_dir, capsys):
    import pytest

    for only, message in (("", "names no group"), (",", "names no group"), ("model", "unknown group(s) ['model']")):
        with pytest.raises(SystemExit) as stop:
            parity.main([str(fixtures_dir), "--only", only], out=lambda line: None)
        assert stop.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parity.main([str(fixtures_dir / "base.pt"), "--only", "tokenizer"], out=lambda line: None)
    assert "base.pt is not a directory" in capsys.readouterr().err
    once, twice = [], []
    parity.main([str(fixtures_dir), "--only", "tokenizer"], out=once.append)
    parity.main([str(fixtures_dir), "--only", "tokenizer,tokenizer"], out=twice.append)
    assert twice == once  # a group named twice runs once
