"""Imports TensorFlow for the input pipeline: CPU only, quiet, few threads.

TensorFlow is only ever imported through `import_tensorflow()`, from inside
glide_jax.data, so `import glide_jax` (and the models, diffusion and sampling
packages) never pulls it in. The accelerators belong to JAX: TensorFlow must not
see them, or it would reserve their memory.
"""

from __future__ import annotations

import os


def import_tensorflow():
    """Returns the `tensorflow` module, configured on first import.

    The first call hides every GPU/TPU from TensorFlow, silences its C++ logs
    below errors and caps its op-level thread pools at one thread each; the
    tf.data pipelines set their own private pool size (config.data.num_threads).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    if not getattr(tf, "_glide_jax_configured", False):
        try:
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


def import_tfds():
    """Returns `tensorflow_datasets` after `import_tensorflow()` has configured TF."""
    import_tensorflow()
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    tfds.disable_progress_bar()
    return tfds


def num_threads(config_value: int | None) -> int:
    """tf.data worker threads: the configured count, else the CPU count up to 16."""
    if config_value is not None:
        return int(config_value)
    return max(1, min(os.cpu_count() or 1, 16))
