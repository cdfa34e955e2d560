"""The localization atlas: feature spectra, code clusters, projections, scores and predictions.

Everything here works on NumPy arrays and pandas tables; nothing needs JAX or Dagster.

* A frame's *histogram* is the count of each codebook entry over its quantized map
  (:func:`assets_pkg.core.localization.models.codebook_histogram`), shape (N, K).
* A protein's *feature spectrum* is the mean histogram of its frames, normalized to sum 1
  (:func:`protein_spectra`).
* Codebook entries are clustered by the Pearson correlation of their usage across proteins
  (:func:`pearson_matrix`, :func:`cluster_codes`); the dendrogram's leaf order is the x axis of
  every spectrum, and :meth:`CodeClusters.reorder` maps any new histogram into it.
* Frames are projected to 2-D with umap-learn (:func:`umap_projection`, :func:`aligned_umap`)
  and scored with cytoself's clustering score (:func:`clustering_score`).
* Proteins are scored and predicted from their nearest annotated spectra
  (:func:`knn_localization_accuracy`, :func:`predict_localization`) and clustered
  (:func:`protein_clusters`, :func:`adjusted_rand_index`).

Annotations (``annotations`` arguments) may be given as

* a mapping ``protein -> classes`` where classes is a set/list/tuple of class names or a
  single string (``';'``-separated names allowed), or
* a pandas Series with the same meaning, or
* a long pandas DataFrame with a ``protein`` column and a ``localization`` column (one row
  per protein and class; ``target_name`` / ``annotation_name`` as in the OpenCell panel
  tables are accepted as well).

Proteins with an empty set of classes count as unannotated.  See
:func:`normalize_annotations`.

The figure functions (``plot_*``) return matplotlib Figures drawn with the Agg backend; save
them with :func:`assets_pkg.core.plots.save_png`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import sparse  # noqa: E402
from scipy.cluster.hierarchy import fcluster, leaves_list, linkage  # noqa: E402
from scipy.spatial.distance import cdist, pdist, squareform  # noqa: E402

from ..errors import CellscapeError  # noqa: E402
from ..imaging.plates import LOCALIZATIONS  # noqa: E402

__all__ = [
    "AnalysisError",
    "CodeClusters",
    "adjusted_rand_index",
    "aligned_umap",
    "cluster_codes",
    "clustering_score",
    "knn_localization_accuracy",
    "normalize_annotations",
    "pearson_matrix",
    "plot_aligned_umaps",
    "plot_code_correlation",
    "plot_spectra_by_class",
    "plot_umap",
    "predict_localization",
    "protein_clusters",
    "protein_spectra",
    "roman",
    "single_localization",
    "umap_projection",
]


class AnalysisError(CellscapeError):
    """An analysis input is malformed (wrong shape, empty, inconsistent); the message names it."""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_2d(x, name: str, min_rows: int = 1) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise AnalysisError(f"expected a 2-D array, got shape {a.shape}", field=name)
    if a.shape[0] < min_rows:
        raise AnalysisError(f"needs at least {min_rows} rows, got {a.shape[0]}", field=name)
    if not np.all(np.isfinite(a)):
        raise AnalysisError("contains NaN or infinite values", field=name)
    return a


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


def _split_classes(value) -> frozenset[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return frozenset()
    if isinstance(value, str):
        parts = value.split(";")
    elif isinstance(value, Iterable):
        parts = list(value)
    else:
        raise AnalysisError(f"classes must be a string or an iterable of strings, got {value!r}",
                            field="annotations")
    return frozenset(str(p).strip() for p in parts if str(p).strip())


def normalize_annotations(annotations) -> dict[str, frozenset[str]]:
    """Annotations as a ``dict`` protein -> frozenset of class names (empty sets dropped).

    Parameters
    ----------
    annotations : Mapping, pandas.Series or pandas.DataFrame
        ``protein -> classes`` (a set/list/tuple of names or one ``';'``-separated string), or a
        long table with columns ``protein`` and ``localization`` (or ``target_name`` and
        ``annotation_name``), one row per protein and class.

    Returns
    -------
    dict of str to frozenset of str
        Keys are ``str(protein)``; proteins without any class are left out.
    """
    if isinstance(annotations, pd.DataFrame):
        for pcol, ccol in (("protein", "localization"), ("target_name", "annotation_name")):
            if pcol in annotations.columns and ccol in annotations.columns:
                break
        else:
            raise AnalysisError(
                "an annotation table needs the columns 'protein' and 'localization' "
                f"(or 'target_name' and 'annotation_name'); got {list(annotations.columns)}",
                field="annotations")
        sub = annotations[[pcol, ccol]].dropna()
        out: dict[str, set[str]] = {}
        for p, c in zip(sub[pcol].astype(str), sub[ccol].astype(str), strict=True):
            out.setdefault(p, set()).update(_split_classes(c))
        return {p: frozenset(c) for p, c in out.items() if c}
    if isinstance(annotations, pd.Series):
        annotations = annotations.to_dict()
    if not isinstance(annotations, Mapping):
        raise AnalysisError(f"unsupported annotations type {type(annotations).__name__}",
                            field="annotations")
    norm = {str(p): _split_classes(c) for p, c in annotations.items()}
    return {p: c for p, c in norm.items() if c}


def single_localization(annotations) -> pd.Series:
    """The class of every protein annotated with exactly one localization.

    Parameters
    ----------
    annotations : see :func:`normalize_annotations`

    Returns
    -------
    pandas.Series of str
        Indexed by protein (sorted), named ``"localization"``.
    """
    ann = normalize_annotations(annotations)
    single = {p: next(iter(c)) for p, c in sorted(ann.items()) if len(c) == 1}
    s = pd.Series(single, dtype=object, name="localization")
    s.index.name = "protein"
    return s


def _as_spectra_frame(spectra, name: str = "spectra") -> pd.DataFrame:
    if isinstance(spectra, pd.DataFrame):
        df = spectra
    else:
        df = pd.DataFrame(_as_2d(spectra, name))
    _as_2d(df.to_numpy(), name)
    df = df.copy()
    df.index = df.index.map(str)
    if df.index.has_duplicates:
        dup = df.index[df.index.duplicated()].unique().tolist()[:5]
        raise AnalysisError(f"protein index has duplicates, e.g. {dup}", field=name)
    return df


def _class_order(classes: Iterable[str]) -> list[str]:
    """Classes in the order of LOCALIZATIONS, unknown ones after, alphabetically."""
    rank = {c: i for i, c in enumerate(LOCALIZATIONS)}
    return sorted(set(classes), key=lambda c: (rank.get(c, len(rank)), c))


# --------------------------------------------------------------------------------------------
# spectra and code clusters
# --------------------------------------------------------------------------------------------


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
    x = _as_2d(x, "spectra", min_rows=2)
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


# --------------------------------------------------------------------------------------------
# projections
# --------------------------------------------------------------------------------------------


def _umap_kwargs(n_items: int, seed: int, n_neighbors: int, min_dist: float, metric: str) -> dict:
    if n_items < 3:
        raise AnalysisError(f"UMAP needs at least 3 items, got {n_items}", field="x")
    return dict(n_components=2, n_neighbors=int(min(n_neighbors, n_items - 1)), min_dist=min_dist,
                metric=metric, random_state=int(seed))


def umap_projection(x, seed: int, n_neighbors: int = 15, min_dist: float = 0.1,
                    metric: str = "euclidean") -> np.ndarray:
    """2-D UMAP projection of embeddings (umap-learn), reproducible for a given seed.

    Parameters
    ----------
    x : array-like, shape (N, D)
        Frame embeddings (histograms or pooled encoder outputs), N >= 3.
    seed : int
        ``random_state`` of UMAP: the result is deterministic, and umap-learn then runs its
        optimisation single-threaded.  Only this local generator is used; no global state.
    n_neighbors, min_dist, metric
        UMAP parameters; ``n_neighbors`` is lowered to ``N - 1`` for tiny inputs.

    Returns
    -------
    ndarray, shape (N, 2), float32
    """
    import umap  # slow to import (numba); only when needed

    a = _as_2d(x, "x").astype(np.float32)
    reducer = umap.UMAP(n_jobs=1, **_umap_kwargs(a.shape[0], seed, n_neighbors, min_dist, metric))
    return np.asarray(reducer.fit_transform(a), dtype=np.float32)


def aligned_umap(xs: Sequence, seed: int, n_neighbors: int = 15, min_dist: float = 0.1,
                 metric: str = "euclidean") -> list[np.ndarray]:
    """Aligned 2-D UMAPs of several embeddings of the same items, so the panels are comparable.

    Parameters
    ----------
    xs : sequence of array-like, each shape (N, D_i)
        Embeddings of the SAME N items in the same order by different models (the
        dimensions may differ).
    seed : int
        ``random_state`` of ``umap.AlignedUMAP`` (no global state is touched).
    n_neighbors, min_dist, metric
        UMAP parameters shared by all panels.

    Returns
    -------
    list of ndarray, each shape (N, 2), float32
        One embedding per input.  Consecutive panels are tied by the identity relation
        (item i in one panel is item i in the next).  A single input falls back to
        :func:`umap_projection`.
    """
    arrays = [_as_2d(x, f"xs[{i}]").astype(np.float32) for i, x in enumerate(xs)]
    if not arrays:
        raise AnalysisError("no embeddings given", field="xs")
    n = arrays[0].shape[0]
    for i, a in enumerate(arrays):
        if a.shape[0] != n:
            raise AnalysisError(f"has {a.shape[0]} items, xs[0] has {n}; aligned UMAP needs the "
                                "same items in every panel", field=f"xs[{i}]")
    if len(arrays) == 1:
        return [umap_projection(arrays[0], seed, n_neighbors, min_dist, metric)]
    import umap

    identity = {i: i for i in range(n)}
    mapper = umap.AlignedUMAP(**_umap_kwargs(n, seed, n_neighbors, min_dist, metric))
    with warnings.catch_warnings():
        # AlignedUMAP builds its UMAPs with the default n_jobs; a seed makes them serial anyway
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        mapper.fit(arrays, relations=[identity] * (len(arrays) - 1))
    return [np.asarray(e, dtype=np.float32) for e in mapper.embeddings_]


# --------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------


def clustering_score(coords, labels, exclude: Sequence[str] = ("others",)) -> tuple[float, pd.DataFrame]:
    """cytoself's clustering score of labelled points in a 2-D projection.

    For every class: centre = per-axis median of its points, size = median Euclidean
    distance of its points to that centre.  Then::

        score = np.std(centres) / np.median(sizes)

    where ``centres`` is the (C, 2) array of class centres and ``np.std`` runs over all its
    ``2 C`` numbers (population std, ``ddof=0``), exactly as in cytoself
    (``cytoself/analysis/plot_umap.py``: ``inter_cluster = np.std(cluster_matrix[:, 1:-1])``,
    ``intra_cluster = np.median(cluster_matrix[:, -1])``, the centres and sizes from
    ``analysis/utils/cluster_score.py: calculate_cluster_centrosize``).  Note that pooling both
    axes makes the spread depend on the offset between the x and y means, as in cytoself;
    the score is comparable between runs only as cytoself's is.

    Parameters
    ----------
    coords : array-like, shape (N, 2)
        Projected coordinates (e.g. of single-localization frames).
    labels : array-like of str, shape (N,)
        Class of each point.
    exclude : sequence of str
        Labels left out (cytoself leaves out ``"others"``).

    Returns
    -------
    score : float
        Higher is better separated; ``inf`` when every class has size 0 and the centres differ.
    per_class : pandas.DataFrame
        Indexed by class (sorted), columns ``n`` (int), ``centre_x``, ``centre_y``, ``size``.
    """
    c = _as_2d(coords, "coords")
    if c.shape[1] != 2:
        raise AnalysisError(f"expected shape (N, 2), got {c.shape}", field="coords")
    lab = np.asarray(labels).astype(str)
    if lab.shape != (c.shape[0],):
        raise AnalysisError(f"needs one label per point, got {lab.shape} for {c.shape[0]} points",
                            field="labels")
    keep = ~np.isin(lab, np.asarray(list(exclude), dtype=str))
    c, lab = c[keep], lab[keep]
    classes, inv = np.unique(lab, return_inverse=True)
    if classes.size == 0:
        raise AnalysisError("no labelled points left after exclusion", field="labels")
    # Group by class once (stable sort), then medians per group.
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(classes.size + 1))
    centres = np.empty((classes.size, 2))
    sizes = np.empty(classes.size)
    for j in range(classes.size):
        pts = c[order[bounds[j]:bounds[j + 1]]]
        centres[j] = np.median(pts, axis=0)
        sizes[j] = np.median(np.hypot(pts[:, 0] - centres[j, 0], pts[:, 1] - centres[j, 1]))
    inter = float(np.std(centres))
    intra = float(np.median(sizes))
    with np.errstate(divide="ignore", invalid="ignore"):
        score = float(np.float64(inter) / np.float64(intra))
    per_class = pd.DataFrame({"n": np.diff(bounds).astype(np.int64), "centre_x": centres[:, 0],
                              "centre_y": centres[:, 1], "size": sizes},
                             index=pd.Index(classes, name="class"))
    return score, per_class


def _knn_votes(query: np.ndarray, ref: np.ndarray, ref_onehot: np.ndarray, k: int, metric: str,
               self_index: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest reference rows of each query row and the class votes they cast.

    Returns ``(neighbours (Q, k) int, votes (Q, C) int, key (Q, C) float)``; ``key`` ranks
    classes by votes, then by the rank of their closest supporting neighbour.
    """
    d = cdist(query, ref, metric=metric)
    d[np.isnan(d)] = np.inf  # correlation distance of a constant spectrum
    if self_index is not None:
        rows = np.flatnonzero(self_index >= 0)
        d[rows, self_index[rows]] = np.inf
    nbrs = np.argsort(d, axis=1, kind="stable")[:, :k]  # ties by reference (table) order
    support = ref_onehot[nbrs]  # (Q, k, C) bool
    votes = support.sum(axis=1)
    first = np.where(support.any(axis=1), support.argmax(axis=1), k)
    key = votes * (k + 1.0) - first
    return nbrs, votes, key


def _annotated_matrix(spectra: pd.DataFrame, ann: dict[str, frozenset[str]]):
    names = [p for p in spectra.index if p in ann]
    classes = _class_order(c for p in names for c in ann[p])
    col = {c: i for i, c in enumerate(classes)}
    onehot = np.zeros((len(names), len(classes)), dtype=bool)
    for i, p in enumerate(names):
        onehot[i, [col[c] for c in ann[p]]] = True
    return names, classes, onehot


def knn_localization_accuracy(spectra, annotations, k: int = 5,
                              metric: str = "correlation") -> tuple[float, pd.DataFrame]:
    """Leave-one-protein-out k-nearest-neighbour localization accuracy on feature spectra.

    Rule: for every annotated protein, its ``k`` nearest *other* annotated proteins (distance
    ``metric`` between spectra, ties by table order) vote; each neighbour casts one vote for
    each of its annotated classes.  The predicted class is the one with the most votes; ties
    go to the class whose supporting neighbour is closest, then to the first class in
    :data:`~assets_pkg.core.imaging.plates.LOCALIZATIONS` order.  The protein counts as correct when
    the predicted class is one of its own annotated classes.

    Parameters
    ----------
    spectra : pandas.DataFrame, shape (P, K)
        Spectra indexed by protein (:func:`protein_spectra`); a plain array is indexed
        ``0 .. P-1`` (then annotation keys are ``"0"``, ``"1"``, ...).
    annotations : see :func:`normalize_annotations`
        Proteins not in ``spectra`` are ignored; unannotated proteins neither vote nor count.
    k : int
        Neighbours per protein (lowered to the number of other annotated proteins).
    metric : str
        Any ``scipy.spatial.distance.cdist`` metric; a NaN distance (correlation of a constant
        spectrum) counts as infinitely far.

    Returns
    -------
    accuracy : float
        Fraction of annotated proteins counted correct, in [0, 1].
    per_protein : pandas.DataFrame
        One row per annotated protein in spectra order: ``protein``, ``annotated``
        (``';'``-joined), ``predicted``, ``votes`` (int, of the predicted class),
        ``correct`` (bool), ``neighbours`` (``';'``-joined, nearest first).
    """
    df = _as_spectra_frame(spectra)
    ann = normalize_annotations(annotations)
    names, classes, onehot = _annotated_matrix(df, ann)
    if len(names) < 2:
        raise AnalysisError(f"needs at least 2 annotated proteins in spectra, found {len(names)}",
                            field="annotations")
    if k < 1:
        raise AnalysisError(f"must be >= 1, got {k}", field="k")
    keff = min(int(k), len(names) - 1)
    x = df.loc[names].to_numpy(dtype=np.float64)
    nbrs, votes, key = _knn_votes(x, x, onehot, keff, metric, np.arange(len(names)))
    top = key.argmax(axis=1)
    correct = onehot[np.arange(len(names)), top]
    name_arr = np.asarray(names, dtype=object)
    per = pd.DataFrame({
        "protein": names,
        "annotated": [";".join(_class_order(ann[p])) for p in names],
        "predicted": [classes[t] for t in top],
        "votes": votes[np.arange(len(names)), top].astype(np.int64),
        "correct": correct,
        "neighbours": [";".join(name_arr[row]) for row in nbrs],
    })
    return float(correct.mean()), per


def predict_localization(spectra, annotations, unannotated: Sequence[str], k: int = 5,
                         metric: str = "correlation") -> pd.DataFrame:
    """Predicted localization of proteins from their nearest annotated spectra.

    Same neighbours and votes as :func:`knn_localization_accuracy` (a query that is itself
    annotated is never its own neighbour).

    Parameters
    ----------
    spectra : pandas.DataFrame, shape (P, K)
        Spectra indexed by protein.
    annotations : see :func:`normalize_annotations`
    unannotated : sequence of str
        Proteins to predict; each must be a row of ``spectra``.
    k : int
        Neighbours (lowered to the number of available annotated proteins).
    metric : str
        ``cdist`` metric.

    Returns
    -------
    pandas.DataFrame
        One row per query in the given order: ``protein``; ``predicted``, every class with the
        top vote count, ``';'``-joined (tie order as in the accuracy rule); ``confidence``, the
        share of the neighbours voting for the top class (votes / neighbours, 0..1);
        ``neighbours``, ``';'``-joined, nearest first.
    """
    df = _as_spectra_frame(spectra)
    ann = normalize_annotations(annotations)
    names, classes, onehot = _annotated_matrix(df, ann)
    queries = [str(q) for q in unannotated]
    missing = [q for q in queries if q not in df.index]
    if missing:
        raise AnalysisError(f"proteins not in spectra: {missing[:10]}", field="unannotated")
    cols = ["protein", "predicted", "confidence", "neighbours"]
    if not queries:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "confidence" else object) for c in cols})
    if k < 1:
        raise AnalysisError(f"must be >= 1, got {k}", field="k")
    pos = {p: i for i, p in enumerate(names)}
    self_index = np.array([pos.get(q, -1) for q in queries])
    available = len(names) - (self_index >= 0).astype(int)
    if available.min() < 1:
        raise AnalysisError("no annotated protein to compare with", field="annotations")
    keff = min(int(k), int(available.min()))
    nbrs, votes, key = _knn_votes(df.loc[queries].to_numpy(dtype=np.float64),
                                  df.loc[names].to_numpy(dtype=np.float64), onehot, keff, metric,
                                  self_index)
    name_arr = np.asarray(names, dtype=object)
    predicted, confidence = [], []
    for v, kk in zip(votes, key, strict=True):
        best = v.max()
        tied = np.flatnonzero(v == best)
        tied = tied[np.argsort(-kk[tied], kind="stable")]
        predicted.append(";".join(classes[t] for t in tied))
        confidence.append(best / keff)
    return pd.DataFrame({"protein": queries, "predicted": predicted,
                         "confidence": np.asarray(confidence, dtype=np.float64),
                         "neighbours": [";".join(name_arr[row]) for row in nbrs]})


def adjusted_rand_index(cluster_labels, class_labels) -> float:
    """Adjusted Rand index between a clustering and reference classes.

    Parameters
    ----------
    cluster_labels, class_labels : array-like, shape (N,)
        Any hashable labels (e.g. :func:`protein_clusters` against :func:`single_localization`,
        aligned on the same proteins).

    Returns
    -------
    float
        1 for identical partitions (up to renaming), about 0 for chance (can be negative).
    """
    from sklearn.metrics import adjusted_rand_score

    a, b = np.asarray(cluster_labels), np.asarray(class_labels)
    if a.shape != b.shape or a.ndim != 1:
        raise AnalysisError(f"need two 1-D label arrays of one length, got {a.shape} and {b.shape}",
                            field="class_labels")
    return float(adjusted_rand_score(b, a))


def protein_clusters(spectra, n_clusters: int, seed: int | None = None,
                     method: str = "average") -> pd.Series:
    """Hierarchical clusters of proteins by the correlation distance of their spectra.

    Parameters
    ----------
    spectra : pandas.DataFrame, shape (P, K)
        Spectra indexed by protein (a plain array is indexed ``0 .. P-1``).
    n_clusters : int
        ``fcluster(..., n_clusters, criterion="maxclust")``, ``1 <= n_clusters <= P``.
    seed : int, optional
        Accepted so the report can pass one seed to every step; hierarchical clustering is
        deterministic and does not use it.
    method : str
        SciPy linkage method.

    Returns
    -------
    pandas.Series of int32
        Cluster ``1 .. n_clusters`` of each protein, indexed like ``spectra``, named
        ``"cluster"``.  Correlation distance ``1 - r`` between spectra (``pdist(...,
        "correlation")``); a constant spectrum is at distance 1 from every other.
    """
    del seed  # deterministic; see docstring
    df = _as_spectra_frame(spectra)
    if df.shape[0] < 2:
        raise AnalysisError(f"needs at least 2 proteins, got {df.shape[0]}", field="spectra")
    if not 1 <= int(n_clusters) <= df.shape[0]:
        raise AnalysisError(f"must be between 1 and {df.shape[0]}, got {n_clusters}",
                            field="n_clusters")
    d = pdist(df.to_numpy(dtype=np.float64), metric="correlation")
    d = np.clip(np.nan_to_num(d, nan=1.0), 0.0, 2.0)
    z = linkage(d, method=method)
    lab = fcluster(z, int(n_clusters), criterion="maxclust").astype(np.int32)
    return pd.Series(lab, index=df.index, name="cluster")


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def _cluster_colors(n: int) -> np.ndarray:
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
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


def plot_code_correlation(clusters: CodeClusters, title: str = "") -> plt.Figure:
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
    fig = plt.figure(figsize=(8.0, 9.0))
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
                          title: str = "") -> plt.Figure:
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
    df = _as_spectra_frame(spectra)
    pc = protein_class.copy()
    pc.index = pc.index.map(str)
    pc = pc[pc.index.isin(df.index)].astype(str)
    if pc.empty:
        raise AnalysisError("no protein of protein_class is in spectra", field="protein_class")
    classes = _class_order(pc.unique())
    means = df.loc[pc.index].groupby(pc.to_numpy()).mean()
    counts = pc.value_counts()
    k = clusters.num_codes
    if df.shape[1] != k:
        raise AnalysisError(f"has {df.shape[1]} codes, the clustering {k}", field="spectra")
    runs, centres, names = _segment_ticks(clusters)
    fig, axes = plt.subplots(len(classes), 1, figsize=(10.0, 0.9 * len(classes) + 1.2),
                             sharex=True, squeeze=False)
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
    cmap = plt.get_cmap("tab20")
    palette = [cmap(i) for i in range(20) if i not in (14, 15)]
    return {c: palette[i % len(palette)] for i, c in enumerate(_class_order(classes))}


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
    c = _as_2d(coords, "coords")
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


def plot_umap(coords, labels, single_mask=None, title: str = "") -> plt.Figure:
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
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    _draw_umap(ax, c, lab, single, colors, title, _marker_size(c.shape[0]))
    _legend(ax)
    fig.tight_layout()
    return fig


def plot_aligned_umaps(coords_list: Sequence, labels, titles: Sequence[str],
                       single_mask=None) -> plt.Figure:
    """Aligned UMAP panels side by side with one colour per localization and shared axes.

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
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n + 1.8, 4.6), sharex=True, sharey=True,
                             squeeze=False)
    s = _marker_size(prepared[0][0].shape[0])
    for ax, (c, _, _), t in zip(axes[0], prepared, titles, strict=True):
        _draw_umap(ax, c, lab, single, colors, t, s)
    _legend(axes[0, -1])
    fig.tight_layout()
    return fig
