"""Training, saving, loading and running the segmentation U-Net and the counting CNN.

- :func:`train_segmentation` fits a :class:`~assets_pkg.core.segmentation.unet.UNet` on (image, instance
  label) pairs from random crops with the 4/8 symmetries, AdamW with warm-up and cosine decay,
  then picks the post-processing thresholds of
  :func:`~assets_pkg.core.segmentation.classical.instances_from_maps` on a few images by F1 at IoU 0.5.
- :func:`train_counting` fits a :class:`~assets_pkg.core.segmentation.unet.CountingCNN` on whole images
  resized to one input shape, with their true counts (BBBC005 names).
- :func:`save_model` / :func:`load_model` write and read either model as a folder: an Orbax
  ``params`` checkpoint plus ``model.json`` (kind, architecture, post-processing, training
  config, data, history).  Writes go to a temporary folder swapped in at the end, so a failed
  save leaves the previous model in place; nothing is ever unpickled.

Images are 2-D (height, width) arrays of any integer or float dtype; they are
percentile-normalised (:func:`~assets_pkg.core.segmentation.unet.normalize_image`) before the networks.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from skimage.segmentation import relabel_sequential as segmentation_relabel

from ..errors import CellscapeError
from . import classical
from .config import CountTrainConfig, SegTrainConfig
from .metrics import match_instances
from .unet import (
    CountingCNN,
    UNet,
    UNetConfig,
    count_train_step,
    create_count_state,
    create_seg_state,
    normalize_image,
    predict_instances,
    predict_maps,
    seg_targets,
    seg_train_step,
)

__all__ = [
    "SegmentationModel",
    "CountingModel",
    "train_segmentation",
    "train_counting",
    "tune_postprocessing",
    "save_model",
    "load_model",
    "MODEL_FILE",
]

MODEL_FILE = "model.json"
_FORMAT = 1

#: Post-processing grid searched by :func:`tune_postprocessing`.
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MARKER_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
MIN_AREAS = (0, 15, 40)


class ModelFileError(CellscapeError):
    """A model folder is missing, incomplete or of another kind."""


def _log(log: Callable[[str], None] | None, msg: str) -> None:
    if log is not None:
        log(msg)


def _optimizer(config) -> optax.GradientTransformation:
    """AdamW with linear warm-up then cosine decay to 1 % over ``config.steps``."""
    lr, steps = config.learning_rate, config.steps
    warmup = max(0, min(config.warmup_steps, steps - 1))
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), end_value=lr * 0.01)
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def _train_loop(
    step_once: Callable[[], dict],
    steps: int,
    log_every: int,
    max_minutes: float | None,
    desc: str,
    progress: bool,
    log: Callable[[str], None] | None,
    scale: Callable[[dict], dict] = lambda row: row,
) -> tuple[list[dict], int, str, float]:
    """Run ``step_once()`` (returns the step's metrics) up to ``steps`` times or ``max_minutes``.

    Every ``log_every`` steps the metrics are averaged over the interval, passed through
    ``scale``, appended to the history with ``step`` and ``seconds``, and logged; a non-finite
    ``loss`` stops training with an error.

    Returns
    -------
    (history, steps_done, stopped_by, train_seconds)
    """
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=desc, unit="step")
    budget = None if max_minutes is None else max_minutes * 60.0
    history, acc, n_acc = [], {}, 0
    t_train = t_log = time.perf_counter()
    step, stopped = 0, "steps"
    try:
        while step < steps:
            metrics = step_once()
            step += 1
            for k, v in metrics.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            if bar is not None:
                bar.update(1)
            if step % log_every == 0 or step == steps:
                now = time.perf_counter()
                row = {"step": step, **scale({k: float(v) / n_acc for k, v in acc.items()}), "seconds": now - t_train}
                history.append(row)
                shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("step", "seconds"))
                _log(log, f"{desc}: step {step}/{steps} {shown} ({n_acc / max(now - t_log, 1e-9):.2f} steps/s)")
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4g}")
                if not np.isfinite(row["loss"]):
                    raise FloatingPointError(f"{desc}: loss is not finite at step {step}: {row}")
                acc, n_acc, t_log = {}, 0, now
            if budget is not None and time.perf_counter() - t_train > budget:
                stopped = "time budget"
                break
    finally:
        if bar is not None:
            bar.close()
    return history, step, stopped, time.perf_counter() - t_train


# ============================================================================ segmentation
@dataclass
class SegmentationModel:
    """A trained U-Net with its post-processing.

    Attributes
    ----------
    config : UNetConfig
    params : pytree of jax.Array
    threshold, marker_threshold : float
        Foreground and marker thresholds of :func:`instances_from_maps` (``kind="distance"``).
    min_area : int
        Smallest object kept, pixels (at the training scale).
    object_diameter_px : float, optional
        Median equivalent diameter of the training objects, pixels; lets :meth:`segment`
        rescale images whose objects are of another size.
    info : dict
        Training config, data, history, timings (saved in ``model.json``).
    """

    config: UNetConfig
    params: Any
    threshold: float = 0.5
    marker_threshold: float = 0.5
    min_area: int = 0
    object_diameter_px: float | None = None
    info: dict = field(default_factory=dict)

    kind = "segmentation"

    def maps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Foreground probability and normalised distance, both (H, W) float32."""
        return predict_maps(self.params, self.config, image)

    def segment(self, image: np.ndarray, object_diameter_px: float | None = None) -> np.ndarray:
        """Instance labels (H, W) int32 of one 2-D image (0 = background).

        Parameters
        ----------
        image : ndarray, shape (H, W)
            Raw intensities, any dtype.
        object_diameter_px : float, optional
            Expected object diameter in this image, pixels.  When it differs from the
            training objects' by more than 10 %, the image is resized to the training scale,
            segmented, and the labels resized back (nearest neighbour).
        """
        scale = 1.0
        if object_diameter_px and self.object_diameter_px:
            scale = self.object_diameter_px / float(object_diameter_px)
        image = np.asarray(image)
        if abs(scale - 1.0) <= 0.1:
            return self._segment(image)
        from skimage.transform import resize

        shape = (max(8, round(image.shape[0] * scale)), max(8, round(image.shape[1] * scale)))
        small = resize(image.astype(np.float32), shape, order=1, anti_aliasing=scale < 1, preserve_range=True)
        labels = self._segment(small)
        back = resize(labels, image.shape, order=0, anti_aliasing=False, preserve_range=True).astype(np.int32)
        out, _, _ = segmentation_relabel(back)
        return out

    def _segment(self, image: np.ndarray) -> np.ndarray:
        return predict_instances(self.params, self.config, image, self.threshold, self.marker_threshold,
                                 self.min_area)

    def count(self, image: np.ndarray) -> int:
        """Number of predicted instances in one image."""
        return int(self.segment(image).max())

    def record(self) -> dict:
        return {
            "unet": dataclasses.asdict(self.config),
            "postprocessing": {
                "threshold": self.threshold,
                "marker_threshold": self.marker_threshold,
                "min_area": self.min_area,
                "object_diameter_px": self.object_diameter_px,
            },
        }


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
    progress: bool = False,
    log: Callable[[str], None] | None = None,
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
    progress : bool
        tqdm bar over the steps.
    log : callable, optional
        Receives a line every ``config.log_every`` steps and at the end.

    Returns
    -------
    SegmentationModel
        ``info`` holds the config, data, per-interval ``history`` (step, loss, bce,
        distance_mse, seconds) and the tuning result.
    """
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need as many label images as images (> 0), got {len(images)} and {len(labels)}")
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
    ucfg = config.unet
    key = jax.random.PRNGKey(config.seed)
    key, init_key = jax.random.split(key)
    state = create_seg_state(ucfg, init_key, (c, c), tx=_optimizer(config))
    step_fn = jax.jit(seg_train_step, static_argnames="do_augment")
    rng = np.random.default_rng(config.seed)

    def batch():
        idx = rng.integers(0, len(imgs), config.batch_size)
        out = ([], [], [])
        for i in idx:
            h, w = imgs[i].shape
            y, x = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
            for arr, src in zip(out, (imgs, fgs, dists), strict=True):
                arr.append(src[i][y : y + c, x : x + c])
        return jnp.asarray(np.stack(out[0])[..., None]), jnp.asarray(np.stack(out[1])), jnp.asarray(np.stack(out[2]))

    def step_once():
        nonlocal state, key
        key, sub = jax.random.split(key)
        state, metrics = step_fn(state, batch(), sub)
        return metrics

    history, step, stopped, train_s = _train_loop(step_once, config.steps, config.log_every, config.max_minutes,
                                                  "train U-Net", progress, log)
    jax.block_until_ready(state.params)
    seg = SegmentationModel(config=ucfg, params=state.params, object_diameter_px=median_diameter(labels))
    if valid_images is not None:
        tune_imgs, tune_labs, tuned_on = list(valid_images), list(valid_labels), "validation"
    else:
        idx = np.unique(np.linspace(0, len(images) - 1, min(config.tune_images, len(images))).round().astype(int))
        tune_imgs, tune_labs, tuned_on = [images[i] for i in idx], [labels[i] for i in idx], "train"
    t_tune = time.perf_counter()
    best = tune_postprocessing(seg, tune_imgs, tune_labs)
    _log(log, f"post-processing tuned on {len(tune_imgs)} {tuned_on} images: {best}")
    seg.info = {
        "train_config": config.model_dump(),
        "data": {"n_images": len(images), "names": list(names) if names is not None else None},
        "history": history,
        "steps_done": step,
        "stopped_by": stopped,
        "train_seconds": train_s,
        "tune_seconds": time.perf_counter() - t_tune,
        "total_seconds": time.perf_counter() - t_start,
        "tuning": {**best, "images": len(tune_imgs), "on": tuned_on},
        "n_params": int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(state.params))),
        "platform": jax.devices()[0].platform,
    }
    return seg


# ============================================================================ counting
@dataclass
class CountingModel:
    """A trained counting CNN.

    Attributes
    ----------
    net : CountingCNN
    params : pytree of jax.Array
    input_shape : (int, int)
        Images are resized to this before the network.
    count_scale : float
        The network predicts ``count / count_scale``.
    info : dict
    """

    net: CountingCNN
    params: Any
    input_shape: tuple[int, int]
    count_scale: float = 1.0
    info: dict = field(default_factory=dict)

    kind = "counting"

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Normalised, resized (H, W) float32 network input of one raw image."""
        return prepare_count_input(image, self.input_shape)

    def predict_batch(self, x: np.ndarray, tta: bool = True) -> np.ndarray:
        """Counts (N,) float32 of prepared inputs (N, H, W).

        With ``tta`` the count is the mean over the four flips the network was trained with.
        """
        out = _count_forward(self.net, self.params, jnp.asarray(x[..., None], jnp.float32), tta)
        return np.asarray(out) * self.count_scale

    def count(self, image: np.ndarray) -> float:
        """Predicted number of cells in one raw 2-D image (not rounded)."""
        return float(self.predict_batch(self.prepare(image)[None])[0])

    def record(self) -> dict:
        return {
            "counting_cnn": {"widths": list(self.net.widths), "dense": self.net.dense,
                             "count_offset": self.net.count_offset, "dtype": self.net.dtype},
            "input_shape": list(self.input_shape),
            "count_scale": self.count_scale,
        }


@functools.partial(jax.jit, static_argnums=(0, 3))
def _count_forward(net: CountingCNN, params, x, tta: bool = True):
    if not tta:
        return net.apply({"params": params}, x, train=False)
    views = jnp.concatenate([x, x[:, ::-1], x[:, :, ::-1], x[:, ::-1, ::-1]])
    return net.apply({"params": params}, views, train=False).reshape(4, x.shape[0]).mean(axis=0)


def prepare_count_input(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Percentile-normalise a 2-D image and resize it (anti-aliased) to ``shape`` (H, W)."""
    from skimage.transform import resize

    img = normalize_image(image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    if img.shape != tuple(shape):
        img = resize(img, shape, order=1, anti_aliasing=True, preserve_range=True)
    return img.astype(np.float32)


def train_counting(
    images: Sequence[np.ndarray],
    counts: Sequence[float],
    config: CountTrainConfig = CountTrainConfig(),
    *,
    names: Sequence[str] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> CountingModel:
    """Train the counting CNN with an L2 loss on whole images and their true counts.

    Parameters
    ----------
    images : sequence of ndarray, shape (H_i, W_i)
        Raw 2-D images (resized to ``config.input_shape``).
    counts : sequence of number
        True cell counts.
    config : CountTrainConfig
    names, progress, log
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
    t_start = time.perf_counter()
    x_all = np.stack([prepare_count_input(im, config.input_shape) for im in images])
    scale = float(max(counts.max(), 1.0))
    y_all = counts / scale
    net = CountingCNN(widths=config.widths, dense=config.dense, count_offset=float(y_all.mean()), dtype=config.dtype)
    key = jax.random.PRNGKey(config.seed)
    key, init_key = jax.random.split(key)
    state = create_count_state(net, init_key, (*config.input_shape, 1), tx=_optimizer(config))
    step_fn = jax.jit(count_train_step, static_argnames="do_augment")
    rng = np.random.default_rng(config.seed)
    j = config.intensity_jitter

    def step_once():
        nonlocal state, key
        idx = rng.integers(0, len(x_all), config.batch_size)
        gain = 1.0 + rng.uniform(-j, j, (config.batch_size, 1, 1)).astype(np.float32) if j > 0 else 1.0
        key, sub = jax.random.split(key)
        state, metrics = step_fn(state, (jnp.asarray((x_all[idx] * gain)[..., None]), jnp.asarray(y_all[idx])), sub)
        return metrics

    history, step, stopped, train_s = _train_loop(
        step_once, config.steps, config.log_every, config.max_minutes, "train counting CNN", progress, log,
        scale=lambda row: {"loss": row["loss"] * scale**2})  # count MSE in cells^2
    jax.block_until_ready(state.params)
    model = CountingModel(net=net, params=state.params, input_shape=config.input_shape, count_scale=scale)
    pred = np.concatenate([model.predict_batch(x_all[i : i + 32]) for i in range(0, len(x_all), 32)])
    model.info = {
        "train_config": config.model_dump(),
        "data": {"n_images": len(images), "names": list(names) if names is not None else None,
                 "count_range": [float(counts.min()), float(counts.max())]},
        "history": history,
        "steps_done": step,
        "stopped_by": stopped,
        "train_seconds": train_s,
        "total_seconds": time.perf_counter() - t_start,
        "train_mae": float(np.mean(np.abs(pred - counts))),
        "n_params": int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(state.params))),
        "platform": jax.devices()[0].platform,
    }
    _log(log, f"trained {step} steps in {model.info['train_seconds']:.0f}s; train MAE {model.info['train_mae']:.2f}")
    return model


# ============================================================================ save / load
def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write_record(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=2, default=_json_default) + "\n", encoding="utf-8")


def save_model(model: SegmentationModel | CountingModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write a model folder (Orbax ``params/`` + ``model.json``) atomically.

    The folder is built beside ``path`` under a temporary name and swapped in at the end: a
    failure leaves the previous model at ``path`` untouched.

    Parameters
    ----------
    model : SegmentationModel or CountingModel
    path : path-like
        The model folder to create or replace.
    extra : dict, optional
        More JSON-able facts to record (for example provenance of the data).

    Returns
    -------
    Path
        The absolute folder path.
    """
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    if path.exists() and not (path / MODEL_FILE).is_file():
        raise ModelFileError("refusing to replace a folder that is not a model folder", path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / "params", model.params)
        ckptr.wait_until_finished()
        from ..localization.training import git_commit

        record = {
            "format": _FORMAT,
            "kind": model.kind,
            **model.record(),
            "info": model.info,
            "jax": jax.__version__,
            "git_commit": git_commit(),
            **({"extra": extra} if extra else {}),
        }
        _write_record(tmp / MODEL_FILE, record)
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_model_record(path: str | Path) -> dict:
    """The ``model.json`` of a model folder, checked for its format and kind."""
    path = Path(path)
    f = path / MODEL_FILE
    if not f.is_file():
        raise ModelFileError(f"not a model folder (no {MODEL_FILE})", path=path)
    try:
        record = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"unreadable model record ({e})", path=f) from e
    if record.get("format") != _FORMAT:
        raise ModelFileError(f"unsupported model format {record.get('format')!r}", path=f, field="format")
    if record.get("kind") not in ("segmentation", "counting"):
        raise ModelFileError(f"unknown model kind {record.get('kind')!r}", path=f, field="kind")
    return record


def load_model(path: str | Path, kind: str | None = None) -> SegmentationModel | CountingModel:
    """Read a model folder written by :func:`save_model`.

    Parameters
    ----------
    path : path-like
    kind : {"segmentation", "counting"}, optional
        Require this kind (a clear error otherwise).

    Raises
    ------
    ModelFileError
        Missing/incomplete folder, other format or kind, or parameters that do not match the
        recorded architecture.
    """
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    record = read_model_record(path)
    if kind is not None and record["kind"] != kind:
        raise ModelFileError(f"expected a {kind} model, found a {record['kind']} model", path=path / MODEL_FILE,
                             field="kind")
    if record["kind"] == "segmentation":
        cfg = UNetConfig(**record["unet"])
        net = UNet(cfg)
        dummy = jnp.zeros((1, cfg.multiple, cfg.multiple, cfg.in_channels), jnp.float32)
    else:
        c = record["counting_cnn"]
        net = CountingCNN(widths=tuple(c["widths"]), dense=int(c["dense"]), count_offset=float(c["count_offset"]),
                          dtype=c["dtype"])
        dummy = jnp.zeros((1, *record["input_shape"], 1), jnp.float32)
    abstract = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), dummy)["params"])
    try:
        params = ocp.StandardCheckpointer().restore(path / "params", abstract)
    except Exception as e:  # orbax raises several types for missing/mismatched trees
        raise ModelFileError(f"cannot restore parameters ({type(e).__name__}: {e})", path=path / "params") from e
    if record["kind"] == "segmentation":
        pp = record["postprocessing"]
        return SegmentationModel(config=cfg, params=params, threshold=float(pp["threshold"]),
                                 marker_threshold=float(pp["marker_threshold"]), min_area=int(pp["min_area"]),
                                 object_diameter_px=pp.get("object_diameter_px"), info=record.get("info", {}))
    return CountingModel(net=net, params=params, input_shape=tuple(record["input_shape"]),
                         count_scale=float(record["count_scale"]), info=record.get("info", {}))
