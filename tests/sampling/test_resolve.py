"""Which directory `--base` names (an export, or a training workdir's export/), and what travels with it."""

import pathlib
import shutil

import pytest

from glide_jax import checkpoints
from glide_jax.sampling import pipeline
from glide_jax.text import train_sentencepiece
from tests.sampling.conftest import save_tiny, tiny_unet_config


def _touch_export(directory):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / checkpoints.CONFIG_FILE).write_text("{}")
    (directory / checkpoints.PARAMS_FILE).write_bytes(b"")


def test_training_workdir_resolves_to_its_export(tmp_path):
    workdir = tmp_path / "run"
    _touch_export(workdir / checkpoints.EXPORT_DIR)
    (workdir / checkpoints.CONFIG_FILE).write_text("{}")  # the run's own config, not an export
    assert checkpoints.resolve_export(workdir) == workdir / checkpoints.EXPORT_DIR


def test_export_directory_resolves_to_itself(tmp_path):
    _touch_export(tmp_path / "ckpt")
    assert checkpoints.resolve_export(tmp_path / "ckpt") == tmp_path / "ckpt"


def test_missing_directory_is_left_for_the_loader_to_name(tmp_path):
    assert checkpoints.resolve_export(tmp_path / "absent") == tmp_path / "absent"


def test_a_sentencepiece_tokenizer_travels_with_its_export(tmp_path, monkeypatch):
    # Training ran in its own working directory with a relative tokenizer path.
    workdir = tmp_path / "training"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    train_sentencepiece(["a red circle", "a blue square", "two green stars"] * 5, 40, "tok.model",
                        model_type="char")
    config = tiny_unet_config("base", 16)
    config.text.update(tokenizer="sentencepiece", tokenizer_path="tok.model", n_vocab=40)
    export = save_tiny(workdir / "export", config)
    assert config.text.tokenizer_path == "tok.model"  # the caller's config is not changed
    assert checkpoints.load_config(export).text.tokenizer_path == str(export / checkpoints.TOKENIZER_FILE)
    saved = (export / checkpoints.CONFIG_FILE).read_text()
    assert f'"tokenizer_path": "{checkpoints.TOKENIZER_FILE}"' in saved

    # Moved to another machine and sampled from elsewhere: the copy is found.
    moved = shutil.move(str(export), str(tmp_path / "moved"))
    shutil.rmtree(workdir)
    monkeypatch.chdir(tmp_path)
    loaded = pipeline.load_model(moved, "base", pipeline.batching.make_mesh())
    assert loaded.tokenizer.encode("a red circle") and loaded.tokenizer.n_vocab <= 40

    # Re-saving a loaded checkpoint (convert, fine-tuning) keeps the copy.
    again, params = checkpoints.load_model(moved)
    resaved = checkpoints.save_model(tmp_path / "again", again, params)
    assert (resaved / checkpoints.TOKENIZER_FILE).read_bytes() == (tmp_path / "moved" /
                                                                   checkpoints.TOKENIZER_FILE).read_bytes()
    assert checkpoints.save_model(tmp_path / "moved", again, params)  # in place: the file is its own source

    # A tokenizer file that is gone at export time: the path is kept, with a warning.
    config.text.tokenizer_path = str(tmp_path / "gone.model")
    with pytest.warns(UserWarning, match="holds no copy of its tokenizer"):
        save_tiny(tmp_path / "orphan", config)
    assert not (tmp_path / "orphan" / checkpoints.TOKENIZER_FILE).exists()
    assert checkpoints.load_config(tmp_path / "orphan").text.tokenizer_path == str(tmp_path / "gone.model")


def test_notebook_mistakes_get_a_clear_answer(tiny_checkpoints, tmp_path):
    import jax.numpy as jnp

    from glide_jax.text import GPT2Tokenizer

    export = pathlib.Path(tiny_checkpoints["base"])
    with pytest.raises(checkpoints.CheckpointError, match=r"params.npz is a file: pass the exported checkpoint's "
                                                          r"folder"):
        checkpoints.load_model(export / checkpoints.PARAMS_FILE)
    workdir = tmp_path / "run"
    shutil.copytree(export, workdir / checkpoints.EXPORT_DIR)
    (workdir / "checkpoints" / "300").mkdir(parents=True)
    config, _ = checkpoints.load_model(workdir)  # a training workdir: its export
    assert config.model.kind == "base"
    shutil.rmtree(workdir / checkpoints.EXPORT_DIR)
    with pytest.raises(checkpoints.CheckpointError, match="is a training workdir with no export/ yet"):
        checkpoints.load_model(workdir)
    loaded = pipeline.load_model(export, "base", dtype=jnp.bfloat16)  # a dtype object, the default mesh
    assert loaded.config.model.dtype == "bfloat16"
    with pytest.raises(TypeError, match=r"text must be a string, got list \(tokenize a list with tokenize_batch\)"):
        GPT2Tokenizer.default().encode(["a", "b"])
