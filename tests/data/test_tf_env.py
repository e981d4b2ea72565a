"""TensorFlow is imported for the data pipeline only, CPU-only and quiet."""

import logging
import os
import subprocess
import sys

from glide_jax.data import tf_env

NOISE = ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers", "cuInit")


def test_tensorflow_start_up_noise_is_dropped_and_other_output_kept(capfd, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with tf_env._filtered_native_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"E0000 00:00:1.0  1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: (303)\n")
        os.write(2, b"F0000 a real fatal message from C++\n")
        print("a Python warning", file=sys.stderr)
    # (Under pytest sys.stderr is not descriptor 2, so the two may come in either order.)
    assert sorted(capfd.readouterr().err.splitlines()) == ["F0000 a real fatal message from C++", "a Python warning"]
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # asked for TensorFlow's logs: all of them
    with tf_env._filtered_native_stderr():
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\n")
    assert "oneDNN" in capfd.readouterr().err


def test_importing_tensorflow_prints_nothing():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    # As in train.py, JAX comes first (it sets TF_CPP_MIN_LOG_LEVEL=1 for TensorFlow).
    code = "import jax; jax.devices(); from glide_jax.data import tf_env; tf_env.import_tfds(); print('imported')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0 and result.stdout == "imported\n", result.stderr
    assert not [line for line in result.stderr.splitlines() if any(noise in line for noise in NOISE)], result.stderr


def test_tfds_notice_of_our_run_time_configs_is_not_logged(tiny_config, caplog):
    from glide_jax.data import sources

    with caplog.at_level(logging.INFO):
        sources.make_builder(tiny_config().data)
    assert not [rec for rec in caplog.records if "custom data configuration" in rec.getMessage()]
