"""Figures of plates: a field with its nuclei and crop boxes, a grid of frames."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .figures import FIGURE_MAX_WIDTH_IN, stretch

__all__ = ["plot_field_nuclei", "plot_frame_grid"]


def plot_field_nuclei(
    nucleus: np.ndarray,
    labels: np.ndarray,
    centres: np.ndarray | None = None,
    crop_half_px: float | None = None,
    protein: np.ndarray | None = None,
    title: str = "",
) -> Figure:
    """A field with detected nuclei outlined, crop centres marked and crop boxes drawn.

    Parameters
    ----------
    nucleus : ndarray, shape (H, W)
        Hoechst channel, any numeric dtype.
    labels : ndarray, shape (H, W), int
        Nucleus label image, 0 = background.
    centres : ndarray, shape (N, 2), optional
        Crop centres (y, x) in field pixels.
    crop_half_px : float, optional
        Half the crop side in field pixels; draws a box around each centre.
    protein : ndarray, shape (H, W), optional
        Shown as a second panel (green) when given.

    Returns
    -------
    matplotlib.figure.Figure
        Square panels side by side, at most ``FIGURE_MAX_WIDTH_IN`` wide in all.
    """
    from skimage.segmentation import find_boundaries

    panels = 2 if protein is not None else 1
    side = min(6.0, FIGURE_MAX_WIDTH_IN / panels)
    fig = Figure(figsize=(side * panels, side))
    axes = fig.subplots(1, panels, squeeze=False)
    rgb = np.repeat(stretch(nucleus)[..., None], 3, axis=2)
    edge = find_boundaries(labels, mode="outer")
    rgb[edge] = (1.0, 0.8, 0.0)
    ax = axes[0, 0]
    ax.imshow(rgb, interpolation="nearest")
    if centres is not None and len(centres):
        c = np.asarray(centres)
        ax.plot(c[:, 1], c[:, 0], "+", color="red", ms=8, mew=1.5)
        if crop_half_px:
            for y, x in c:
                ax.add_patch(
                    Rectangle((x - crop_half_px, y - crop_half_px), 2 * crop_half_px, 2 * crop_half_px,
                                  fill=False, ec="cyan", lw=0.6, alpha=0.6)
                )
    ax.set_title(f"{title}  nuclei={int(labels.max()) if labels.size else 0}  crops={0 if centres is None else len(centres)}")
    ax.axis("off")
    if protein is not None:
        g = stretch(protein)
        axes[0, 1].imshow(np.stack([g * 0, g, g * 0], -1), interpolation="nearest")
        axes[0, 1].set_title("protein")
        axes[0, 1].axis("off")
    fig.tight_layout()
    return fig


def plot_frame_grid(frames: np.ndarray, captions: Sequence[str], ncols: int = 6, title: str = "") -> Figure:
    """A grid of frames: protein in green over nucleus in blue, one caption each.

    Parameters
    ----------
    frames : ndarray, shape (N, H, W, C), float
        Channel 0 protein, channel 1 nucleus (further channels ignored).
    captions : sequence of str, length N
        Text under each frame (gene and localization, say).
    ncols : int
        Frames per row; the rows share ``FIGURE_MAX_WIDTH_IN`` (at most 1.9 in per frame).
    """
    n = len(frames)
    if n == 0:
        fig = Figure(figsize=(4, 1))
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no frames", ha="center", va="center")
        ax.axis("off")
        return fig
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    side = min(1.9, FIGURE_MAX_WIDTH_IN / ncols)
    fig = Figure(figsize=(side * ncols, (side + 0.3) * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        f = frames[i]
        prot = stretch(f[..., 0], 0.5, 99.9)
        nuc = stretch(f[..., 1], 0.5, 99.9) if f.shape[-1] > 1 else prot * 0
        ax.imshow(np.stack([prot * 0.2, prot, 0.6 * nuc], -1), interpolation="nearest")
        ax.set_title(captions[i], fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
