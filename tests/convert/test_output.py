"""What `python -m glide_jax.convert` may replace in --output, and that a failed run replaces nothing."""

import json
import pathlib

import numpy as np
import pytest

from glide_jax import checkpoints
from glide_jax.convert import __main__ as cli
from glide_jax.convert import output as output_lib


def _files(folder):
    return {path.name: path.read_bytes() if path.is_file() else "dir" for path in folder.iterdir()}


def _base(fixtures_dir, state, output, *extra):
    return cli.main([str(state), "--kind", "base", "--options", str(fixtures_dir / "base_options.json"),
                     "--output", str(output), *extra], out=lambda _: None)


def test_failed_forced_conversion_leaves_the_old_checkpoint(fixtures_dir, tmp_path, capsys):
    out_dir = tmp_path / "base"
    assert _base(fixtures_dir, fixtures_dir / "base_state.npz", out_dir) == 0
    before = _files(out_dir)
    capsys.readouterr()  # the test-sized vocabulary's warning
    raw = (fixtures_dir / "base_state.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    state = dict(np.load(fixtures_dir / "base_state.npz"))
    del state["out.2.weight"]
    np.savez(tmp_path / "missing.npz", **state)
    for bad in ("truncated.npz", "missing.npz"):
        assert _base(fixtures_dir, tmp_path / bad, out_dir, "--force") == 2
        assert capsys.readouterr().err.startswith("error: ")
        assert _files(out_dir) == before, bad
    # The same network converted again into its own folder needs no --force.
    assert _base(fixtures_dir, fixtures_dir / "base_state.npz", out_dir) == 0
    assert _files(out_dir) == before


def test_a_training_workdir_is_never_replaced(fixtures_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / checkpoints.CONFIG_FILE).write_text("{}")
    assert _base(fixtures_dir, fixtures_dir / "base_state.npz", workdir, "--force") == 2
    assert "is a training workdir (it holds checkpoints/)" in capsys.readouterr().err
    assert _files(workdir) == {checkpoints.CONFIG_FILE: b"{}", "checkpoints": "dir"}


def test_write_failure_leaves_no_half_written_folder(tmp_path, monkeypatch):
    config = cli.preset_config("clip-image")

    def disk_full(directory, config, params):  # writes config.json, then fails on params.npz
        (pathlib.Path(directory) / checkpoints.CONFIG_FILE).write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output_lib.checkpoints, "save_model", disk_full)
    with pytest.raises(OSError):
        output_lib.write_model(tmp_path / "new", config, {"a": np.zeros(2)})
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / checkpoints.PARAMS_FILE).write_bytes(b"old params")
    with pytest.raises(OSError):
        output_lib.write_model(tmp_path / "old", config, {"a": np.zeros(2)})
    assert _files(tmp_path / "old") == {checkpoints.PARAMS_FILE: b"old params"}


def test_a_killed_conversions_temporary_folder_is_removed_by_the_next(tmp_path):
    output = tmp_path / "model"
    (output / ".convert-k1ll3d").mkdir(parents=True)
    (output / ".convert-k1ll3d" / checkpoints.PARAMS_FILE).write_bytes(b"half of a params.npz")
    (output / ".convert-notes.txt").write_text("a user's file, not a folder")
    output_lib.write_model(output, cli.preset_config("clip-image"), {"a": np.zeros(2)})
    assert sorted(_files(output)) == [".convert-notes.txt", checkpoints.CONFIG_FILE, checkpoints.PARAMS_FILE]


def test_forced_clip_encoder_is_merged_with_the_other(fixtures_dir, tmp_path):
    options = str(fixtures_dir / "clip_options.json")
    out_dir = tmp_path / "clip"
    lines = []
    assert cli.main([str(fixtures_dir / "clip_image_enc_state.npz"), "--kind", "clip-image",
                     "--options", options, "--output", str(out_dir)], out=lines.append) == 0
    assert "the text encoder is still missing" in lines[-1]
    assert f"--kind clip-text --options {options} --output {out_dir}" in lines[-1]
    image = checkpoints.load_model(out_dir)[1]["image_encoder"]
    assert cli.main([str(fixtures_dir / "clip_text_enc_state.npz"), "--kind", "clip-text",
                     "--options", options, "--output", str(out_dir), "--force"], out=lines.append) == 0
    assert lines[-1].endswith("(both CLIP encoders)")
    params = checkpoints.load_model(out_dir)[1]
    assert set(params) == {"image_encoder", "text_encoder", "logit_scale"}
    np.testing.assert_array_equal(params["image_encoder"]["output"]["ln"]["scale"],
                                  image["output"]["ln"]["scale"])


def test_mismatch_hint_blames_the_given_options(fixtures_dir, tmp_path, capsys):
    raw = json.loads((fixtures_dir / "base_options.json").read_text())
    raw["model_and_diffusion_options"]["num_channels"] = 64
    wider = tmp_path / "wider.json"
    wider.write_text(json.dumps(raw))
    assert cli.main([str(fixtures_dir / "base_state.npz"), "--kind", "base", "--options", str(wider),
                     "--output", str(tmp_path / "x")], out=lambda _: None) == 2
    err = capsys.readouterr().err
    assert "shape mismatches" in err and f"the options {wider} do not match the checkpoint" in err
    assert "pass the model's glide-text2im options with --options" not in err
    assert not (tmp_path / "x").exists()
