"""Training the VQ-VAE: a pure jitted ``train_step``, evaluation, data parallelism over all
devices (of every process in a multi-process run), checkpoints and exact resume, on the shared
loop of :mod:`assets_pkg.core.ml`.

Determinism: the data order of epoch ``e`` is ``default_rng((seed, e))`` and the step key is
``fold_in(PRNGKey(seed), step)``, so a run resumed from any checkpoint reaches the same
parameters as an uninterrupted one.

The output folder is an :mod:`~assets_pkg.core.ml.model_folder` (``model.json`` + parameters,
``checkpoints/``) with ``metrics.json`` and ``history.csv`` exported beside for DVC.

Multi-process data parallelism (:mod:`assets_pkg.core.ml.distributed`, ``cellscape
train-distributed``): every process calls :func:`fit` with the same arguments after
``distributed.initialize``; the mesh spans every process's devices, each process reads only its
rows of every batch from the frame store, gradients are all-reduced inside the jitted step and
the parameters stay replicated; only process 0 writes to ``out_dir``. The loss curve equals a
single-process run's with the same global batch up to the order of the reductions (measured
on 2 CPU processes against 1, ``tests/ml/test_distributed.py``: see there).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax.training import train_state

from ..errors import CellscapeError
from ..ml import distributed, model_folder
from ..ml.devices import Devices, describe_devices
from ..ml.loop import CheckpointPolicy, PlateauRule, TrainRun, train_loop
from ..ml.optim import plateau_optimizer
from ..ml.provenance import data_hash, git_commit
from ..store.frame_store import FrameStore
from .config import TrainConfig
from .loader import FrameLoader
from .models import VQVAE, ModelConfig, compute_losses, init_model

#: Metric names recorded per epoch and split.
METRICS = ("total", "reconstruction", "codebook", "commitment", "classification", "perplexity", "accuracy")
#: The ``kind`` of a VQ-VAE model folder.
KIND = "vqvae"


class TrainState(train_state.TrainState):
    """Flax TrainState (params, optimizer state, step)."""


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Adam/AdamW whose base learning rate is an injected hyperparameter (for plateau cuts);
    see :func:`assets_pkg.core.ml.optim.plateau_optimizer`."""
    return plateau_optimizer(cfg.learning_rate, total_steps, cfg.optimizer, cfg.weight_decay, cfg.schedule,
                             cfg.warmup_steps)


def augment(frames: jax.Array, rng: jax.Array) -> jax.Array:
    """Random 90-degree rotation and horizontal flip per frame (NHWC), one of 8 symmetries."""
    n = frames.shape[0]
    k = jax.random.randint(rng, (n,), 0, 8)
    variants = [frames]
    for r in range(1, 4):
        variants.append(jnp.rot90(frames, r, axes=(1, 2)))
    variants += [v[:, :, ::-1, :] for v in variants[:4]]
    stacked = jnp.stack(variants)  # (8, N, H, W, C)
    return stacked[k, jnp.arange(n)]


def create_state(model_cfg: ModelConfig, train_cfg: TrainConfig, sample: np.ndarray, total_steps: int) -> TrainState:
    """Initialise parameters from ``PRNGKey(seed)`` on a sample batch (N, H, W, 3)."""
    model = VQVAE(model_cfg)
    variables = init_model(model_cfg, jax.random.PRNGKey(train_cfg.seed), jnp.asarray(sample[:2]))
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=make_optimizer(train_cfg, total_steps))


def train_step(state: TrainState, batch: tuple, rng: jax.Array, classification_weight: float, do_augment: bool = True):
    """One optimisation step; pure (jit it with ``classification_weight`` and ``do_augment`` static).

    Parameters
    ----------
    state : TrainState
    batch : (frames, labels)
        frames (N, H, W, 3) float32, labels (N,) int32.
    rng : jax.Array
        Key for augmentation and dropout.

    Returns
    -------
    (TrainState, dict)
        The updated state and the batch's metrics (:data:`METRICS`).
    """
    frames, labels = batch
    aug_rng, drop_rng = jax.random.split(rng)
    if do_augment:
        frames = augment(frames, aug_rng)

    def loss_fn(params):
        out = state.apply_fn({"params": params}, frames, train=True, rngs={"dropout": drop_rng})
        return compute_losses(out, labels, classification_weight)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), metrics


def eval_step(state: TrainState, batch: tuple, classification_weight: float) -> dict:
    """Metrics of a batch in evaluation mode (no dropout, no augmentation), same loss definitions."""
    frames, labels = batch
    out = state.apply_fn({"params": state.params}, frames, train=False)
    _, metrics = compute_losses(out, labels, classification_weight)
    return metrics


# --------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    """What :func:`fit` returns."""

    state: TrainState
    model_config: ModelConfig
    history: pd.DataFrame
    final_metrics: dict
    out_dir: Path
    step: int
    stopped_early: bool = False
    interrupted: bool = False
    plateau: dict | None = None
    """The early-stopping / plateau rule's state after the last evaluation (``best``,
    ``bad_evals``, ``lr``), as saved in the checkpoints and ``model.json``."""
    train_log: list[dict] | None = None


def _mean_metrics(batches: list[tuple[dict, int]]) -> dict:
    total = sum(n for _, n in batches)
    return {k: float(sum(float(m[k]) * n for m, n in batches) / total) for k in batches[0][0]}


def evaluate(state: TrainState, loader: FrameLoader, devices: Devices, classification_weight: float) -> dict:
    """Frame-weighted mean of :data:`METRICS` over every frame the loader serves."""
    step = _jitted_eval(classification_weight)
    out = []
    for b in loader.epoch(0):
        out.append((jax.device_get(step(state, (b.frames, b.labels))), b.size))
    if not out:
        raise CellscapeError("nothing to evaluate: the split is empty", field="split")
    return _mean_metrics(out)


_JIT_CACHE: dict = {}


def jitted_train_step(classification_weight: float, do_augment: bool, devices: Devices | None = None):
    """The jitted ``(state, batch, rng) -> (state, metrics)`` of :func:`train_step` for these
    settings, compiled once per process and shared (the state argument is donated). With
    ``devices`` the new state and the metrics are replicated over its mesh (the gradients of a
    sharded batch all-reduced)."""
    key = ("train", float(classification_weight), bool(do_augment), None if devices is None else devices.mesh)
    if key not in _JIT_CACHE:
        out = {} if devices is None else {"out_shardings": devices.replicated}
        _JIT_CACHE[key] = jax.jit(
            lambda s, b, r: train_step(s, b, r, classification_weight, do_augment), donate_argnums=0, **out
        )
    return _JIT_CACHE[key]


def _jitted_eval(classification_weight: float):
    key = ("eval", float(classification_weight))
    if key not in _JIT_CACHE:
        _JIT_CACHE[key] = jax.jit(lambda s, b: eval_step(s, b, classification_weight))
    return _JIT_CACHE[key]


@dataclass
class _EpochBatches:
    """The loop's batch source over a shuffling :class:`FrameLoader`: ``(frames, labels)``."""

    loader: FrameLoader

    def batches(self, epoch: int, start: int):
        for b in self.loader.epoch(epoch, start_batch=start):
            yield b.frames, b.labels


def fit(
    store: FrameStore,
    splits: pd.DataFrame,
    cfg: TrainConfig,
    out_dir: str | Path,
    provenance: dict | None = None,
    resume: bool = True,
    stop_after_steps: int | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    devices: Devices | None = None,
    max_minutes: float | None = None,
    log_every: int = 0,
) -> TrainResult:
    """Train on the ``train`` rows of ``splits``, evaluate on ``train`` and ``valid``.

    Parameters
    ----------
    store : FrameStore
        Holds the frames.
    splits : pandas.DataFrame
        Output of :func:`assets_pkg.core.store.splits.make_splits` (``plate_id``, ``frame_index``,
        ``split``, ``label``).
    cfg : TrainConfig
    out_dir : path-like
        The model folder (:mod:`assets_pkg.core.ml.model_folder`): ``checkpoints/`` during
        training, then ``model.json`` and the parameters, with ``history.csv`` and
        ``metrics.json`` exported beside.
    provenance : dict, optional
        Recorded in every checkpoint and in ``model.json`` (dataset md5, split version, ...);
        the git commit, devices and split sizes are added here.
    resume : bool
        Continue from the newest checkpoint in ``out_dir``; one saved under another config or
        other data (the frames and labels of each split, the stored versions of their plates,
        the dataset md5 and split version) is refused with a :class:`CellscapeError`.
    stop_after_steps : int, optional
        Return after this many steps in total without saving, as a killed run would (tests
        resume from the last periodic checkpoint).
    log : callable, optional
        Receives one line per evaluation.
    progress : callable, optional
        ``progress(step, total_steps)`` after every step.
    devices : Devices, optional
        The data-parallel mesh; default every device of every process.
    max_minutes : float, optional
        Stop after this much wall time (checkpointed; a later call resumes).
    log_every : int
        Steps between rows of ``TrainResult.train_log`` (mean step metrics, e.g. ``total``);
        0: none, and the steps run without waiting for their metrics.

    In a multi-process run (see the module docstring) every process calls it alike and gets
    the same result; only process 0 writes to ``out_dir``.
    """
    log = log or (lambda s: None)
    out_dir = model_folder.check_writable(out_dir)
    primary = distributed.is_primary()
    if primary:
        out_dir.mkdir(parents=True, exist_ok=True)
    devices = devices or Devices.all_processes()
    train_rows = splits[splits["split"] == "train"]
    valid_rows = splits[splits["split"] == "valid"]
    if len(train_rows) < cfg.batch_size:
        raise CellscapeError(
            f"the train split has {len(train_rows)} frames, fewer than one batch of {cfg.batch_size}", field="batch_size"
        )
    if cfg.batch_size % devices.count:
        raise CellscapeError(f"batch_size {cfg.batch_size} is not divisible by {devices.count} devices", field="batch_size")
    num_classes = int(splits["label"].max()) + 1
    model_cfg = cfg.vqvae_config(num_classes)
    ebs = cfg.eval_batch_size or cfg.batch_size
    # several processes: each reads its rows of every batch (a last eval batch not divisible by
    # the device count is replicated: every process reads it whole)
    part = devices.host_rows if devices.processes > 1 else None
    train_loader = FrameLoader(store, train_rows, cfg.batch_size, shuffle=True, drop_remainder=True,
                               seed=cfg.seed, put=devices.put_batch, part=part)
    eval_sets = {"train": FrameLoader(store, train_rows, ebs, shuffle=False, drop_remainder=False,
                                      put=devices.put_batch, part=part)}
    if len(valid_rows):
        eval_sets["valid"] = FrameLoader(store, valid_rows, ebs, shuffle=False, drop_remainder=False,
                                         put=devices.put_batch, part=part)
    steps_per_epoch = len(train_loader)
    sample, _ = train_loader.host_batch(np.arange(min(2, len(train_rows))))
    state = devices.replicate(create_state(model_cfg, cfg, sample, steps_per_epoch * cfg.epochs))
    config_record = {"train": cfg.model_dump(), "model": asdict(model_cfg)}
    prov = dict(provenance or {})
    prov.setdefault("git_commit", git_commit())
    prov["devices"] = describe_devices()
    prov["n_train"], prov["n_valid"] = int(len(train_rows)), int(len(valid_rows))
    plateau = PlateauRule("valid_total" if "valid" in eval_sets else "train_total", cfg.learning_rate,
                          cfg.plateau_patience, cfg.plateau_factor, cfg.early_stopping_patience)

    def evaluate_all(st, epoch: int, step: int) -> dict:
        row = {"learning_rate": plateau.lr}
        for name, ld in eval_sets.items():
            for k, v in evaluate(st, ld, devices, cfg.classification_weight).items():
                row[f"{name}_{k}"] = v
        return row

    res = train_loop(
        state, jitted_train_step(cfg.classification_weight, cfg.augment, devices), _EpochBatches(train_loader),
        steps_per_epoch=steps_per_epoch, epochs=cfg.epochs, key=devices.replicate(jax.random.PRNGKey(cfg.seed)),
        key_mode="fold_in",
        run=TrainRun(out_dir, CheckpointPolicy(cfg.checkpoint_every, cfg.keep_checkpoints), resume, max_minutes,
                     stop_after_steps, progress, log),
        identity={**config_record, "data": _split_identity(store, train_rows, valid_rows, prov)},
        evaluate=evaluate_all, eval_every=cfg.eval_every, rules=[plateau],
        desc="train VQ-VAE", meta={"provenance": prov}, log_every=log_every,
    )
    final = dict(res.history[-1]) if res.history else {}
    hist = pd.DataFrame(res.history)
    if not res.interrupted:  # an interrupted run stops like a killed one: only its checkpoints remain
        # steady-state training throughput: wall time after the first step, minus evaluations
        frames = res.steady_steps * cfg.batch_size
        fps = frames / res.steady_seconds if frames and res.steady_seconds > 0 else float("nan")
        final.update(frames_per_second=fps, train_seconds=res.train_seconds)
    if not res.interrupted and primary:
        record = {"kind": KIND, "architecture": asdict(model_cfg), "config": cfg.model_dump(), "provenance": prov,
                  "history": res.history, "metrics": final, "step": res.step, "stopped_by": res.stopped_by,
                  "plateau": plateau.state_dict()}
        model_folder.save(out_dir, jax.device_get(res.state.params), record)
        model_folder.atomic_write_text(out_dir / "history.csv", hist.to_csv(index=False))
        model_folder.atomic_write_text(out_dir / "metrics.json", json.dumps(final, indent=2, sort_keys=True) + "\n")
    return TrainResult(state=res.state, model_config=model_cfg, history=hist, final_metrics=final, out_dir=out_dir,
                       step=res.step, stopped_early=res.stopped_by == "early stopping", interrupted=res.interrupted,
                       plateau=plateau.state_dict(), train_log=res.train_log)


def _split_identity(store: FrameStore, train_rows: pd.DataFrame, valid_rows: pd.DataFrame, prov: dict) -> dict:
    """What a checkpoint must have been trained on to be resumed: the frames of each split (a
    hash of their plate ids, frame indices and labels), the stored version of every plate they
    come from (any rewrite of a plate's frames makes a new version), and the dataset version
    recorded for them."""
    def frames(rows):
        return data_hash([rows["frame_index"].to_numpy(np.int64), rows["label"].to_numpy(np.int64)],
                         rows["plate_id"].astype(str).tolist())

    plates = sorted(set(train_rows["plate_id"].astype(str)) | set(valid_rows["plate_id"].astype(str)))
    return {"train": frames(train_rows), "valid": frames(valid_rows), "dataset_md5": prov.get("dataset_md5"),
            "split_version": prov.get("split_version"),
            "plate_versions": {p: store.read_manifest(p)["version"] for p in plates}}


def load_checkpoint(out_dir: str | Path) -> tuple[Any, ModelConfig, dict]:
    """Parameters, model config and record of a trained VQ-VAE model folder (no pickle involved).

    Returns
    -------
    (params, ModelConfig, record)
        ``record`` is ``model.json``: architecture, config, provenance (dataset md5, split
        version, git commit), history, metrics and step.
    """
    record = model_folder.read_record(out_dir, kind=KIND)
    model_cfg = ModelConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in record["architecture"].items()})
    return model_folder.load_params(out_dir, record), model_cfg, record


_PREDICT_CACHE: dict = {}


def predict_fn(model_cfg: ModelConfig, fields: tuple[str, ...]):
    """The jitted ``(params, frames) -> {field: array}`` evaluation-mode forward pass.

    Parameters
    ----------
    model_cfg : ModelConfig
    fields : tuple of str
        See :func:`predict`.
    """
    key = (model_cfg, fields)
    if key not in _PREDICT_CACHE:
        model = VQVAE(model_cfg)

        def run(p, x):
            out = model.apply({"params": p}, x, train=False)
            got = {}
            for f in fields:
                if f == "indices":
                    got[f] = out.vq["local"].encoding_indices
                elif f == "indices_global":
                    got[f] = out.vq["global"].encoding_indices
                else:
                    got[f] = getattr(out, f)
            return got

        _PREDICT_CACHE[key] = jax.jit(run)
    return _PREDICT_CACHE[key]


def predict(params, model_cfg: ModelConfig, frames: np.ndarray, batch_size: int = 256,
            fields: tuple[str, ...] = ("reconstruction", "target")) -> dict[str, np.ndarray]:
    """Run the model in evaluation mode over frames, in batches, returning NumPy arrays.

    Parameters
    ----------
    params : pytree
        Trained parameters.
    model_cfg : ModelConfig
    frames : ndarray, shape (N, H, W, 3), float32
    fields : tuple of str
        Any of ``reconstruction``, ``target``, ``logits``, ``embedding``, ``indices`` (local
        code indices) and ``indices_global``.

    Returns
    -------
    dict of str to ndarray
        Each field concatenated over N.
    """
    run = predict_fn(model_cfg, fields)
    parts = [jax.device_get(run(params, jnp.asarray(frames[i : i + batch_size]))) for i in range(0, len(frames), batch_size)]
    return {f: np.concatenate([p[f] for p in parts]) for f in fields}


def save_training_figures(result: TrainResult, store: FrameStore, splits: pd.DataFrame, title: str,
                          n_frames: int = 8, seed: int = 0) -> dict[str, Path]:
    """Reconstructions of random validation frames and the per-epoch curves, as PNGs in
    ``<out_dir>/figures/``; returns ``{"reconstructions": path, "curves": path}``. The parameters
    are fetched to the host first, so one process of a multi-process run may call it alone."""
    from .. import plots

    valid = splits[splits["split"] == "valid"]
    pool = valid if len(valid) else splits[splits["split"] == "train"]
    rows = pool.sample(n=min(n_frames, len(pool)), random_state=seed)
    frames = store.read_batch(list(zip(rows["plate_id"], rows["frame_index"], strict=True)))
    out = predict(jax.device_get(result.state.params), result.model_config, frames)
    captions = list(rows["gene"].astype(str)) if "gene" in rows else None
    figs = result.out_dir / "figures"
    return {
        "reconstructions": plots.save_png(
            plots.plot_reconstructions(out["target"], out["reconstruction"], captions, title=f"{title}: validation frames"),
            figs / "reconstructions.png"),
        "curves": plots.save_png(plots.plot_training_curves(result.history, title=title), figs / "curves.png"),
    }
