"""Training the segmentation U-Net and the counting CNN on the shared loop of :mod:`assets_pkg.core.ml`.

- :func:`train_segmentation` fits a :class:`~assets_pkg.core.segmentation.unet.UNet` on (image, instance
  label) pairs from random crops with the 4/8 symmetries, AdamW with warm-up and cosine decay,
  then picks the post-processing thresholds of
  :func:`~assets_pkg.core.segmentation.classical.instances_from_maps` on a few images by F1 at IoU 0.5.
- :func:`train_counting` fits a :class:`~assets_pkg.core.segmentation.unet.CountingCNN` on whole images
  resized to one input shape, with their true counts (BBBC005 names).

Given a ``work_dir`` (the model folder the result is saved to), both write checkpoints under
``work_dir/checkpoints`` and resume from them exactly: the batches come from one NumPy generator
and the step keys from one split chain, both saved in every checkpoint.  The trained models and
their folders are in :mod:`assets_pkg.core.segmentation.models` (:func:`save_model` and
:func:`load_model` are re-exported here for the callers that train and save).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..ml.loop import HostRngBatches, LoopResult, TrainRun, train_loop
from ..ml.optim import warmup_cosine_adamw
from ..ml.provenance import data_hash
from . import classical
from .config import CountTrainConfig, SegTrainConfig
from .metrics import match_instances
from .models import CountingModel, SegmentationModel, load_model, prepare_count_input, save_model
from .unet import (
    CountingCNN,
    count_train_step,
    create_count_state,
    create_seg_state,
    normalize_image,
    seg_targets,
    seg_train_step,
)

__all__ = [
    "train_segmentation",
    "train_counting",
    "tune_postprocessing",
    "median_diameter",
    "save_model",
    "load_model",
]

#: Post-processing grid searched by :func:`tune_postprocessing`.
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MARKER_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
MIN_AREAS = (0, 15, 40)


def _log(log: Callable[[str], None] | None, msg: str) -> None:
    if log is not None:
        log(msg)


def _fit(config, state, step_fn, make_batch, key, desc: str, data_hash: str, run: TrainRun,
         scale_log=lambda row: row) -> LoopResult:
    """Run the shared loop the way both trainers do: ``config.steps`` steps in one epoch, batches
    from ``make_batch(rng)`` with ``rng = default_rng(config.seed)``, split-chain step keys,
    a train-log row every ``config.log_every`` steps, ``config.max_minutes`` of wall time (unless
    ``run`` sets its own); a checkpoint of another config or data is not resumed."""
    if run.max_minutes is None and config.max_minutes is not None:
        run = dataclasses.replace(run, max_minutes=config.max_minutes)
    identity = {**{k: v for k, v in config.model_dump().items() if k != "max_minutes"}, "data_hash": data_hash}
    return train_loop(state, step_fn, HostRngBatches(make_batch, config.seed), steps_per_epoch=config.steps, epochs=1,
                      key=key, key_mode="split", run=run, identity=identity, log_every=config.log_every,
                      scale_log=scale_log, desc=desc)


def _run_info(config, res: LoopResult, data: dict, t_start: float) -> dict:
    """The ``info`` both trainers record: config, data, history, steps, timings, size, platform."""
    return {
        "train_config": config.model_dump(),
        "data": data,
        "history": res.train_log,
        "steps_done": res.step,
        "stopped_by": res.stopped_by,
        "train_seconds": res.train_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "n_params": int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(res.state.params))),
        "platform": jax.devices()[0].platform,
    }


# ============================================================================ segmentation


def median_diameter(labels: Sequence[np.ndarray]) -> float | None:
    """Median equivalent diameter ``sqrt(4 area / pi)`` of all objects of label images, pixels."""
    areas = []
    for lab in labels:
        counts = np.bincount(np.asarray(lab, np.int64).ravel())[1:]
        areas.append(counts[counts > 0])
    areas = np.concatenate(areas) if areas else np.zeros(0)
    return float(np.median(np.sqrt(4 * areas / np.pi))) if areas.size else None


def _pad_min(a: np.ndarray, size: int) -> np.ndarray:
    ph, pw = max(0, size - a.shape[0]), max(0, size - a.shape[1])
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)), mode="reflect" if min(a.shape) > 1 else "edge")
    return a


def _f1(rows) -> float:
    tp, fp, fn = (sum(r[i] for r in rows) for i in range(3))
    return 2 * tp / max(2 * tp + fp + fn, 1)


def tune_postprocessing(
    model: SegmentationModel,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    thresholds=THRESHOLDS,
    marker_thresholds=MARKER_THRESHOLDS,
    min_areas=MIN_AREAS,
) -> dict:
    """Pick the post-processing that maximises pooled F1 at IoU 0.5 on the given images.

    The network maps are computed once per image; only the watershed runs per setting.
    ``model`` is updated in place.

    Returns
    -------
    dict
        ``threshold``, ``marker_threshold``, ``min_area`` and ``f1`` of the best setting.
    """
    maps = [model.maps(im) for im in images]
    best = None
    for th, mth, ma in itertools.product(thresholds, marker_thresholds, min_areas):
        rows = []
        for (fg, dist), truth in zip(maps, labels, strict=True):
            pred = classical.instances_from_maps(fg, dist, th, kind="distance", marker_threshold=mth, min_area=ma)
            m = match_instances(pred, truth, 0.5)
            rows.append((m["tp"], m["fp"], m["fn"]))
        f1 = _f1(rows)
        if best is None or f1 > best["f1"] + 1e-12:
            best = {"threshold": float(th), "marker_threshold": float(mth), "min_area": int(ma), "f1": float(f1)}
    model.threshold, model.marker_threshold, model.min_area = best["threshold"], best["marker_threshold"], best["min_area"]
    return best


def train_segmentation(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    config: SegTrainConfig = SegTrainConfig(),
    *,
    valid_images: Sequence[np.ndarray] | None = None,
    valid_labels: Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    run: TrainRun | None = None,
) -> SegmentationModel:
    """Train the U-Net on instance-labelled images and tune its post-processing.

    Parameters
    ----------
    images : sequence of ndarray, shape (H_i, W_i)
        Raw 2-D images, any dtype (normalised here); sizes may differ.
    labels : sequence of ndarray of int, shape (H_i, W_i)
        Instance labels, 0 = background.
    config : SegTrainConfig
    valid_images, valid_labels : optional
        Held-out images to tune the thresholds on (default: ``config.tune_images`` training
        images spread over the set).
    names : sequence of str, optional
        Image names, recorded in ``info["data"]``.
    run : TrainRun, optional
        The work folder (usually the model folder: checkpoints go to its ``checkpoints/`` and a
        run of the same config and data resumes from them), checkpoint policy, progress
        callback and log (a line every ``config.log_every`` steps and at the end).

    Returns
    -------
    SegmentationModel
        ``info`` holds the config, data (names, hash), per-interval ``history`` (step, loss,
        bce, distance_mse, seconds) and the tuning result.
    """
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need as many label images as images (> 0), got {len(images)} and {len(labels)}")
    run = run or TrainRun()
    t_start = time.perf_counter()
    c = config.crop
    imgs, fgs, dists = [], [], []
    for i, (im, lab) in enumerate(zip(images, labels, strict=True)):
        if np.shape(im) != np.shape(lab) or np.ndim(im) != 2:
            name = names[i] if names is not None else f"image {i}"
            raise ValueError(f"{name}: image {np.shape(im)} and labels {np.shape(lab)} must be equal 2-D shapes")
        fg, dist = seg_targets(lab)
        imgs.append(_pad_min(normalize_image(im), c))
        fgs.append(_pad_min(fg, c))
        dists.append(_pad_min(dist, c))
    data = {"n_images": len(images), "names": list(names) if names is not None else None,
            "hash": data_hash([*images, *labels], names)}
    ucfg = config.unet
    key = jax.random.PRNGKey(config.seed)
    key, init_key = jax.random.split(key)
    state = create_seg_state(ucfg, init_key, (c, c),
                             tx=warmup_cosine_adamw(config.learning_rate, config.steps, config.warmup_steps,
                                                    config.weight_decay))

    def batch(rng):
        idx = rng.integers(0, len(imgs), config.batch_size)
        out = ([], [], [])
        for i in idx:
            h, w = imgs[i].shape
            y, x = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
            for arr, src in zip(out, (imgs, fgs, dists), strict=True):
                arr.append(src[i][y : y + c, x : x + c])
        return jnp.asarray(np.stack(out[0])[..., None]), jnp.asarray(np.stack(out[1])), jnp.asarray(np.stack(out[2]))

    res = _fit(config, state, jax.jit(seg_train_step, static_argnames="do_augment"), batch, key, "train U-Net",
               data["hash"], run)
    jax.block_until_ready(res.state.params)
    seg = SegmentationModel(config=ucfg, params=res.state.params, object_diameter_px=median_diameter(labels))
    if valid_images is not None:
        tune_imgs, tune_labs, tuned_on = list(valid_images), list(valid_labels), "validation"
    else:
        idx = np.unique(np.linspace(0, len(images) - 1, min(config.tune_images, len(images))).round().astype(int))
        tune_imgs, tune_labs, tuned_on = [images[i] for i in idx], [labels[i] for i in idx], "train"
    t_tune = time.perf_counter()
    best = tune_postprocessing(seg, tune_imgs, tune_labs)
    _log(run.log, f"post-processing tuned on {len(tune_imgs)} {tuned_on} images: {best}")
    seg.info = {**_run_info(config, res, data, t_start), "tune_seconds": time.perf_counter() - t_tune,
                "tuning": {**best, "images": len(tune_imgs), "on": tuned_on}}
    return seg


# ============================================================================ counting

def train_counting(
    images: Sequence[np.ndarray],
    counts: Sequence[float],
    config: CountTrainConfig = CountTrainConfig(),
    *,
    names: Sequence[str] | None = None,
    run: TrainRun | None = None,
) -> CountingModel:
    """Train the counting CNN with an L2 loss on whole images and their true counts.

    Parameters
    ----------
    images : sequence of ndarray, shape (H_i, W_i)
        Raw 2-D images (resized to ``config.input_shape``).
    counts : sequence of number
        True cell counts.
    config : CountTrainConfig
    names, run
        As in :func:`train_segmentation`.

    Returns
    -------
    CountingModel
        ``info`` holds the config, data, history (step, loss in cells², seconds) and the
        training-set MAE.
    """
    counts = np.asarray(counts, np.float32)
    if len(images) == 0 or len(images) != counts.size:
        raise ValueError(f"need one count per image (> 0 images), got {len(images)} and {counts.size}")
    if not np.all(np.isfinite(counts)) or (counts < 0).any():
        raise ValueError("counts must be finite and >= 0")
    run = run or TrainRun()
    t_start = time.perf_counter()
    x_all = np.stack([prepare_count_input(im, config.input_shape) for im in images])
    scale = float(max(counts.max(), 1.0))
    y_all = counts / scale
    data = {"n_images": len(images), "names": list(names) if names is not None else None,
            "count_range": [float(counts.min()), float(counts.max())], "hash": data_hash([*images, counts], names)}
    net = CountingCNN(widths=config.widths, dense=config.dense, count_offset=float(y_all.mean()), dtype=config.dtype)
    key = jax.random.PRNGKey(config.seed)
    key, init_key = jax.random.split(key)
    state = create_count_state(net, init_key, (*config.input_shape, 1),
                               tx=warmup_cosine_adamw(config.learning_rate, config.steps, config.warmup_steps,
                                                      config.weight_decay))
    j = config.intensity_jitter

    def batch(rng):
        idx = rng.integers(0, len(x_all), config.batch_size)
        gain = 1.0 + rng.uniform(-j, j, (config.batch_size, 1, 1)).astype(np.float32) if j > 0 else 1.0
        return jnp.asarray((x_all[idx] * gain)[..., None]), jnp.asarray(y_all[idx])

    res = _fit(config, state, jax.jit(count_train_step, static_argnames="do_augment"), batch, key,
               "train counting CNN", data["hash"], run,
               scale_log=lambda row: {"loss": row["loss"] * scale**2})  # count MSE in cells^2
    jax.block_until_ready(res.state.params)
    model = CountingModel(net=net, params=res.state.params, input_shape=config.input_shape, count_scale=scale)
    pred = np.concatenate([model.predict_batch(x_all[i : i + 32]) for i in range(0, len(x_all), 32)])
    model.info = {**_run_info(config, res, data, t_start), "train_mae": float(np.mean(np.abs(pred - counts)))}
    _log(run.log, f"trained {res.step} steps in {model.info['train_seconds']:.0f}s; train MAE {model.info['train_mae']:.2f}")
    return model
