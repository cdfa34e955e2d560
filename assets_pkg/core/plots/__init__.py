"""Figures people would rather look at than read: fields with nuclei, frame grids.

Every function returns a matplotlib Figure (Agg backend, no display needed); :func:`save_png`
writes it atomically and returns the path.
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _stretch(img: np.ndarray, lo: float = 1.0, hi: float = 99.8) -> np.ndarray:
    """Percentile contrast stretch to [0, 1] (float32), for display only."""
    a = np.asarray(img, dtype=np.float32)
    p0, p1 = np.percentile(a, [lo, hi])
    return np.clip((a - p0) / max(p1 - p0, 1e-6), 0, 1)


def plot_field_nuclei(
    nucleus: np.ndarray,
    labels: np.ndarray,
    centres: np.ndarray | None = None,
    crop_half_px: float | None = None,
    protein: np.ndarray | None = None,
    title: str = "",
) -> plt.Figure:
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
    """
    from skimage.segmentation import find_boundaries

    panels = 2 if protein is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 6), squeeze=False)
    rgb = np.repeat(_stretch(nucleus)[..., None], 3, axis=2)
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
                    plt.Rectangle((x - crop_half_px, y - crop_half_px), 2 * crop_half_px, 2 * crop_half_px,
                                  fill=False, ec="cyan", lw=0.6, alpha=0.6)
                )
    ax.set_title(f"{title}  nuclei={int(labels.max()) if labels.size else 0}  crops={0 if centres is None else len(centres)}")
    ax.axis("off")
    if protein is not None:
        g = _stretch(protein)
        axes[0, 1].imshow(np.stack([g * 0, g, g * 0], -1), interpolation="nearest")
        axes[0, 1].set_title("protein")
        axes[0, 1].axis("off")
    fig.tight_layout()
    return fig


def plot_frame_grid(frames: np.ndarray, captions: Sequence[str], ncols: int = 8, title: str = "") -> plt.Figure:
    """A grid of frames: protein in green over nucleus in blue, one caption each.

    Parameters
    ----------
    frames : ndarray, shape (N, H, W, C), float
        Channel 0 protein, channel 1 nucleus (further channels ignored).
    captions : sequence of str, length N
        Text under each frame (gene and localization, say).
    """
    n = len(frames)
    if n == 0:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.text(0.5, 0.5, "no frames", ha="center", va="center")
        ax.axis("off")
        return fig
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.2 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        f = frames[i]
        prot = _stretch(f[..., 0], 0.5, 99.9)
        nuc = _stretch(f[..., 1], 0.5, 99.9) if f.shape[-1] > 1 else prot * 0
        ax.imshow(np.stack([prot * 0.2, prot, 0.6 * nuc], -1), interpolation="nearest")
        ax.set_title(captions[i], fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_png(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure as PNG atomically (temporary file, then rename) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=dpi)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; figures are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def png_markdown(path: str | Path, alt: str = "figure") -> str:
    """Markdown that embeds a PNG file inline (data URI), for Dagster metadata."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})"


def figure_bytes(fig: plt.Figure, dpi: int = 110) -> bytes:
    """PNG bytes of a figure (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def plot_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, captions: Sequence[str] | None = None,
                         title: str = "") -> plt.Figure:
    """Original (top) and reconstruction (bottom) of each frame's first channel, same contrast.

    Parameters
    ----------
    originals, reconstructions : ndarray, shape (N, H, W, C)
    captions : sequence of str, optional
    """
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 4.0), squeeze=False)
    for i in range(n):
        o, r = originals[i, ..., 0], reconstructions[i, ..., 0]
        lo, hi = np.percentile(o, [0.5, 99.8])
        for row, img in ((0, o), (1, r)):
            ax = axes[row, i]
            ax.imshow(np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1), cmap="magma", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        if captions is not None:
            axes[0, i].set_title(captions[i], fontsize=7)
    axes[0, 0].set_ylabel("original")
    axes[1, 0].set_ylabel("reconstruction")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_training_curves(history, title: str = "") -> plt.Figure:
    """Three panels from a per-epoch history table: loss components (valid, else train),
    train vs valid total loss, and codebook perplexity per epoch."""
    import pandas as pd

    h = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
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
    for ax in axes:
        ax.set_xlabel("epoch")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_segmentation_overlays(images: Sequence[np.ndarray], truths: Sequence[np.ndarray | None],
                               predictions: dict[str, Sequence[np.ndarray]], names: Sequence[str],
                               scores: dict[str, Sequence[float]] | None = None) -> plt.Figure:
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
    fig, axes = plt.subplots(n, len(methods), figsize=(4.6 * len(methods), 3.6 * n), squeeze=False)
    for i in range(n):
        base = np.repeat(_stretch(images[i])[..., None], 3, axis=2)
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
                groups: Sequence[str] | None = None, title: str = "") -> plt.Figure:
    """Predicted against true counts, one panel per method, points coloured by group.

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
    fig, axes = plt.subplots(1, len(methods), figsize=(4.4 * len(methods), 4.2), squeeze=False)
    hi = max(true.max(initial=1), *(np.nanmax(np.append(np.asarray(p, float), 1.0)) for p in predictions.values())) * 1.05
    gs = np.asarray(groups if groups is not None else ["all"] * len(true))
    for ax, m in zip(axes[0], methods, strict=True):
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


def plot_loss_history(history, columns: Sequence[str] = ("loss",), title: str = "") -> plt.Figure:
    """Loss per logged step (log scale) from a list of dicts or a table with a ``step`` column."""
    import pandas as pd

    h = pd.DataFrame(history)
    fig, ax = plt.subplots(figsize=(6, 3.6))
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
