"""Training the segmentation U-Net and the counting CNN on the shared loop of :mod:`assets_pkg.core.ml`.

- :func:`train_segmentation` fits a :class:`~assets_pkg.core.segmentation.unet.UNet` on (image, instance
  label) pairs from random crops with the 4/8 symmetries, AdamW with warm-up and cosine decay,
  then picks the post-processing thresholds of
  :func:`~assets_pkg.core.segmentation.classical.instances_from_maps` on a few images by F1 at IoU 0.5
  (the minimum object area of near-ties by count error).
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
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from ..ml.loop import HostRngBatches, LoopResult, PlateauRule, TrainRun, train_loop
from ..ml.optim import warmup_cosine_adamw
from ..ml.provenance import data_hash
from .config import CountTrainConfig, SegTrainConfig
from .metrics import match_instances
from .models import CountingModel, SegmentationModel, load_model, prepare_count_input, save_model
from .targets import centre_targets, contact_weights, seg_targets, small_object_weights
from .unet import (
    CountingCNN,
    count_train_step,
    create_count_state,
    create_seg_state,
    instances_from_unet_maps,
    normalize_image,
    seg_train_step,
)

__all__ = [
    "train_segmentation",
    "split_validation",
    "augmented_crop",
    "validation_f1",
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
         scale_log=lambda row: row, *, steps_per_epoch: int | None = None, epochs: int = 1,
         evaluate=None, rules=()) -> LoopResult:
    """Run the shared loop the way both trainers do: ``config.steps`` steps (or ``epochs`` x
    ``steps_per_epoch``, an evaluation after each epoch), batches from ``make_batch(rng)`` with
    ``rng = default_rng(config.seed)``, split-chain step keys, a train-log row every
    ``config.log_every`` steps, ``config.max_minutes`` of wall time (unless ``run`` sets its own);
    a checkpoint of another config or data is not resumed."""
    if run.max_minutes is None and config.max_minutes is not None:
        run = dataclasses.replace(run, max_minutes=config.max_minutes)
    return train_loop(state, step_fn, HostRngBatches(make_batch, config.seed),
                      steps_per_epoch=steps_per_epoch or config.steps, epochs=epochs, key=key, key_mode="split",
                      run=run, identity=run_identity(config, data_hash), log_every=config.log_every,
                      evaluate=evaluate, rules=rules, scale_log=scale_log, desc=desc)


def run_identity(config, data_hash: str) -> dict:
    """What a checkpoint must match to be resumed: the config but its time budget, and the data."""
    return {**{k: v for k, v in config.model_dump().items() if k != "max_minutes"}, "data_hash": data_hash}


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


def _pooled_scores(maps, labels, threshold: float, marker_threshold: float, min_area: int) -> tuple[float, float]:
    """F1 at IoU 0.5 pooled over images and the mean absolute count error per image, from their
    network maps (:meth:`SegmentationModel.maps`) and a post-processing."""
    tp = fp = fn = 0
    count_errors = []
    for image_maps, truth in zip(maps, labels, strict=True):
        pred = instances_from_unet_maps(image_maps, threshold, marker_threshold, min_area)
        m = match_instances(pred, truth, 0.5)
        tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
        count_errors.append(abs(m["n_pred"] - m["n_true"]))
    return 2 * tp / max(2 * tp + fp + fn, 1), float(np.mean(count_errors)) if count_errors else 0.0


#: Minimum object areas whose tuning F1 is within this of the best are ties, decided by the count
#: error (see :func:`tune_postprocessing`); ``SegTrainConfig.tune_f1_tolerance`` by default.
F1_TIE_TOLERANCE = SegTrainConfig.model_fields["tune_f1_tolerance"].default


def tune_postprocessing(
    model: SegmentationModel,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    thresholds=THRESHOLDS,
    marker_thresholds=MARKER_THRESHOLDS,
    min_areas=MIN_AREAS,
    f1_tolerance: float = F1_TIE_TOLERANCE,
) -> dict:
    """Pick the post-processing by pooled F1 at IoU 0.5 on the given images, the smallest object
    kept by F1 and count error.

    Every setting of the grid is scored by its pooled F1 and its mean absolute count error per
    image.  The foreground and marker thresholds are those of the best F1 (they shape every
    outline).  With them, the minimum object areas within ``f1_tolerance`` of that F1 count as
    ties, and the lowest count error among them wins, then the higher F1: dropping or keeping
    the few small objects (fragments, micronuclei) moves F1 by a handful of objects but decides
    the count.  ``f1_tolerance=0`` picks by F1 alone (exact ties by count error).

    The network maps are computed once per image; only the watershed runs per setting.
    ``model`` is updated in place.

    Returns
    -------
    dict
        ``threshold``, ``marker_threshold``, ``min_area``, ``f1`` and ``count_error`` of the chosen
        setting, and ``best_f1``, the grid's highest F1.
    """
    if f1_tolerance < 0:
        raise ValueError(f"f1_tolerance must be >= 0, got {f1_tolerance}")
    maps = [model.maps(im) for im in images]
    grid = [(float(th), float(mth), int(ma), *_pooled_scores(maps, labels, th, mth, ma))
            for th, mth, ma in itertools.product(thresholds, marker_thresholds, min_areas)]
    # max() keeps the first of equal F1s: the grid order decides exact ties.
    best = max(grid, key=lambda g: g[3])
    ties = [g for g in grid if g[:2] == best[:2] and g[3] >= best[3] - f1_tolerance - 1e-12]
    th, mth, ma, f1, ce = min(ties, key=lambda g: (g[4], -g[3]))
    model.threshold, model.marker_threshold, model.min_area = th, mth, ma
    return {"threshold": th, "marker_threshold": mth, "min_area": ma, "f1": f1, "count_error": ce,
            "best_f1": best[3]}


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold ``fraction`` of ``n`` images out of training, drawn with ``seed``.

    Returns
    -------
    (train, valid) : ndarray of int
        Sorted indices; ``valid`` holds ``round(fraction * n)`` images, at least 2 and leaving at
        least 2 to train on, and is empty when ``fraction`` is 0 or ``n < 4``.
    """
    if fraction <= 0 or n < 4:
        return np.arange(n), np.zeros(0, int)
    k = min(max(2, round(fraction * n)), n - 2)
    perm = np.random.default_rng([seed, 0x5E6]).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def loss_weights(labels: np.ndarray, config: SegTrainConfig) -> np.ndarray:
    """Pixel loss weights (H, W) float32 of one instance-label image: 1, plus
    ``config.contact_weight`` where nuclei meet (:func:`contact_weights`), plus
    ``config.small_object_weight`` on and around small objects (:func:`small_object_weights`)."""
    contact = contact_weights(labels, config.contact_weight, config.contact_radius)
    return (contact + small_object_weights(labels, config.small_object_weight) - 1.0).astype(np.float32)


def augmented_crop(rng: np.random.Generator, image: np.ndarray, fg: np.ndarray, dist: np.ndarray,
                   config: SegTrainConfig, weight: np.ndarray | None = None,
                   centre: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """One random training crop of side ``config.crop`` with scale, blur, intensity and noise
    augmentation (the flips and rotations are applied on the device, :func:`seg_train_step`).

    Parameters
    ----------
    rng : numpy Generator
        The only source of randomness (the loop saves its state with each checkpoint).
    image, fg, dist : ndarray of float32, shape (H, W)
        The normalised image and its :func:`seg_targets`, at least ``config.crop`` on each side.
    config : SegTrainConfig
        ``crop``, ``scale_jitter``, ``blur_sigma``, ``intensity_jitter`` and ``noise``.
    weight : ndarray of float32, shape (H, W), optional
        Pixel loss weights (:func:`~assets_pkg.core.segmentation.targets.contact_weights`), cropped
        with the rest.
    centre : ndarray of float32, shape (H, W), optional
        Centre target (:func:`~assets_pkg.core.segmentation.targets.centre_targets`), cropped and
        resampled like the image (its peaks keep their height; their width scales with the zoom).

    Returns
    -------
    tuple of ndarray of float32, shape (crop, crop)
        (image, fg, dist), then weight and centre when given, in the batch order of
        :func:`~assets_pkg.core.segmentation.unet.seg_train_step` (with a ``centre`` and no
        ``weight`` the weights are ones).  The foreground and the weights stay piecewise
        constant (nearest neighbour); the per-object normalised distance is scale-free, so it is
        resampled like the image.
    """
    from scipy import ndimage as ndi
    from skimage.transform import resize

    c, (h, w) = config.crop, image.shape
    j = config.scale_jitter
    zoom = float(np.exp(rng.uniform(-np.log1p(j), np.log1p(j)))) if j > 0 else 1.0
    side = int(np.clip(round(c / zoom), 8, min(h, w)))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    win = np.s_[y : y + side, x : x + side]
    im, f, d = image[win], fg[win], dist[win]
    wt = None if weight is None else weight[win]
    ct = None if centre is None else centre[win]
    if wt is None and ct is not None:
        wt = np.ones_like(f)
    if side != c:
        im = resize(im, (c, c), order=1, anti_aliasing=False, preserve_range=True)
        d = resize(d, (c, c), order=1, anti_aliasing=False, preserve_range=True)
        if ct is not None:
            ct = resize(ct, (c, c), order=1, anti_aliasing=False, preserve_range=True)
        f = resize(f, (c, c), order=0, anti_aliasing=False, preserve_range=True)
        if wt is not None:
            wt = resize(wt, (c, c), order=0, anti_aliasing=False, preserve_range=True)
    if config.blur_sigma > 0 and rng.random() < 0.5:
        im = ndi.gaussian_filter(im, rng.uniform(0, config.blur_sigma))
    k = config.intensity_jitter
    if k > 0:
        gain, offset, gamma = 1 + rng.uniform(-k, k), rng.uniform(-k / 3, k / 3), float(np.exp(rng.uniform(-k, k)))
        im = np.maximum(im * gain + offset, 0.0) ** gamma
    if config.noise > 0:
        im = im + rng.normal(0.0, rng.uniform(0, config.noise), im.shape)
    out = (im, f, d) + tuple(a for a in (wt, ct) if a is not None)
    return tuple(a.astype(np.float32) for a in out)


#: Fixed post-processing of the model-selection F1 (the grid of :func:`tune_postprocessing` runs once, after).
SELECTION_POSTPROCESSING = {"threshold": 0.5, "marker_threshold": 0.5, "min_area": 15}


def validation_f1(model: SegmentationModel, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                  threshold: float = 0.5, marker_threshold: float = 0.5, min_area: int = 15) -> float:
    """Pooled F1 at IoU 0.5 of ``model``'s maps with fixed post-processing on labelled images."""
    return _pooled_scores([model.maps(im) for im in images], labels, threshold, marker_threshold, min_area)[0]


class _BestParams:
    """The parameters of the best validation F1 so far, mirrored to ``work_dir`` (msgpack, never
    pickle) so that a resumed run selects among every evaluation, not only its own."""

    FILE, META = ".best_params.msgpack", ".best_params.json"

    def __init__(self, work_dir, identity: dict, template, resume: bool):
        import json

        self.f1, self.step, self.params = -1.0, None, None
        self.dir = None if work_dir is None else Path(work_dir)
        self.key = data_hash([np.frombuffer(json.dumps(identity, sort_keys=True, default=str).encode(), np.uint8)])
        if self.dir is None:
            return
        meta, blob = self.dir / self.META, self.dir / self.FILE
        if not resume:
            for f in (meta, blob):
                f.unlink(missing_ok=True)
            return
        if meta.is_file() and blob.is_file():
            saved = json.loads(meta.read_text())
            if saved.get("identity") == self.key:
                self.f1, self.step = float(saved["f1"]), int(saved["step"])
                self.params = serialization.from_bytes(template, blob.read_bytes())

    def offer(self, f1: float, step: int, params) -> bool:
        """Keep ``params`` when ``f1`` is at least the best so far (ties go to the later step)."""
        import json

        if f1 < self.f1:
            return False
        self.f1, self.step, self.params = float(f1), int(step), params
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            for name, data in ((self.FILE, serialization.to_bytes(jax.device_get(params))),
                               (self.META, json.dumps({"identity": self.key, "f1": self.f1, "step": self.step}).encode())):
                tmp = self.dir / f"{name}.tmp"
                tmp.write_bytes(data)
                tmp.replace(self.dir / name)
        return True


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
    """Train the U-Net on instance-labelled images, select it and tune its post-processing on
    validation images.

    Validation images are ``valid_images`` when given, else ``config.valid_fraction`` of the
    training images held out (:func:`split_validation`; they are not trained on).  Every
    ``config.eval_every`` steps the model is scored on them (F1 at IoU 0.5 with
    :data:`SELECTION_POSTPROCESSING`); the best evaluation's parameters are kept and training
    stops after ``config.early_stopping_patience`` evaluations without improvement.  The
    post-processing thresholds are then tuned on the same images (:func:`tune_postprocessing`:
    F1, the minimum area of near-ties within ``config.tune_f1_tolerance`` by count error; flip-averaged maps when
    ``config.tta``).

    Parameters
    ----------
    images : sequence of ndarray, shape (H_i, W_i)
        Raw 2-D images, any dtype (normalised here); sizes may differ.
    labels : sequence of ndarray of int, shape (H_i, W_i)
        Instance labels, 0 = background.
    config : SegTrainConfig
    valid_images, valid_labels : optional
        Held-out images to select the model and tune the thresholds on.
    names : sequence of str, optional
        Image names, recorded in ``info["data"]``.
    run : TrainRun, optional
        The work folder (usually the model folder: checkpoints go to its ``checkpoints/`` and a
        run of the same config and data resumes from them), checkpoint policy, progress
        callback and log (a line every ``config.log_every`` steps, per evaluation and at the end).

    Returns
    -------
    SegmentationModel
        ``info`` holds the config, data (names, hash, validation names), per-interval
        ``history`` (step, loss, bce, distance_mse, seconds), the evaluations, the selected step
        and the tuning result.
    """
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need as many label images as images (> 0), got {len(images)} and {len(labels)}")
    run = run or TrainRun()
    t_start = time.perf_counter()
    c = config.crop
    for i, (im, lab) in enumerate(zip(images, labels, strict=True)):
        if np.shape(im) != np.shape(lab) or np.ndim(im) != 2:
            name = names[i] if names is not None else f"image {i}"
            raise ValueError(f"{name}: image {np.shape(im)} and labels {np.shape(lab)} must be equal 2-D shapes")
    all_names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    if valid_images is not None:
        train_idx, held = np.arange(len(images)), np.zeros(0, int)
        v_imgs, v_labs, v_on = list(valid_images), list(valid_labels), "validation"
    else:
        train_idx, held = split_validation(len(images), config.valid_fraction, config.seed)
        v_imgs, v_labs = [images[i] for i in held], [labels[i] for i in held]
        v_on = "held-out training"
    imgs, fgs, dists, wts, centres = [], [], [], [], []
    with_centre = config.markers == "centre"
    for i in train_idx:
        fg, dist = seg_targets(labels[i])
        imgs.append(_pad_min(normalize_image(images[i]), c))
        fgs.append(_pad_min(fg, c))
        dists.append(_pad_min(dist, c))
        if config.contact_weight > 0 or config.small_object_weight > 0:
            wts.append(_pad_min(loss_weights(labels[i], config), c))
        if with_centre:
            centres.append(_pad_min(centre_targets(labels[i], config.centre_sigma), c))
    data = {"n_images": len(images), "names": list(names) if names is not None else None,
            "hash": data_hash([*images, *labels], names), "n_train": len(train_idx),
            "held_out": [all_names[i] for i in held]}
    ucfg = config.unet
    epochs = max(1, round(config.steps / config.eval_every)) if v_imgs else 1
    per_epoch = -(-config.steps // epochs)
    key = jax.random.PRNGKey(config.seed)
    key, init_key = jax.random.split(key)
    state = create_seg_state(ucfg, init_key, (c, c),
                             tx=warmup_cosine_adamw(config.learning_rate, per_epoch * epochs, config.warmup_steps,
                                                    config.weight_decay))

    def batch(rng):
        idx = rng.integers(0, len(imgs), config.batch_size)
        crops = [augmented_crop(rng, imgs[i], fgs[i], dists[i], config, wts[i] if wts else None,
                                centres[i] if centres else None) for i in idx]
        x, *targets = (np.stack(a) for a in zip(*crops, strict=True))
        return (jnp.asarray(x[..., None]), *(jnp.asarray(t) for t in targets))

    best = _BestParams(run.work_dir, run_identity(config, data["hash"]), state.params, run.resume)
    probe = SegmentationModel(config=ucfg, params=state.params)

    def evaluate(st, epoch, step):
        probe.params = st.params
        f1 = validation_f1(probe, v_imgs, v_labs, **SELECTION_POSTPROCESSING)
        kept = best.offer(f1, step, st.params)
        return {"valid_f1": f1, "valid_error": 1.0 - f1, "selected": bool(kept)}

    rules = [PlateauRule("valid_error", config.learning_rate, stop_patience=config.early_stopping_patience)] \
        if v_imgs and config.early_stopping_patience else []
    res = _fit(config, state, jax.jit(seg_train_step, static_argnames="do_augment"), batch, key, "train U-Net",
               data["hash"], run, steps_per_epoch=per_epoch, epochs=epochs,
               evaluate=evaluate if v_imgs else None, rules=rules)
    jax.block_until_ready(res.state.params)
    params = best.params if best.params is not None else res.state.params
    seg = SegmentationModel(config=ucfg, params=params, object_diameter_px=median_diameter(labels), tta=config.tta)
    if v_imgs:
        tune_imgs, tune_labs, tuned_on = v_imgs, v_labs, v_on
        _log(run.log, f"selected step {best.step} (validation F1@0.5 {best.f1:.4f} with fixed post-processing)")
    else:
        idx = np.unique(np.linspace(0, len(images) - 1, min(config.tune_images, len(images))).round().astype(int))
        tune_imgs, tune_labs, tuned_on = [images[i] for i in idx], [labels[i] for i in idx], "train"
    t_tune = time.perf_counter()
    tuned = tune_postprocessing(seg, tune_imgs, tune_labs, f1_tolerance=config.tune_f1_tolerance)
    _log(run.log, f"post-processing tuned on {len(tune_imgs)} {tuned_on} images: {tuned}")
    seg.info = {**_run_info(config, res, data, t_start), "tune_seconds": time.perf_counter() - t_tune,
                "evaluations": res.history,
                "selection": {"step": best.step, "valid_f1": best.f1 if best.step is not None else None},
                "tuning": {**tuned, "images": len(tune_imgs), "on": tuned_on}}
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
