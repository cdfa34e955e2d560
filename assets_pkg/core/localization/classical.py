"""Classical localization features of frames: the hand-crafted reference the models are scored against.

Every feature is computed from the three channels of a frame (:data:`~assets_pkg.core.store.frames.FRAME_CHANNELS`:
protein, nucleus, signed distance to the nuclear boundary in frame pixels, positive inside a nucleus), for a
whole batch at once (NumPy reductions, ``np.bincount`` and separable SciPy filters over the batch axis; no
loop over pixels or frames).  The groups, in column order (:func:`feature_names`):

* ``radial_*``: the protein's radial profile relative to the nuclear boundary: mean protein intensity in
  bins of the distance channel (``RADIAL_EDGES``), divided by the frame's mean (1 = as the frame's average);
* ``overlap_inside``: the fraction of protein signal inside a nucleus (distance > 0); ``overlap_pearson``:
  the Pearson correlation of protein and nucleus intensities over the frame;
* ``glcm_<prop>_d<d>``: Haralick texture of the protein channel, quantized per frame to ``levels`` grey
  levels between its 1st and 99th percentile, from a symmetric normalised grey-level co-occurrence matrix
  averaged over the angles 0, 45, 90 and 135 degrees; the matrix and properties are those of
  ``skimage.feature.graycomatrix`` / ``graycoprops`` (the same offsets, the same special cases), batched;
* ``granularity_r<r>``: the morphological opening spectrum: the share of the protein signal removed by
  going from a grey opening with an ``(2 r_prev + 1)``-pixel square to one with ``(2 r + 1)`` pixels
  (``r_prev`` the previous radius, the first step from the frame itself);
* ``moment_*``: mean, standard deviation, skewness and excess kurtosis of the protein intensities, and the
  fraction of pixels brighter than mean + 2 standard deviations.

Ratios use the protein channel clipped at 0 (the per-field normalisation leaves the background slightly
negative); the moments use it as stored.  :func:`frame_features` reads frames from a store in batches and
measures its throughput; :class:`FeatureScaler` standardises them (fit on the train split), and
:func:`classical_baseline` scores the standardised features with the models' scoring code
(:func:`~.evaluation.score_embedding`, the feature vector standing in for the embedding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..errors import CellscapeError
from ..store.frame_store import FrameStore
from .config import ScoreConfig
from .evaluation import EmbeddingScores, score_embedding, score_rows
from .inputs import AnalysisError

__all__ = ["FeatureScaler", "GLCM_PROPS", "RADIAL_EDGES", "classical_baseline", "classical_features",
           "feature_names", "frame_features", "glcm", "glcm_props", "report_baselines"]

#: Bin edges of the radial profile, in frame pixels of signed distance to the nuclear boundary
#: (negative outside a nucleus, positive inside).
RADIAL_EDGES: tuple[float, ...] = (-np.inf, -12.0, -8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0, np.inf)
#: Haralick properties, as named by ``skimage.feature.graycoprops``.
GLCM_PROPS: tuple[str, ...] = ("contrast", "dissimilarity", "homogeneity", "ASM", "correlation")
GLCM_ANGLES: tuple[float, ...] = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_DISTANCES: tuple[int, ...] = (1, 2, 4)
GLCM_LEVELS = 16
GRANULARITY_RADII: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
_EPS = 1e-12


def feature_names(radial_edges=RADIAL_EDGES, distances=GLCM_DISTANCES, radii=GRANULARITY_RADII) -> list[str]:
    """Column names of :func:`classical_features` for the given settings, in order."""
    def edge(v):
        return "inf" if np.isposinf(v) else "-inf" if np.isneginf(v) else f"{v:g}"

    names = [f"radial_{edge(a)}_{edge(b)}" for a, b in zip(radial_edges[:-1], radial_edges[1:], strict=True)]
    names += ["overlap_inside", "overlap_pearson"]
    names += [f"glcm_{p}_d{d}" for d in distances for p in GLCM_PROPS]
    names += [f"granularity_r{r}" for r in radii]
    names += ["moment_mean", "moment_std", "moment_skewness", "moment_kurtosis", "moment_bright_fraction"]
    return names


def _offset(distance: float, angle: float) -> tuple[int, int]:
    # skimage's _glcm_loop: row offset round(sin(angle) d), column offset round(cos(angle) d),
    # C rounding (half away from zero)
    def c_round(v: float) -> int:
        return int(np.sign(v) * np.floor(abs(v) + 0.5))

    return c_round(np.sin(angle) * distance), c_round(np.cos(angle) * distance)


def glcm(quantized: np.ndarray, levels: int, distances=GLCM_DISTANCES, angles=GLCM_ANGLES) -> np.ndarray:
    """Symmetric, normalised grey-level co-occurrence matrices of a batch of images.

    Parameters
    ----------
    quantized : ndarray of int, shape (N, H, W)
        Grey levels in ``0 .. levels - 1``.
    levels : int
    distances : sequence of int
        Pixel distances of the pairs.
    angles : sequence of float
        Directions in radians; the pair of pixel ``(r, c)`` is ``(r + round(sin a * d), c + round(cos a * d))``
        as in ``skimage.feature.graycomatrix``.

    Returns
    -------
    ndarray of float64, shape (N, levels, levels, len(distances), len(angles))
        ``P[n]`` equals ``graycomatrix(quantized[n], distances, angles, levels, symmetric=True, normed=True)``.
    """
    q = np.asarray(quantized)
    if q.ndim != 3:
        raise AnalysisError(f"expected shape (N, H, W), got {q.shape}", field="quantized")
    if q.size and (q.min() < 0 or q.max() >= levels):
        raise AnalysisError(f"grey levels must lie in 0 .. {levels - 1}", field="quantized")
    n, h, w = q.shape
    q = q.astype(np.int64, copy=False)
    base = (np.arange(n, dtype=np.int64) * levels * levels)[:, None, None]
    out = np.zeros((n, levels, levels, len(distances), len(angles)))
    for i, d in enumerate(distances):
        for j, a in enumerate(angles):
            dr, dc = _offset(d, a)
            src = q[:, max(0, -dr):h - max(0, dr), max(0, -dc):w - max(0, dc)]
            dst = q[:, max(0, dr):h + min(0, dr), max(0, dc):w + min(0, dc)]
            counts = np.bincount((base + src * levels + dst).ravel(), minlength=n * levels * levels)
            m = counts.reshape(n, levels, levels).astype(np.float64)
            out[..., i, j] = m + m.transpose(0, 2, 1)
    sums = out.sum(axis=(1, 2), keepdims=True)
    sums[sums == 0] = 1
    return out / sums


def glcm_props(p: np.ndarray, props=GLCM_PROPS) -> np.ndarray:
    """Haralick properties of normalised co-occurrence matrices, as ``skimage.feature.graycoprops``.

    Parameters
    ----------
    p : ndarray, shape (N, L, L, D, A)
        From :func:`glcm`.
    props : sequence of str
        Among ``contrast``, ``dissimilarity``, ``homogeneity``, ``ASM``, ``energy``, ``correlation``.

    Returns
    -------
    ndarray of float64, shape (N, len(props), D, A)
        A correlation with a zero standard deviation is 1, as in scikit-image.
    """
    levels = p.shape[1]
    i = np.arange(levels, dtype=np.float64).reshape(1, levels, 1, 1, 1)
    j = np.arange(levels, dtype=np.float64).reshape(1, 1, levels, 1, 1)
    out = []
    for prop in props:
        if prop == "contrast":
            r = np.sum(p * (i - j) ** 2, axis=(1, 2))
        elif prop == "dissimilarity":
            r = np.sum(p * np.abs(i - j), axis=(1, 2))
        elif prop == "homogeneity":
            r = np.sum(p / (1.0 + (i - j) ** 2), axis=(1, 2))
        elif prop in ("ASM", "energy"):
            r = np.sum(p**2, axis=(1, 2))
            r = np.sqrt(r) if prop == "energy" else r
        elif prop == "correlation":
            di = i - np.sum(i * p, axis=(1, 2), keepdims=True)
            dj = j - np.sum(j * p, axis=(1, 2), keepdims=True)
            si = np.sqrt(np.sum(p * di**2, axis=(1, 2)))
            sj = np.sqrt(np.sum(p * dj**2, axis=(1, 2)))
            cov = np.sum(p * di * dj, axis=(1, 2))
            flat = (si < 1e-15) | (sj < 1e-15)
            r = np.where(flat, 1.0, cov / np.where(flat, 1.0, si * sj))
        else:
            raise AnalysisError(f"unknown GLCM property {prop!r}", field="props")
        out.append(r)
    return np.stack(out, axis=1)


def _quantize(x: np.ndarray, levels: int) -> np.ndarray:
    """Grey levels ``0 .. levels - 1`` per frame between its 1st and 99th percentile (clipped)."""
    lo, hi = np.percentile(x, (1.0, 99.0), axis=(1, 2), keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.clip(np.floor((x - lo) / span * levels), 0, levels - 1).astype(np.int64)


def classical_features(frames, radial_edges=RADIAL_EDGES, levels: int = GLCM_LEVELS, distances=GLCM_DISTANCES,
                       radii=GRANULARITY_RADII) -> np.ndarray:
    """Hand-crafted localization features of a batch of frames (see the module docstring).

    Parameters
    ----------
    frames : array-like, shape (N, H, W, 3), float
        Axis order (frame, y, x, channel); channels protein, nucleus, signed distance to the
        nuclear boundary in pixels (as the frame store holds them).  Not modified.
    radial_edges : sequence of float
        Bin edges of the radial profile, pixels of signed distance (increasing).
    levels : int
        Grey levels of the texture quantization.
    distances : sequence of int
        Pixel distances of the co-occurrence pairs.
    radii : sequence of int
        Half-sides of the square opening elements of the granularity spectrum (increasing).

    Returns
    -------
    ndarray of float32, shape (N, F)
        Columns :func:`feature_names` ``(radial_edges, distances, radii)``; finite.
    """
    f = np.asarray(frames, dtype=np.float32)
    if f.ndim != 4 or f.shape[-1] < 3:
        raise AnalysisError(f"expected frames of shape (N, H, W, 3) (protein, nucleus, distance), got {f.shape}",
                            field="frames")
    if not np.all(np.isfinite(f)):
        raise AnalysisError("contains NaN or infinite values", field="frames")
    n = f.shape[0]
    if n == 0:
        return np.zeros((0, len(feature_names(radial_edges, distances, radii))), np.float32)
    raw, nuc, dist = f[..., 0].astype(np.float64), f[..., 1].astype(np.float64), f[..., 2]
    p = np.clip(raw, 0.0, None)
    total = p.sum(axis=(1, 2))
    mean = total / (p.shape[1] * p.shape[2])
    cols = []

    # radial profile: mean intensity per distance bin over the frame's mean (empty bin: 1)
    nb = len(radial_edges) - 1
    b = np.digitize(dist, np.asarray(radial_edges[1:-1], dtype=np.float32))  # 0 .. nb-1
    idx = (np.arange(n)[:, None, None] * nb + b).ravel()
    sums = np.bincount(idx, weights=p.ravel(), minlength=n * nb).reshape(n, nb)
    cnt = np.bincount(idx, minlength=n * nb).reshape(n, nb)
    bin_mean = sums / np.maximum(cnt, 1)
    cols.append(np.where(cnt > 0, bin_mean / np.maximum(mean, _EPS)[:, None], 1.0))

    # overlap with the nucleus
    inside = (p * (dist > 0)).sum(axis=(1, 2)) / np.maximum(total, _EPS)
    pc, nc = raw - raw.mean(axis=(1, 2), keepdims=True), nuc - nuc.mean(axis=(1, 2), keepdims=True)
    den = np.sqrt((pc**2).sum(axis=(1, 2)) * (nc**2).sum(axis=(1, 2)))
    pearson = np.where(den > _EPS, (pc * nc).sum(axis=(1, 2)) / np.maximum(den, _EPS), 0.0)
    cols.append(np.stack([inside, pearson], axis=1))

    # texture: (N, props, distances, angles) -> mean over angles, columns distance-major
    props = glcm_props(glcm(_quantize(raw, levels), levels, distances)).mean(axis=3)
    cols.append(props.transpose(0, 2, 1).reshape(n, -1))

    # granularity: signal removed between successive openings, over the frame's signal
    p32, prev, gran = p.astype(np.float32), total, []
    for r in radii:
        opened = ndi.grey_opening(p32, size=(1, 2 * r + 1, 2 * r + 1), mode="reflect").sum(axis=(1, 2), dtype=np.float64)
        gran.append((prev - opened) / np.maximum(total, _EPS))
        prev = opened
    cols.append(np.stack(gran, axis=1))

    # intensity moments of the stored protein channel
    m = raw.mean(axis=(1, 2))
    c = raw - m[:, None, None]
    var = (c**2).mean(axis=(1, 2))
    sd = np.sqrt(var)
    ok = sd > 1e-8
    safe = np.where(ok, sd, 1.0)
    skew = np.where(ok, (c**3).mean(axis=(1, 2)) / safe**3, 0.0)
    kurt = np.where(ok, (c**4).mean(axis=(1, 2)) / safe**4 - 3.0, 0.0)
    bright = (raw > (m + 2 * sd)[:, None, None]).mean(axis=(1, 2))
    cols.append(np.stack([m, sd, skew, kurt, np.where(ok, bright, 0.0)], axis=1))
    return np.concatenate(cols, axis=1).astype(np.float32)


def frame_features(store: FrameStore, rows: pd.DataFrame, batch_size: int = 256,
                   **settings) -> tuple[pd.DataFrame, float]:
    """:func:`classical_features` of the frames ``rows`` names, read from ``store`` in batches.

    Parameters
    ----------
    store : FrameStore
    rows : pandas.DataFrame
        Frames with ``plate_id`` and ``frame_index`` (a frame table, the splits).
    batch_size : int
        Frames per read and per feature batch.
    **settings
        Passed to :func:`classical_features`.

    Returns
    -------
    features : pandas.DataFrame, shape (N, F), float32
        Columns :func:`feature_names`, one row per row of ``rows`` in order (index reset).
    frames_per_second : float
        Reading and feature extraction together.
    """
    if len(rows) == 0:
        raise CellscapeError("no frames to compute features of", field="rows")
    if batch_size < 1:
        raise CellscapeError(f"must be >= 1, got {batch_size}", field="batch_size")
    rows = rows.reset_index(drop=True)
    order = np.lexsort((rows["frame_index"].to_numpy(), rows["plate_id"].astype(str).to_numpy()))
    out = None
    t0 = time.perf_counter()
    for start in range(0, len(order), batch_size):
        take = order[start:start + batch_size]
        feats = classical_features(store.read_batch(rows.iloc[take][["plate_id", "frame_index"]]), **settings)
        if out is None:
            out = np.empty((len(rows), feats.shape[1]), np.float32)
        out[take] = feats
    fps = len(rows) / max(time.perf_counter() - t0, 1e-9)
    names = feature_names(**{k: settings[k] for k in ("radial_edges", "distances", "radii") if k in settings})
    return pd.DataFrame(out, columns=names), fps


@dataclass(frozen=True)
class FeatureScaler:
    """Per-feature standardisation ``(x - mean) / scale`` (a constant feature gets scale 1).

    Attributes
    ----------
    mean, scale : ndarray of float64, shape (F,)
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x) -> FeatureScaler:
        """Mean and population standard deviation of the rows of ``x`` (shape (N, F), N >= 1)."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] == 0:
            raise AnalysisError(f"needs a non-empty (N, F) array, got shape {a.shape}", field="x")
        sd = a.std(axis=0)
        return cls(a.mean(axis=0), np.where(sd > 1e-12, sd, 1.0))

    def transform(self, x) -> np.ndarray:
        """Standardised ``x``, shape (N, F), float32."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.mean.shape[0]:
            raise AnalysisError(f"expected {self.mean.shape[0]} features per row, got shape {a.shape}", field="x")
        return ((a - self.mean) / self.scale).astype(np.float32)


def classical_baseline(store: FrameStore, rows: pd.DataFrame, config: ScoreConfig = ScoreConfig(),
                       fit_rows: pd.DataFrame | None = None, batch_size: int = 256, name: str = "classical",
                       log=print) -> EmbeddingScores:
    """The classical-feature localization baseline, scored exactly as a model is.

    :func:`frame_features` of the ``config.score_split`` frames of ``rows`` and of the train
    frames; a :class:`FeatureScaler` fit on the train frames standardises them, and
    :func:`~.evaluation.score_embedding` scores the standardised vectors of the scored frames
    (own UMAP, frame and protein kNN, ARI, over ``config.seeds``; the train frames vote with
    ``config.knn_reference="train"``), as it scores a model's embeddings of the same ``rows``.

    Parameters
    ----------
    store : FrameStore
    rows : pandas.DataFrame
        The frames the models embedded: ``plate_id``, ``frame_index``, ``frame_id``, ``gene``,
        ``localization``, ``split``.
    config : ScoreConfig
    fit_rows : pandas.DataFrame, optional
        The frames the scaler is fit on (default: the train frames of ``rows``).
    batch_size : int
    name : str
        The baseline's name in the report.
    log : callable
        Receives one line on the throughput.

    Returns
    -------
    EmbeddingScores
        With ``tables["features"]``: ``frame_id``, ``split`` and the raw (unstandardised)
        features of every frame used; ``scores`` also holds ``features`` (their number) and
        ``frames_per_second`` (reading and extraction).
    """
    scored = rows.iloc[score_rows(rows, config.score_split)]
    fit = rows[rows["split"].astype(str) == "train"] if fit_rows is None else fit_rows
    if len(fit) == 0:
        raise CellscapeError(f"{name}: no train frames to standardise the features with; embed the train split too "
                             "(or pass fit_rows)", field="split")
    used = pd.concat([scored, fit]).drop_duplicates("frame_id").reset_index(drop=True)
    feats, fps = frame_features(store, used, batch_size=batch_size)
    log(f"{name}: {feats.shape[1]} features of {len(used)} frames at {fps:.0f} frames/s")
    x = feats.to_numpy()
    scaler = FeatureScaler.fit(x[pd.Index(used["frame_id"]).get_indexer(fit["frame_id"])])
    ev = score_embedding(name, used, scaler.transform(x), config)  # scores the score_split frames of used
    ev.scores.update({"features": int(feats.shape[1]), "frames_per_second": float(fps)})
    ev.tables["features"] = pd.concat([used[["frame_id", "split"]].astype(str), feats], axis=1)
    return ev


def report_baselines(store: FrameStore, rows: pd.DataFrame, config: ScoreConfig,
                     fit_rows: pd.DataFrame | None = None, batch_size: int = 256, log=print) -> list[EmbeddingScores]:
    """The classical-feature baseline scored like the models, or nothing when ``config.baseline`` is off.

    Parameters
    ----------
    store : FrameStore
    rows : pandas.DataFrame
        The frames the models embedded (with ``split``): their ``config.score_split`` frames
        are scored (see :func:`classical_baseline`).
    config : ScoreConfig
    fit_rows : pandas.DataFrame, optional
        The frames that standardise the features (default: the train frames of ``rows``).
    batch_size : int
        Frames per read and feature batch.
    """
    if not config.baseline:
        return []
    return [classical_baseline(store, rows, config, fit_rows=fit_rows, batch_size=batch_size, log=log)]
