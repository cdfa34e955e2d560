"""Nucleus segmentation: the classical baseline, post-processing of network maps, scoring.

- :func:`classical_segment` / :func:`classical_count`: the classical baseline, a thin wrapper
  over :func:`assets_pkg.core.segmentation.nuclei.detect_nuclei` (Gaussian smoothing, clipped Otsu, hole
  filling, distance-transform watershed) with parameter sets per image set
  (:data:`CLASSICAL_PRESETS`, tuned on training parts only by
  ``benchmarks/bench_baseline.py``).
- :func:`instances_from_maps`: turns a network's foreground probability plus a distance or
  boundary map into instances (markers from the second map, watershed inside the
  foreground); the U-Net uses it.
- :func:`score_folder`: one row of :func:`assets_pkg.core.segmentation.metrics.score_segmentation`
  per image for any ``segment_fn(image) -> labels``.

Images are 2-D (height, width); label images int32 with 0 = background, 1..N.  Inputs are
never modified.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage import measure, segmentation

from ..imaging.io import read_image
from .datasets import ImageMaskSet, load_mask
from .metrics import DEFAULT_THRESHOLDS, score_segmentation
from .nuclei import detect_nuclei

#: Keyword arguments of :func:`assets_pkg.core.segmentation.nuclei.detect_nuclei` per image set, tuned by
#: coordinate search on the training part of each set only (``benchmarks/bench_baseline.py
#: --tune``): ``bbbc039`` for mean F1 at IoU 0.5 on the first 100 BBBC039 fields by sorted
#: name (train F1 0.907 -> 0.931; the looser threshold costs boundary accuracy: mean
#: TP/(TP+FP+FN) over IoU 0.50..0.95 0.664 -> 0.603); ``bbbc005_w1`` (small round nucleus-like
#: objects) and ``bbbc005_w2`` (cell bodies) for count MAE on the train part of
#: :func:`assets_pkg.core.segmentation.datasets.bbbc005_split`, all blur levels together.
CLASSICAL_PRESETS: dict[str, dict[str, float]] = {
    "bbbc039": {
        "nucleus_diameter_px": 23.0,
        "threshold_scale": 0.5,
        "min_distance": 12.0,
        "gap_contrast": 0.02,
    },
    "bbbc005_w1": {"nucleus_diameter_px": 21.7, "gap_contrast": 0.1, "threshold_scale": 1.15},
    "bbbc005_w2": {"nucleus_diameter_px": 44.1, "threshold_scale": 0.3, "gap_contrast": 0.02},
}


def classical_params(preset: str | None = None, **overrides) -> dict:
    """Keyword arguments for :func:`~assets_pkg.core.segmentation.nuclei.detect_nuclei`.

    Parameters
    ----------
    preset : str, optional
        A key of :data:`CLASSICAL_PRESETS`.
    **overrides
        ``detect_nuclei`` keywords; those that are None are ignored, the others win over the
        preset.
    """
    if preset is not None and preset not in CLASSICAL_PRESETS:
        raise KeyError(f"unknown preset {preset!r}; known: {sorted(CLASSICAL_PRESETS)}")
    params = dict(CLASSICAL_PRESETS[preset]) if preset is not None else {}
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params


def classical_segment(
    image: np.ndarray,
    nucleus_diameter_px: float | None = None,
    *,
    preset: str | None = None,
    **detect_kwargs,
) -> np.ndarray:
    """Segment nuclei (or cells) with the classical baseline.

    Parameters
    ----------
    image : ndarray, shape (height, width)
        Fluorescence image, uint8, uint16 or float.  Not modified.
    nucleus_diameter_px : float, optional
        Expected object diameter in pixels (wins over the preset's).  Without it and without a
        preset, ``detect_nuclei``'s default (30 px).
    preset : str, optional
        Parameter set of :data:`CLASSICAL_PRESETS` (``"bbbc039"``, ``"bbbc005_w1"``,
        ``"bbbc005_w2"``).
    **detect_kwargs
        Any other :func:`~assets_pkg.core.segmentation.nuclei.detect_nuclei` keyword (``sigma``,
        ``min_area``, ``min_distance``, ``threshold_scale``, ``gap_contrast`` ...).

    Returns
    -------
    ndarray of int32, shape (height, width)
        0 = background, 1..N.
    """
    params = classical_params(preset, nucleus_diameter_px=nucleus_diameter_px, **detect_kwargs)
    return detect_nuclei(image, **params)


def classical_count(
    image: np.ndarray,
    nucleus_diameter_px: float | None = None,
    *,
    preset: str | None = None,
    **detect_kwargs,
) -> int:
    """Number of objects the classical baseline finds (see :func:`classical_segment`)."""
    labels = classical_segment(image, nucleus_diameter_px, preset=preset, **detect_kwargs)
    return int(labels.max())


def instances_from_maps(
    foreground_prob: np.ndarray,
    boundary_or_distance: np.ndarray,
    threshold: float = 0.5,
    *,
    kind: str = "distance",
    marker_threshold: float = 0.5,
    min_area: int = 0,
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """Instances from a foreground probability and a distance or boundary map.

    The foreground is ``foreground_prob > threshold``.  Markers are the 4-connected components
    of the object interiors:

    - ``kind="distance"``: ``boundary_or_distance`` is a distance to the background (larger
      inside); interiors are foreground pixels with distance ``>= marker_threshold``, and the
      watershed floods ``-distance``.  For a distance normalised per object to [0, 1] (1 at the
      centre) the default 0.5 keeps each object's inner half; for distances in pixels give
      ``marker_threshold`` in pixels.
    - ``kind="boundary"``: ``boundary_or_distance`` is a boundary probability; interiors are
      foreground pixels with boundary probability ``< marker_threshold``, and the watershed
      floods the boundary map.

    With a ``centre`` map (``kind="distance"`` only), the interiors are the foreground pixels
    with ``centre >= marker_threshold`` instead, and the watershed still floods ``-distance``.

    The watershed runs inside the foreground only.  A foreground component without a marker
    becomes one object; objects smaller than ``min_area`` pixels are dropped.

    Parameters
    ----------
    foreground_prob : ndarray of float, shape (height, width)
        Probability (or score) of foreground.
    boundary_or_distance : ndarray of float, shape (height, width)
        See ``kind``.
    threshold : float
        Foreground threshold.
    kind : {"distance", "boundary"}
    marker_threshold : float
        See ``kind``.
    min_area : int
        Smallest object kept, in pixels.
    centre : ndarray of float, shape (height, width), optional
        A centre-detection map (larger at object centres, e.g. a probability); seeds the
        watershed instead of the distance.

    Returns
    -------
    ndarray of int32, shape (height, width)
        0 = background, 1..N in raster order of the markers.
    """
    fg_prob = np.asarray(foreground_prob, dtype=np.float32)
    aux = np.asarray(boundary_or_distance, dtype=np.float32)
    if fg_prob.shape != aux.shape or fg_prob.ndim != 2 or (centre is not None and np.shape(centre) != aux.shape):
        shapes = [fg_prob.shape, aux.shape] + ([] if centre is None else [np.shape(centre)])
        raise ValueError(f"expected 2-D maps of one shape, got {' and '.join(map(str, shapes))}")
    if kind not in ("distance", "boundary"):
        raise ValueError(f"kind must be 'distance' or 'boundary', got {kind!r}")
    if centre is not None and kind != "distance":
        raise ValueError("a centre map seeds the distance watershed only (kind='distance')")
    fg = fg_prob > threshold
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    if kind == "distance":
        seeds = aux if centre is None else np.asarray(centre, np.float32)
        interior = fg & (seeds >= marker_threshold)
        elevation = -aux
    else:
        interior = fg & (aux < marker_threshold)
        elevation = aux
    markers = measure.label(interior, connectivity=1).astype(np.int32)
    labels = segmentation.watershed(elevation, markers, mask=fg).astype(np.int32)
    # Foreground components the watershed could not reach (no marker) become one object each.
    rest = fg & (labels == 0)
    if rest.any():
        extra, _ = ndi.label(rest)
        labels = np.where(rest, extra + labels.max(), labels).astype(np.int32)
    if min_area > 0:
        areas = np.bincount(labels.ravel())
        small = np.flatnonzero(areas < min_area)
        small = small[small > 0]
        if small.size:
            labels = np.where(np.isin(labels, small), 0, labels)
    out, _, _ = segmentation.relabel_sequential(labels)
    return out.astype(np.int32)


def _as_array(x, loader) -> np.ndarray:
    return loader(x) if isinstance(x, str | Path) else np.asarray(x)


def score_folder(
    images: Iterable | ImageMaskSet,
    masks: Iterable | None,
    segment_fn: Callable[[np.ndarray], np.ndarray],
    *,
    names: Iterable[str] | None = None,
    iou_threshold: float = 0.5,
    thresholds=DEFAULT_THRESHOLDS,
    progress: bool = False,
    extra: Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """Segment each image and score it against its mask.

    Parameters
    ----------
    images : iterable of ndarray or path, or ImageMaskSet
        The images (paths are read with :func:`~assets_pkg.core.imaging.io.read_image`); an
        :class:`~assets_pkg.core.segmentation.datasets.ImageMaskSet` brings its own names and masks, and
        ``masks`` must then be None.
    masks : iterable of ndarray or path, or None
        True label images in the same order (paths read with
        :func:`~assets_pkg.core.segmentation.datasets.load_mask`).
    segment_fn : callable
        ``segment_fn(image) -> labels`` (2-D int array of the image's shape).
    names : iterable of str, optional
        Image names (default: the file stem for paths, ``"image_<i>"`` otherwise).
    iou_threshold, thresholds
        See :func:`~assets_pkg.core.segmentation.metrics.score_segmentation`.
    progress : bool
        Show a progress bar.
    extra : mapping, optional
        Constant columns added to every row (for example ``{"method": "classical"}``).

    Returns
    -------
    pandas.DataFrame
        One row per image: ``name``, ``seconds`` (time spent in ``segment_fn``), then the keys
        of :func:`~assets_pkg.core.segmentation.metrics.score_segmentation`.

    Raises
    ------
    ValueError
        When the numbers of images, masks and names differ, or a prediction's shape differs
        from its image's.
    """
    if isinstance(images, ImageMaskSet):
        if masks is not None:
            raise ValueError("pass masks=None with an ImageMaskSet: it brings its own masks")
        triples = iter(images)
    else:
        img_list, mask_list = list(images), list(masks if masks is not None else [])
        if len(img_list) != len(mask_list):
            raise ValueError(f"{len(img_list)} images but {len(mask_list)} masks")
        if names is None:
            name_list = [
                Path(x).stem if isinstance(x, str | Path) else f"image_{i}"
                for i, x in enumerate(img_list)
            ]
        else:
            name_list = list(names)
            if len(name_list) != len(img_list):
                raise ValueError(f"{len(img_list)} images but {len(name_list)} names")
        triples = zip(name_list, img_list, mask_list, strict=True)
    if progress:
        from tqdm import tqdm

        triples = tqdm(triples, desc="score segmentation", unit="image", total=_len(images))
    rows = []
    for name, img, mask in triples:
        image = _as_array(img, read_image)
        if mask is None:
            raise ValueError(f"{name}: no mask to score against")
        truth = _as_array(mask, load_mask)
        t0 = time.perf_counter()
        pred = np.asarray(segment_fn(image))
        dt = time.perf_counter() - t0
        if pred.shape != image.shape:
            raise ValueError(f"{name}: prediction shape {pred.shape} != image shape {image.shape}")
        row = {"name": name, "seconds": dt}
        row.update(score_segmentation(pred, truth, iou_threshold, thresholds))
        if extra:
            row.update(extra)
        rows.append(row)
    return pd.DataFrame(rows)


def _len(x) -> int | None:
    try:
        return len(x)
    except TypeError:
        return None
