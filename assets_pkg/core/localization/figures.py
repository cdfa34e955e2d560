"""Figures of the localization atlas (they live with the atlas because they draw its types --
CodeClusters, class order -- while core/plots stays free of domain imports): code-correlation heatmap with dendrogram, mean spectra
per class, UMAP scatters (single and aligned panels).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no backend is
selected or changed); save it with :func:`assets_pkg.core.plots.figures.save_png`.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..plots.figures import FIGURE_MAX_WIDTH_IN
from .annotations import class_order
from .inputs import AnalysisError, as_matrix, as_spectra_frame
from .spectra import CodeClusters, roman

__all__ = ["plot_aligned_umaps", "plot_code_correlation", "plot_spectra_by_class", "plot_umap"]


def _cluster_colors(n: int) -> np.ndarray:
    cmap = matplotlib.colormaps["tab20" if n > 10 else "tab10"]
    return np.asarray([cmap(i % cmap.N) for i in range(n)])


def _dendrogram_segments(z: np.ndarray, leaf_order: np.ndarray) -> np.ndarray:
    """U-shaped line segments of a dendrogram, leaves at x = 0.5, 1.5, ... in leaf order.

    Iterative (no recursion), so it draws trees of any size.  Returns (3 * (n - 1), 2, 2).
    """
    n = z.shape[0] + 1
    x = np.empty(2 * n - 1)
    y = np.zeros(2 * n - 1)
    x[leaf_order] = np.arange(n) + 0.5
    segs = np.empty((3 * (n - 1), 2, 2))
    for i, (a, b, h, _) in enumerate(z):
        a, b = int(a), int(b)
        x[n + i] = (x[a] + x[b]) / 2.0
        y[n + i] = h
        segs[3 * i] = [[x[a], y[a]], [x[a], h]]
        segs[3 * i + 1] = [[x[a], h], [x[b], h]]
        segs[3 * i + 2] = [[x[b], y[b]], [x[b], h]]
    return segs


def _segment_ticks(clusters: CodeClusters):
    segs = clusters.segments()
    centres = [(a + b) / 2.0 for a, b, _ in segs]
    names = [roman(i + 1) for i in range(len(segs))]
    return segs, centres, names


def plot_code_correlation(clusters: CodeClusters, title: str = "") -> Figure:
    """Code-by-code correlation heatmap in leaf order, dendrogram on top, cluster colour bar.

    Parameters
    ----------
    clusters : CodeClusters
        From :func:`cluster_codes`.
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Heatmap of ``corr`` (``bwr``, -1..1) with both axes in leaf order; the runs of each
        code cluster are labelled I, II, ... left to right on the colour bar.
    """
    from matplotlib.collections import LineCollection

    k = clusters.num_codes
    order = clusters.leaf_order
    fig = Figure(figsize=(8.0, 9.0))
    gs = fig.add_gridspec(3, 2, height_ratios=[1.6, 0.25, 6.0], width_ratios=[30, 1],
                          hspace=0.03, wspace=0.04)
    ax_d = fig.add_subplot(gs[0, 0])
    ax_c = fig.add_subplot(gs[1, 0], sharex=ax_d)
    ax_h = fig.add_subplot(gs[2, 0], sharex=ax_d)
    ax_cb = fig.add_subplot(gs[2, 1])

    segs = _dendrogram_segments(clusters.linkage, order)
    ax_d.add_collection(LineCollection(segs, colors="0.25", linewidths=0.5))
    top = float(clusters.linkage[:, 2].max()) if k > 1 else 1.0
    ax_d.set_ylim(0, top * 1.05 if top > 0 else 1.0)
    ax_d.set_xlim(0, k)
    ax_d.set_ylabel("1 - r", fontsize=8)
    ax_d.tick_params(labelbottom=False, bottom=False, labelsize=7)
    for s in ("top", "right"):
        ax_d.spines[s].set_visible(False)

    runs, centres, names = _segment_ticks(clusters)
    colors = _cluster_colors(len(runs))
    bar = np.zeros((1, k, 4))
    for i, (a, b, _) in enumerate(runs):
        bar[0, a:b] = colors[i]
    ax_c.imshow(bar, aspect="auto", extent=(0, k, 0, 1), interpolation="nearest")
    ax_c.set_yticks([])
    ax_c.tick_params(labelbottom=False, bottom=False)
    for cx, name in zip(centres, names, strict=True):
        ax_c.text(cx, 0.5, name, ha="center", va="center", fontsize=7)

    im = ax_h.imshow(clusters.corr[np.ix_(order, order)], cmap="bwr", vmin=-1, vmax=1,
                     aspect="auto", extent=(0, k, k, 0), interpolation="nearest")
    for a, _, _ in runs[1:]:
        ax_h.axvline(a, color="k", lw=0.4)
        ax_h.axhline(a, color="k", lw=0.4)
    ax_h.set_xlabel(f"code (leaf order, K = {k})")
    ax_h.set_ylabel("code (leaf order)")
    fig.colorbar(im, cax=ax_cb, label="Pearson r across proteins")
    fig.suptitle(title or f"codebook correlation, {clusters.method} linkage, "
                 f"{len(runs)} clusters", fontsize=10)
    return fig


def plot_spectra_by_class(spectra, protein_class: pd.Series, clusters: CodeClusters,
                          title: str = "") -> Figure:
    """Mean feature spectrum per localization class, stacked, codes in leaf order.

    Parameters
    ----------
    spectra : pandas.DataFrame, shape (P, K)
        Spectra indexed by protein.
    protein_class : pandas.Series of str
        Class of each protein (e.g. :func:`single_localization`); proteins absent from
        ``spectra`` are ignored.
    clusters : CodeClusters
        Gives the x order and the cluster runs (vertical lines, columns labelled I, II, ...).
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One row per class (LOCALIZATIONS order), the mean spectrum of its proteins as bars.
    """
    df = as_spectra_frame(spectra)
    pc = protein_class.copy()
    pc.index = pc.index.map(str)
    pc = pc[pc.index.isin(df.index)].astype(str)
    if pc.empty:
        raise AnalysisError("no protein of protein_class is in spectra", field="protein_class")
    classes = class_order(pc.unique())
    means = df.loc[pc.index].groupby(pc.to_numpy()).mean()
    counts = pc.value_counts()
    k = clusters.num_codes
    if df.shape[1] != k:
        raise AnalysisError(f"has {df.shape[1]} codes, the clustering {k}", field="spectra")
    runs, centres, names = _segment_ticks(clusters)
    fig = Figure(figsize=(10.0, 0.9 * len(classes) + 1.2))
    axes = fig.subplots(len(classes), 1, sharex=True, squeeze=False)
    edges = np.arange(k + 1, dtype=np.float64)
    colors = _cluster_colors(len(runs))
    for row, cls in enumerate(classes):
        ax = axes[row, 0]
        y = clusters.reorder(means.loc[cls].to_numpy())
        for i, (a, b, _) in enumerate(runs):  # one filled step curve per cluster run
            ax.stairs(y[a:b], edges[a:b + 1], fill=True, color=colors[i], linewidth=0)
        for a, _, _ in runs[1:]:
            ax.axvline(a, color="0.3", lw=0.5)
        ax.set_xlim(0, k)
        ax.set_yticks([])
        ax.set_ylabel(f"{cls}\n(n={counts[cls]})", rotation=0, ha="right", va="center", fontsize=7)
        for s in ("top", "right", "left"):
            ax.spines[s].set_visible(False)
    top_ax = axes[0, 0].secondary_xaxis("top")
    top_ax.set_xticks(centres)
    top_ax.set_xticklabels(names, fontsize=7)
    top_ax.tick_params(length=0)
    axes[-1, 0].set_xlabel("code (leaf order)")
    height = fig.get_figheight()
    fig.suptitle(title or "mean feature spectrum per localization", fontsize=10)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.45 / height))
    return fig


def _class_colors(classes: Sequence[str]) -> dict[str, tuple]:
    """tab20 without its two greys (grey is for the 'others'): 18 distinct class colours."""
    cmap = matplotlib.colormaps["tab20"]
    palette = [cmap(i) for i in range(20) if i not in (14, 15)]
    return {c: palette[i % len(palette)] for i, c in enumerate(class_order(classes))}


def _draw_umap(ax, coords: np.ndarray, labels: np.ndarray, single: np.ndarray,
               colors: dict[str, tuple], title: str, s: float) -> None:
    other = ~single
    if other.any():
        ax.scatter(coords[other, 0], coords[other, 1], s=s * 0.4, c="0.85", lw=0, zorder=0,
                   label="others", rasterized=True)
    for cls, col in colors.items():
        m = single & (labels == cls)
        if m.any():
            ax.scatter(coords[m, 0], coords[m, 1], s=s, color=col, lw=0, zorder=1, label=cls,
                       alpha=0.8, rasterized=True)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("umap 1")
    ax.set_ylabel("umap 2")
    for sp in ("top", "right"):
        ax.spines[sp].set_visible(False)


def _legend(ax) -> None:
    leg = ax.legend(fontsize=6, bbox_to_anchor=(1.0, 1.0), loc="upper left", frameon=False)
    for h in leg.legend_handles:
        h.set_alpha(1.0)
        h.set_sizes([12.0])


def _umap_inputs(coords, labels, single_mask):
    c = as_matrix(coords, "coords")
    if c.shape[1] != 2:
        raise AnalysisError(f"expected shape (N, 2), got {c.shape}", field="coords")
    lab = np.asarray(labels).astype(str)
    if lab.shape != (c.shape[0],):
        raise AnalysisError(f"needs one label per point, got {lab.shape}", field="labels")
    single = np.ones(c.shape[0], bool) if single_mask is None else np.asarray(single_mask, bool)
    if single.shape != (c.shape[0],):
        raise AnalysisError(f"needs one flag per point, got {single.shape}", field="single_mask")
    return c, lab, single


def _marker_size(n: int) -> float:
    return float(np.clip(3000.0 / max(n, 1), 0.5, 12.0))


def plot_umap(coords, labels, single_mask=None, title: str = "") -> Figure:
    """UMAP scatter coloured by localization, single-localization points emphasized.

    Parameters
    ----------
    coords : array-like, shape (N, 2)
    labels : array-like of str, shape (N,)
        Localization of each point (its class for single-localization frames).
    single_mask : array-like of bool, shape (N,), optional
        True for the frames drawn in colour (single localization); the others are small
        light-grey dots underneath.  Default: all in colour.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    c, lab, single = _umap_inputs(coords, labels, single_mask)
    colors = _class_colors(np.unique(lab[single]))
    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.subplots()
    _draw_umap(ax, c, lab, single, colors, title, _marker_size(c.shape[0]))
    _legend(ax)
    fig.tight_layout()
    return fig


def plot_aligned_umaps(coords_list: Sequence, labels, titles: Sequence[str],
                       single_mask=None) -> Figure:
    """Aligned UMAP panels, two per row, with one colour per localization and shared axes.

    Parameters
    ----------
    coords_list : sequence of array-like, each shape (N, 2)
        From :func:`aligned_umap` (the same N items in every panel).
    labels : array-like of str, shape (N,)
        Localization of each item (shared by the panels).
    titles : sequence of str
        One per panel (e.g. model names with their clustering scores).
    single_mask : array-like of bool, shape (N,), optional
        As in :func:`plot_umap`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if len(coords_list) == 0:
        raise AnalysisError("no panels", field="coords_list")
    if len(titles) != len(coords_list):
        raise AnalysisError(f"{len(titles)} titles for {len(coords_list)} panels", field="titles")
    prepared = [_umap_inputs(c, labels, single_mask) for c in coords_list]
    lab, single = prepared[0][1], prepared[0][2]
    colors = _class_colors(np.unique(lab[single]))
    n = len(prepared)
    ncols = min(n, 2)
    nrows = -(-n // ncols)
    side = (FIGURE_MAX_WIDTH_IN - 1.8) / 2  # two panels and the legend fit the metadata dialog
    fig = Figure(figsize=(side * ncols + 1.8, side * nrows))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    s = _marker_size(prepared[0][0].shape[0])
    for ax, (c, _, _), t in zip(axes.flat, prepared, titles, strict=False):
        _draw_umap(ax, c, lab, single, colors, t, s)
    for i in range(n, nrows * ncols):  # an empty cell: the panel above it shows the x ticks
        axes.flat[i].axis("off")
        axes.flat[i - ncols].tick_params(labelbottom=True)
    _legend(axes[0, -1])
    fig.tight_layout()
    return fig
