"""`train_and_evaluate(config, workdir)`: the whole training run.

  1. Validate and lock the config (a bad or unknown key fails here, naming
     it, before anything compiles); start multi-host JAX if asked.
  2. Build the mesh, the network, the diffusion and the optimizer, and the
     abstract TrainState with its shardings.
  3. Resume from the latest checkpoint in `workdir` (after checking that it
     fits the model), or initialise sharded, optionally from
     `config.train.init_from` (GLIDE §4.3 fine-tuning).
  4. Loop: batch -> jitted `train_step` -> metrics; every `log_every` steps
     a metrics row (non-finite loss stops the run with an error naming the
     step, before anything is saved), every `checkpoint_every` steps and at
     the end an asynchronous checkpoint plus the EMA export in
     `workdir/export`, every `sample_every` steps a sample grid, every
     `eval_every` steps the held-out loss (`Evaluator`). SIGTERM or
     SIGINT end the loop after the current step with a checkpoint, and
     `TrainingStopped` says so (train.py exits 128 + the signal number, so a
     scheduler or a retry loop sees that the run did not finish).

Only process 0 writes config.json, metrics, exports and sample grids; Orbax
coordinates the checkpoint writes of all hosts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pathlib
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from glide_jax import config as config_lib
from glide_jax import diffusion as diffusion_lib
from glide_jax import sharding as sharding_lib
from glide_jax.models import factory
from glide_jax.train import checkpointing, finetune, losses, optim, runtime, samples
from glide_jax.train import export as export_lib
from glide_jax.train import metrics as metrics_lib
from glide_jax.train import state as state_lib
from glide_jax.train import step as step_lib

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss (or gradient norm) became NaN or infinite."""


class TrainingStopped(Exception):
    """A stop signal ended the run early, after its checkpoint was saved.

    Attributes:
      step: the step saved; the same command resumes from it.
      signum: the signal received (on a host that received none, SIGTERM).
      started: False if the signal came while the run was being set up, so
        there was nothing new to save.
    """

    def __init__(self, step: int, signum: int, started: bool = True):
        self.step, self.signum, self.started = step, signum, started
        name = signal.Signals(signum).name
        if started:
            message = f"stopped by {name} after saving step {step}; run the same command to resume"
        else:
            message = (f"stopped by {name} while setting up, before training from step {step}; nothing new "
                       f"to save; run the same command to go on")
        super().__init__(message)

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process the signal ended (143 for SIGTERM)."""
        return 128 + self.signum


def prepare_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Validates `config` for training (ConfigError names the key) and locks it against new keys."""
    config_lib.check_keys(config)  # a misspelt key set in Python would otherwise be ignored
    config_lib.validate(config)  # validate_clip too, for kind "clip"
    if config.model.dtype == "float16":  # fine for sampling; training would underflow its gradients
        raise config_lib.ConfigError("config.model.dtype = 'float16': training in float16 needs loss scaling, "
                                     "which glide-jax does not do; train in 'bfloat16' (as fast, with "
                                     "float32's range) or 'float32'")
    config.lock()
    return config


@dataclasses.dataclass
class Run:
    """The pieces of a run that do not change while it trains."""

    config: ml_collections.ConfigDict
    workdir: pathlib.Path
    mesh: Any
    model: Any
    diffusion: Any
    state_shardings: Any
    abstract_state: Any
    batch_sharding: Any
    train_step: Any
    checkpointer: checkpointing.Checkpointer
    is_primary: bool
    # The checkpoint's abstract state when its optimizer or EMA rates differ
    # from the config's (set by check_resume; restore_or_initialize adapts it).
    resume_target: Any = None
    resume_ema_rates: tuple[float, ...] = ()


def build_run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> Run:
    """Mesh, model, diffusion, optimizer, shardings and the jitted step; allocates nothing big."""
    mesh = sharding_lib.create_mesh(config.mesh)
    model = factory.create_model(config)
    diffusion = diffusion_lib.diffusion_from_config(config.diffusion)
    optimizer = optim.create_optimizer(config)
    shardings, abstract = state_lib.abstract_train_state(
        config, model, optimizer, factory.example_inputs(config, 1), mesh)
    batch_sharding = sharding_lib.batch_sharding(mesh, config.mesh)
    step_fn = step_lib.make_train_step(config, losses.create_loss_fn(config, model, diffusion), optimizer)
    train_step = step_lib.jit_train_step(step_fn, shardings, batch_sharding, config.mesh)
    checkpointer = checkpointing.Checkpointer(workdir, int(config.train.keep_checkpoints),
                                              bool(config.train.async_checkpointing))
    return Run(config, pathlib.Path(workdir), mesh, model, diffusion, shardings, abstract, batch_sharding,
               train_step, checkpointer, jax.process_index() == 0)


def _initial_state(run: Run) -> state_lib.TrainState:
    """A fresh sharded state, fine-tuned from config.train.init_from if set."""
    config = run.config
    optimizer = optim.create_optimizer(config)
    state, _ = state_lib.create_train_state(config, run.model, optimizer, factory.example_inputs(config, 1),
                                            run.mesh)
    if config.train.init_from is None:
        log.info("initialised from scratch (train.seed = %d)", config.train.seed)
        return state
    source_config, pretrained = finetune.load_pretrained(config.train.init_from)
    params = finetune.merge_pretrained(state.params, pretrained, source_kind=source_config.model.kind,
                                       target_kind=config.model.kind)
    for line in finetune.function_differences(source_config, config):
        log.warning("init_from %s: %s; its copied weights will compute something else", config.train.init_from,
                    line)
    params = jax.device_put(params, run.state_shardings.params)
    def with_params(s, p):
        return s.replace(params=p, opt_state=optimizer.init(p), ema_params=tuple(p for _ in s.ema_params))

    log.info("initialised from %s", config.train.init_from)
    return jax.jit(with_params, out_shardings=run.state_shardings, donate_argnums=(0,))(state, params)


def restore_or_initialize(run: Run) -> tuple[state_lib.TrainState, dict | None]:
    """Resumes from the latest checkpoint of the workdir, else initialises.

    Returns:
      (state, data_state): data_state is the input pipeline position of the
      checkpoint, or None for a fresh run.

    The caller has checked the checkpoint with `check_resume`.

    Raises:
      checkpointing.UnreadableCheckpoint: its files cannot be read.
    """
    latest = run.checkpointer.latest_step()
    if latest is not None:
        target = run.abstract_state if run.resume_target is None else run.resume_target
        state, data_state = run.checkpointer.restore(latest, target)
        if run.resume_target is not None:
            state = _carry_over_optimizer(run, state)
        log.info("resumed from step %d", latest)
    else:
        state, data_state = _initial_state(run), None
    return state, data_state


def check_resume(run: Run, step: int, warn: bool = True) -> None:
    """Before restoring checkpoint `step`: it must fit the model, the optimizer and the batch order
    (errors naming the config keys); changed training settings are logged as warnings.

    Clipping switched on or off and changed EMA rates are carried over: the
    checkpoint is checked against (and later restored into) a state with its
    own optimizer settings, which `restore_or_initialize` then adapts.
    `warn=False` only checks (a run with nothing left to train).
    """
    stored = run.checkpointer.stored_config()
    previous = checkpointing.stored_optimizer_config(stored, run.config)
    target = run.abstract_state
    if previous is not None:
        target = state_lib.abstract_train_state(previous, run.model, optim.create_optimizer(previous),
                                                factory.example_inputs(previous, 1), run.mesh)[1]
    run.checkpointer.check_compatible(step, run.config, target)
    checkpointing.check_same_tokenizer(run.workdir, run.config)
    if previous is not None:
        run.resume_target, run.resume_ema_rates = target, tuple(previous.optim.ema_rates)
    if not warn:
        return
    if previous is not None:
        for line in checkpointing.optimizer_differences(stored, run.config):
            log.warning("resuming at step %d: %s: the optimizer state carries over", step, line)
        for rate in run.config.optim.ema_rates:
            if rate not in run.resume_ema_rates:
                log.warning("resuming at step %d: the EMA of rate %s starts from the parameters at this step",
                            step, rate)
    if stored is not None:
        for warning in checkpointing.check_resumable(stored, run.config, step):
            log.warning("resuming at step %d: %s", step, warning)


def _carry_over_optimizer(run: Run, restored: state_lib.TrainState) -> state_lib.TrainState:
    """A state restored with the checkpoint's optimizer settings, in the config's.

    Switching clipping adds or drops a stateless transformation, so the
    optimizer's arrays are the same, in the same order, in another tree.
    EMA trees are kept by rate; a new rate starts from a copy of the params.
    """
    new_opt = jax.tree_util.tree_structure(run.abstract_state.opt_state)
    opt_state = jax.tree_util.tree_unflatten(new_opt, jax.tree_util.tree_leaves(restored.opt_state))
    copy = jax.jit(lambda tree: jax.tree_util.tree_map(jax.numpy.copy, tree),
                   out_shardings=run.state_shardings.params)  # donated later: no buffer may appear twice
    emas, used = [], set()
    for rate in run.config.optim.ema_rates:
        index = run.resume_ema_rates.index(rate) if rate in run.resume_ema_rates else None
        emas.append(restored.ema_params[index] if index is not None and index not in used
                    else copy(restored.params if index is None else restored.ema_params[index]))
        used.add(index)
    return restored.replace(opt_state=opt_state, ema_params=tuple(emas))


def _flush(pending: list, writer: metrics_lib.MetricsWriter, step: int, last_saved: int | None) -> dict:
    """Fetches pending step metrics, stops on a non-finite loss, writes their mean."""
    fetched = jax.device_get([m for _, m in pending])
    for (at, _), values in zip(pending, fetched):
        bad = {k: float(values[k]) for k in ("loss", "grad_norm") if k in values and not math.isfinite(values[k])}
        if bad:
            saved = f"last good checkpoint: step {last_saved}" if last_saved is not None else "none saved yet"
            raise NonFiniteLossError(
                f"non-finite {', '.join(f'{k}={v}' for k, v in bad.items())} at step {at}; no checkpoint was "
                f"written from this state ({saved})")
    mean = {k: float(np.mean([values[k] for values in fetched])) for k in fetched[-1]}
    return writer.write(step, metrics_lib.ratio_metrics(mean))


def _save(run: Run, state: state_lib.TrainState, pipeline: Any, step: int) -> None:
    run.checkpointer.save(step, state, pipeline.state())
    if run.config.train.export_ema:
        export_lib.write_export(run.workdir / export_lib.EXPORT_DIR, run.config, state.ema_params[0],
                                workdir=run.workdir, step=step, ema_rate=run.config.optim.ema_rates[0])


def batch_axes(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The mesh axes the batch dimension is split over (config.mesh.rules' "batch")."""
    axes = nn.logical_to_mesh_axes(("batch",), sharding_lib.logical_rules(config.mesh))[0]
    return (axes,) if isinstance(axes, str) else tuple(axes or ())


class Evaluator:
    """The held-out loss of `config.train.eval_batches` fixed batches of `train.eval_split`.

    The batches are read once, at the start, and kept on the devices; each
    evaluation draws the same timesteps and noise, so successive values
    differ only by the parameters. Both the raw parameters ("eval/") and the
    first EMA tree ("eval_ema/", the exported one) are measured, without
    dropout.
    """

    def __init__(self, run: Run, create_input_pipeline: Any, data_axes: tuple[str, ...]):
        config = run.config
        split = config.train.eval_split
        try:
            pipeline = create_input_pipeline(config, split=split, mesh=run.mesh, data_axes=data_axes,
                                             seed=int(config.train.seed))
        except ValueError as err:
            if isinstance(err, config_lib.ConfigError) or f"split {split!r} not in" not in str(err):
                raise
            hint = (" (hold one out with data.folder_validation_fraction)" if config.data.dataset == "folder"
                    else "")
            raise config_lib.ConfigError(f"config.train.eval_split = {split!r}: {err}{hint}") from None
        self.batches = [next(pipeline) for _ in range(int(config.train.eval_batches))]
        loss_fn = losses.create_loss_fn(config, run.model, run.diffusion, deterministic=True)
        self.step = step_lib.jit_eval_step(loss_fn, run.state_shardings.params, run.batch_sharding, config.mesh)
        self.key = jax.random.PRNGKey(int(config.train.seed))

    def __call__(self, state: state_lib.TrainState) -> dict[str, float]:
        """{"eval/loss": ..., "eval_ema/loss": ..., with every loss term}, means over the batches."""
        row = {}
        for prefix, params in (("eval", state.params), ("eval_ema", state.ema_params[0])):
            fetched = jax.device_get([self.step(params, batch, jax.random.fold_in(self.key, index))
                                      for index, batch in enumerate(self.batches)])
            mean = metrics_lib.ratio_metrics({k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]})
            row.update({f"{prefix}/{name}": value for name, value in mean.items()})
        return row


def _grid_maker(run: Run, pipeline: Any) -> tuple[samples.SampleGridMaker | None, dict | None]:
    """The sample-grid sampler (None for CLIP or when disabled) and the first batch, if taken."""
    if run.config.train.sample_every is None or run.config.model.kind == "clip":
        return None, None
    first = next(pipeline) if run.config.model.kind != "base" else None
    host_first = None
    if first is not None:
        count = len(run.config.train.sample_prompts)
        replicate = jax.jit(lambda b: jax.tree_util.tree_map(lambda x: x[:count], b),
                            out_shardings=sharding_lib.replicated(run.mesh))
        host_first = {k: np.asarray(v.addressable_data(0)) for k, v in replicate(first).items()}
    rows = samples.preview_rows(run.config, host_first)
    return samples.SampleGridMaker(run.config, run.model, run.mesh, rows, run.state_shardings.params), first


def _train_loop(run: Run, state: Any, pipeline: Any, writer: metrics_lib.MetricsWriter,
                stop: runtime.StopSignal, evaluate: Evaluator | None = None) -> tuple[Any, dict, int | None]:
    """Trains to num_steps: (state, last metrics row, the step saved if a stop signal ended it, else None)."""
    cfg = run.config.train
    step = int(jax.device_get(state.step))
    grid_maker, first = _grid_maker(run, pipeline)
    base_key = np.asarray(jax.device_get(state.rng))
    fold = jax.jit(jax.random.fold_in)
    pending, row, last_saved = [], {}, run.checkpointer.latest_step()
    while step < cfg.num_steps:
        batch = first if first is not None else next(pipeline)
        first = None
        state, metrics = run.train_step(state, batch, fold(base_key, step))
        step += 1
        pending.append((step, metrics))
        if len(pending) > 1:  # keep one step in flight, so the bar shows finished steps
            jax.block_until_ready(pending[-2][1]["loss"])
        writer.step_done(step)
        due = step % cfg.checkpoint_every == 0 or step == cfg.num_steps or step % cfg.log_every == 0
        # Across hosts the poll is a collective that waits for the step in flight: only at log and save steps.
        stopping = stop.requested() if due or jax.process_count() == 1 else False
        saving = step % cfg.checkpoint_every == 0 or step == cfg.num_steps or stopping
        if saving or step % cfg.log_every == 0:
            row = _flush(pending, writer, step, last_saved)
            pending = []
        if saving:
            _save(run, state, pipeline, step)
            last_saved = step
        if evaluate is not None and (step % cfg.eval_every == 0 or step == cfg.num_steps):
            started = time.perf_counter()
            writer.write_eval(step, evaluate(state), time.perf_counter() - started)
        if grid_maker is not None and step % cfg.sample_every == 0:
            grid = grid_maker(state.ema_params[0])
            if run.is_primary:
                samples.write_grid(run.workdir, step, grid)
                writer.write_image(step, "samples", grid)
        if stopping:
            log.warning("stop signal received: saved step %d and stopping", step)
            break
    # A signal during the last step still leaves a finished run.
    return state, row, (step if stopping and step < cfg.num_steps else None)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint.

    Args:
      config: a full config (see configs/*.py); validated and locked here.
      workdir: run directory for checkpoints, config.json, metrics.jsonl,
        tensorboard/, samples/ and export/.

    Returns:
      The last metrics row written (loss terms, grad_norm, steps_per_sec, ...),
      or {} if the run was already complete.

    Raises:
      glide_jax.config.ConfigError: a bad config value, before compiling.
      checkpointing.ArchitectureMismatch: the workdir's checkpoint does not fit.
      NonFiniteLossError: the loss became NaN/inf (names the step).
      TrainingStopped: SIGTERM/SIGINT ended the run early; its checkpoint is
        saved (and written, once this is raised).
    """
    config = prepare_config(config)
    runtime.maybe_initialize_distributed(config)
    from glide_jax.data import create_input_pipeline  # TensorFlow: imported only to train

    # Signals are caught from here on: a Ctrl-C while compiling ends the run cleanly too.
    with runtime.StopSignal() as stop:
        run = build_run(config, workdir)
        try:
            latest = run.checkpointer.latest_step()
            if latest is not None and latest >= config.train.num_steps:
                check_resume(run, latest, warn=False)
                log.warning("the checkpoint is at step %d, which train.num_steps = %d does not exceed: nothing "
                            "to train (raise --config.train.num_steps to go on)", latest, config.train.num_steps)
                return {}
            if latest is not None:  # the model, the optimizer and the batch order: before any array is read
                check_resume(run, latest)
            elif config.train.init_from is not None:
                finetune.resolve_init_from(config.train.init_from)  # a bad path fails before any compile
            data_axes = batch_axes(config)
            pipeline = create_input_pipeline(config, split="train", mesh=run.mesh, data_axes=data_axes,
                                             seed=int(config.train.seed))
            evaluate = (Evaluator(run, create_input_pipeline, data_axes)
                        if config.train.eval_every is not None else None)
            strict = bool(config.train.strict_data_order)
            if latest is not None and strict:  # a data order that cannot be replayed fails before the arrays load
                pipeline.check_state(run.checkpointer.data_state(latest))
            state, data_state = restore_or_initialize(run)
            if data_state is not None:
                pipeline.restore(data_state, strict=strict)
            step = int(jax.device_get(state.step))
            if run.is_primary:  # only once the checkpoint and the data position are known to fit
                checkpointing.write_config(run.workdir, run.config)
            if stop.requested():
                raise TrainingStopped(step, stop.received or signal.SIGTERM, started=False)
            writer = metrics_lib.MetricsWriter(run.workdir, int(config.train.num_steps), step,
                                               int(config.data.batch_size), enabled=run.is_primary,
                                               progress_bar=bool(config.train.progress_bar))
            try:
                _, row, stopped_at = _train_loop(run, state, pipeline, writer, stop, evaluate)
            finally:
                writer.close()
        finally:
            run.checkpointer.close()  # lets in-flight saves (of good states) finish
    if stopped_at is not None:
        raise TrainingStopped(stopped_at, stop.received or signal.SIGTERM)
    return row
