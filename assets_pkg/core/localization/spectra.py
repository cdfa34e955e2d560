"""Feature spectra and code clusters.

* A frame's *histogram* is the count of each codebook entry over its quantized map
  (:func:`assets_pkg.core.localization.models.codebook_histogram`), shape (N, K).
* A protein's *feature spectrum* is the mean histogram of its frames, normalized to sum 1
  (:func:`protein_spectra`).
* Codebook entries are clustered by the Pearson correlation of their usage across proteins
  (:func:`pearson_matrix`, :func:`cluster_codes`); the dendrogram's leaf order is the x axis of
  every spectrum, and :meth:`CodeClusters.reorder` maps any new histogram into it.  The
  clusters are labelled I, II, III, ... left to right (:func:`roman`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
from scipy.spatial.distance import squareform

from .inputs import AnalysisError, as_matrix

__all__ = ["CodeClusters", "cluster_codes", "pearson_matrix", "protein_spectra", "roman"]


def protein_spectra(histograms, proteins) -> tuple[pd.DataFrame, pd.Series]:
    """Feature spectrum of each protein: the mean histogram of its frames, normalized to sum 1.

    Parameters
    ----------
    histograms : array-like, shape (N, K), float or int
        Per-frame code histograms (counts or frequencies), non-negative.
    proteins : array-like of str, shape (N,)
        The protein of each frame.

    Returns
    -------
    spectra : pandas.DataFrame, shape (P, K), float64
        Indexed by protein (``str``, sorted, index name ``"protein"``), columns the code indices
        ``0 .. K-1``.  Each row is the mean of the protein's frame histograms divided by its sum,
        so rows sum to 1 (a protein whose frames use no code at all would be all zeros).
    counts : pandas.Series of int64, shape (P,)
        Number of frames per protein, same index, named ``"n_frames"``.

    Notes
    -----
    Frames of one model all hold the same number of code positions, so the normalized mean
    equals the mean of the normalized histograms.  The reduction is one sparse matrix
    product (P x N indicator times N x K histograms).
    """
    h = np.asarray(histograms)
    if h.ndim != 2:
        raise AnalysisError(f"expected shape (N, K), got {h.shape}", field="histograms")
    p = np.asarray(proteins).astype(str)
    if p.shape != (h.shape[0],):
        raise AnalysisError(f"needs one protein per frame: {p.shape[0] if p.ndim else 0} names for "
                            f"{h.shape[0]} frames", field="proteins")
    if h.shape[0] == 0:
        raise AnalysisError("no frames", field="histograms")
    if h.dtype.kind not in "fiub":
        raise AnalysisError(f"histograms must be numeric, got dtype {h.dtype}", field="histograms")
    if h.dtype.kind == "f" and not np.all(np.isfinite(h)):
        raise AnalysisError("contains NaN or infinite values", field="histograms")
    if h.dtype.kind in "fi" and (h < 0).any():
        raise AnalysisError("histograms must be non-negative", field="histograms")
    names, codes = np.unique(p, return_inverse=True)
    n = h.shape[0]
    indicator = sparse.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(len(names), n))
    sums = np.asarray(indicator @ h.astype(np.float64, copy=False))
    counts = np.bincount(codes, minlength=len(names)).astype(np.int64)
    total = sums.sum(axis=1, keepdims=True)
    spectra = np.divide(sums, total, out=np.zeros_like(sums), where=total > 0)
    index = pd.Index(names, name="protein")
    return (pd.DataFrame(spectra, index=index, columns=pd.RangeIndex(h.shape[1])),
            pd.Series(counts, index=index, name="n_frames"))


def pearson_matrix(x, chunk_rows: int = 8192) -> np.ndarray:
    """Pearson correlation between the columns of ``x`` across its rows.

    Parameters
    ----------
    x : array-like, shape (P, K)
        Observations in rows (proteins, or frames), variables in columns (codebook entries).
        Any numeric dtype; computed in float64.
    chunk_rows : int
        Rows per block of the centred cross-product, bounding the memory to about
        ``chunk_rows * K * 8`` bytes beyond the input (frames x codes matrices can be large).

    Returns
    -------
    ndarray, shape (K, K), float64
        Symmetric, values in [-1, 1], ones on the diagonal.  A constant column (zero
        variance) has correlation 0 with every other column, not NaN, and 1 with itself;
        elsewhere equal to ``numpy.corrcoef(x, rowvar=False)``.
    """
    a = np.asarray(x)
    if a.ndim != 2:
        raise AnalysisError(f"expected a 2-D array, got shape {a.shape}", field="x")
    if a.shape[0] < 2:
        raise AnalysisError(f"needs at least 2 rows, got {a.shape[0]}", field="x")
    if chunk_rows < 1:
        raise AnalysisError(f"must be >= 1, got {chunk_rows}", field="chunk_rows")
    k = a.shape[1]
    mean = a.mean(axis=0, dtype=np.float64)
    if not np.all(np.isfinite(mean)):
        raise AnalysisError("contains NaN or infinite values", field="x")
    constant = a.max(axis=0) == a.min(axis=0)
    cov = np.zeros((k, k))
    for start in range(0, a.shape[0], chunk_rows):
        block = a[start:start + chunk_rows].astype(np.float64) - mean
        cov += block.T @ block
    sd = np.sqrt(np.diag(cov))
    inv = np.zeros(k)
    inv[~constant] = 1.0 / sd[~constant]
    corr = cov * inv[:, None] * inv[None, :]
    corr = np.clip((corr + corr.T) / 2.0, -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    return corr


@dataclass(frozen=True)
class CodeClusters:
    """Hierarchical clustering of codebook entries by their co-usage across proteins.

    Attributes
    ----------
    corr : ndarray, shape (K, K), float64
        Pearson correlation between codes across proteins (original code order).
    linkage : ndarray, shape (K - 1, 4), float64
        SciPy linkage matrix on the distance ``1 - corr``.
    labels : ndarray, shape (K,), int32
        Cluster of each code (original order), ``1 .. n_clusters`` from
        ``fcluster(linkage, n_clusters, criterion="maxclust")``.
    leaf_order : ndarray, shape (K,), int64
        Code indices in dendrogram leaf order (left to right), the x axis of a spectrum.
    method : str
        The linkage method.
    n_clusters : int
        The requested number of clusters (``labels.max()`` can be lower when the tree has
        ties).
    """

    corr: np.ndarray
    linkage: np.ndarray
    labels: np.ndarray
    leaf_order: np.ndarray
    method: str
    n_clusters: int

    @property
    def num_codes(self) -> int:
        """K, the codebook size."""
        return int(self.labels.shape[0])

    def reorder(self, histograms):
        """Reorder histogram(s) or spectra along the code axis into the leaf order.

        Parameters
        ----------
        histograms : array-like, shape (..., K), or pandas.DataFrame with K columns
            One histogram (K,), a batch (N, K), or a spectra table.

        Returns
        -------
        Same kind as the input, shape (..., K), columns permuted to ``leaf_order`` (a
        DataFrame keeps its code labels as column names, so they read in leaf order).
        """
        if isinstance(histograms, pd.DataFrame):
            if histograms.shape[1] != self.num_codes:
                raise AnalysisError(f"has {histograms.shape[1]} columns, the clustering "
                                    f"{self.num_codes} codes", field="histograms")
            return histograms.iloc[:, self.leaf_order]
        h = np.asarray(histograms)
        if h.ndim == 0 or h.shape[-1] != self.num_codes:
            raise AnalysisError(f"last axis must have {self.num_codes} codes, got shape {h.shape}",
                                field="histograms")
        return h[..., self.leaf_order]

    def segments(self) -> list[tuple[int, int, int]]:
        """Contiguous runs of one cluster along the leaf order.

        Returns
        -------
        list of (start, stop, label)
            Half-open position ranges in leaf order and the cluster label of the run, left
            to right.  With a monotonic linkage (``average``, ``complete``, ``single``,
            ``weighted``, ``ward``) every cluster is one run.
        """
        lab = self.labels[self.leaf_order]
        cuts = np.flatnonzero(np.diff(lab)) + 1
        starts = np.concatenate([[0], cuts])
        stops = np.concatenate([cuts, [lab.size]])
        return [(int(a), int(b), int(lab[a])) for a, b in zip(starts, stops, strict=True)]


def cluster_codes(spectra, n_clusters: int, method: str = "average") -> CodeClusters:
    """Cluster codebook entries by the Pearson correlation of their usage across proteins.

    Parameters
    ----------
    spectra : array-like or pandas.DataFrame, shape (P, K)
        Protein feature spectra (:func:`protein_spectra`), proteins in rows; P >= 2, K >= 2.
    n_clusters : int
        Number of code clusters, ``1 <= n_clusters <= K``.
    method : str
        SciPy linkage method (``"average"`` as in cytoself).

    Returns
    -------
    CodeClusters
        ``corr = pearson_matrix(spectra)``; ``linkage`` on the condensed form (``squareform``
        with ``checks=False``) of ``1 - corr`` (clipped at 0, zero diagonal); ``labels`` by
        ``fcluster(..., n_clusters, criterion="maxclust")``; ``leaf_order`` from
        ``scipy.cluster.hierarchy.leaves_list``, identical to
        ``dendrogram(linkage, no_plot=True)["leaves"]`` but iterative (``dendrogram``
        recurses and can exceed Python's recursion limit for thousands of codes).
    """
    x = spectra.to_numpy() if isinstance(spectra, pd.DataFrame) else spectra
    x = as_matrix(x, "spectra", min_rows=2)
    k = x.shape[1]
    if k < 2:
        raise AnalysisError(f"needs at least 2 codes, got {k}", field="spectra")
    if not 1 <= int(n_clusters) <= k:
        raise AnalysisError(f"must be between 1 and {k}, got {n_clusters}", field="n_clusters")
    corr = pearson_matrix(x)
    dist = np.clip(1.0 - corr, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    z = linkage(squareform(dist, checks=False), method=method)
    labels = fcluster(z, int(n_clusters), criterion="maxclust").astype(np.int32)
    order = leaves_list(z).astype(np.int64)
    return CodeClusters(corr=corr, linkage=z, labels=labels, leaf_order=order, method=method,
                        n_clusters=int(n_clusters))


def roman(n: int) -> str:
    """Roman numeral of a positive integer (the code cluster labels I, II, III, ...)."""
    if n < 1:
        raise AnalysisError(f"roman numerals start at 1, got {n}", field="n")
    out = []
    for value, sym in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                       (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        q, n = divmod(n, value)
        out.append(sym * q)
    return "".join(out)
