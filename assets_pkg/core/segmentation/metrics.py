"""Segmentation and counting metrics: pixels, instances, merges and splits, counts.

Conventions of the field (Caicedo et al. 2019, DSB2018, StarDist, Cellpose), as used here:

- **Pixel metrics** compare foreground masks (a label image counts as foreground where > 0):
  pixel accuracy, foreground IoU (Jaccard) and Dice.
- **Instance matching**: the IoU of every (predicted, true) pair is computed at once from the
  joint histogram of the two label images (``np.bincount`` of label pairs).  Pairs are chosen
  with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) so that the number
  of pairs with IoU >= ``iou_threshold`` is the largest possible and, among such matchings,
  their summed IoU is the largest.  From IoU 0.5 up every object can overlap at most one other
  object by that much, so the matching is unique there; below 0.5 it is the optimal one.
  A matched pair is a true positive (TP); unmatched predictions are false positives (FP),
  unmatched true objects false negatives (FN).
- **Precision in the DSB2018 / Caicedo sense** is ``TP / (TP + FP + FN)`` (called
  ``precision_tp_over_all`` here, to keep it apart from ``TP / (TP + FP)``); its mean over IoU
  thresholds 0.50, 0.55, ..., 0.95 is :func:`average_precision_over_thresholds`.
- **Merges and splits** (see :func:`merges_and_splits`) use containment, not IoU: a
  predicted object is a merge when it holds at least ``min_overlap`` of the area of each of
  two or more true objects; a true object is split when at least ``min_overlap`` of the area of
  each of two or more predicted objects lies inside it.
- **Counts**: MAE, RMSE, R² (coefficient of determination of the predictions, not the squared
  correlation) and bias (mean of predicted minus true); under cross-validation, per fold and
  per level of each grouping column (:func:`fold_count_errors`), then mean and sample standard
  deviation over the folds (:func:`summarise_folds`).

Label images are 2-D (or n-D) integer arrays of equal shape, 0 = background, any positive
integers for objects (they need not be consecutive).  Inputs are never modified.
When an image has no object in either label image, the ratio metrics are defined as 1.0
(nothing to find and nothing found is perfect agreement); when only one side is empty they
are 0.0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

#: IoU thresholds of the DSB2018 / Caicedo 2019 mean precision: 0.50, 0.55, ..., 0.95.
DEFAULT_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)


# ---------------------------------------------------------------------------- pixels
def _fg_pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred)
    t = np.asarray(true)
    if p.shape != t.shape:
        raise ValueError(f"shapes differ: prediction {p.shape}, truth {t.shape}")
    return p > 0, t > 0


def pixel_accuracy(pred_fg, true_fg) -> float:
    """Share of pixels whose foreground/background call agrees with the truth.

    Parameters
    ----------
    pred_fg, true_fg : ndarray of bool or int, same shape
        Foreground masks or label images (foreground where > 0).

    Returns
    -------
    float
        In [0, 1]; 1.0 for empty arrays.
    """
    p, t = _fg_pair(pred_fg, true_fg)
    if p.size == 0:
        return 1.0
    return float(np.mean(p == t))


def foreground_iou(pred_fg, true_fg) -> float:
    """Intersection over union (Jaccard index) of the two foregrounds.

    Parameters
    ----------
    pred_fg, true_fg : ndarray of bool or int, same shape
        Foreground masks or label images (foreground where > 0).

    Returns
    -------
    float
        ``|P & T| / |P | T|``; 1.0 when both are empty.
    """
    p, t = _fg_pair(pred_fg, true_fg)
    union = int(np.count_nonzero(p | t))
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & t) / union)


def dice(pred_fg, true_fg) -> float:
    """Dice coefficient (F1 over pixels) of the two foregrounds.

    Parameters
    ----------
    pred_fg, true_fg : ndarray of bool or int, same shape
        Foreground masks or label images (foreground where > 0).

    Returns
    -------
    float
        ``2 |P & T| / (|P| + |T|)``; 1.0 when both are empty.
    """
    p, t = _fg_pair(pred_fg, true_fg)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if total == 0:
        return 1.0
    return float(2 * np.count_nonzero(p & t) / total)


# ---------------------------------------------------------------------------- overlaps
def _dense_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map the labels of an image to 0..N (0 = background); return (dense, original ids)."""
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer) and lab.dtype != bool:
        raise ValueError(f"label images must hold integers, got {lab.dtype}")
    if lab.size and lab.min() < 0:
        raise ValueError("label images must not hold negative values")
    ids, inv = np.unique(lab.ravel(), return_inverse=True)
    if ids.size and ids[0] == 0:
        return inv.reshape(lab.shape), ids[1:]
    return (inv + 1).reshape(lab.shape), ids


def overlap_table(pred_labels, true_labels) -> dict:
    """Pixel overlaps of every predicted object with every true object.

    Computed from the joint histogram of label pairs (one ``np.bincount``), never by looping
    over pixels or objects.

    Parameters
    ----------
    pred_labels, true_labels : ndarray of int, same shape
        Label images, 0 = background.

    Returns
    -------
    dict
        ``intersection`` : int64 array (n_pred, n_true), pixels shared by each pair;
        ``pred_area`` (n_pred,), ``true_area`` (n_true,) : object areas in pixels;
        ``iou`` : float64 array (n_pred, n_true);
        ``pred_ids``, ``true_ids`` : the original label values of the rows and columns.
    """
    p = np.asarray(pred_labels)
    t = np.asarray(true_labels)
    if p.shape != t.shape:
        raise ValueError(f"shapes differ: prediction {p.shape}, truth {t.shape}")
    pd_, pred_ids = _dense_labels(p)
    td_, true_ids = _dense_labels(t)
    n_p, n_t = pred_ids.size, true_ids.size
    joint = np.bincount(
        (pd_.ravel().astype(np.int64) * (n_t + 1) + td_.ravel()), minlength=(n_p + 1) * (n_t + 1)
    ).reshape(n_p + 1, n_t + 1)
    pred_area = joint[1:, :].sum(axis=1)
    true_area = joint[:, 1:].sum(axis=0)
    inter = joint[1:, 1:]
    union = pred_area[:, None] + true_area[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return {
        "intersection": inter,
        "pred_area": pred_area,
        "true_area": true_area,
        "iou": iou,
        "pred_ids": pred_ids,
        "true_ids": true_ids,
    }


def iou_matrix(pred_labels, true_labels) -> np.ndarray:
    """IoU of every (predicted, true) object pair, shape (n_pred, n_true).

    Rows follow the sorted predicted label values, columns the sorted true label values.
    """
    return overlap_table(pred_labels, true_labels)["iou"]


def _ratios(tp: int, fp: int, fn: int) -> dict:
    n_pred, n_true = tp + fp, tp + fn
    if n_pred == 0 and n_true == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0, "precision_tp_over_all": 1.0}
    return {
        "precision": tp / n_pred if n_pred else 0.0,
        "recall": tp / n_true if n_true else 0.0,
        "f1": 2 * tp / (n_pred + n_true),
        "precision_tp_over_all": tp / (tp + fp + fn),
    }


def _match(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the matched pairs with IoU >= threshold (see module notes)."""
    if iou.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ok = iou >= threshold
    if not ok.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # Most pairs above the threshold first, then the largest summed IoU: every pair above the
    # threshold is worth 1 plus less than 1/n of IoU, so no IoU gain can buy a lost pair.
    n = min(iou.shape)
    cost = -(ok.astype(np.float64) + iou / (2.0 * n))
    rows, cols = linear_sum_assignment(cost)
    keep = ok[rows, cols]
    return rows[keep], cols[keep]


def match_instances(pred_labels, true_labels, iou_threshold: float = 0.5) -> dict:
    """Match predicted to true objects by IoU and score the matching.

    Parameters
    ----------
    pred_labels, true_labels : ndarray of int, same shape
        Label images, 0 = background.
    iou_threshold : float
        Smallest IoU of a matched pair (default 0.5).

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``n_pred``, ``n_true`` (int); ``precision`` = TP/(TP+FP),
        ``recall`` = TP/(TP+FN), ``f1`` = 2TP/(2TP+FP+FN), ``precision_tp_over_all`` =
        TP/(TP+FP+FN) (floats, see module notes for empty images); ``matched_ious`` (float64
        array, one per TP, in the order of ``pairs``); ``mean_matched_iou`` (nan without TP);
        ``pairs`` : int array (TP, 2) of (predicted label, true label) values.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    return _score_matching(overlap_table(pred_labels, true_labels), iou_threshold)


def _score_matching(table: dict, threshold: float) -> dict:
    iou = table["iou"]
    rows, cols = _match(iou, threshold)
    n_pred, n_true = iou.shape
    tp = int(rows.size)
    fp, fn = n_pred - tp, n_true - tp
    ious = iou[rows, cols].astype(np.float64)
    out = {"tp": tp, "fp": fp, "fn": fn, "n_pred": n_pred, "n_true": n_true}
    out.update(_ratios(tp, fp, fn))
    out["matched_ious"] = ious
    out["mean_matched_iou"] = float(ious.mean()) if tp else float("nan")
    out["pairs"] = np.stack([table["pred_ids"][rows], table["true_ids"][cols]], axis=1)
    return out


def precision_curve(pred_labels, true_labels, thresholds=DEFAULT_THRESHOLDS) -> np.ndarray:
    """TP/(TP+FP+FN) at each IoU threshold (one IoU computation, one matching per threshold).

    Parameters
    ----------
    pred_labels, true_labels : ndarray of int, same shape
        Label images, 0 = background.
    thresholds : sequence of float
        IoU thresholds in (0, 1].

    Returns
    -------
    ndarray of float64, shape (len(thresholds),)
    """
    table = overlap_table(pred_labels, true_labels)
    return np.array(
        [_score_matching(table, float(th))["precision_tp_over_all"] for th in thresholds],
        dtype=np.float64,
    )


def average_precision_over_thresholds(
    pred_labels, true_labels, thresholds=DEFAULT_THRESHOLDS
) -> float:
    """Mean of TP/(TP+FP+FN) over IoU thresholds (default 0.50, 0.55, ..., 0.95).

    This is the DSB2018 / Caicedo 2019 "average precision" of one image.

    Parameters
    ----------
    pred_labels, true_labels : ndarray of int, same shape
        Label images, 0 = background.
    thresholds : sequence of float
        IoU thresholds in (0, 1].

    Returns
    -------
    float
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.size == 0:
        raise ValueError("thresholds must not be empty")
    return float(precision_curve(pred_labels, true_labels, thresholds).mean())


def merges_and_splits(pred_labels, true_labels, min_overlap: float = 0.5) -> dict:
    """Count merged and split objects by containment.

    Definitions (with ``I(p, t)`` the pixels shared by predicted object ``p`` and true object
    ``t``, and ``|x|`` an object's area):

    - ``t`` is *covered by* ``p`` when ``I(p, t) >= min_overlap * |t|``; a predicted object
      covering two or more true objects is a **merge**;
    - ``p`` *lies in* ``t`` when ``I(p, t) >= min_overlap * |p|``; a true object in which two
      or more predicted objects lie is a **split**.

    With ``min_overlap > 0.5`` a true object can be covered by at most one prediction and a
    prediction lie in at most one true object, so no object is counted twice; at exactly 0.5
    a tie is possible but needs an object cut into two equal halves.  Small boundary
    disagreements never count, since a fragment must hold at least ``min_overlap`` of an
    object's area.

    Parameters
    ----------
    pred_labels, true_labels : ndarray of int, same shape
        Label images, 0 = background.
    min_overlap : float
        Containment fraction in (0, 1] (default 0.5).

    Returns
    -------
    dict
        ``merges`` : predicted objects that merge true objects;
        ``merged_true`` : true objects inside those merges;
        ``splits`` : true objects that are split;
        ``split_pred`` : predicted fragments inside those splits.
    """
    if not 0.0 < min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
    table = overlap_table(pred_labels, true_labels)
    inter = table["intersection"]
    covers = inter >= min_overlap * table["true_area"][None, :]  # (pred, true): p covers t
    lies_in = inter >= min_overlap * table["pred_area"][:, None]  # (pred, true): p lies in t
    covers &= inter > 0
    lies_in &= inter > 0
    n_cover = covers.sum(axis=1)
    n_in = lies_in.sum(axis=0)
    merge_rows = n_cover >= 2
    split_cols = n_in >= 2
    return {
        "merges": int(merge_rows.sum()),
        "merged_true": int(n_cover[merge_rows].sum()),
        "splits": int(split_cols.sum()),
        "split_pred": int(n_in[split_cols].sum()),
    }


def score_segmentation(
    pred_labels,
    true_labels,
    iou_threshold: float = 0.5,
    thresholds=DEFAULT_THRESHOLDS,
    min_overlap: float = 0.5,
) -> dict:
    """All per-image segmentation metrics in one flat dict of scalars (a table row).

    Parameters
    ----------
    pred_labels, true_labels : ndarray of int, same shape
        Label images, 0 = background.
    iou_threshold : float
        IoU of a match for ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1`` and
        ``precision_tp_over_all`` (default 0.5).
    thresholds : sequence of float
        IoU thresholds of ``ap_50_95`` (the mean of TP/(TP+FP+FN); default 0.50..0.95).
    min_overlap : float
        Containment fraction of :func:`merges_and_splits`.

    Returns
    -------
    dict
        ``pixel_accuracy``, ``foreground_iou``, ``dice``, ``n_pred``, ``n_true``, ``tp``,
        ``fp``, ``fn``, ``precision``, ``recall``, ``f1``, ``precision_tp_over_all``,
        ``mean_matched_iou``, ``ap_50_95``, ``merges``, ``merged_true``, ``splits``,
        ``split_pred``.
    """
    table = overlap_table(pred_labels, true_labels)
    m = _score_matching(table, iou_threshold)
    curve = [_score_matching(table, float(th))["precision_tp_over_all"] for th in thresholds]
    out = {
        "pixel_accuracy": pixel_accuracy(pred_labels, true_labels),
        "foreground_iou": foreground_iou(pred_labels, true_labels),
        "dice": dice(pred_labels, true_labels),
    }
    out.update({k: v for k, v in m.items() if k not in ("matched_ious", "pairs")})
    out["ap_50_95"] = float(np.mean(curve))
    out.update(merges_and_splits(pred_labels, true_labels, min_overlap))
    return out


# ---------------------------------------------------------------------------- counts
def count_metrics(pred_counts, true_counts) -> dict:
    """Error of predicted object counts.

    Parameters
    ----------
    pred_counts, true_counts : array-like of numbers, same length
        One predicted and one true count per image.

    Returns
    -------
    dict
        ``n`` (images), ``mae`` = mean |pred - true|, ``rmse`` = sqrt(mean (pred - true)²),
        ``r2`` = 1 - SS_res / SS_tot (nan when the true counts do not vary), ``bias`` =
        mean(pred - true) (positive: over-counting).  All nan (``n`` = 0) for no image.
    """
    p = np.asarray(pred_counts, dtype=np.float64).ravel()
    t = np.asarray(true_counts, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"lengths differ: {p.size} predicted, {t.size} true counts")
    if p.size == 0:
        nan = float("nan")
        return {"n": 0, "mae": nan, "rmse": nan, "r2": nan, "bias": nan}
    err = p - t
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan")
    return {
        "n": int(p.size),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": r2,
        "bias": float(np.mean(err)),
    }


def count_metrics_by(
    df: pd.DataFrame,
    by: Sequence[str] | str = ("blur", "stain"),
    pred_col: str = "pred_count",
    true_col: str = "count",
    overall: bool = True,
) -> pd.DataFrame:
    """:func:`count_metrics` per group of a table of images.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per image with columns ``by``, ``pred_col`` and ``true_col``.
    by : str or sequence of str
        Grouping columns (default blur level and stain).
    pred_col, true_col : str
        Predicted and true count columns.
    overall : bool
        Append a row over all images, with ``"all"`` in the grouping columns.

    Returns
    -------
    pandas.DataFrame
        Columns ``*by, n, mae, rmse, r2, bias``; one row per group, sorted by group.
    """
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in [*by, pred_col, true_col] if c not in df.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}")
    rows = []
    for key, g in df.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key, strict=True)), **count_metrics(g[pred_col], g[true_col])})
    if overall:
        rows.append({**dict.fromkeys(by, "all"), **count_metrics(df[pred_col], df[true_col])})
    return pd.DataFrame(rows, columns=[*by, "n", "mae", "rmse", "r2", "bias"])


def fold_count_errors(
    df: pd.DataFrame,
    methods: Mapping[str, str],
    by: Sequence[str | Sequence[str]] = ("blur", "stain"),
    fold_col: str = "fold",
    true_col: str = "count",
) -> pd.DataFrame:
    """:func:`count_metrics` of each method per fold: over the fold, and per level of each grouping.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per held-out image with its fold, true count, one predicted count column per
        method and the grouping columns.
    methods : mapping of str to str
        Method name -> its predicted count column.
    by : sequence of str or of sequences of str
        Groupings, each scored on its own: ``"blur"`` gives one row per blur level; a sequence
        such as ``("blur", "stain")`` one row per combination (level written ``"1/2"``).
    fold_col, true_col : str
        Fold and true count columns.

    Returns
    -------
    pandas.DataFrame
        Columns ``method, fold, grouping, level, n, mae, rmse, r2, bias``: per method and fold
        first the row over the whole fold (grouping and level ``"all"``), then one row per
        level of each grouping (level as str, sorted by value).
    """
    groupings = [[g] if isinstance(g, str) else list(g) for g in by]
    needed = [fold_col, true_col, *methods.values(), *(c for g in groupings for c in g)]
    missing = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}")
    rows = []
    for method, col in methods.items():
        for fold, fd in df.groupby(fold_col, sort=True):
            base = {"method": method, "fold": fold}
            rows.append({**base, "grouping": "all", "level": "all", **count_metrics(fd[col], fd[true_col])})
            for g in groupings:
                for key, gd in fd.groupby(g, sort=True):
                    key = key if isinstance(key, tuple) else (key,)
                    rows.append({**base, "grouping": "/".join(g), "level": "/".join(map(str, key)),
                                 **count_metrics(gd[col], gd[true_col])})
    return pd.DataFrame(rows, columns=["method", "fold", "grouping", "level", "n", "mae", "rmse", "r2", "bias"])


def summarise_folds(errors: pd.DataFrame, metric: str = "mae") -> pd.DataFrame:
    """Mean and spread over folds of one metric of :func:`fold_count_errors`.

    Parameters
    ----------
    errors : pandas.DataFrame
        Output of :func:`fold_count_errors`.
    metric : str
        ``"mae"``, ``"rmse"`` or ``"bias"`` (pooled exactly, see below), or ``"r2"`` (not pooled).

    Returns
    -------
    pandas.DataFrame
        Per (method, grouping, level), in the input's order: ``folds``, ``n`` (images over all
        folds), ``mean`` and ``sd`` (sample standard deviation, ddof 1) of the per-fold values,
        ``min``, ``max``, and ``pooled``: the metric over all held-out images at once (the
        n-weighted mean for MAE and bias, the root of the n-weighted mean square for RMSE;
        nan for R²).
    """
    if metric not in ("mae", "rmse", "r2", "bias"):
        raise ValueError(f"metric must be mae, rmse, r2 or bias, got {metric!r}")
    rows = []
    for key, g in errors.groupby(["method", "grouping", "level"], sort=False):
        v, n = g[metric].to_numpy(np.float64), g["n"].to_numpy(np.float64)
        if metric == "rmse":
            pooled = float(np.sqrt(np.sum(n * v**2) / n.sum()))
        elif metric == "r2":
            pooled = float("nan")
        else:
            pooled = float(np.sum(n * v) / n.sum())
        rows.append({**dict(zip(("method", "grouping", "level"), key, strict=True)), "folds": len(g),
                     "n": int(n.sum()), "mean": float(v.mean()),
                     "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
                     "min": float(v.min()), "max": float(v.max()), "pooled": pooled})
    return pd.DataFrame(rows)


def summarise_scores(scores: pd.DataFrame, by: str | None = "method") -> pd.DataFrame:
    """Pool per-image rows of :func:`score_segmentation` into one row per group.

    Parameters
    ----------
    scores : pandas.DataFrame
        One row per image (and method) with at least ``tp``, ``fp``, ``fn``, ``f1`` and
        ``ap_50_95``; ``seconds``, ``pixel_accuracy``, ``foreground_iou``, ``merges`` and
        ``splits`` are summarised when present.
    by : str, optional
        Grouping column (None: all rows together).

    Returns
    -------
    pandas.DataFrame
        ``images``; ``f1_iou50`` pooled over all objects (2 TP / (2 TP + FP + FN));
        ``f1_mean_per_image``; ``mean_ap_50_95`` (mean per image of TP/(TP+FP+FN) over IoU
        0.50..0.95); the means of ``pixel_accuracy`` and ``foreground_iou``; summed
        ``merges`` and ``splits``; ``images_per_s`` from ``seconds``.
    """
    groups = scores.groupby(by, sort=False) if by else [("all", scores)]
    rows = []
    for key, g in groups:
        tp, fp, fn = int(g["tp"].sum()), int(g["fp"].sum()), int(g["fn"].sum())
        row = {by or "group": key, "images": len(g), "f1_iou50": 2 * tp / max(2 * tp + fp + fn, 1),
               "f1_mean_per_image": float(g["f1"].mean()), "mean_ap_50_95": float(g["ap_50_95"].mean())}
        for c in ("pixel_accuracy", "foreground_iou"):
            if c in g:
                row[c] = float(g[c].mean())
        for c in ("merges", "splits"):
            if c in g:
                row[c] = int(g[c].sum())
        if "seconds" in g:
            row["images_per_s"] = len(g) / max(float(g["seconds"].sum()), 1e-9)
        rows.append(row)
    return pd.DataFrame(rows)
