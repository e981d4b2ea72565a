"""Training checkpoints: Orbax CheckpointManager plus the run's config.json.

Layout of a workdir:

  workdir/config.json          the run's full config (written once, process 0)
  workdir/checkpoints/<step>/  state/ (TrainState: params, optimizer state,
                               EMA trees, step, RNG) and data/ (the input
                               pipeline's position, JSON)

Saves are asynchronous: `save` returns once the arrays are copied off the
devices, and Orbax finalises the directory (atomic rename) in the background;
a process killed mid-save leaves the previous checkpoint intact. Orbax
coordinates the hosts of a multi-host run; each writes its own shards.

Before restoring, `check_compatible` compares the stored config and the
stored array shapes with the current model and raises ArchitectureMismatch
listing the differences, instead of failing deep inside a shape error;
`check_resumable` refuses a changed batch order and warns about settings
that change the training from there on (the learning rate at the step).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import pathlib
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from glide_jax import checkpoints
from glide_jax import config as config_lib
from glide_jax.train import optim

# Config keys that do not change the parameter tree (safe to change on resume).
NON_ARCHITECTURE_KEYS = frozenset({"model.dropout", "model.dtype", "model.remat",
                                   "text.tokenizer", "text.tokenizer_path"})


class ArchitectureMismatch(ValueError):
    """A checkpoint was written by a model with a different architecture (or optimizer)."""


class UnreadableCheckpoint(RuntimeError):
    """A checkpoint's files cannot be read back: damaged, truncated or partly deleted."""


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost `raise ... from` cause: TensorStore's own error under Orbax's wrappers."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line, cut to `limit` characters (TensorStore errors run to pages)."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit] + "..."


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A JSON-ready plain dict (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def write_config(workdir: str | pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Writes workdir/config.json (call on process 0 only).

    Through a temporary file and a rename, so another host reading it at the
    same moment sees the old or the new file, never half of one.
    """
    path = pathlib.Path(workdir) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# The config.optim keys that shape the optimizer and EMA state: clipping on or
# off adds or drops a stateless part of the optax chain, and each EMA rate
# keeps a tree. A resume carries the state over (`stored_optimizer_config`).
OPTIMIZER_STATE_KEYS = ("grad_clip_norm", "ema_rates")


def stored_optimizer_config(stored: dict[str, Any] | None,
                            config: ml_collections.ConfigDict) -> ml_collections.ConfigDict | None:
    """`config` with the checkpoint's OPTIMIZER_STATE_KEYS, if any differ from it; else None.

    Its optimizer and EMA state has the shapes of the checkpoint's, so it is
    the restore target when a run resumes with clipping switched or EMA rates
    changed.
    """
    old = (stored or {}).get("optim", {})
    changes = {}
    if "grad_clip_norm" in old and old["grad_clip_norm"] != config.optim.grad_clip_norm:
        changes["grad_clip_norm"] = old["grad_clip_norm"]
    if "ema_rates" in old and tuple(old["ema_rates"]) != tuple(config.optim.ema_rates):
        changes["ema_rates"] = tuple(float(rate) for rate in old["ema_rates"])
    if not changes:
        return None
    previous = config.copy_and_resolve_references()
    with previous.unlocked():
        previous.optim.update(changes)
    return previous


def optimizer_differences(stored: dict[str, Any], config: ml_collections.ConfigDict) -> list[str]:
    """The changed config.optim keys that reshape the saved state (else any changed), as 'key: old -> new'."""
    old, new = stored.get("optim", {}), config_to_dict(config)["optim"]
    changed = [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    changed = [key for key in changed if key in OPTIMIZER_STATE_KEYS] or changed
    return [f"config.optim.{key}: checkpoint {old.get(key)!r} -> config {new.get(key)!r}" for key in changed]


def config_differences(stored: dict[str, Any], config: ml_collections.ConfigDict) -> list[str]:
    """Architecture keys whose stored value differs from `config`, as 'key: old -> new'."""
    current = config_to_dict(config)
    kind_is_clip = current["model"]["kind"] == "clip"
    diffs = []
    for section in config_lib.NETWORK_SECTIONS:
        if section == "clip" and not kind_is_clip:
            continue
        if section == "diffusion":  # only learn_sigma changes the network's output
            old, new = stored.get(section, {}), current.get(section, {})
            keys = {"learn_sigma"}
        else:
            old, new = _flat(stored.get(section, {})), _flat(current.get(section, {}))
            keys = set(old) | set(new)
        for key in sorted(keys):
            name = f"{section}.{key}"
            if name not in NON_ARCHITECTURE_KEYS and old.get(key) != new.get(key):
                diffs.append(f"{name}: checkpoint {old.get(key)!r} -> config {new.get(key)!r}")
    return diffs


# Settings a resumed run must share with its checkpoint: the input pipeline
# replays the batch order from them.
DATA_ORDER_KEYS = ("data.batch_size", "data.shuffle_buffer", "train.seed")
# Settings that change what training does from the resumed step on.
TRAINING_KEYS = ("diffusion.noise_schedule", "diffusion.steps", "diffusion.timestep_respacing",
                 "data.caption_dropout", "data.dataset", "data.folder_path", "data.tfds_name",
                 "data.shapes_train_size", "data.shapes_seed", "data.shapes_max_objects",
                 # The learned token embeddings belong to the ids of one tokenizer.
                 "text.tokenizer", "text.tokenizer_path")


def check_resumable(stored: dict[str, Any], config: ml_collections.ConfigDict, step: int) -> list[str]:
    """What resuming the run of `stored` (its config.json) at `step` with `config` changes.

    Returns:
      Warnings, one line each: a learning rate at `step` that differs from the
      one the checkpoint's run would use (say, a longer train.num_steps
      re-stretching a decay) and changed diffusion or data settings.

    Raises:
      ConfigError: if a setting the batch order depends on changed.
    """
    old, new = _flat(stored), _flat(config_to_dict(config))
    strict = bool(config.train.get("strict_data_order", True))
    warnings = []
    for key in DATA_ORDER_KEYS:
        if old.get(key) is not None and old[key] != new.get(key):
            if not strict:
                warnings.append(f"config.{key} changes from {old[key]!r} to {new.get(key)!r}: the batches go on "
                                "in a new order (train.strict_data_order=False)")
                continue
            raise config_lib.ConfigError(
                f"config.{key} = {new.get(key)!r}, but the checkpoint's run used {old[key]!r}; the input "
                f"pipeline resumes only with the same value (use it, a fresh --workdir, or "
                f"--config.train.strict_data_order=False to go on in a new order)")
    warnings += [f"config.{key} changes from {old[key]!r} to {new.get(key)!r}"
                 for key in TRAINING_KEYS if key in old and old[key] != new.get(key)]
    try:
        old_optim = ml_collections.ConfigDict(stored["optim"])
        old_rate = float(optim.learning_rate_schedule(old_optim, int(stored["train"]["num_steps"]))(step))
    except (KeyError, TypeError, ValueError):  # a config.json from another version: no comparison
        return warnings
    new_rate = float(optim.learning_rate_schedule(config.optim, int(config.train.num_steps))(step))
    if not math.isclose(old_rate, new_rate, rel_tol=0.01, abs_tol=1e-12):  # a visible change, not rounding
        changed = [f"{key} {old.get(key)!r} -> {new.get(key)!r}"
                   for key in ("train.num_steps", "optim.learning_rate", "optim.schedule", "optim.warmup_steps",
                               "optim.end_learning_rate_factor") if old.get(key) != new.get(key)]
        warnings.append(f"the learning rate at step {step} jumps from {old_rate:.3g} to {new_rate:.3g} "
                        f"({', '.join(changed)}): the schedule is rebuilt from the new settings")
    return warnings


def check_same_tokenizer(workdir: str | pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Refuses to resume with another SentencePiece model than the run trained with.

    The same path may hold a retrained model (another vocabulary or ids), and
    its ids would then index other rows of the trained embedding. The run's
    export keeps a copy of the model it trained with (`checkpoints.save_model`),
    which is compared by content; a run without an export is not checked.

    Raises:
      ConfigError: naming config.text.tokenizer_path and the copy.
    """
    trained = pathlib.Path(workdir) / checkpoints.EXPORT_DIR / checkpoints.TOKENIZER_FILE
    if config.text.tokenizer != "sentencepiece" or not trained.is_file():
        return
    path = config.text.tokenizer_path
    if checkpoints.file_digest(path) != checkpoints.file_digest(trained):
        raise config_lib.ConfigError(
            f"config.text.tokenizer_path = {path!r} is another SentencePiece model than the one this run trained "
            f"with (its copy: {trained}); its token ids would index other rows of the trained embedding: use that "
            "file, or train in a fresh --workdir", key="text.tokenizer_path")


def _path_name(path) -> str:
    parts = []
    for key in path:
        for attr in ("name", "key", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return ".".join(parts)


def shape_differences(stored_metadata: Any, abstract_state: Any) -> list[str]:
    """Arrays missing, unexpected or of another shape, as readable lines."""
    stored = {_path_name(p): tuple(m.shape) for p, m in jax.tree_util.tree_flatten_with_path(stored_metadata)[0]}
    wanted = {_path_name(p): tuple(a.shape) for p, a in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
    # The params come first: EMA trees and Adam moments repeat the same story.
    order = lambda name: (not name.startswith("params."), name)  # noqa: E731
    lines = [f"{name}: checkpoint {stored[name]} -> model {wanted[name]}"
             for name in sorted(set(stored) & set(wanted), key=order) if stored[name] != wanted[name]]
    lines += [f"{name}: missing from the checkpoint" for name in sorted(set(wanted) - set(stored), key=order)]
    lines += [f"{name}: in the checkpoint but not in the model"
              for name in sorted(set(stored) - set(wanted), key=order)]
    return lines


_replica_parallel: bool | None = None  # what _write_replicas_once registered


def _write_replicas_once() -> None:
    """Single-process runs write each replicated array from one device.

    Orbax's default splits a replicated array into one slice per replica so
    that several hosts can share the writing; in one process that gains
    nothing and costs a compiled slice per array shape and device (20 s of
    each save of a tiny model on 8 CPU devices). Multi-host runs keep it.
    """
    global _replica_parallel
    wanted = jax.process_count() > 1
    if _replica_parallel is not wanted:  # register once: Orbax warns on every override
        absl_logger = logging.getLogger("absl")  # ... and this override is deliberate: keep it off the console
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)
        try:
            ocp.type_handlers.register_type_handler(
                jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=wanted), override=True)
        finally:
            absl_logger.setLevel(level)
        _replica_parallel = wanted


STATE_ITEM, DATA_ITEM = "state", "data"  # the items of a checkpoint step


class Checkpointer:
    """Saves and restores TrainState and the data position under workdir/checkpoints.

    Args:
      workdir: the run directory.
      keep: checkpoints to keep (`config.train.keep_checkpoints`).
      async_save: write in the background (`config.train.async_checkpointing`).
    """

    def __init__(self, workdir: str | pathlib.Path, keep: int, async_save: bool = True):
        self.workdir = pathlib.Path(workdir)
        _write_replicas_once()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        # Naming the handlers lets a fresh manager (a resumed process) read metadata.
        handlers = {STATE_ITEM: ocp.StandardCheckpointHandler(), DATA_ITEM: ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.workdir.absolute() / "checkpoints", options=options,
                                             item_handlers=handlers)

    def latest_step(self) -> int | None:
        """The newest finalised checkpoint's step, or None."""
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict[str, Any]) -> None:
        """Starts saving `state` and the JSON-able `data_state` as checkpoint `step`."""
        self.manager.save(step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state),
                                                           DATA_ITEM: ocp.args.JsonSave(data_state)}), force=True)

    def stored_config(self) -> dict[str, Any] | None:
        """The run's config.json as written by `write_config`, or None if there is none.

        Raises:
          ConfigError: the file is not JSON (naming it, and how to go on).
        """
        path = self.workdir / "config.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise config_lib.ConfigError(
                f"{path} is damaged ({_first_line(err)}); delete it to resume: the checkpoint's array shapes "
                "are still checked against the model, and the file is written again") from None

    def step_dir(self, step: int) -> pathlib.Path:
        """Where checkpoint `step` lives."""
        return self.workdir / "checkpoints" / str(step)

    @contextlib.contextmanager
    def reading(self, step: int):
        """Turns any failure to read checkpoint `step` into one UnreadableCheckpoint naming it.

        The message says which older checkpoint to resume from instead; a
        checkpoint that reads but does not fit (ArchitectureMismatch,
        ConfigError) passes through unchanged.
        """
        try:
            yield
        except (ArchitectureMismatch, config_lib.ConfigError):
            raise
        except Exception as exc:  # noqa: BLE001  Orbax and TensorStore raise many types for damaged files
            cause = _root_cause(exc)
            older = [s for s in self.manager.all_steps() if s < step]
            advice = (f"move it out of {self.step_dir(step).parent} to resume from step {max(older)}, the newest "
                      "before it" if older else "there is no older checkpoint: restore it from a copy or start "
                      "a fresh --workdir")
            raise UnreadableCheckpoint(f"checkpoint {self.step_dir(step)} cannot be read "
                                       f"({type(cause).__name__}: {_first_line(cause)}); {advice}") from exc

    def check_compatible(self, step: int, config: ml_collections.ConfigDict, abstract_state: Any) -> None:
        """Raises ArchitectureMismatch if checkpoint `step` cannot load into this model and optimizer.

        A changed network names its config keys and arrays; a changed
        optimizer or EMA (whose state alone no longer fits) names the
        `config.optim` keys that differ.
        """
        stored = self.stored_config()
        lines = config_differences(stored, config) if stored is not None else []
        with self.reading(step):
            metadata = self.manager.item_metadata(step)[STATE_ITEM]
        shapes = shape_differences(metadata, abstract_state)
        if shapes and not lines and not any(line.startswith("params.") for line in shapes):
            changed = optimizer_differences(stored, config) if stored is not None else []
            raise ArchitectureMismatch(
                f"checkpoint {self.step_dir(step)} holds optimizer and EMA state that does not fit the configured "
                f"optimizer ({'; '.join(changed) or f'{len(shapes)} array(s) differ'}); resume with the "
                "checkpoint's optimizer settings, or fine-tune its weights in a fresh --workdir with "
                f"--config.train.init_from={self.workdir}")
        lines += shapes
        if lines:
            shown = "\n  ".join(lines[:40]) + ("\n  ..." if len(lines) > 40 else "")
            raise ArchitectureMismatch(
                f"checkpoint {self.step_dir(step)} does not fit the configured model "
                f"({len(lines)} difference(s)); use a fresh --workdir or the checkpoint's config:\n  {shown}")

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Loads checkpoint `step` with the shardings carried by `abstract_state`.

        Returns:
          (state, data_state).

        Raises:
          UnreadableCheckpoint: its files cannot be read.
        """
        with self.reading(step):
            restored = self.manager.restore(step, args=ocp.args.Composite(**{
                STATE_ITEM: ocp.args.StandardRestore(abstract_state), DATA_ITEM: ocp.args.JsonRestore()}))
        return restored[STATE_ITEM], restored[DATA_ITEM]

    def restore_part(self, step: int, partial_state: Any) -> Any:
        """Loads only some arrays of checkpoint `step`.

        Args:
          partial_state: the abstract TrainState with every leaf not wanted
            replaced by `ocp.PLACEHOLDER`; the wanted ones carry their sharding.

        Returns:
          A TrainState whose wanted leaves are arrays and the rest placeholders.
        """
        path = pathlib.Path(self.manager.directory) / str(step) / STATE_ITEM
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint step {step}: no {path}")
        restore_args = jax.tree_util.tree_map(
            lambda leaf: ocp.ArrayRestoreArgs(sharding=leaf.sharding, global_shape=leaf.shape, dtype=leaf.dtype)
            if isinstance(leaf, jax.ShapeDtypeStruct) else leaf, partial_state)
        with self.reading(step), ocp.PyTreeCheckpointer() as reader:
            return reader.restore(path, args=ocp.args.PyTreeRestore(item=partial_state, restore_args=restore_args))

    def data_state(self, step: int) -> dict[str, Any]:
        """The input pipeline position saved with checkpoint `step` (read without the arrays)."""
        with self.reading(step):
            return self.manager.restore(step, args=ocp.args.Composite(**{DATA_ITEM: ocp.args.JsonRestore()}))[
                DATA_ITEM]

    def wait(self) -> None:
        """Blocks until any background save is finalised."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for saves and releases the manager.

        A `checkpoints/` that is still empty (a run refused or stopped while
        setting up) is removed, so the workdir does not pass for a training run.
        """
        self.manager.wait_until_finished()
        self.manager.close()
        folder = self.workdir / "checkpoints"
        if jax.process_index() == 0 and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
