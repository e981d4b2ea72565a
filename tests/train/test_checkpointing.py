"""Checkpointer: a single-process save writes replicated arrays without compiling."""

import logging

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from glide_jax.train import checkpointing


def test_single_process_save_of_replicated_arrays_compiles_nothing(tmp_path, caplog):
    # Orbax's replica-parallel default would compile a slice per array and device here.
    replicated = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec())
    state = {"kernel": jax.device_put(np.ones((8, 4), np.float32), replicated),
             "bias": jax.device_put(np.arange(16, dtype=np.float32), replicated)}
    checkpointer = checkpointing.Checkpointer(tmp_path, keep=1, async_save=False)
    try:
        with jax.log_compiles(True), caplog.at_level(logging.DEBUG):
            checkpointer.save(1, state, {"position": 3})
            checkpointer.wait()
    finally:
        checkpointer.close()
    compiled = [r.getMessage()[:120] for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiled, compiled
    restored, data = checkpointing.Checkpointer(tmp_path, keep=1).restore(1, state)
    np.testing.assert_array_equal(np.asarray(restored["bias"]), np.arange(16))
    assert data == {"position": 3}


def test_resuming_with_other_settings_warns_or_refuses():
    import pytest

    from glide_jax import config as config_lib

    config = config_lib.base_config()
    config.optim.schedule, config.optim.warmup_steps, config.train.num_steps = "cosine", 10, 1000
    stored = checkpointing.config_to_dict(config)
    assert checkpointing.check_resumable(stored, config, 999) == []
    longer = config.copy_and_resolve_references()
    longer.train.num_steps = 3000  # the cosine decay is re-stretched: the rate climbs back up
    longer.diffusion.noise_schedule = "linear"
    warnings = checkpointing.check_resumable(stored, longer, 999)
    assert "config.diffusion.noise_schedule changes from 'squaredcos_cap_v2' to 'linear'" in warnings
    assert any(w.startswith("the learning rate at step 999 jumps from 2.5e-10 to 7.53e-05 (train.num_steps 1000 "
                            "-> 3000)") for w in warnings), warnings
    other_batch = config.copy_and_resolve_references()
    other_batch.data.batch_size = 7
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.batch_size = 7, but the checkpoint's run "
                                                     r"used 64"):
        checkpointing.check_resumable(stored, other_batch, 999)
    other_buffer = config.copy_and_resolve_references()
    other_buffer.data.shuffle_buffer = 7
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.shuffle_buffer = 7"):
        checkpointing.check_resumable(stored, other_buffer, 999)
    other_buffer.train.strict_data_order = False  # warned instead: the batches go on in a new order
    assert checkpointing.check_resumable(stored, other_buffer, 999) == [
        "config.data.shuffle_buffer changes from 10000 to 7: the batches go on in a new order "
        "(train.strict_data_order=False)"]
    other_folder = config.copy_and_resolve_references()
    other_folder.data.folder_path = "/data/other"
    assert any("config.data.folder_path changes" in w for w in checkpointing.check_resumable(stored, other_folder, 999))


def test_resuming_with_another_sentencepiece_model_is_refused(tmp_path):
    import pytest

    from glide_jax import config as config_lib

    trained = tmp_path / "run" / "export" / "tokenizer.model"  # the copy every export keeps
    trained.parent.mkdir(parents=True)
    trained.write_bytes(b"model one")
    config = config_lib.base_config()
    config.text.update(tokenizer="sentencepiece", tokenizer_path=str(tmp_path / "mine.model"))
    (tmp_path / "mine.model").write_bytes(b"model one")
    checkpointing.check_same_tokenizer(tmp_path / "run", config)  # the same content, wherever it lies
    (tmp_path / "mine.model").write_bytes(b"model two, retrained at the same path")
    with pytest.raises(config_lib.ConfigError, match=r"config\.text\.tokenizer_path = '.*mine\.model' is another "
                                                     r"SentencePiece model than the one this run trained with") as err:
        checkpointing.check_same_tokenizer(tmp_path / "run", config)
    assert err.value.key == "text.tokenizer_path"
    checkpointing.check_same_tokenizer(tmp_path / "elsewhere", config)  # no export: nothing to compare
    config.text.tokenizer = "gpt2"
    checkpointing.check_same_tokenizer(tmp_path / "run", config)
