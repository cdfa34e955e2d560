"""One training loop for every model: a jitted step over a batch source, progress, logging,
per-epoch evaluation and stop rules, Orbax checkpoints every N steps (newest K kept), exact
resume and an optional wall-time budget.

Exact resume: the step key is a pure function of the run (``fold_in(key, step)``) or a carried
key saved in the checkpoint (``split`` mode); the batch source is indexed by ``(epoch, start)``
and may save its own host state (:class:`HostRngBatches`); the history, the train-log
accumulator and the stop rules' state are saved too, and a checkpoint records how many epochs
are finished, so a checkpoint on an epoch's last step resumes into that epoch's evaluation.

Multi-process runs (:mod:`assets_pkg.core.ml.distributed`): the state and key are global
arrays (replicated over a mesh of every process's devices) and each batch a global array. Only
process 0 opens the checkpoint folder: it saves host copies of the state, and on resume it
restores them and broadcasts them, with the loop's saved state, to the others (which need no
copy of the folder). A time budget is decided on process 0's clock, so every process runs the
same steps.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import CellscapeError
from . import distributed
from .optim import set_learning_rate

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class CheckpointPolicy:
    """When training checkpoints are written.

    Attributes
    ----------
    every : int
        Steps between checkpoints (0: only at the end).
    keep : int
        Newest checkpoints kept.
    """

    every: int = 200
    keep: int = 3


@dataclass(frozen=True)
class TrainRun:
    """Where a training run is kept and how it is watched; none of it changes the numbers.

    Attributes
    ----------
    work_dir : path-like, optional
        Checkpoints go to ``work_dir/checkpoints`` (none without it); usually the model folder
        the result is saved to.
    checkpoint : CheckpointPolicy
    resume : bool
        Continue from the newest checkpoint in ``work_dir`` (one of another run is refused);
        False deletes them and starts over.
    max_minutes : float, optional
        Stop (and checkpoint) after this much wall time in this call; a later call resumes.
    stop_after_steps : int, optional
        Return after this many steps in total without a final checkpoint, as a killed run would.
    progress : callable, optional
        ``progress(step, total_steps)`` after every step (e.g. :class:`ProgressBar`).
    log : callable, optional
        Receives the log lines (train-log rows, evaluations, resume, rules).
    """

    work_dir: str | Path | None = None
    checkpoint: CheckpointPolicy = CheckpointPolicy()
    resume: bool = True
    max_minutes: float | None = None
    stop_after_steps: int | None = None
    progress: Callable[[int, int], None] | None = None
    log: Callable[[str], None] | None = None


class BatchSource(Protocol):
    """Batches indexed by epoch and the step within it.

    ``batches(epoch, start)`` yields the batches of ``epoch`` from step ``start`` on; optional
    ``state_dict()``/``load_state_dict(d)`` save and restore host state (JSON-able) that the
    order depends on.
    """

    def batches(self, epoch: int, start: int) -> Iterable: ...


class HostRngBatches:
    """A batch source drawing every batch from one NumPy generator, ``make(rng) -> batch``.

    The generator's state is saved with each checkpoint, so a resumed run draws the batches an
    uninterrupted one would have.
    """

    def __init__(self, make: Callable[[np.random.Generator], Any], seed: int):
        self.make = make
        self.rng = np.random.default_rng(seed)

    def batches(self, epoch: int, start: int) -> Iterator:
        while True:
            yield self.make(self.rng)

    def state_dict(self) -> dict:
        return json.loads(json.dumps(self.rng.bit_generator.state, default=str), parse_int=str)

    def load_state_dict(self, d: dict) -> None:
        def ints(v):
            if isinstance(v, dict):
                return {k: ints(x) for k, x in v.items()}
            return int(v) if isinstance(v, str) and v.lstrip("-").isdigit() else v

        self.rng.bit_generator.state = ints(d)


class ProgressBar:
    """A tqdm bar as the loop's ``progress`` callback (``log=bar.write`` keeps log lines above it).

    Use as a context manager: ``with ProgressBar("training") as bar: train_loop(..., progress=bar)``.
    """

    def __init__(self, desc: str, unit: str = "step"):
        from tqdm import tqdm

        self.bar = tqdm(desc=desc, unit=unit)

    def __call__(self, step: int, total: int) -> None:
        self.bar.total = total
        self.bar.update(step - self.bar.n)

    def write(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PlateauRule:
    """After each evaluation: stop on a non-finite monitored value, cut the injected learning
    rate by ``factor`` after every ``patience`` evaluations without improvement, stop after
    ``stop_patience`` of them (0 = off for either).

    Attributes
    ----------
    lr : float
        The current base learning rate (put it in the evaluation rows).
    """

    def __init__(self, monitor: str, learning_rate: float, patience: int = 0, factor: float = 0.5,
                 stop_patience: int = 0, min_delta: float = 1e-6):
        self.monitor, self.patience, self.factor = monitor, patience, factor
        self.stop_patience, self.min_delta = stop_patience, min_delta
        self.best, self.bad_evals, self.lr = math.inf, 0, learning_rate

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_evals": self.bad_evals, "lr": self.lr}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.bad_evals, self.lr = d["best"], d["bad_evals"], d["lr"]

    def __call__(self, state, row: dict, log: Callable[[str], None]):
        """``(state, stop)`` after the evaluation ``row``."""
        value = row[self.monitor]
        if not np.isfinite(value):
            raise CellscapeError(f"training diverged: {self.monitor} = {value} at epoch {row.get('epoch')}",
                                 field="learning_rate")
        if value < self.best - self.min_delta:
            self.best, self.bad_evals = value, 0
            return state, False
        self.bad_evals += 1
        if self.patience and self.bad_evals % self.patience == 0:
            self.lr = self.lr * self.factor
            state = set_learning_rate(state, self.lr)
            log(f"plateau: learning rate -> {self.lr:.3g}")
        if self.stop_patience and self.bad_evals >= self.stop_patience:
            log(f"early stop after epoch {row.get('epoch')}")
            return state, True
        return state, False


@dataclass
class LoopResult:
    """What :func:`train_loop` returns.

    Attributes
    ----------
    state : flax TrainState
    step : int
        Steps done in total (over resumes).
    history : list of dict
        One row per evaluation (``epoch``, ``step``, then the evaluation's values).
    train_log : list of dict
        One row per ``log_every`` steps: ``step``, the interval's mean step metrics,
        ``seconds`` of training so far.
    stopped_by : {"steps", "early stopping", "time budget", "interrupted"}
    train_seconds : float
        Wall time in steps and evaluations, over resumes.
    steady_steps, steady_seconds : int, float
        This call's steps after the first (compiling) one, and their time without evaluations.
    resumed_from : int or None
    """

    state: Any
    step: int
    history: list[dict] = field(default_factory=list)
    train_log: list[dict] = field(default_factory=list)
    stopped_by: str = "steps"
    train_seconds: float = 0.0
    steady_steps: int = 0
    steady_seconds: float = 0.0
    resumed_from: int | None = None

    @property
    def interrupted(self) -> bool:
        return self.stopped_by == "interrupted"


def _manager(directory: Path, keep: int):
    """The checkpoint manager; in a multi-process run one that involves this process alone."""
    import orbax.checkpoint as ocp

    if not distributed.multi_process():
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        return ocp.CheckpointManager(directory.resolve(), options=opts)
    me = jax.process_index()
    directory.mkdir(parents=True, exist_ok=True)  # orbax cannot create it for a subset of processes
    opts = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=False, enable_async_checkpointing=False,
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me}))
    return ocp.CheckpointManager(directory.resolve(), options=opts)


def _tree(state, key) -> dict:
    tree = {"params": state.params, "opt_state": state.opt_state, "step": state.step, "key": key}
    # a multi-process run's global arrays are saved as this process's (replicated) host copy
    return jax.device_get(tree) if distributed.multi_process() else tree


def _save(mngr, step: int, state, key, meta: dict) -> None:
    import orbax.checkpoint as ocp

    if step in mngr.all_steps():  # the end of a run that also checkpointed this step
        mngr.delete(step)
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_tree(state, key)),
                                            meta=ocp.args.JsonSave(meta)), force=True)
    mngr.wait_until_finished()


def _restore(mngr, step: int, state, key):
    import orbax.checkpoint as ocp

    tree = _tree(state, key)
    # a multi-process run restores host arrays (the template's NumPy arrays), placed by the caller
    abstract = tree if distributed.multi_process() else jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
    got = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                     meta=ocp.args.JsonRestore()))
    r = got["state"]
    return state.replace(params=r["params"], opt_state=r["opt_state"], step=r["step"]), r["key"], dict(got["meta"])


def _restore_everywhere(mngr, step: int, state, key):
    """:func:`_restore` on process 0 (the only one with ``mngr``), broadcast to every process
    and placed with the shardings of ``state`` and ``key``."""
    template = {"params": state.params, "opt_state": state.opt_state, "step": state.step, "key": key}
    host, meta = jax.device_get(template), None
    if mngr is not None:
        st, k, meta = _restore(mngr, step, state, key)
        host = {"params": st.params, "opt_state": st.opt_state, "step": st.step, "key": k}
    meta = distributed.broadcast_json(meta)
    r = distributed.place_like(template, distributed.broadcast_tree(host))
    return state.replace(params=r["params"], opt_state=r["opt_state"], step=r["step"]), r["key"], meta


def train_loop(
    state,
    step_fn: Callable,
    source: BatchSource,
    *,
    steps_per_epoch: int,
    epochs: int = 1,
    key: jax.Array,
    key_mode: str = "fold_in",
    run: TrainRun = TrainRun(),
    identity: dict | None = None,
    evaluate: Callable[[Any, int, int], dict] | None = None,
    eval_every: int = 1,
    rules: Sequence[PlateauRule] = (),
    log_every: int = 0,
    scale_log: Callable[[dict], dict] = lambda row: row,
    finite_key: str | None = "loss",
    desc: str = "train",
    meta: dict | None = None,
) -> LoopResult:
    """Train ``epochs * steps_per_epoch`` steps of ``step_fn(state, batch, key) -> (state, metrics)``.

    Parameters
    ----------
    state : flax TrainState
        The initial state (placed on its devices); replaced by the newest checkpoint's when
        resuming.
    step_fn : callable
        Jitted ``(state, batch, key) -> (state, metrics dict)``.
    source : BatchSource
    steps_per_epoch, epochs : int
    key : jax.Array
        ``fold_in`` mode: the step key is ``fold_in(key, step)``. ``split`` mode: every step
        does ``key, sub = split(key)`` and passes ``sub``; the carried key is checkpointed.
        In a multi-process run ``state`` and ``key`` are global arrays (see the module
        docstring) and only process 0 writes to ``run.work_dir``.
    run : TrainRun
        Work folder and checkpoint policy, resume, time budget, progress and log.
    identity : dict, optional
        JSON-able description of the run (config, data); a checkpoint saved under another
        identity is refused instead of resumed.
    evaluate : callable, optional
        ``evaluate(state, epoch, step) -> dict`` after every ``eval_every`` epochs and the last;
        its row (with ``epoch`` and ``step`` first) goes to the history and through ``rules``.
    rules : sequence of PlateauRule
        Called after each evaluation; may change the state and stop training.
    log_every : int
        Steps between train-log rows (0: none; the metrics are then never fetched, so steps
        run asynchronously). Each row's means pass through ``scale_log``; a non-finite
        ``finite_key`` stops with ``FloatingPointError``.
    desc : str
        Names the run in log lines.
    meta : dict, optional
        More JSON-able facts stored in every checkpoint.
    """
    log = run.log or (lambda s: None)
    work_dir, checkpoint, resume, progress = run.work_dir, run.checkpoint, run.resume, run.progress
    max_minutes, stop_after_steps = run.max_minutes, run.stop_after_steps
    if key_mode not in ("fold_in", "split"):
        raise ValueError(f"key_mode must be 'fold_in' or 'split', got {key_mode!r}")
    total_steps = steps_per_epoch * epochs
    identity = json.loads(json.dumps(identity or {}, default=str))
    history: list[dict] = []
    train_log: list[dict] = []
    acc: dict = {}
    n_acc = 0
    epochs_done, prior_seconds = 0, 0.0
    stopped = "steps"
    resumed_from = None
    mngr = None
    multi = distributed.multi_process()
    if work_dir is not None:
        ckpt_dir = Path(work_dir) / CHECKPOINTS
        if distributed.is_primary():
            mngr = _manager(ckpt_dir, checkpoint.keep)
        latest = distributed.broadcast_json(mngr.latest_step() if mngr is not None else None)
        if resume and latest is not None:
            resumed_from = latest
            if multi:
                state, key, saved = _restore_everywhere(mngr, resumed_from, state, key)
            else:
                state, key, saved = _restore(mngr, resumed_from, state, key)
            if saved.get("identity") != identity:
                if mngr is not None:
                    mngr.close()
                raise CellscapeError("the checkpoint in this folder was trained with another config or data; "
                                     "use a new --out folder", path=ckpt_dir, field="config")
            lp = saved["loop"]
            history, train_log = lp["history"], lp["train_log"]
            acc = {k: jnp.asarray(v, jnp.float32) for k, v in lp["acc"].items()}
            n_acc, epochs_done, prior_seconds = lp["n_acc"], lp["epochs_done"], lp["train_seconds"]
            if lp.get("stopped_by") == "early stopping":  # a finished run stays finished
                stopped = "early stopping"
            for rule, s in zip(rules, lp["rules"], strict=True):
                rule.load_state_dict(s)
            if lp.get("source") is not None:
                source.load_state_dict(lp["source"])
            log(f"resumed from step {resumed_from} ({ckpt_dir})")
        elif not resume and mngr is not None and latest is not None:
            for s in mngr.all_steps():
                mngr.delete(s)

    step = int(state.step)
    t_start = t_log = time.perf_counter()
    t_warm = None
    steady_steps, eval_seconds = 0, 0.0
    budget = None if max_minutes is None else max_minutes * 60.0

    def seconds() -> float:
        return prior_seconds + time.perf_counter() - t_start

    def save_now() -> None:
        if mngr is None:
            return
        loop = {"history": history, "train_log": train_log, "acc": {k: float(v) for k, v in acc.items()},
                "n_acc": n_acc, "epochs_done": epochs_done, "train_seconds": seconds(),
                "rules": [r.state_dict() for r in rules], "stopped_by": stopped,
                "source": source.state_dict() if hasattr(source, "state_dict") else None}
        _save(mngr, step, state, key, {"identity": identity, "loop": loop, "step": step, **(meta or {})})

    try:
        while epochs_done < epochs and stopped == "steps":
            epoch = epochs_done
            end = (epoch + 1) * steps_per_epoch
            if step < end:
                for batch in source.batches(epoch, step - epoch * steps_per_epoch):
                    if key_mode == "split":
                        key, sub = jax.random.split(key)
                    else:
                        sub = jax.random.fold_in(key, step)
                    state, metrics = step_fn(state, batch, sub)
                    step += 1
                    if t_warm is None:  # steady-state time counts steps after the first compile
                        jax.block_until_ready(state.params)
                        t_warm = time.perf_counter()
                    else:
                        steady_steps += 1
                    if log_every:
                        for k, v in metrics.items():
                            acc[k] = acc.get(k, 0.0) + v
                        n_acc += 1
                        if step % log_every == 0 or step == total_steps:
                            now = time.perf_counter()
                            row = {"step": step, **scale_log({k: float(v) / n_acc for k, v in acc.items()}),
                                   "seconds": seconds()}
                            train_log.append(row)
                            shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("step", "seconds"))
                            log(f"{desc}: step {step}/{total_steps} {shown} ({n_acc / max(now - t_log, 1e-9):.2f} steps/s)")
                            if finite_key in row and not np.isfinite(row[finite_key]):
                                raise FloatingPointError(f"{desc}: {finite_key} is not finite at step {step}: {row}")
                            acc, n_acc, t_log = {}, 0, now
                    if progress:
                        progress(step, total_steps)
                    if checkpoint.every and step % checkpoint.every == 0:
                        save_now()
                    if stop_after_steps is not None and step >= stop_after_steps:
                        stopped = "interrupted"
                        break
                    if budget is not None and distributed.agree(time.perf_counter() - t_start > budget):
                        stopped = "time budget"
                        break
                    if step >= end:
                        break
            if stopped != "steps":
                break
            epochs_done = epoch + 1
            if evaluate is not None and (epochs_done % eval_every == 0 or epochs_done == epochs):
                t_eval = time.perf_counter()
                row = {"epoch": epochs_done, "step": step, **evaluate(state, epochs_done, step)}
                history.append(row)
                eval_seconds += time.perf_counter() - t_eval
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
                for rule in rules:
                    state, stop = rule(state, row, log)
                    if stop:
                        stopped = "early stopping"
        if stopped != "interrupted":  # an interrupted run stops like a killed one: only its checkpoints remain
            save_now()
    finally:
        if mngr is not None:
            mngr.close()
    busy = time.perf_counter() - t_warm - eval_seconds if t_warm else 0.0
    return LoopResult(state=state, step=step, history=history, train_log=train_log, stopped_by=stopped,
                      train_seconds=seconds(), steady_steps=steady_steps, steady_seconds=busy,
                      resumed_from=resumed_from)
