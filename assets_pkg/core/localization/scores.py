"""Scores of an atlas: cytoself's clustering score of a projection, leave-one-out kNN
localization accuracy on spectra (proteins) and on embeddings (frames, leaving out the
frame's whole protein), predictions for unannotated proteins, protein clusters and their
adjusted Rand index against the annotations, and a bootstrap confidence interval of a mean.

``annotations`` arguments take any form :func:`~.annotations.normalize_annotations` accepts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist, pdist

from .annotations import class_order, normalize_annotations
from .inputs import AnalysisError, as_matrix, as_spectra_frame

__all__ = ["adjusted_rand_index", "bootstrap_ci", "clustering_score", "frame_knn_accuracy",
           "knn_localization_accuracy", "predict_localization", "protein_clusters"]


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
    c = as_matrix(coords, "coords")
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
    votes, key = _votes(nbrs, ref_onehot, k)
    return nbrs, votes, key


def _votes(nbrs: np.ndarray, ref_onehot: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Class votes of neighbours ``nbrs`` (Q, k) and the ranking key of :func:`_knn_votes`."""
    support = ref_onehot[nbrs]  # (Q, k, C) bool
    votes = support.sum(axis=1)
    first = np.where(support.any(axis=1), support.argmax(axis=1), k)
    key = votes * (k + 1.0) - first
    return votes, key


def _annotated_matrix(spectra: pd.DataFrame, ann: dict[str, frozenset[str]]):
    names = [p for p in spectra.index if p in ann]
    classes = class_order(c for p in names for c in ann[p])
    col = {c: i for i, c in enumerate(classes)}
    onehot = np.zeros((len(names), len(classes)), dtype=bool)
    for i, p in enumerate(names):
        onehot[i, [col[c] for c in ann[p]]] = True
    return names, classes, onehot


def _onehot(names, ann: dict[str, frozenset[str]], classes: list[str]) -> np.ndarray:
    col = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(names), len(classes)), dtype=bool)
    for i, p in enumerate(names):
        out[i, [col[c] for c in ann[p]]] = True
    return out


def knn_localization_accuracy(spectra, annotations, k: int = 5, metric: str = "correlation",
                              reference=None) -> tuple[float, pd.DataFrame]:
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
    reference : pandas.DataFrame, shape (R, K), optional
        The spectra that vote (e.g. from other frames than ``spectra``'s); a protein never
        votes for itself (its row of the same name is left out).  Default: ``spectra``.

    Returns
    -------
    accuracy : float
        Fraction of annotated proteins counted correct, in [0, 1].
    per_protein : pandas.DataFrame
        One row per annotated protein in spectra order: ``protein``, ``annotated``
        (``';'``-joined), ``predicted``, ``votes`` (int, of the predicted class),
        ``correct`` (bool), ``neighbours`` (``';'``-joined, nearest first).
    """
    df = as_spectra_frame(spectra)
    ref = df if reference is None else as_spectra_frame(reference, "reference")
    if ref.shape[1] != df.shape[1]:
        raise AnalysisError(f"has {ref.shape[1]} columns, spectra {df.shape[1]}", field="reference")
    ann = normalize_annotations(annotations)
    names = [p for p in df.index if p in ann]
    ref_names = [p for p in ref.index if p in ann]
    pos = {p: i for i, p in enumerate(ref_names)}
    self_index = np.array([pos.get(p, -1) for p in names], dtype=np.int64)
    available = len(ref_names) - (self_index >= 0).astype(int)
    if not names or available.min() < 1:
        raise AnalysisError(f"needs at least 2 annotated proteins in spectra, found {len(names)} "
                            f"(and {len(ref_names)} in the reference)", field="annotations")
    if k < 1:
        raise AnalysisError(f"must be >= 1, got {k}", field="k")
    classes = class_order(c for p in names + ref_names for c in ann[p])
    onehot, ref_onehot = _onehot(names, ann, classes), _onehot(ref_names, ann, classes)
    keff = min(int(k), int(available.min()))
    nbrs, votes, key = _knn_votes(df.loc[names].to_numpy(dtype=np.float64),
                                  ref.loc[ref_names].to_numpy(dtype=np.float64), ref_onehot, keff, metric,
                                  self_index)
    top = key.argmax(axis=1)
    correct = onehot[np.arange(len(names)), top]
    name_arr = np.asarray(ref_names, dtype=object)
    per = pd.DataFrame({
        "protein": names,
        "annotated": [";".join(class_order(ann[p])) for p in names],
        "predicted": [classes[t] for t in top],
        "votes": votes[np.arange(len(names)), top].astype(np.int64),
        "correct": correct,
        "neighbours": [";".join(name_arr[row]) for row in nbrs],
    })
    return float(correct.mean()), per


def frame_knn_accuracy(embeddings, proteins, annotations, k: int = 5, metric: str = "correlation",
                       chunk: int = 1024, reference=None, reference_proteins=None) -> tuple[float, pd.DataFrame]:
    """Leave-one-protein-out k-nearest-neighbour localization accuracy of single frames.

    The rule of :func:`knn_localization_accuracy`, one level down: every frame of an annotated
    protein is a query; its ``k`` nearest frames *of other annotated proteins* (distance
    ``metric`` between embedding rows, ties by row order) vote with their protein's classes,
    and the frame counts as correct when the top class (ties to the class whose supporting
    neighbour is closest, then :data:`~assets_pkg.core.imaging.plates.LOCALIZATIONS` order) is
    one of its protein's classes.  Frames of the same protein never vote for each other, so
    recognising a protein (which a protein-ID head is trained to do) earns nothing.

    Parameters
    ----------
    embeddings : array-like, shape (N, D)
        One row per frame (codebook histograms, pooled encoder outputs, standardised features).
    proteins : array-like of str, shape (N,)
        The protein of each frame.
    annotations : see :func:`normalize_annotations`
        Frames of unannotated proteins neither vote nor count.
    k : int
        Neighbours per frame (lowered to the fewest voting frames any query has).
    metric : str
        ``scipy.spatial.distance.cdist`` metric; a NaN distance counts as infinitely far.
    chunk : int
        Query frames per distance block (memory about ``chunk * R * 8`` bytes).
    reference, reference_proteins : array-like, shape (R, D) and (R,), optional
        The frames that vote (e.g. the train split's), default the queries themselves.

    Returns
    -------
    accuracy : float
        Fraction of annotated frames counted correct, in [0, 1].
    per_frame : pandas.DataFrame
        One row per annotated frame, in input order: ``row`` (int, position in ``embeddings``),
        ``protein``, ``predicted``, ``correct`` (bool).
    """
    x = as_matrix(embeddings, "embeddings")
    prot = np.asarray(proteins).astype(str)
    if prot.shape != (x.shape[0],):
        raise AnalysisError(f"needs one protein per frame, got {prot.shape} for {x.shape[0]} frames",
                            field="proteins")
    if (reference is None) != (reference_proteins is None):
        raise AnalysisError("give both reference and reference_proteins, or neither", field="reference")
    rx = x if reference is None else as_matrix(reference, "reference")
    rprot = prot if reference_proteins is None else np.asarray(reference_proteins).astype(str)
    if rprot.shape != (rx.shape[0],) or rx.shape[1] != x.shape[1]:
        raise AnalysisError(f"reference of shape {rx.shape} with {rprot.shape} proteins does not fit "
                            f"embeddings of shape {x.shape}", field="reference")
    if k < 1:
        raise AnalysisError(f"must be >= 1, got {k}", field="k")
    ann = normalize_annotations(annotations)
    known = np.asarray(list(ann), dtype=str)
    rows, rrows = np.flatnonzero(np.isin(prot, known)), np.flatnonzero(np.isin(rprot, known))
    names = np.unique(np.concatenate([prot[rows], rprot[rrows]]))
    pid, rpid = np.searchsorted(names, prot[rows]), np.searchsorted(names, rprot[rrows])
    per_protein = np.bincount(rpid, minlength=len(names))
    voters = len(rrows) - per_protein[pid] if len(rows) else np.zeros(0, int)
    if len(rows) == 0 or voters.min() < 1:
        raise AnalysisError(f"needs frames of at least 2 annotated proteins, found {len(np.unique(pid))} "
                            f"querying and {len(np.unique(rpid))} voting", field="annotations")
    classes = class_order(c for p in names for c in ann[p])
    prot_onehot = _onehot(names, ann, classes)
    keff = min(int(k), int(voters.min()))
    xa, ra, ref_onehot = x[rows], rx[rrows], prot_onehot[rpid]
    top = np.empty(len(rows), dtype=np.int64)
    step = max(1, int(chunk))
    for start in range(0, len(rows), step):
        stop = min(start + step, len(rows))
        d = cdist(xa[start:stop], ra, metric=metric)
        d[np.isnan(d)] = np.inf
        d[pid[start:stop, None] == rpid[None, :]] = np.inf  # the frame's own protein never votes
        nbrs = np.argsort(d, axis=1, kind="stable")[:, :keff]
        _, key = _votes(nbrs, ref_onehot, keff)
        top[start:stop] = key.argmax(axis=1)
    correct = prot_onehot[pid, top]
    per = pd.DataFrame({"row": rows.astype(np.int64), "protein": prot[rows],
                        "predicted": np.asarray(classes, dtype=object)[top], "correct": correct})
    return float(correct.mean()), per


def bootstrap_ci(values, n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    Parameters
    ----------
    values : array-like, shape (n,)
        One value per unit resampled (e.g. 1.0 / 0.0 for each protein counted correct).
    n_resamples : int
        Resamples with replacement, each of ``n`` units.
    seed : int
        Seed of ``numpy.random.default_rng`` (no global state).
    level : float
        Coverage in (0, 1); the interval runs between the ``(1 - level) / 2`` and
        ``(1 + level) / 2`` quantiles of the resampled means.

    Returns
    -------
    (low, high) : tuple of float
        NaN for no values.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if not 0 < level < 1:
        raise AnalysisError(f"must lie in (0, 1), got {level}", field="level")
    if n_resamples < 1:
        raise AnalysisError(f"must be >= 1, got {n_resamples}", field="n_resamples")
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(int(n_resamples), v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


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
    df = as_spectra_frame(spectra)
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
                     method: str = "average", metric: str = "correlation") -> pd.Series:
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
    metric : str
        ``pdist`` metric between spectra.

    Returns
    -------
    pandas.Series of int32
        Cluster ``1 .. n_clusters`` of each protein, indexed like ``spectra``, named
        ``"cluster"``.  By default correlation distance ``1 - r`` between spectra (``pdist(...,
        "correlation")``); a constant spectrum is at distance 1 from every other (a NaN
        distance of any metric counts as 1).
    """
    del seed  # deterministic; see docstring
    df = as_spectra_frame(spectra)
    if df.shape[0] < 2:
        raise AnalysisError(f"needs at least 2 proteins, got {df.shape[0]}", field="spectra")
    if not 1 <= int(n_clusters) <= df.shape[0]:
        raise AnalysisError(f"must be between 1 and {df.shape[0]}, got {n_clusters}",
                            field="n_clusters")
    d = pdist(df.to_numpy(dtype=np.float64), metric=metric)
    d = np.clip(np.nan_to_num(d, nan=1.0), 0.0, 2.0 if metric in ("correlation", "cosine") else None)
    z = linkage(d, method=method)
    lab = fcluster(z, int(n_clusters), criterion="maxclust").astype(np.int32)
    return pd.Series(lab, index=df.index, name="cluster")
