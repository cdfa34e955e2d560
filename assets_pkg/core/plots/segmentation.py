"""Figures of segmentation results: predicted outlines over the images, predicted vs true counts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .figures import FIGURE_MAX_WIDTH_IN, stretch

__all__ = ["plot_counts", "plot_segmentation_overlays"]


def plot_segmentation_overlays(images: Sequence[np.ndarray], truths: Sequence[np.ndarray | None],
                               predictions: dict[str, Sequence[np.ndarray]], names: Sequence[str],
                               scores: dict[str, Sequence[float]] | None = None) -> Figure:
    """Predicted outlines on the images: one row per image, one column per method.

    Parameters
    ----------
    images : sequence of ndarray, shape (H, W)
    truths : sequence of label images or None
        True outlines drawn in cyan where given.
    predictions : dict of method -> sequence of label images
        Predicted outlines drawn in yellow.
    names : sequence of str
        Row titles.
    scores : dict of method -> sequence of float, optional
        F1 at IoU 0.5 per image, shown in the panel titles.
    """
    from skimage.segmentation import find_boundaries

    methods = list(predictions)
    n = len(images)
    w = min(4.6, FIGURE_MAX_WIDTH_IN / max(1, len(methods)))
    fig = Figure(figsize=(w * len(methods), w * 3.6 / 4.6 * n))
    axes = fig.subplots(n, len(methods), squeeze=False)
    for i in range(n):
        base = np.repeat(stretch(images[i])[..., None], 3, axis=2)
        for j, m in enumerate(methods):
            rgb = base.copy()
            if truths[i] is not None:
                rgb[find_boundaries(truths[i], mode="inner")] = (0.0, 0.9, 0.9)
            lab = predictions[m][i]
            rgb[find_boundaries(lab, mode="outer")] = (1.0, 0.85, 0.0)
            ax = axes[i, j]
            ax.imshow(rgb, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            t = f"{m}: {int(lab.max())} objects"
            if scores is not None and m in scores:
                t += f", F1@0.5 {scores[m][i]:.3f}"
            ax.set_title(f"{names[i]}\n{t}", fontsize=8)
    fig.suptitle("predicted outlines (yellow), ground truth (cyan)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_counts(true: Sequence[float], predictions: dict[str, Sequence[float]],
                groups: Sequence[str] | None = None, title: str = "") -> Figure:
    """Predicted against true counts, one panel per method (three per row), points coloured by group.

    Parameters
    ----------
    true : sequence of number
    predictions : dict of method -> sequence of number (same order as ``true``; NaN where a
        method gives no count, left out of its panel and its MAE)
    groups : sequence of str, optional
        A label per image (for example ``"F23 w1"``).
    """
    true = np.asarray(true, dtype=float)
    methods = list(predictions)
    ncols = max(1, min(len(methods), 3))
    nrows = max(1, -(-len(methods) // ncols))
    side = FIGURE_MAX_WIDTH_IN / 3
    fig = Figure(figsize=(side * ncols, (side + 0.2) * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(methods):]:
        ax.axis("off")
    hi = max(true.max(initial=1), *(np.nanmax(np.append(np.asarray(p, float), 1.0)) for p in predictions.values())) * 1.05
    gs = np.asarray(groups if groups is not None else ["all"] * len(true))
    for ax, m in zip(axes.flat, methods, strict=False):
        pred = np.asarray(predictions[m], dtype=float)
        for g in sorted(set(gs)):
            sel = gs == g
            ax.scatter(true[sel], pred[sel], s=14, alpha=0.8, label=g)
        ax.plot([0, hi], [0, hi], color="0.5", lw=1)
        mae = float(np.nanmean(np.abs(pred - true))) if np.isfinite(pred).any() else float("nan")
        ax.set_title(f"{m}: MAE {mae:.2f}", fontsize=9)
        ax.set_xlabel("true count")
        ax.set_ylabel("predicted count")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        if len(set(gs)) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
