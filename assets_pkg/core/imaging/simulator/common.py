"""What every part of the virtual microscope shares: the instrument, its channels, the
random streams and a few array helpers.

Random streams: every draw comes from :func:`child_rng`, a :class:`numpy.random.Generator`
seeded by a :class:`numpy.random.SeedSequence` whose ``spawn_key`` extends the seed by the
numbers naming the plate, well, field and purpose (``STREAM_*`` for the top level,
``SUB_*`` inside one field), so a field's pixels never depend on iteration order.

Images are 2-D float32 arrays of shape (height, width), axis order (y, x); lengths in pixels.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

SIMULATOR_NAME = "cellscape-virtual-microscope"
SIMULATOR_VERSION = "1.0.0"

#: Instrument the simulated plates claim (see ``core/data/instruments.yaml``).
INSTRUMENT = "dragonfly-63x"
OBJECTIVE = "63x/1.47 oil"
NUMERICAL_APERTURE = 1.47
PIXEL_SIZE_UM = 0.2
FIELD_SIZE = 512
BIT_DEPTH = 16
CELL_LINE = "HEK293T"
OPERATOR = "virtual-microscope"
SITE = "Cellscape virtual imaging facility"
FIXATION = "none (live)"

#: Per channel: optics, exposure, stain and the flat background (ADU above offset).
CHANNELS: dict[str, dict] = {
    "nucleus": {
        "excitation_nm": 405.0,
        "emission_nm": 450.0,
        "exposure_ms": 100.0,
        "stain": "Hoechst 33342",
        "background_adu": 410.0,
    },
    "protein": {
        "excitation_nm": 488.0,
        "emission_nm": 525.0,
        "exposure_ms": 200.0,
        "stain": "mNeonGreen split-FP (mNG11 knock-in)",
        "background_adu": 140.0,
    },
}

# Stream numbers of the SeedSequence spawn keys.
STREAM_FIELD, STREAM_PROTEIN, STREAM_PLATE, STREAM_PANEL = 0, 1, 2, 3
SUB_LAYOUT, SUB_PROTEIN, SUB_CAMERA, SUB_DEFECT = 0, 1, 2, 3


# --------------------------------------------------------------------------------------
# random streams and small helpers
# --------------------------------------------------------------------------------------


def child_seq(seed: int | np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """A SeedSequence for ``seed`` extended by ``key`` (no state, order independent)."""
    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(seed.entropy, spawn_key=tuple(seed.spawn_key) + key)
    return np.random.SeedSequence(int(seed), spawn_key=key)


def child_rng(seed: int | np.random.SeedSequence, *key: int) -> np.random.Generator:
    """A PCG64 generator seeded by :func:`child_seq` ``(seed, *key)``."""
    return np.random.Generator(np.random.PCG64(child_seq(seed, *key)))


def upsample(small: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of ``small`` by the integer factor ``f`` to ``shape`` (pixel centres
    aligned, edges clamped)."""
    out = small
    for axis, n_out in enumerate(shape):
        n_in = out.shape[axis]
        pos = (np.arange(n_out, dtype=np.float32) + 0.5) / f - 0.5
        i0 = np.floor(pos).astype(np.int64)
        t = pos - i0
        i1 = np.clip(i0 + 1, 0, n_in - 1)
        i0 = np.clip(i0, 0, n_in - 1)
        bshape = [1, 1]
        bshape[axis] = n_out
        t = t.reshape(bshape)
        out = np.take(out, i0, axis=axis) * (1 - t) + np.take(out, i1, axis=axis) * t
    return out.astype(np.float32, copy=False)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation (float32).

    Correlation lengths of 4 px and more are synthesised on a coarser grid and upsampled.
    """
    f = int(sigma // 2) if sigma >= 4 else 1
    small_shape = (-(-shape[0] // f), -(-shape[1] // f))
    white = rng.standard_normal(small_shape, dtype=np.float32)
    sig = sigma / f
    out = ndi.gaussian_filter(white, sig, mode="wrap") if sig > 0 else white
    out *= np.float32(1.0 / out.std()) if sig > 0 else np.float32(1.0)
    return out if f == 1 else upsample(out, f, shape)


def splat(
    shape: tuple[int, int], y: np.ndarray, x: np.ndarray, w: np.ndarray, sigma: float
) -> np.ndarray:
    """Sum of Gaussian spots of peak ``w`` at (y, x) (float32, shape ``shape``)."""
    h, wd = shape
    yi = np.rint(y).astype(np.int64)
    xi = np.rint(x).astype(np.int64)
    ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < wd)
    img = np.bincount(yi[ok] * wd + xi[ok], weights=np.asarray(w, np.float64)[ok], minlength=h * wd)
    img = img.reshape(shape).astype(np.float32)
    if sigma > 0:
        img = ndi.gaussian_filter(img, sigma) * np.float32(2 * math.pi * sigma**2)
    return img
