"""glide_jax.data: TFDS datasets and the sharded, resumable input pipeline.

This is the only package that uses TensorFlow, and it imports it lazily: this
module and `glide_jax.data.shapes`/`masks` are TF-free, while
`create_input_pipeline` and the builders load TF on first use. Public API:

  create_input_pipeline(config, *, split, mesh, ...) -> InputPipeline
  iter_captions(config, split="train", limit=None) -> Iterator[str]
"""

from __future__ import annotations

from typing import Iterator

__all__ = ["create_input_pipeline", "iter_captions", "InputPipeline"]


def iter_captions(config, split: str = "train", limit: int | None = None) -> Iterator[str]:
    """Yields the captions of a split in dataset order (e.g. to train a tokenizer).

    glide_shapes captions are generated directly (no TensorFlow, nothing is
    built); other datasets are read through TFDS. A list-valued caption
    feature (coco_captions) yields each of its captions.

    Args:
      config: the full config (uses config.data).
      split: dataset split.
      limit: stop after this many captions; None for all.
    """
    data = config.data
    if data.dataset == "glide_shapes":
        from glide_jax.data import shapes  # pylint: disable=import-outside-toplevel

        count = {"train": data.shapes_train_size, "validation": data.shapes_validation_size}.get(split)
        if count is None:
            raise ValueError(f"glide_shapes has no split {split!r}; available: train, validation")
        captions = (scene.caption for scene in shapes.iter_scenes(data.shapes_seed, split, count,
                                                                      data.shapes_max_objects))
    else:
        captions = _iter_tfds_captions(data, split)
    for n, caption in enumerate(captions):
        if limit is not None and n >= limit:
            return
        yield caption


def _iter_tfds_captions(data_config, split: str) -> Iterator[str]:
    from glide_jax.data import sources  # pylint: disable=import-outside-toplevel

    host = sources.load_host_split(data_config, split, process_index=0, process_count=1)
    for example in host.dataset.map(lambda ex: ex["caption"]).as_numpy_iterator():
        for caption in (example if getattr(example, "ndim", 0) else [example]):
            yield caption.decode("utf-8")


def __getattr__(name: str):
    # Lazy so that `import glide_jax.data` does not import TensorFlow.
    if name in ("create_input_pipeline", "InputPipeline"):
        from glide_jax.data import pipeline  # pylint: disable=import-outside-toplevel

        return getattr(pipeline, name)
    raise AttributeError(f"module 'glide_jax.data' has no attribute {name!r}")
