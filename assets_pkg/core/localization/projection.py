"""2-D projections of frame embeddings with umap-learn, reproducible for a given seed.

umap-learn is imported only when a projection is computed (numba compiles on import).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .inputs import AnalysisError, as_matrix

__all__ = ["aligned_umap", "umap_projection"]


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

    a = as_matrix(x, "x").astype(np.float32)
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
    arrays = [as_matrix(x, f"xs[{i}]").astype(np.float32) for i, x in enumerate(xs)]
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
