"""Each model scored on its own: its own projection, frames it never trained on, several seeds.

:func:`score_embedding` scores one embedding of frames (a model's codebook histograms or pooled
encoder outputs, or the classical baseline's standardised features: the same code for all) from
the frames of one split (``ScoreConfig.score_split``, default ``test``; ``heldout`` = valid and
test) and nothing else: adding or removing another model from a report cannot change its numbers.

For every seed of ``ScoreConfig.seeds`` it takes a seeded subsample of ``frame_fraction`` of every
protein's scored frames and computes

* ``clustering_score``: cytoself's clustering score (:func:`~.scores.clustering_score`) of the
  single-localization frames in a UMAP fitted on this embedding of these frames alone
  (``random_state`` = the seed);
* ``frame_knn_accuracy``: leave-one-protein-out kNN localization accuracy of single frames on the
  embedding itself (:func:`~.scores.frame_knn_accuracy`);
* ``ari_protein_clusters``: adjusted Rand index between the hierarchical clusters of the
  single-localization proteins' mean embeddings (:func:`~.scores.protein_clusters`, as many
  clusters as classes) and their classes;

and reports their mean, standard deviation (``ddof=1``), minimum and maximum.  Without the
subsample (``frame_fraction=1``) only the UMAP varies with the seed: the kNN and the hierarchical
clustering are deterministic.  Once, on all scored frames, ``protein_knn_accuracy``: each
protein's mean embedding (its feature spectrum for histograms), leave-one-protein-out kNN over
proteins (:func:`~.scores.knn_localization_accuracy`), with a percentile bootstrap confidence
interval over proteins (``bootstrap`` resamples, seed ``seeds[0]``).

The clustering score and the ARI use the classes that at least :data:`MIN_PROTEINS_PER_CLASS`
single-localization proteins of the scored frames share: a class of one protein would score
how well the embedding tells proteins apart (what a protein-ID head is trained for), not
localization.  Fewer than two such classes give NaN.  With ``knn_reference="train"`` the kNN
votes come from the train frames' embeddings of the other proteins instead of the scored
frames' (a larger atlas; the scored frames stay the queries).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import CellscapeError
from .annotations import annotations_from_rows, single_localization
from .config import ScoreConfig
from .inputs import AnalysisError
from .projection import umap_projection
from .scores import (
    adjusted_rand_index,
    bootstrap_ci,
    clustering_score,
    frame_knn_accuracy,
    knn_localization_accuracy,
    protein_clusters,
)

__all__ = ["MIN_PROTEINS_PER_CLASS", "SEEDED_SCORES", "EmbeddingScores", "class_proteins", "group_means",
           "paired_knn_difference", "score_embedding", "score_rows", "scores_table", "subsample_frames", "summarize"]

#: The scores computed once per seed, summarised as mean, std, min and max.
SEEDED_SCORES: tuple[str, ...] = ("clustering_score", "frame_knn_accuracy", "ari_protein_clusters")
#: Single-localization proteins a class needs among the scored frames to count in the clustering
#: score and the ARI.
MIN_PROTEINS_PER_CLASS = 2


@dataclass
class EmbeddingScores:
    """The scores of one embedding and what they were computed from.

    Attributes
    ----------
    name : str
    scores : dict
        JSON-ready summary: for each of :data:`SEEDED_SCORES` the mean (under its own name) and
        ``<name>_std``, ``_min``, ``_max``; ``protein_knn_accuracy`` with ``protein_knn_ci_low`` /
        ``protein_knn_ci_high``; ``knn_accuracy`` (the same protein kNN accuracy, the name earlier
        reports used); counts (``frames``, ``proteins``, ``annotated_proteins``, ``classes``:
        classes of at least :data:`MIN_PROTEINS_PER_CLASS` single-localization proteins,
        ``single_localization_frames``: the frames of those proteins, ``seeds``).
    per_seed : pandas.DataFrame
        One row per seed: ``seed``, ``frames`` and the :data:`SEEDED_SCORES`.
    knn_table : pandas.DataFrame
        The protein kNN per protein (as :func:`~.scores.knn_localization_accuracy`).
    coords : ndarray, shape (M, 2), float32
        The own UMAP of the first seed, over the frames ``coord_rows``.
    coord_rows : pandas.DataFrame
        The frames of ``coords`` (a subsample of the split's frames).
    config : ScoreConfig
        The settings the scores were computed with.
    tables : dict of str -> pandas.DataFrame
        More tables to export beside (e.g. the baseline's features).
    """

    name: str
    scores: dict
    per_seed: pd.DataFrame
    knn_table: pd.DataFrame
    coords: np.ndarray
    coord_rows: pd.DataFrame
    config: ScoreConfig
    tables: dict = field(default_factory=dict)


def score_rows(rows: pd.DataFrame, split: str, field: str = "score_split") -> np.ndarray:
    """Positions of the rows of ``split`` (``"all"``: every row; ``"heldout"``: valid and test),
    or an error naming ``field`` when there are none."""
    if split == "all":
        pos = np.arange(len(rows))
    else:
        if "split" not in rows.columns:
            raise CellscapeError("the frame table has no 'split' column to choose the scored frames from",
                                 field="split")
        wanted = ("valid", "test") if split == "heldout" else (split,)
        pos = np.flatnonzero(rows["split"].astype(str).isin(wanted).to_numpy())
    if len(pos) == 0:
        have = sorted(rows["split"].astype(str).unique()) if "split" in rows.columns else []
        raise CellscapeError(f"none of the {len(rows)} embedded frames is in the {split!r} split (splits present: "
                             f"{have}); choose another split or embed that one", field=field)
    return pos


def class_proteins(single: pd.Series, proteins, min_proteins: int = MIN_PROTEINS_PER_CLASS) -> pd.Series:
    """The single-localization proteins among ``proteins`` whose class has at least ``min_proteins`` of them.

    Parameters
    ----------
    single : pandas.Series of str
        Class of each single-localization protein (:func:`~.annotations.single_localization`).
    proteins : iterable of str
        The proteins present (e.g. of the scored frames).
    min_proteins : int

    Returns
    -------
    pandas.Series of str
        ``single`` restricted to those proteins, sorted by protein.
    """
    s = single[single.index.isin(list(set(map(str, proteins))))]
    sizes = s.value_counts()
    return s[s.map(sizes) >= min_proteins].sort_index()


def subsample_frames(proteins, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of a random ``fraction`` of every protein's frames (at least one each).

    Parameters
    ----------
    proteins : array-like of str, shape (N,)
    fraction : float
        In (0, 1]; 1 returns every position.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int64
        ``ceil(fraction * n_p)`` positions of each protein ``p`` with ``n_p`` frames.
    """
    p = np.asarray(proteins).astype(str)
    if not 0 < fraction <= 1:
        raise CellscapeError(f"must lie in (0, 1], got {fraction}", field="frame_fraction")
    if fraction == 1:
        return np.arange(len(p), dtype=np.int64)
    _, inv = np.unique(p, return_inverse=True)
    key = rng.random(len(p))
    order = np.lexsort((key, inv))  # by protein, random within
    counts = np.bincount(inv)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(p), dtype=np.int64)
    rank[order] = np.arange(len(p)) - np.repeat(starts, counts)
    keep = rank < np.ceil(fraction * counts)[inv]
    return np.flatnonzero(keep).astype(np.int64)


def group_means(x, proteins) -> pd.DataFrame:
    """Mean embedding of each protein (for codebook histograms: its feature spectrum).

    Parameters
    ----------
    x : array-like, shape (N, D)
    proteins : array-like of str, shape (N,)

    Returns
    -------
    pandas.DataFrame, shape (P, D), float64
        Indexed by protein (sorted, index name ``"protein"``), columns ``0 .. D-1``.  Rows of
        frame histograms that each sum to 1 give the spectra of
        :func:`~.spectra.protein_spectra` (up to rounding).
    """
    a = np.asarray(x, dtype=np.float64)
    p = np.asarray(proteins).astype(str)
    names, codes = np.unique(p, return_inverse=True)
    ind = sparse.csr_matrix((np.ones(len(p)), (codes, np.arange(len(p)))), shape=(len(names), len(p)))
    means = np.asarray(ind @ a) / np.bincount(codes, minlength=len(names))[:, None]
    return pd.DataFrame(means, index=pd.Index(names, name="protein"), columns=pd.RangeIndex(a.shape[1]))


def _ari(spectra: pd.DataFrame, classes: pd.Series, metric: str) -> float:
    if classes.nunique() < 2:  # ARI needs something to partition
        return float("nan")
    pc = protein_clusters(spectra.loc[classes.index], n_clusters=int(classes.nunique()), metric=metric)
    return adjusted_rand_index(pc.to_numpy(), classes.loc[pc.index].to_numpy())


def _seeded(genes: np.ndarray, x: np.ndarray, ref: tuple | None, ann: pd.Series, single: pd.Series,
            config: ScoreConfig, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    take = subsample_frames(genes, config.frame_fraction, np.random.default_rng(seed))
    g, xs = genes[take], x[take]
    classes = class_proteins(single, g)
    frame_class = pd.Series(g).map(classes)
    mask = frame_class.notna().to_numpy()
    coords = umap_projection(xs, seed=seed, n_neighbors=config.umap_neighbors)
    cs = (clustering_score(coords[mask], frame_class[mask].astype(str).to_numpy())[0]
          if classes.nunique() >= 2 else float("nan"))
    try:
        fk = frame_knn_accuracy(xs, g, ann, k=config.k, metric=config.metric,
                                reference=None if ref is None else ref[0],
                                reference_proteins=None if ref is None else ref[1])[0]
    except AnalysisError as e:  # fewer than 2 annotated proteins: nothing to vote
        if e.field != "annotations":
            raise
        fk = float("nan")
    ari = _ari(group_means(xs, g), classes, config.metric)
    return ({"seed": int(seed), "frames": int(len(take)), "clustering_score": float(cs),
             "frame_knn_accuracy": float(fk), "ari_protein_clusters": float(ari)}, coords, take)


def summarize(per_seed: pd.DataFrame, names=SEEDED_SCORES) -> dict:
    """Mean (under the score's own name), ``_std`` (``ddof=1``; 0 for one seed), ``_min`` and
    ``_max`` of each score over the rows of ``per_seed`` (NaN where a seed has NaN)."""
    out = {}
    for n in names:
        v = per_seed[n].to_numpy(dtype=np.float64)
        out[n] = float(np.mean(v))
        out[f"{n}_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
        out[f"{n}_min"] = float(np.min(v))
        out[f"{n}_max"] = float(np.max(v))
    return out


def score_embedding(name: str, rows: pd.DataFrame, x, config: ScoreConfig = ScoreConfig()) -> EmbeddingScores:
    """Score one embedding of frames on its own (see the module docstring for every score).

    Parameters
    ----------
    name : str
        The model's (or baseline's) name, for the error messages and the result.
    rows : pandas.DataFrame
        One row per frame: ``gene``, ``localization`` (``';'``-joined classes, empty for
        unannotated proteins) and ``split``.
    x : array-like, shape (N, D)
        The embedding of each frame; finite.
    config : ScoreConfig
        Split, seeds, frame subsample, kNN ``k``, ``metric`` and reference, UMAP neighbours, bootstrap.

    Returns
    -------
    EmbeddingScores
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] != len(rows):
        raise CellscapeError(f"{name}: the embedding has shape {x.shape} for {len(rows)} frames", field="embedding")
    if not np.all(np.isfinite(x)):
        raise CellscapeError(f"{name}: the embedding holds NaN or infinite values", field="embedding")
    pos = score_rows(rows, config.score_split)
    r = rows.iloc[pos].reset_index(drop=True)
    xs = x[pos].astype(np.float64)
    genes = r["gene"].astype(str).to_numpy()
    ann = annotations_from_rows(rows)
    single = single_localization(ann)
    ref = None
    if config.knn_reference == "train":
        rpos = score_rows(rows, "train", field="knn_reference")
        ref = (x[rpos].astype(np.float64), rows["gene"].astype(str).to_numpy()[rpos])
    results, first = [], None
    for seed in config.seeds:
        res, coords, take = _seeded(genes, xs, ref, ann, single, config, seed)
        results.append(res)
        if first is None:
            first = (coords, take)
    per_seed = pd.DataFrame(results)
    spectra = group_means(xs, genes)
    annotated = spectra.loc[spectra.index.isin(ann.index)]
    reference = None if ref is None else group_means(ref[0], ref[1])
    try:
        acc, knn_table = knn_localization_accuracy(annotated, ann, k=config.k, metric=config.metric,
                                                   reference=reference)
        lo, hi = bootstrap_ci(knn_table["correct"].to_numpy(np.float64), config.bootstrap, config.seeds[0],
                              config.confidence)
    except AnalysisError as e:  # fewer than 2 annotated proteins
        if e.field != "annotations":
            raise
        acc, knn_table, lo, hi = float("nan"), pd.DataFrame(), float("nan"), float("nan")
    classes = class_proteins(single, genes)
    scores = summarize(per_seed)
    scores.update({
        "protein_knn_accuracy": float(acc), "protein_knn_ci_low": lo, "protein_knn_ci_high": hi,
        "knn_accuracy": float(acc),
        "frames": int(len(r)), "proteins": int(len(spectra)), "annotated_proteins": int(len(annotated)),
        "classes": int(classes.nunique()),
        "single_localization_frames": int(pd.Series(genes).map(classes).notna().sum()),
        "seeds": int(len(config.seeds)),
    })
    coords, take = first
    return EmbeddingScores(name, scores, per_seed, knn_table, coords, r.iloc[take].reset_index(drop=True), config)


def paired_knn_difference(rows: pd.DataFrame, x_a, x_b, config: ScoreConfig = ScoreConfig()) -> dict:
    """Is embedding ``a`` better than ``b`` at frame kNN, or is the difference noise?

    Both embed the same frames; each is scored by :func:`~.scores.frame_knn_accuracy` on all the
    ``config.score_split`` frames (no subsample, so the seeds play no part), and the difference
    ``a - b`` gets a paired percentile bootstrap over proteins: each of ``config.bootstrap``
    resamples draws the annotated proteins with replacement and takes the accuracy of both
    embeddings over the frames of the same drawn proteins (seed ``config.seeds[0]``).  The
    seeds' spread of :func:`score_embedding` says how much the subsample and the UMAP move a
    score; this interval says how much the choice of proteins does, the larger of the two.

    Parameters
    ----------
    rows : pandas.DataFrame
        One row per frame: ``gene``, ``localization``, ``split``.
    x_a, x_b : array-like, shape (N, D_a) and (N, D_b)
        The two embeddings of the frames of ``rows``, in order; finite.
    config : ScoreConfig
        Scored split, ``k``, ``metric``, ``knn_reference``, ``bootstrap``, ``confidence``, ``seeds[0]``.

    Returns
    -------
    dict
        ``accuracy_a``, ``accuracy_b``, ``difference`` (a - b), ``ci_low``, ``ci_high`` (of the
        difference) and ``proteins`` (annotated proteins scored).
    """
    pos = score_rows(rows, config.score_split)
    genes = rows["gene"].astype(str).to_numpy()
    ann = annotations_from_rows(rows)
    per = []
    for x in (x_a, x_b):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != len(rows) or not np.all(np.isfinite(x)):
            raise CellscapeError(f"an embedding of shape {x.shape} for {len(rows)} frames, or not finite",
                                 field="embedding")
        ref = {}
        if config.knn_reference == "train":
            rpos = score_rows(rows, "train", field="knn_reference")
            ref = {"reference": x[rpos], "reference_proteins": genes[rpos]}
        per.append(frame_knn_accuracy(x[pos], genes[pos], ann, k=config.k, metric=config.metric, **ref)[1])
    table = pd.DataFrame({"protein": per[0]["protein"], "a": per[0]["correct"].astype(np.float64),
                          "b": per[1]["correct"].astype(np.float64)})
    sums = table.groupby("protein")[["a", "b"]].sum()
    counts = table.groupby("protein").size().loc[sums.index].to_numpy(np.float64)
    a, b = sums["a"].to_numpy(), sums["b"].to_numpy()
    draw = np.random.default_rng(config.seeds[0]).integers(0, len(counts), size=(config.bootstrap, len(counts)))
    diffs = (a[draw].sum(1) - b[draw].sum(1)) / counts[draw].sum(1)
    lo, hi = np.quantile(diffs, [(1 - config.confidence) / 2, (1 + config.confidence) / 2])
    acc_a, acc_b = float(a.sum() / counts.sum()), float(b.sum() / counts.sum())
    return {"accuracy_a": acc_a, "accuracy_b": acc_b, "difference": acc_a - acc_b, "ci_low": float(lo),
            "ci_high": float(hi), "proteins": int(len(counts))}


#: Rows of :func:`scores_table`: label, score key.
_TABLE_ROWS = (("clustering score (own UMAP)", "clustering_score"), ("frame kNN accuracy", "frame_knn_accuracy"),
               ("ARI protein clusters", "ari_protein_clusters"))


def _fmt(v) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.3f}"


def scores_table(atlases: list) -> pd.DataFrame:
    """Scores of several models (and baselines) side by side, formatted for reading.

    Parameters
    ----------
    atlases : list of ModelAtlas or EmbeddingScores
        Anything with ``name`` and the ``scores`` summary of :func:`score_embedding`.

    Returns
    -------
    pandas.DataFrame of str
        Rows: the seeded scores as ``mean ± std [min, max]`` (over the seeds), the protein kNN
        accuracy as ``value [low, high]`` (its bootstrap interval), the scored frames and
        proteins, the seeds; columns: the names.
    """
    cols = {}
    for a in atlases:
        s = a.scores
        col = {label: f"{_fmt(s[key])} ± {_fmt(s[key + '_std'])} [{_fmt(s[key + '_min'])}, {_fmt(s[key + '_max'])}]"
               for label, key in _TABLE_ROWS}
        col["protein kNN accuracy [CI]"] = (f"{_fmt(s['protein_knn_accuracy'])} [{_fmt(s['protein_knn_ci_low'])}, "
                                            f"{_fmt(s['protein_knn_ci_high'])}]")
        col["frames / proteins scored"] = f"{s['frames']} / {s['proteins']} ({s['annotated_proteins']} annotated)"
        col["classes of >= 2 single-loc. proteins"] = str(s["classes"])
        col["seeds"] = str(s["seeds"])
        cols[a.name] = col
    return pd.DataFrame(cols)
