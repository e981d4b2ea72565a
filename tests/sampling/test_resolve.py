"""Which directory `--base` names: an export, or a training workdir's export/."""

from glide_jax import checkpoints
from glide_jax.sampling import pipeline


def _touch_export(directory):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / checkpoints.CONFIG_FILE).write_text("{}")
    (directory / checkpoints.PARAMS_FILE).write_bytes(b"")


def test_training_workdir_resolves_to_its_export(tmp_path):
    workdir = tmp_path / "run"
    _touch_export(workdir / pipeline.TRAIN_EXPORT_DIR)
    (workdir / checkpoints.CONFIG_FILE).write_text("{}")  # the run's own config, not an export
    assert pipeline.resolve_checkpoint(workdir) == workdir / pipeline.TRAIN_EXPORT_DIR


def test_export_directory_resolves_to_itself(tmp_path):
    _touch_export(tmp_path / "ckpt")
    assert pipeline.resolve_checkpoint(tmp_path / "ckpt") == tmp_path / "ckpt"


def test_missing_directory_is_left_for_the_loader_to_name(tmp_path):
    assert pipeline.resolve_checkpoint(tmp_path / "absent") == tmp_path / "absent"
