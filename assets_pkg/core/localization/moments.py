"""Moments of a trained VQ-VAE's local latent map: a texture-aware read-out of its encoder.

The pooled embedding (``ModelOutput.embedding``) is the spatial mean of the continuous local
map, so two frames whose features differ in spread or co-occurrence but not in mean look alike:
punctate vesicles and tubular mitochondria, a dense fibrillar centre and the granular nucleolus
around it.  :func:`latent_moments` adds the spatial standard deviation of every channel and the
spatial mean of every product of two channels (a Gram matrix, the texture statistic of style
transfer), and :func:`moments_fn` averages them over the 8 rotations and flips of the frame, as
the training's augmentation treats those as the same cell.  The result has
``2 D + D (D + 1) / 2`` values a frame (168 for the ``tiny`` preset's D = 16, 2208 for D = 64);
its channels differ in scale by orders of magnitude, so it is scored after per-feature
standardisation on the train frames, as the classical features are
(:func:`standardised_on_train`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..errors import CellscapeError
from .layers import Encoder
from .models import ModelConfig, select_input_channels

__all__ = ["latent_moments", "moment_names", "moments_fn", "scored_matrix", "standardised_on_train"]

_MOMENTS_CACHE: dict = {}


def moment_names(dim: int) -> list[str]:
    """Column names of :func:`latent_moments` for a latent map of ``dim`` channels, in order:
    ``mean_<c>``, ``std_<c>``, then ``m2_<c>_<d>`` for ``c <= d`` (row-major upper triangle)."""
    iu, ju = np.triu_indices(dim)
    return ([f"mean_{c}" for c in range(dim)] + [f"std_{c}" for c in range(dim)]
            + [f"m2_{c}_{d}" for c, d in zip(iu, ju, strict=True)])


def latent_moments(z: jax.Array) -> jax.Array:
    """Spatial mean, standard deviation and second moments of a latent map.

    Parameters
    ----------
    z : float array, shape (N, H, W, D)
        Latent maps, axis order (frame, y, x, channel).

    Returns
    -------
    float32 array, shape (N, 2 D + D (D + 1) / 2)
        Per frame, the mean over the H x W positions of each channel, the population standard
        deviation of each channel, and the mean of ``z_c * z_d`` for every ``c <= d``
        (:func:`moment_names` order).
    """
    n, h, w, d = z.shape
    flat = z.reshape(n, h * w, d).astype(jnp.float32)
    gram = jnp.einsum("nsc,nsd->ncd", flat, flat) / (h * w)
    iu, ju = np.triu_indices(d)
    return jnp.concatenate([flat.mean(axis=1), flat.std(axis=1), gram[:, iu, ju]], axis=-1)


def _symmetries(x: jax.Array) -> list[jax.Array]:
    """The 8 rotations by multiples of 90 degrees, each unflipped and flipped left-right (NHWC)."""
    out = []
    for r in range(4):
        turned = jnp.rot90(x, r, axes=(1, 2))
        out += [turned, turned[:, :, ::-1]]
    return out


def moments_fn(model_cfg: ModelConfig, symmetries: bool = True):
    """The jitted ``(params, frames) -> moments`` read-out of a model's local encoder.

    Parameters
    ----------
    model_cfg : ModelConfig
        The model the parameters belong to (its ``input_channels`` select and squash the input).
    symmetries : bool
        Average :func:`latent_moments` over the 8 rotations and flips of every frame (8 encoder
        passes a frame); False runs the frames as they are.

    Returns
    -------
    callable
        ``(params, frames)`` with the model's full parameter tree and frames of shape
        (N, H, W, C) (any float dtype, H and W divisible by 4) to a float32 array of shape
        (N, 2 D + D (D + 1) / 2), D = ``model_cfg.embedding_dim``.
    """
    key = (model_cfg, bool(symmetries))
    if key not in _MOMENTS_CACHE:
        encoder = Encoder(model_cfg.embedding_dim, model_cfg.residual_hidden, dtype=model_cfg.compute_dtype)

        def run(params, frames):
            x = select_input_channels(frames, model_cfg.input_channels)
            views = _symmetries(x) if symmetries else [x]
            per_view = [latent_moments(encoder.apply({"params": params["encoder"]}, v)) for v in views]
            return sum(per_view[1:], per_view[0]) / len(per_view)

        _MOMENTS_CACHE[key] = jax.jit(run)
    return _MOMENTS_CACHE[key]


def standardised_on_train(name: str, rows: pd.DataFrame, x, fit_split: str = "train") -> np.ndarray:
    """``x`` standardised per feature with the mean and standard deviation of its ``fit_split`` rows.

    Parameters
    ----------
    name : str
        The model's name, for the error message.
    rows : pandas.DataFrame
        One row per row of ``x``, with ``split``.
    x : array-like, shape (N, F)
    fit_split : str
        The split whose rows fit the scaler (the frames no score is computed on).

    Returns
    -------
    float32 ndarray, shape (N, F)

    Raises
    ------
    CellscapeError
        If no row of ``rows`` is in ``fit_split`` (embed that split too).
    """
    from .classical import FeatureScaler

    x = np.asarray(x)
    fit = (rows["split"].astype(str) == fit_split).to_numpy()
    if not fit.any():
        raise CellscapeError(f"{name}: no {fit_split} frames to standardise the moments with; embed the "
                             f"{fit_split} split too (split 'all')", field="split")
    return FeatureScaler.fit(x[fit]).transform(x)


def scored_matrix(name: str, emb, embedding: str) -> np.ndarray:
    """The per-frame matrix a model is scored on for ``ScoreConfig.embedding``.

    ``emb`` is an :class:`~.atlas.Embeddings`: ``histograms`` and ``pooled`` as embedded;
    ``moments`` standardised per feature on the train frames of ``emb.rows``
    (:func:`standardised_on_train`).

    Raises
    ------
    CellscapeError
        For ``moments`` when they were not embedded (``EmbeddingConfig.moments``) or no train
        frame was; for an unknown ``embedding``.
    """
    if embedding == "histograms":
        return emb.histograms
    if embedding == "pooled":
        return emb.pooled
    if embedding == "moments":
        if emb.moments is None:
            raise CellscapeError(f"{name}: the latent moments were not embedded; embed with moments on "
                                 "(EmbeddingConfig.moments)", field="moments")
        return standardised_on_train(name, emb.rows, emb.moments)
    raise CellscapeError(f"{name}: unknown embedding {embedding!r}", field="embedding")
