"""glide_jax.train: the sharded training loop, checkpoints, exports and fine-tuning.

`train_and_evaluate(config, workdir)` (from `loop`) runs a training job; it
is imported on first use, since the loop's input pipeline needs TensorFlow
and the rest of this package (the train step, losses, optimizer) must not.
"""

__all__ = ["train_and_evaluate"]


def __getattr__(name: str):
    if name == "train_and_evaluate":
        from glide_jax.train.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel

        return train_and_evaluate
    raise AttributeError(f"module 'glide_jax.train' has no attribute {name!r}")
