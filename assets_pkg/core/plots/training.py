"""Figures of model training: reconstructions, per-epoch curves, loss per logged step."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .figures import FIGURE_MAX_WIDTH_IN

__all__ = ["plot_loss_history", "plot_reconstructions", "plot_training_curves"]


def plot_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, captions: Sequence[str] | None = None,
                         title: str = "", ncols: int = 4) -> Figure:
    """Original above reconstruction of each frame's first channel, same contrast.

    Parameters
    ----------
    originals, reconstructions : ndarray, shape (N, H, W, C)
    captions : sequence of str, optional
    ncols : int
        Frames per row pair (original row, reconstruction row); more frames wrap into further
        pairs, so the figure stays within ``FIGURE_MAX_WIDTH_IN``.
    """
    n = len(originals)
    ncols = max(1, min(ncols, n, int(FIGURE_MAX_WIDTH_IN // 1.8)))
    blocks = max(1, -(-n // ncols))
    fig = Figure(figsize=(1.8 * ncols, 4.0 * blocks))
    axes = fig.subplots(2 * blocks, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    for i in range(n):
        b, col = divmod(i, ncols)
        o, r = originals[i, ..., 0], reconstructions[i, ..., 0]
        lo, hi = np.percentile(o, [0.5, 99.8])
        for row, img in ((2 * b, o), (2 * b + 1, r)):
            ax = axes[row, col]
            ax.imshow(np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1), cmap="magma", interpolation="nearest")
            for s in ax.spines.values():
                s.set_visible(True)
        if captions is not None:
            axes[2 * b, col].set_title(captions[i], fontsize=7)
    for b in range(blocks):
        axes[2 * b, 0].set_ylabel("original")
        axes[2 * b + 1, 0].set_ylabel("reconstruction")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_training_curves(history, title: str = "") -> Figure:
    """Three panels, one per row, from a per-epoch history table: loss components (valid,
    else train), train vs valid total loss, and codebook perplexity per epoch."""
    import pandas as pd

    h = pd.DataFrame(history)
    fig = Figure(figsize=(8, 8.4))
    axes = fig.subplots(3, 1, sharex=True)
    split = "valid" if "valid_total" in h else "train"
    for comp in ("reconstruction", "codebook", "commitment", "classification"):
        col = f"{split}_{comp}"
        if col in h:
            axes[0].plot(h["epoch"], h[col], marker="o", ms=3, label=comp)
    axes[0].set_yscale("log")
    axes[0].set_title(f"loss components ({split})")
    axes[0].legend(fontsize=8)
    for s in ("train", "valid"):
        if f"{s}_total" in h:
            axes[1].plot(h["epoch"], h[f"{s}_total"], marker="o", ms=3, label=s)
    axes[1].set_title("total loss")
    axes[1].legend(fontsize=8)
    for s in ("train", "valid"):
        if f"{s}_perplexity" in h:
            axes[2].plot(h["epoch"], h[f"{s}_perplexity"], marker="o", ms=3, label=s)
    axes[2].set_title("codebook perplexity")
    axes[2].legend(fontsize=8)
    axes[-1].set_xlabel("epoch")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_loss_history(history, columns: Sequence[str] = ("loss",), title: str = "") -> Figure:
    """Loss per logged step (log scale) from a list of dicts or a table with a ``step`` column."""
    import pandas as pd

    h = pd.DataFrame(history)
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for c in columns:
        if c in h:
            ax.plot(h["step"], h[c], marker="o", ms=2, label=c)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
