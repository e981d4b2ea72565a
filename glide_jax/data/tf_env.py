"""Imports TensorFlow for the input pipeline: CPU only, quiet, few threads.

TensorFlow is only ever imported through `import_tensorflow()`, from inside
glide_jax.data, so `import glide_jax` (and the models, diffusion and sampling
packages) never pulls it in. The accelerators belong to JAX: TensorFlow must not
see them, or it would reserve their memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile

# What TensorFlow's C++ runtime prints while it loads and looks for GPUs, before
# its log level applies: seven lines of "no CUDA here" and "oneDNN is on" that
# read like errors on a CPU-only data pipeline, which hides the GPUs anyway.
_START_UP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|\] oneDNN custom operations are on"
    r"|\] Could not find cuda drivers on your machine"
    r"|\] failed call to cuInit"
)


@contextlib.contextmanager
def _filtered_native_stderr():
    """Holds back what is written to file descriptor 2 (C++ included); replays all but start-up noise.

    With TF_CPP_MIN_LOG_LEVEL=0 (all of TensorFlow's logs), nothing is held
    back. (Level 1 does not say the user wants them: `import jax` sets it.)
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not _START_UP_NOISE.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_tensorflow():
    """Returns the `tensorflow` module, configured on first import.

    The first call hides every GPU/TPU from TensorFlow, silences its C++ logs
    below errors where TF_CPP_MIN_LOG_LEVEL is unset (`import jax` sets it to
    1, warnings), drops the start-up lines it prints before any level applies,
    and caps its op-level thread pools at one thread each; the tf.data
    pipelines set their own private pool size (config.data.num_threads).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:
        with _filtered_native_stderr():
            import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    if not getattr(tf, "_glide_jax_configured", False):
        try:
            with _filtered_native_stderr():  # looking for GPUs to hide prints "failed call to cuInit"
                tf.config.set_visible_devices([], "GPU")
                tf.config.set_visible_devices([], "TPU")
        except (RuntimeError, ValueError):
            pass  # already initialised by the caller or no such device type; nothing to hide
        try:
            tf.config.threading.set_inter_op_parallelism_threads(1)
            tf.config.threading.set_intra_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TF's runtime was started elsewhere; its thread pools are fixed
        tf.get_logger().setLevel("ERROR")
        tf._glide_jax_configured = True  # pylint: disable=protected-access
    return tf


def _not_our_custom_configs(record: logging.LogRecord) -> bool:
    # TFDS warns of every BuilderConfig made at run time; glide_jax makes all of
    # its configs so (their names fingerprint the data), so the line says nothing.
    return record.msg != "Using custom data configuration: %s"


def import_tfds():
    """Returns `tensorflow_datasets` after `import_tensorflow()` has configured TF."""
    import_tensorflow()
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    tfds.disable_progress_bar()
    absl_logger = logging.getLogger("absl")
    if _not_our_custom_configs not in absl_logger.filters:
        absl_logger.addFilter(_not_our_custom_configs)
    return tfds


def num_threads(config_value: int | None) -> int:
    """tf.data worker threads: the configured count, else the CPU count up to 16."""
    if config_value is not None:
        return int(config_value)
    return max(1, min(os.cpu_count() or 1, 16))
