"""Training the VQ-VAE: a pure jitted ``train_step``, evaluation, data parallelism over all
local devices, Orbax checkpoints and exact resume.

Determinism: the data order of epoch ``e`` is ``default_rng((seed, e))`` and the step key is
``fold_in(PRNGKey(seed), step)``, so a run resumed from any checkpoint reaches the same
parameters as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
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
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..errors import CellscapeError
from ..store.frame_store import FrameStore
from .config import TrainConfig
from .loader import FrameLoader
from .models import VQVAE, ModelConfig, compute_losses, init_model

#: Metric names recorded per epoch and split.
METRICS = ("total", "reconstruction", "codebook", "commitment", "classification", "perplexity", "accuracy")


class TrainState(train_state.TrainState):
    """Flax TrainState (params, optimizer state, step)."""


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Adam/AdamW whose base learning rate is an injected hyperparameter (for plateau cuts)."""
    total_steps = max(1, total_steps)

    def shape(step):
        if cfg.schedule == "cosine":
            warm = jnp.minimum(1.0, (step + 1) / max(1, cfg.warmup_steps)) if cfg.warmup_steps else 1.0
            frac = jnp.clip((step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps), 0.0, 1.0)
            return warm * (0.1 + 0.9 * 0.5 * (1 + jnp.cos(jnp.pi * frac)))
        if cfg.schedule != "constant":
            raise CellscapeError(f"unknown schedule {cfg.schedule!r}", field="schedule")
        return 1.0

    def build(learning_rate):
        if cfg.optimizer == "adam":
            core = optax.scale_by_adam()
        elif cfg.optimizer == "adamw":
            core = optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(cfg.weight_decay))
        else:
            raise CellscapeError(f"unknown optimizer {cfg.optimizer!r}", field="optimizer")
        return optax.chain(core, optax.scale_by_schedule(shape), optax.scale(-learning_rate))

    return optax.inject_hyperparams(build)(learning_rate=cfg.learning_rate)


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


# --------------------------------------------------------------------------- devices
@dataclass
class Devices:
    """The data-parallel layout: a 1-D mesh over the local devices."""

    mesh: Mesh
    data: NamedSharding
    replicated: NamedSharding

    @property
    def count(self) -> int:
        return self.mesh.devices.size

    @classmethod
    def local(cls) -> Devices:
        mesh = Mesh(np.array(jax.local_devices()), ("data",))
        return cls(mesh, NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))

    def put_batch(self, frames: np.ndarray, labels: np.ndarray):
        """Shard a batch over devices along N (N divisible by the device count), else replicate."""
        sharding = self.data if frames.shape[0] % self.count == 0 else self.replicated
        return jax.device_put(frames, sharding), jax.device_put(labels, sharding)


def describe_devices() -> str:
    devs = jax.local_devices()
    return f"{len(devs)} x {devs[0].platform}:{getattr(devs[0], 'device_kind', '')}"


# --------------------------------------------------------------------------- provenance
def git_commit(path: str | Path | None = None) -> str:
    """The git commit of the code (``unknown`` outside a git checkout), ``+dirty`` if modified."""
    cwd = Path(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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


def _jitted_train(classification_weight: float, do_augment: bool):
    key = ("train", float(classification_weight), bool(do_augment))
    if key not in _JIT_CACHE:
        _JIT_CACHE[key] = jax.jit(
            lambda s, b, r: train_step(s, b, r, classification_weight, do_augment), donate_argnums=0
        )
    return _JIT_CACHE[key]


def _jitted_eval(classification_weight: float):
    key = ("eval", float(classification_weight))
    if key not in _JIT_CACHE:
        _JIT_CACHE[key] = jax.jit(lambda s, b: eval_step(s, b, classification_weight))
    return _JIT_CACHE[key]


def _checkpoint_manager(directory: Path, cfg: TrainConfig):
    import orbax.checkpoint as ocp

    opts = ocp.CheckpointManagerOptions(max_to_keep=cfg.keep_checkpoints, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory.resolve(), options=opts)


def _save(mngr, step: int, state: TrainState, meta: dict) -> None:
    import orbax.checkpoint as ocp

    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave({"params": state.params, "opt_state": state.opt_state, "step": state.step}),
            meta=ocp.args.JsonSave(meta),
        ),
        force=True,
    )
    mngr.wait_until_finished()


def _restore(mngr, step: int, state: TrainState) -> tuple[TrainState, dict]:
    import orbax.checkpoint as ocp

    target = {"params": state.params, "opt_state": state.opt_state, "step": state.step}
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    got = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    restored = got["state"]
    state = state.replace(params=restored["params"], opt_state=restored["opt_state"], step=restored["step"])
    return state, dict(got["meta"])


def _set_lr(state: TrainState, lr: float) -> TrainState:
    hp = dict(state.opt_state.hyperparams)
    hp["learning_rate"] = jnp.asarray(lr, dtype=jnp.asarray(hp["learning_rate"]).dtype)
    return state.replace(opt_state=state.opt_state._replace(hyperparams=hp))


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
        Receives ``checkpoints/`` (Orbax), ``history.csv``, ``metrics.json`` and
        ``config.json``.
    provenance : dict, optional
        Recorded in every checkpoint (dataset md5, split version, ...); the git commit is
        added here.
    resume : bool
        Continue from the newest checkpoint in ``out_dir`` when its config matches.
    stop_after_steps : int, optional
        Return after this many steps in total without saving, as a killed run would (tests
        resume from the last periodic checkpoint).
    log : callable, optional
        Receives one line per evaluation.
    progress : callable, optional
        ``progress(step, total_steps)`` after every step.
    """
    log = log or (lambda s: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    devices = devices or Devices.local()
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
    train_loader = FrameLoader(store, train_rows, cfg.batch_size, shuffle=True, drop_remainder=True,
                               seed=cfg.seed, put=devices.put_batch)
    eval_sets = {"train": FrameLoader(store, train_rows, ebs, shuffle=False, drop_remainder=False, put=devices.put_batch)}
    if len(valid_rows):
        eval_sets["valid"] = FrameLoader(store, valid_rows, ebs, shuffle=False, drop_remainder=False, put=devices.put_batch)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.epochs
    sample, _ = train_loader.host_batch(np.arange(min(2, len(train_rows))))
    state = create_state(model_cfg, cfg, sample, total_steps)
    config_record = {"train": cfg.model_dump(), "model": asdict(model_cfg)}
    prov = dict(provenance or {})
    prov.setdefault("git_commit", git_commit())
    prov["devices"] = describe_devices()
    prov["n_train"], prov["n_valid"] = int(len(train_rows)), int(len(valid_rows))

    ckpt_dir = out_dir / "checkpoints"
    mngr = _checkpoint_manager(ckpt_dir, cfg)
    history: list[dict] = []
    loop = {"best": math.inf, "bad_evals": 0, "lr": cfg.learning_rate, "stopped_early": False}
    if resume and mngr.latest_step() is not None:
        step0 = mngr.latest_step()
        state, meta = _restore(mngr, step0, state)
        if meta.get("config") != json.loads(json.dumps(config_record)):
            raise CellscapeError(
                "the checkpoint in this folder was trained with another config; use a new --out folder",
                path=ckpt_dir, field="config",
            )
        history = meta.get("history", [])
        loop.update(meta.get("loop", {}))
        log(f"resumed from step {step0} ({ckpt_dir})")
    state = jax.device_put(state, devices.replicated)
    step_fn = _jitted_train(cfg.classification_weight, cfg.augment)
    base_key = jax.random.PRNGKey(cfg.seed)

    def meta_now(final: dict | None = None) -> dict:
        return {"config": config_record, "provenance": prov, "history": history, "loop": loop,
                "final_metrics": final or {}, "step": int(state.step)}

    step = int(state.step)
    interrupted = False
    t_start = time.perf_counter()
    t_warm = None
    frames_seen, eval_seconds = 0, 0.0
    epoch = step // steps_per_epoch
    while epoch < cfg.epochs and not loop["stopped_early"]:
        for b in train_loader.epoch(epoch, start_batch=step - epoch * steps_per_epoch):
            state, _ = step_fn(state, (b.frames, b.labels), jax.random.fold_in(base_key, step))
            step += 1
            if t_warm is None:  # throughput counts steady-state steps, not the first compile
                jax.block_until_ready(state.params)
                t_warm = time.perf_counter()
            else:
                frames_seen += b.size
            if progress:
                progress(step, total_steps)
            if step % cfg.checkpoint_every == 0:
                _save(mngr, step, state, meta_now())
            if stop_after_steps is not None and step >= stop_after_steps:
                interrupted = True
                break
        if interrupted:
            break
        epoch += 1
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            row = {"epoch": epoch, "step": step, "learning_rate": loop["lr"]}
            t_eval = time.perf_counter()
            for name, ld in eval_sets.items():
                for k, v in evaluate(state, ld, devices, cfg.classification_weight).items():
                    row[f"{name}_{k}"] = v
            history.append(row)
            eval_seconds += time.perf_counter() - t_eval
            key = "valid_total" if "valid" in eval_sets else "train_total"
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            if not np.isfinite(row[key]):
                raise CellscapeError(f"training diverged: {key} = {row[key]} at epoch {epoch}", field="learning_rate")
            if row[key] < loop["best"] - 1e-6:
                loop["best"], loop["bad_evals"] = row[key], 0
            else:
                loop["bad_evals"] += 1
                if cfg.plateau_patience and loop["bad_evals"] % cfg.plateau_patience == 0:
                    loop["lr"] = loop["lr"] * cfg.plateau_factor
                    state = _set_lr(state, loop["lr"])
                    log(f"plateau: learning rate -> {loop['lr']:.3g}")
                if cfg.early_stopping_patience and loop["bad_evals"] >= cfg.early_stopping_patience:
                    loop["stopped_early"] = True
                    log(f"early stop after epoch {epoch}")
    seconds = time.perf_counter() - t_start
    final = dict(history[-1]) if history else {}
    if not interrupted:  # an interrupted run stops like a killed one: only its checkpoints remain
        # steady-state training throughput: wall time after the first step, minus evaluations
        busy = time.perf_counter() - t_warm - eval_seconds if t_warm else 0.0
        fps = frames_seen / busy if frames_seen and busy > 0 else float("nan")
        final.update(frames_per_second=fps, train_seconds=seconds)
        _save(mngr, step, state, meta_now(final))
    mngr.close()
    hist = pd.DataFrame(history)
    if not interrupted:
        _write_outputs(out_dir, hist, final, config_record, prov, step)
    return TrainResult(state=state, model_config=model_cfg, history=hist, final_metrics=final, out_dir=out_dir,
                       step=step, stopped_early=bool(loop["stopped_early"]), interrupted=interrupted)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_outputs(out_dir: Path, hist: pd.DataFrame, final: dict, config: dict, prov: dict, step: int) -> None:
    _atomic_write(out_dir / "history.csv", hist.to_csv(index=False))
    _atomic_write(out_dir / "metrics.json", json.dumps(final, indent=2, sort_keys=True) + "\n")
    _atomic_write(out_dir / "config.json", json.dumps({**config, "provenance": prov, "step": step}, indent=2, default=str) + "\n")


def load_checkpoint(out_dir: str | Path, step: int | None = None) -> tuple[Any, ModelConfig, dict]:
    """Parameters, model config and metadata of a trained model folder (no pickle involved).

    Returns
    -------
    (params, ModelConfig, meta)
        ``meta`` holds config, provenance, history and final metrics as saved.
    """
    import orbax.checkpoint as ocp

    ckpt_dir = Path(out_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        raise CellscapeError("no checkpoints folder", path=ckpt_dir)
    mngr = ocp.CheckpointManager(ckpt_dir.resolve())
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise CellscapeError("no checkpoint saved", path=ckpt_dir)
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    model_cfg = ModelConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["config"]["model"].items()})
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    mngr.close()
    return restored["params"], model_cfg, dict(meta)


def config_from_dict(d: dict) -> TrainConfig:
    """Inverse of ``TrainConfig.model_dump()`` (ignores unknown keys)."""
    names = set(TrainConfig.model_fields)
    return TrainConfig(**{k: v for k, v in d.items() if k in names})


_PREDICT_CACHE: dict = {}


def _predict_fn(model_cfg: ModelConfig, fields: tuple[str, ...]):
    """The jitted ``(params, frames) -> {field: array}`` evaluation-mode forward pass."""
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
    run = _predict_fn(model_cfg, fields)
    parts = [jax.device_get(run(params, jnp.asarray(frames[i : i + batch_size]))) for i in range(0, len(frames), batch_size)]
    return {f: np.concatenate([p[f] for p in parts]) for f in fields}


def save_training_figures(result: TrainResult, store: FrameStore, splits: pd.DataFrame, title: str,
                          n_frames: int = 8, seed: int = 0) -> dict[str, Path]:
    """Reconstructions of random validation frames and the per-epoch curves, as PNGs in
    ``<out_dir>/figures/``; returns ``{"reconstructions": path, "curves": path}``."""
    from .. import plots

    valid = splits[splits["split"] == "valid"]
    pool = valid if len(valid) else splits[splits["split"] == "train"]
    rows = pool.sample(n=min(n_frames, len(pool)), random_state=seed)
    frames = store.read_batch(list(zip(rows["plate_id"], rows["frame_index"], strict=True)))
    out = predict(result.state.params, result.model_config, frames)
    captions = list(rows["gene"].astype(str)) if "gene" in rows else None
    figs = result.out_dir / "figures"
    return {
        "reconstructions": plots.save_png(
            plots.plot_reconstructions(out["target"], out["reconstruction"], captions, title=f"{title}: validation frames"),
            figs / "reconstructions.png"),
        "curves": plots.save_png(plots.plot_training_curves(result.history, title=title), figs / "curves.png"),
    }
