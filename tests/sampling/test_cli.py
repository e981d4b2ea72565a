"""sample.py end to end: PNGs, grid, settings.json, inpainting, errors, fixture checkpoints."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from glide_jax.convert.__main__ import main as convert_main
from glide_jax.sampling import SamplingError, cli, load_pipeline
from tests.sampling.conftest import UP_SIZE, save_tiny, tiny_unet_config

REPO = pathlib.Path(__file__).resolve().parents[2]
FAST = ["--steps", "4", "--upsample-steps", "ddim4", "--no-progress"]


def _read(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_cascade_writes_pngs_grid_and_settings(tiny_checkpoints, tmp_path):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("a red circle\n\na blue square\ntwo green stars\n")
    out = tmp_path / "out"
    status = cli.main(["--base", str(tiny_checkpoints["base"]), "--upsample", str(tiny_checkpoints["upsample"]),
                       "--prompts-file", str(prompts_file), "--out", str(out), "--seed", "11",
                       "--guidance-scale", "2.5", *FAST])
    assert status == 0
    files = sorted(p.name for p in out.glob("0*.png"))
    assert files == ["0000.png", "0001.png", "0002.png"]
    for name in files:
        assert _read(out / name).shape == (32, 32, 3)
    assert _read(out / "grid.png").shape == (2 * 34 + 2, 2 * 34 + 2, 3)  # 2 x 2 tiles, 2 px padding
    settings = json.loads((out / "settings.json").read_text())
    assert settings["prompts"] == ["a red circle", "a blue square", "two green stars"]
    assert settings["sample"]["seed"] == 11 and settings["sample"]["guidance_scale"] == 2.5
    assert settings["sample"]["steps"] == "4" and settings["sample"]["upsample_temp"] == 0.997
    assert settings["checkpoints"]["upsample"] == str(pathlib.Path(tiny_checkpoints["upsample"]).resolve())
    assert settings["mode"] == "text2im" and settings["files"] == files
    # Sampling again into the same folder leaves one run's images, not the old ones beside them.
    assert cli.main(["--base", str(tiny_checkpoints["base"]), "--prompt", "one", "--out", str(out), *FAST]) == 0
    assert sorted(p.name for p in out.glob("0*.png")) == ["0000.png"]


def test_inpainting_keeps_the_white_region(tiny_checkpoints, tmp_path):
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(source).save(tmp_path / "image.png")
    mask = np.zeros((24, 24), np.uint8)
    mask[:12] = 255  # keep the top half, generate the bottom half
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    status = cli.main(["--base", str(tiny_checkpoints["inpaint"]),
                       "--upsample", str(tiny_checkpoints["upsample_inpaint"]),
                       "--prompt", "a red circle", "a cat", "--image", str(tmp_path / "image.png"),
                       "--mask", str(tmp_path / "mask.png"), "--out", str(out), *FAST])
    assert status == 0
    result = _read(out / "0001.png").astype(int)
    expected = np.asarray(Image.fromarray(source).resize((32, 32), Image.BICUBIC)).astype(int)
    # The last step's x_0 has the known pixels pasted in, at both resolutions.
    assert np.abs(result[:16] - expected[:16]).max() <= 1
    assert np.abs(result[16:] - expected[16:]).mean() > 10
    settings = json.loads((out / "settings.json").read_text())
    assert settings["mode"] == "inpaint"
    # glide-text2im's inpaint notebook: guidance 5, a DDPM upsampler.
    assert settings["sample"]["guidance_scale"] == 5.0 and settings["sample"]["upsample_sampler"] == "ddpm"


def test_num_samples_gives_each_prompt_a_grid_row(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["--base", str(tiny_checkpoints["base"]), "--prompt", "a red circle", "a cat",
                     "--num-samples", "3", "--batch-size", "4", "--out", str(out), *FAST]) == 0
    files = sorted(p.name for p in out.glob("0*.png"))
    assert files == [f"{i:04d}.png" for i in range(6)]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["prompts"] == ["a red circle"] * 3 + ["a cat"] * 3 and settings["num_samples"] == 3
    assert settings["grid_cols"] == 3 and settings["sample"]["guidance_scale"] == 3.0
    assert _read(out / "grid.png").shape == (2 * 18 + 2, 3 * 18 + 2, 3)  # 2 rows of 3 16 px tiles
    images = [_read(out / name) for name in files]
    assert not np.array_equal(images[0], images[1])  # the samples of a prompt differ
    assert cli.main(["--base", str(tiny_checkpoints["base"]), "--prompt", "x", "--num-samples", "0",
                     "--out", str(tmp_path / "none"), *FAST]) == 2


def test_upsamplers_chain_to_higher_resolutions(tiny_checkpoints, tmp_path):
    second = tiny_unet_config("upsample", 2 * UP_SIZE)
    second.data.low_res_size = UP_SIZE  # trained on the first upsampler's output: 16 -> 32 -> 64
    second_path = save_tiny(tmp_path / "up64", second, seed=5)
    first_path = tiny_checkpoints["upsample"]
    out = tmp_path / "out"
    assert cli.main(["--base", str(tiny_checkpoints["base"]), "--upsample", str(first_path), str(second_path),
                     "--prompt", "a red circle", "a cat", "--out", str(out), *FAST]) == 0
    assert _read(out / "0001.png").shape == (64, 64, 3)
    # The flag given twice chains the same way (argparse would otherwise keep only the last).
    again = tmp_path / "again"
    assert cli.main(["--base", str(tiny_checkpoints["base"]), "--upsample", str(first_path), "--upsample",
                     str(second_path), "--prompt", "a red circle", "a cat", "--out", str(again), *FAST]) == 0
    assert np.array_equal(_read(again / "0001.png"), _read(out / "0001.png"))
    settings = json.loads((out / "settings.json").read_text())
    assert settings["checkpoints"]["upsample"] == str(pathlib.Path(first_path).resolve())
    assert settings["checkpoints"]["upsample_2"] == str(second_path.resolve()) and settings["image_size"] == 64
    with pytest.raises(SamplingError, match=r"--upsample checkpoint .*up64 was trained to upsample 32 px images "
                                            r"\(data.low_res_size, .*\) but the base model makes 16 px"):
        load_pipeline(tiny_checkpoints["base"], upsample=[second_path, first_path])
    with pytest.raises(SamplingError, match=r"\(upsampler 2\) was trained to upsample 16 px images .* but the "
                                            r"upsampler before it makes 32 px"):
        load_pipeline(tiny_checkpoints["base"], upsample=[first_path, first_path])
    # Models loaded one by one are numbered by their place in the chain: each stage compiles its own program.
    from glide_jax.sampling import Pipeline, load_model

    by_hand = Pipeline(load_model(tiny_checkpoints["base"], "base"),
                       [load_model(first_path, "upsample"), load_model(second_path, "upsample")])
    assert [model.name for model in by_hand.upsamplers] == ["upsample", "upsample_2"] and by_hand.image_size == 64
    with pytest.raises(SamplingError, match="an inpainting cascade takes one upsampler, not 2"):
        load_pipeline(tiny_checkpoints["inpaint"], upsample=[tiny_checkpoints["upsample_inpaint"]] * 2)


def _sample_py(*args, timeout=600):
    return subprocess.run([sys.executable, str(REPO / "sample.py"), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_bad_input_is_one_line_without_traceback(tiny_checkpoints, tmp_path):
    (tmp_path / "mask.png").write_bytes(b"garbage")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "image.png")
    (tmp_path / "a_file").write_text("not a directory")
    base = ["--base", tiny_checkpoints["base"]]
    cases = [
        (["--base", tmp_path / "missing"], "--base checkpoint", "missing does not exist"),
        (["--base", tiny_checkpoints["upsample"]], "holds a model of kind 'upsample'", "--base needs"),
        (["--base", tiny_checkpoints["inpaint"], "--image", tmp_path / "image.png", "--mask",
          tmp_path / "mask.png"], "mask", "is not a readable image"),
        ([*base, "--out", tmp_path / "a_file"], "--out", "a_file: cannot create the output directory"),
        ([*base, "--grid-cols", "-1"], "--grid-cols -1: must be at least 1"),
        ([*base, "--guidance-scale", "nan"], "error: --guidance-scale nan: must be a finite"),
        ([*base, "--batch-size", "0"], "error: --batch-size 0: must be a positive integer"),
        ([*base, "--steps", "0"], "keeps no step"),
        ([*base, "--steps", "1"], "sample setting 'steps' = '1' (sample.py --steps)", "needs at least 2 steps"),
    ]
    for args, *fragments in cases:
        result = _sample_py("--prompt", "x", "--out", tmp_path / "out", *FAST, *args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr
        assert all(f in lines[-1] for f in fragments), lines[-1]


@pytest.fixture(scope="module")
def fixture_base(fixtures_dir, tmp_path_factory):
    """base.pt of the reference fixtures, converted with the user-facing converter."""
    out = tmp_path_factory.mktemp("fixture_base") / "base"
    assert convert_main([str(fixtures_dir / "base.pt"), "--kind", "base", "--options",
                         str(fixtures_dir / "base_options.json"), "--output", str(out)], out=print) == 0
    return out


def test_sample_py_on_checkpoints_converted_from_the_fixtures(fixture_base, tmp_path):
    from glide_jax.text import train_sentencepiece

    # The fixture model has a 512-row token embedding: GPT-2 ids do not fit.
    result = _sample_py("--base", fixture_base, "--prompt", "x", "--out", tmp_path / "bad", *FAST)
    assert result.returncode == 2 and "has 512 rows" in result.stderr
    # With a tokenizer of at most 512 ids in its config it samples.
    sp_model = train_sentencepiece(["a red circle", "a blue square", "two green stars"] * 5, 40,
                                   tmp_path / "tok.model", model_type="char")
    config_path = fixture_base / "config.json"
    config = json.loads(config_path.read_text())
    config["text"].update(tokenizer="sentencepiece", tokenizer_path=str(sp_model))
    config_path.write_text(json.dumps(config))
    result = _sample_py("--base", fixture_base, "--prompt", "a red circle", "a blue square",
                        "--out", tmp_path / "out", "--batch-size", "1", *FAST)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["0000.png", "0001.png", "grid.png"]
    assert _read(tmp_path / "out" / "0000.png").shape == (32, 32, 3)


def test_out_folders_with_other_images_are_refused_not_overwritten(tiny_checkpoints, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(out / "2024.png")
    (out / "notes.txt").write_text("mine")
    args = ["--base", str(tiny_checkpoints["base"]), "--prompt", "one", "--out", str(out), *FAST]
    assert cli.main(args) == 2
    assert sorted(p.name for p in out.iterdir()) == ["2024.png", "notes.txt"]
    # A run that fails before writing anything leaves no folder it created.
    fresh = tmp_path / "fresh"
    assert cli.main(["--base", str(tmp_path / "missing"), "--prompt", "x", "--out", str(fresh), *FAST]) == 2
    assert not fresh.exists()


def test_a_warning_during_sampling_is_printed_above_the_bar(capsys):
    from tqdm import tqdm

    bar = tqdm(total=2, desc="sampling", unit="batch")
    cli._one_line_warning("prompt 3 was cut", UserWarning, "x.py", 1)
    bar.close()
    err = capsys.readouterr().err
    assert "warning: prompt 3 was cut\n" in err and "]warning" not in err, err


def test_settings_record_what_ran_and_unused_flags_warn(tiny_checkpoints, tmp_path, capsys):
    prompts_file = tmp_path / "prompts.txt"
    long = " ".join(["circle"] * 40)  # more tokens than the tiny model's text context
    # BOM and CRLF, as Windows editors save; U+2028 is a character of a prompt, not a line break.
    prompts_file.write_bytes(f"\ufeffa red circle\u2028on a mat\r\n{long}\r\n".encode("utf-8"))
    out = tmp_path / "out"
    assert cli.main(["--base", str(tiny_checkpoints["base"]), "--prompts-file", str(prompts_file),
                     "--out", str(out), "--upsample-temp", "0.5", "--grid-cols", "5", *FAST]) == 0
    assert "warning: --upsample-temp (no --upsample) has no effect" in capsys.readouterr().err
    settings = json.loads((out / "settings.json").read_text())
    assert settings["prompts"] == ["a red circle\u2028on a mat", long]
    assert settings["guidance"] == "classifier-free" and settings["sample"]["clip_guidance_scale"] is None
    # The columns the grid has: --grid-cols 5 is capped at the 2 images.
    assert settings["sample"]["upsample_temp"] is None and settings["grid_cols"] == 2
    # What the user was warned about stays with the images.
    assert any("--upsample-temp" in w for w in settings["warnings"])
    assert any("has 40 tokens; the base model keeps the first" in w for w in settings["warnings"])
    assert settings["dtypes"] == {"base": "float32"} and settings["backend"] == "cpu"
    assert settings["checkpoint_files"]["base"]["params_bytes"] > 0
    assert settings["checkpoint_origins"] == {"base": None}  # saved by hand, not exported by training
    assert _read(out / "grid.png").shape == (20, 38, 3)  # two 16 px tiles: --grid-cols is capped at the count


def _stop_after_one_batch(monkeypatch, stop):
    from glide_jax.sampling import pipeline as pipeline_lib

    real = pipeline_lib.Pipeline.iter_batches

    def stopped_after_one_batch(self, *args, **kwargs):
        batches = real(self, *args, **kwargs)
        yield next(batches)
        stop()

    monkeypatch.setattr(pipeline_lib.Pipeline, "iter_batches", stopped_after_one_batch)


def _raise(exc):
    raise exc


@pytest.mark.parametrize("stop, status", [
    (lambda: _raise(KeyboardInterrupt), 130),  # Ctrl-C
    (lambda: os.kill(os.getpid(), signal.SIGTERM), 143),  # a scheduler's SIGTERM, through main's handler
])
def test_a_stop_keeps_the_finished_batches(tiny_checkpoints, tmp_path, monkeypatch, stop, status):
    _stop_after_one_batch(monkeypatch, stop)
    out = tmp_path / "out"
    assert cli.main(["--base", str(tiny_checkpoints["base"]), "--prompt", "a", "b", "c", "--batch-size", "2",
                     "--out", str(out), *FAST]) == status
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # main puts the old handler back
    settings = json.loads((out / "settings.json").read_text())
    assert settings["interrupted"] is True and settings["files"] == ["0000.png", "0001.png"]
    assert settings["prompts"] == ["a", "b"] and settings["prompts_not_sampled"] == ["c"]
    assert (out / "grid.png").is_file() and not (out / "0002.png").exists() and "error" not in settings


def test_an_error_after_some_batches_keeps_them_and_says_why(tiny_checkpoints, tmp_path, monkeypatch):
    _stop_after_one_batch(monkeypatch, lambda: _raise(RuntimeError("RESOURCE_EXHAUSTED: out of memory")))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
        cli.main(["--base", str(tiny_checkpoints["base"]), "--prompt", "a", "b", "c", "--batch-size", "2",
                  "--out", str(out), *FAST])
    settings = json.loads((out / "settings.json").read_text())
    assert settings["files"] == ["0000.png", "0001.png"] and settings["prompts_not_sampled"] == ["c"]
    assert settings["error"] == "RuntimeError: RESOURCE_EXHAUSTED: out of memory"
    # The folder is this tool's, so the next run into it is not refused.
    monkeypatch.undo()
    assert cli.main(["--base", str(tiny_checkpoints["base"]), "--prompt", "a", "--out", str(out), *FAST]) == 0


def test_a_stop_before_any_image_leaves_no_folder(tiny_checkpoints, tmp_path, monkeypatch):
    from glide_jax.sampling import pipeline as pipeline_lib

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt
        yield  # a generator, as the real one

    monkeypatch.setattr(pipeline_lib.Pipeline, "iter_batches", interrupted)
    out = tmp_path / "new"
    assert cli.main(["--base", str(tiny_checkpoints["base"]), "--prompt", "a", "--out", str(out), *FAST]) == 130
    assert not out.exists()
