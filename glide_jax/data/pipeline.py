"""The sharded, deterministic, resumable input pipeline.

    pipeline = create_input_pipeline(config, split="train", mesh=mesh, seed=0)
    batch = next(pipeline)            # dict of global jax.Arrays
    saved = pipeline.state()          # JSON-serialisable; store with the checkpoint
    ...
    pipeline.restore(saved)           # the next batch is the one after `saved`

Order. Each host reads a disjoint, equal share of the split
(`tfds.even_splits`). Epoch `e` is that share shuffled with a buffer seeded by
(seed, e); epochs follow each other without a gap and batches may straddle
them. Every example carries the seed `[seed, e * 2**32 + i]` (its index `i` in
the shuffled epoch, folded with the host index) from which its crop, flip,
caption choice, caption dropout and inpainting mask are drawn statelessly. A
position is therefore just "batches delivered": restoring rebuilds the stream
from the epoch it falls in and skips the examples already seen (skipping is
done before decoding, so it costs reading at most one epoch of encoded data).
"""

from __future__ import annotations

import collections
import logging
import math
from typing import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from glide_jax import config as config_lib
from glide_jax import sharding as sharding_lib
from glide_jax.data import masks, preprocess, sources
from glide_jax.data.tf_env import import_tensorflow, num_threads

tf = import_tensorflow()
_LOG = logging.getLogger(__name__)

STATE_FORMAT = "glide_jax.data.InputPipeline/1"
DEFAULT_CAPTION_DROPOUT = 0.2  # GLIDE trains the unconditional model on 20% of examples


def example_spec(config) -> preprocess.ExampleSpec:
    """Image sizes and augmentation for `config.model.kind` (see ARCHITECTURE.md "Data")."""
    kind, data = config.model.kind, config.data
    size = config_lib.image_size(config)
    dropout = data.caption_dropout
    if dropout is None:
        dropout = 0.0 if kind == "clip" else DEFAULT_CAPTION_DROPOUT
    return preprocess.ExampleSpec(
        image_size=size,
        low_res_size=config_lib.low_res_size(config),
        mask_size=size if kind in config_lib.INPAINT_KINDS else None,
        random_crop=bool(data.random_crop),
        random_flip=bool(data.random_flip),
        caption_dropout=float(dropout),
    )


def batch_sharding(mesh, data_axes) -> NamedSharding:
    """Batch dimension split over those of `data_axes` the mesh has; the rest replicated."""
    axes = tuple(a for a in data_axes if a in mesh.axis_names)
    return NamedSharding(mesh, PartitionSpec(axes if axes else None))


def check_host_rows(sharding: NamedSharding, batch_size: int, host_batch_size: int, devices) -> None:
    """Raises ConfigError unless `devices` (one process's) hold exactly `host_batch_size` rows of the batch.

    Each process reads its own `host_batch_size` examples. If the batch axes
    have fewer shards than there are processes (say `mesh.tensor` spans the
    hosts and `data * fsdp` is 1), a process's devices would hold rows that
    other processes fill with different examples, and jax would assemble a
    smaller batch whose "replicas" disagree, silently.
    """
    held = sharding_lib.rows_held(sharding, batch_size, devices)
    if held != host_batch_size:
        shards = batch_size // max(1, sharding.shard_shape((batch_size,))[0])
        raise config_lib.ConfigError(
            f"config.mesh: the batch of {batch_size} is split into {shards} shards over the mesh's data axes, "
            f"so one process's devices hold {held} rows, but each process reads its own {host_batch_size}; "
            f"make mesh.data * mesh.fsdp a multiple of the {batch_size // host_batch_size} processes")


class InputPipeline:
    """An endless (or `num_epochs`-long) iterator of batches with a saveable position.

    Build it with `create_input_pipeline`. Batches are dicts (see
    ARCHITECTURE.md "Contracts"): global `jax.Array`s sharded over the mesh's
    data axes when a mesh is given, else this host's numpy arrays.
    """

    def __init__(self, config, *, split, mesh, data_axes, seed, batch_size, process_index, process_count,
                 tokenizer, num_epochs):
        if batch_size % process_count:
            raise config_lib.ConfigError(f"config.data.batch_size = {batch_size}: not divisible by the "
                                         f"{process_count} hosts")
        self.split, self.seed, self.num_epochs = split, int(seed), num_epochs
        self.process_index, self.process_count = process_index, process_count
        self.global_batch_size, self.host_batch_size = batch_size, batch_size // process_count
        self.spec = example_spec(config)
        self._text_ctx = config_lib.text_length(config)
        self._threads = num_threads(config.data.num_threads)
        self._prefetch = int(config.data.prefetch)
        self._shuffle_buffer = int(config.data.shuffle_buffer)
        self._mask_spec = masks.MaskSpec.from_config(config.data)
        self._captions = preprocess.CaptionTokenizer(tokenizer, self._text_ctx)
        self._host = sources.load_host_split(config.data, split, process_index, process_count)
        self._warn_small_images()
        if self._host.num_examples < self.host_batch_size:
            raise config_lib.ConfigError(f"config.data.batch_size = {batch_size}: split {self._host.name!r} has "
                                         f"only {self._host.num_examples} examples per host, fewer than the host "
                                         f"batch size {self.host_batch_size}")
        self._sharding = None if mesh is None else batch_sharding(mesh, data_axes)
        if self._sharding is not None:
            shards = math.prod(mesh.shape[a] for a in data_axes if a in mesh.axis_names)
            if batch_size % shards:
                raise config_lib.ConfigError(f"config.data.batch_size = {batch_size}: not divisible by the {shards} "
                                             f"shards of mesh axes {tuple(data_axes)} (see config.mesh)")
            if jax.process_count() > 1:
                mine = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
                check_host_rows(self._sharding, batch_size, self.host_batch_size, mine)
        self._position = 0
        self._start(0)

    def _warn_small_images(self) -> None:
        """Warns (once, on process 0) when the split holds images smaller than the training size."""
        counts = self._host.smaller_than(self.spec.image_size)
        if counts and counts[0] and self.process_index == 0:
            _LOG.warning("glide_jax.data: %d of %d images in the %s split have a short side under %d px; they "
                         "are upscaled to it, which blurs those training targets (remove them from the folder, "
                         "or train at a lower resolution)", counts[0], counts[1], self.split, self.spec.image_size)

    @property
    def examples_per_epoch(self) -> int:
        """Examples in this host's share of the split."""
        return self._host.num_examples

    @property
    def position(self) -> int:
        """Batches delivered so far (the same on every host)."""
        return self._position

    def _examples(self, start_example: int):
        """Shuffled, seeded, still-encoded examples from `start_example` (host count) on."""
        n = self._host.num_examples
        start_epoch, offset = divmod(start_example, n)
        stop = self.num_epochs if self.num_epochs is not None else 2**62
        base, buffer = self._host.dataset, min(self._shuffle_buffer, n)
        seed, host = self.seed, self.process_index

        def one_epoch(epoch):
            shuffled = base.shuffle(buffer, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False)

            def attach(index, example):
                example_seed = tf.stack([tf.constant(seed, tf.int64), epoch * 2**32 + index])
                return {**example, "seed": tf.random.experimental.stateless_fold_in(example_seed, host)}

            return shuffled.enumerate().map(attach)

        return tf.data.Dataset.range(start_epoch, stop).flat_map(one_epoch).skip(offset)

    def _dataset(self, start_example: int):
        spec = self.spec
        ds = self._examples(start_example)
        ds = ds.map(lambda ex: preprocess.preprocess_example(ex, spec), num_parallel_calls=self._threads,
                    deterministic=True)
        ds = ds.batch(self.host_batch_size, drop_remainder=True)
        ds = ds.map(lambda b: preprocess.finish_batch(b, spec, self._captions, self._mask_spec, self._text_ctx),
                    num_parallel_calls=min(2, self._threads), deterministic=True)
        ds = ds.prefetch(2)
        options = tf.data.Options()
        options.deterministic = True
        options.threading.private_threadpool_size = self._threads
        options.threading.max_intra_op_parallelism = 1
        return ds.with_options(options)

    def _start(self, position: int) -> None:
        self._position = position
        self._numpy = self._dataset(position * self.host_batch_size).as_numpy_iterator()
        self._ready: collections.deque = collections.deque()

    def _fill(self) -> None:
        while len(self._ready) < max(1, self._prefetch):
            try:
                batch = next(self._numpy)
            except StopIteration:
                return
            if self._sharding is not None:
                batch = {k: jax.make_array_from_process_local_data(self._sharding, v, (self.global_batch_size,
                                                                                      *v.shape[1:]))
                         for k, v in batch.items()}
            self._ready.append(batch)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        self._fill()
        if not self._ready:
            raise StopIteration
        self._position += 1
        return self._ready.popleft()

    def state(self) -> dict:
        """The position as a JSON-serialisable dict; identical on every host."""
        return {
            "format": STATE_FORMAT,
            "split": self.split,
            "seed": self.seed,
            "batches": self._position,
            "global_batch_size": self.global_batch_size,
            "process_count": self.process_count,
            "examples_per_host": self._host.num_examples,
            "shuffle_buffer": self._shuffle_buffer,
        }

    def check_state(self, state: dict) -> None:
        """Raises unless this pipeline can continue from `state` (see `restore`)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not an input pipeline state (format {state.get('format')!r}, want {STATE_FORMAT!r})")
        mine = self.state()
        for key in ("split", "seed", "global_batch_size", "process_count", "examples_per_host", "shuffle_buffer"):
            if key == "shuffle_buffer" and key not in state:
                continue
            if state.get(key) != mine[key]:
                raise config_lib.ConfigError(f"the checkpoint's input pipeline has {key}={state.get(key)!r} but "
                                             f"this one has {mine[key]!r}; resuming would not reproduce the "
                                             f"batch order (use the checkpoint's settings, a fresh --workdir, or "
                                             f"--config.train.strict_data_order=False to go on in a new order)")

    def restore(self, state: dict, strict: bool = True) -> None:
        """Continues from a `state()`: the next batch is the one that followed it.

        Args:
          state: from `state()`, possibly of another process.
          strict: if False, a state this pipeline cannot replay (see Raises)
            is continued after the same number of examples, in this
            pipeline's order, with a warning: some examples of the current
            epoch repeat and others are skipped.

        Raises:
          ConfigError if `strict` and the state comes from a different split,
          seed, batch size, host count, dataset size or shuffle buffer (the
          order would not match; states saved before the buffer was recorded
          skip that check).
        """
        try:
            self.check_state(state)
        except config_lib.ConfigError as mismatch:
            if strict:
                raise
            examples = int(state["batches"]) * int(state["global_batch_size"])
            position = examples // self.global_batch_size
            _LOG.warning("input pipeline: %s; going on after %d examples (batch %d) in a new order "
                         "(train.strict_data_order=False)", str(mismatch).split(";")[0], examples, position)
            self._start(position)
            return
        self._start(int(state["batches"]))


def _prepare_on_primary_first(data_config) -> None:
    """In a multi-host run, process 0 builds the dataset while the others wait.

    Otherwise every host would build the same (shared) data_dir at once. With
    a data_dir local to each host, the others then build their own copies.
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    if jax.process_index() == 0:
        sources.prepare_dataset(data_config)
    multihost_utils.sync_global_devices("glide_jax: dataset prepared by process 0")


def create_input_pipeline(config, *, split: str = "train", mesh=None, data_axes=("data", "fsdp"), seed: int = 0,
                          batch_size: int | None = None, process_index: int | None = None,
                          process_count: int | None = None, tokenizer=None,
                          num_epochs: int | None = None) -> InputPipeline:
    """Builds (and, on first use, prepares the dataset for) the input pipeline.

    Args:
      config: the full config; uses `data`, `model` (kind, image_size), `text`
        (tokenizer, text_ctx) and `clip` (image_size, max_text_len) sections.
      split: dataset split to read.
      mesh: a `jax.sharding.Mesh`: batches become global `jax.Array`s with the
        batch dimension sharded over `data_axes`. None: this host's numpy batch.
      data_axes: mesh axes the batch dimension is split over (missing ones are
        ignored).
      seed: fixes the order, the augmentation and the caption dropout.
      batch_size: global batch size; None -> config.data.batch_size.
      process_index, process_count: this host and the number of hosts; None ->
        `jax.process_index()` / `jax.process_count()`. Overriding them (with
        `mesh=None`) simulates hosts.
      tokenizer: a `glide_jax.text` tokenizer; None -> `text.model_tokenizer(config)`
        (config.text's; the CLIP BPE tokenizer for kind "clip"), whose ids
        must fit the model's embedding: a ConfigError at set-up, not a NaN loss.
      num_epochs: stop after this many passes over the split; None -> endless.

    Returns:
      An `InputPipeline`.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**31:
        raise ValueError(f"seed = {seed!r}: must be an integer in [0, 2**31)")
    if tokenizer is None:
        from glide_jax.text import model_tokenizer  # pylint: disable=import-outside-toplevel

        tokenizer = model_tokenizer(config)
    process_index = jax.process_index() if process_index is None else int(process_index)
    process_count = jax.process_count() if process_count is None else int(process_count)
    if mesh is not None and process_count != jax.process_count():
        raise ValueError("simulated hosts (process_count != jax.process_count()) need mesh=None")
    _prepare_on_primary_first(config.data)
    return InputPipeline(
        config, split=split, mesh=mesh, data_axes=tuple(data_axes), seed=seed,
        batch_size=int(batch_size if batch_size is not None else config.data.batch_size),
        process_index=process_index, process_count=process_count, tokenizer=tokenizer, num_epochs=num_epochs,
    )
