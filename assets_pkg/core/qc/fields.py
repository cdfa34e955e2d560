"""Per-field image quality: blank, saturated, out-of-focus and debris fields.

Every image file of a plate is summarised once, from its decoded pixels, by :func:`image_stats`
(vectorised NumPy/SciPy: four Gaussian filters, a few percentiles and one labelling, no loop over
pixels).  It is cheap at any size: an image larger than :data:`QC_GRID` (512) px is measured on
its 2 x 2 (or up to 4 x 4) block means, with every band and length kept in full-resolution
pixels and the noise estimated at full resolution (a quarter of the pixels and narrower
filters: about 0.03 CPU s for a 1024 x 1024 image, 5-6x less than at full resolution).
:func:`assess_fields` then decides which defects each image has, with thresholds in
units that carry from one microscope to another (multiples of the image's own noise, fractions
of its pixels, ratios to the plate's other fields, nucleus diameters), never in ADU:

``blank``
    The channel holds no structure above the camera noise: the 99.9th percentile of the
    absolute 2-16 px band-pass (difference of Gaussians) is below ``blank_snr`` times what pure
    noise gives (noise estimated from neighbouring-pixel differences; a pure-noise image
    scores about 1, a constant image 0).  Smooth vignetting does not count, and isolated hot
    pixels (brighter than their eight neighbours by more than 5 noise) are capped before any
    band-pass is measured.
``saturated``
    More than ``saturated_fraction`` of the pixels sit at ``2**bit_depth - 1`` (the dtype's
    maximum when the bit depth is missing or unusable).
``out_of_focus``
    On ``focus_channel`` (Hoechst by default: it looks alike across wells), the fine-detail
    energy -- the variance of the 1-2 px band over that of the 4-16 px band, each less the
    camera noise's share -- is below ``focus_ratio`` times the plate's median (judged only
    with ``focus_min_fields`` usable fields; a blank or saturated image is not judged).
``debris``
    A connected object of pixels brighter than background + ``debris_contrast`` times the
    field's bright level (its 99th percentile above background, or the 90th percentile of the
    foreground when cells cover less than 1 % of it) is at least ``debris_nuclei`` nucleus diameters long
    (bounding-box diagonal).  Cells, nuclei, nucleoli and puncta are never that bright and
    that long; fibres, lint and glass shards are.

The configuration (:class:`~assets_pkg.core.qc.config.PlateQCConfig`) says per kind whether a
field with the defect is excluded from ingest, blocks the plate, or is only reported.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .config import DEFECT_KINDS, PlateQCConfig

__all__ = [
    "MEASURES",
    "NOISE_FLOOR",
    "FieldDefect",
    "ImageStats",
    "assess_fields",
    "defects_from_table",
    "image_stats",
    "noise_sigma",
]

#: Noise below this (ADU) is taken as this: quantisation of an integer image, and the guard
#: against a zero estimate on flat or clipped images.
NOISE_FLOOR = 0.5

#: Per defect kind, the measured quantity reported as its field (a column of the report).
MEASURES: dict[str, str] = {
    "blank": "signal_snr",
    "saturated": "saturated_fraction",
    "out_of_focus": "focus_ratio",
    "debris": "debris_nuclei",
}

_Z999 = 3.2905  # two-sided 99.9 % quantile of the standard normal

#: Largest side (px) of the grid the band-passes, percentiles and labelling run on: a larger image
#: is block-averaged by an integer factor first (at most :data:`MAX_BLOCK`).
QC_GRID = 512

#: Largest block factor: beyond it the 1 px band of the focus measure has no room on the grid.
MAX_BLOCK = 4


def block_factor(shape: tuple[int, ...]) -> int:
    """The block-averaging factor :func:`image_stats` uses for an image of ``shape`` (height, width):
    the smallest that brings the larger side to :data:`QC_GRID` px or less, at most :data:`MAX_BLOCK`
    (1 when the smaller side would keep fewer than 8 blocks)."""
    f = int(min(MAX_BLOCK, max(1, -(-max(shape) // QC_GRID))))
    return f if min(shape) >= 8 * f else 1


def _grid_sigma(sigma: float, f: int) -> float:
    """The Gaussian sigma (grid px) that, after an ``f`` x ``f`` block mean, gives the variance of a
    ``sigma`` px Gaussian at full resolution (0: the block mean alone is already that wide)."""
    return math.sqrt(max(sigma**2 - (f**2 - 1) / 12.0, 0.0)) / f


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian of ``sigma`` grid px (none when 0); wide ones on a block-averaged grid (:func:`_gaussian_wide`)."""
    if sigma <= 0:
        return x
    if sigma >= 8:
        return _gaussian_wide(x, sigma, 4)
    if sigma >= 4:
        return _gaussian_wide(x, sigma, 2)
    return ndi.gaussian_filter(x, sigma)


@functools.lru_cache(maxsize=16)
def _gains(f: int) -> dict[str, float]:
    """Standard deviations, per unit of grid white noise, of the band-passes :func:`image_stats`
    takes on an ``f``-times block-averaged grid (from the discrete kernels' impulse responses)."""
    s = {k: _grid_sigma(k, f) for k in (1, 2, 4, 16)}
    n = 2 * int(4 * s[16] + 0.5) + 1
    delta = np.zeros((n, n), np.float64)
    delta[n // 2, n // 2] = 1.0
    g = {k: ndi.gaussian_filter(delta, v) if v > 0 else delta for k, v in s.items()}

    def norm(a: np.ndarray) -> float:
        return float(np.sqrt(np.sum(a**2)))

    return {"g1": norm(g[1]), "fine": norm(g[1] - g[2]), "snr": norm(g[2] - g[16]), "coarse": norm(g[4] - g[16])}


def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """``f`` x ``f`` block means of a float32 image (edge rows and columns that do not fill a block dropped)."""
    if f == 1:
        return x
    h, w = (x.shape[0] // f) * f, (x.shape[1] // f) * f
    out = np.zeros((h // f, w // f), np.float32)
    for dy in range(f):  # f*f strided adds: no copy of the full image
        for dx in range(f):
            out += x[dy:h:f, dx:w:f]
    return out * np.float32(1.0 / f**2)


def _ring_max(x: np.ndarray) -> np.ndarray:
    """Largest of each pixel's eight neighbours (edges mirrored, as ``ndi.maximum_filter``'s "reflect")."""
    p = np.pad(x, 1, mode="symmetric")
    rows = np.maximum(np.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    return np.maximum(np.maximum(rows[:-2], rows[2:]), np.maximum(p[1:-1, :-2], p[1:-1, 2:]))


@dataclass(frozen=True)
class ImageStats:
    """What :func:`image_stats` measures on one image (all from its pixels).

    Attributes
    ----------
    max_value : float
        Largest pixel value.
    full_scale : float or None
        The value taken as saturation (None: not assessed, a float image without bit depth).
    saturated_fraction : float
        Fraction of pixels at or above ``full_scale``.
    noise : float
        Camera noise (ADU, standard deviation), at least :data:`NOISE_FLOOR`.
    signal_snr : float
        99.9th percentile of the absolute 2-16 px band-pass over its value for pure noise.
    focus : float
        Fine (1-2 px) over coarse (4-16 px) band-pass energy, noise removed; NaN when the
        coarse band holds no signal.
    bright_extent_px : float
        Bounding-box diagonal (px) of the longest object brighter than the debris threshold;
        0 when there is none.
    bright_area_px : int
        Pixel count of that object.
    """

    max_value: float
    full_scale: float | None
    saturated_fraction: float
    noise: float
    signal_snr: float
    focus: float
    bright_extent_px: float
    bright_area_px: int


def _gaussian_wide(x: np.ndarray, sigma: float, f: int = 4) -> np.ndarray:
    """Gaussian blur for a wide ``sigma`` (px) on an ``f``-times block-averaged grid, bilinearly
    upsampled back: the same low-pass within a fraction of a percent, ten times faster."""
    h, w = x.shape
    if min(h, w) < 8 * f or sigma < 2 * f:
        return ndi.gaussian_filter(x, sigma)
    hp, wp = -(-h // f) * f, -(-w // f) * f
    src = np.pad(x, ((0, hp - h), (0, wp - w)), mode="edge") if (hp, wp) != (h, w) else x
    small = src.reshape(hp // f, f, wp // f, f).mean(axis=(1, 3))
    small = ndi.gaussian_filter(small, math.sqrt(sigma**2 - (f**2 - 1) / 12.0) / f)

    def axis_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out, dtype=np.float32) + 0.5) / f - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.intp)
        return lo, np.minimum(lo + 1, n_in - 1), (pos - lo).astype(np.float32)

    y0, y1, wy = axis_weights(h, small.shape[0])
    x0, x1, wx = axis_weights(w, small.shape[1])
    rows = small[y0] * (1 - wy)[:, None] + small[y1] * wy[:, None]
    return (rows[:, x0] * (1 - wx) + rows[:, x1] * wx).astype(np.float32)


def _tiled_p99(x: np.ndarray, n: int = 4) -> float:
    """Median over an ``n`` x ``n`` grid of tiles of each tile's 99th percentile: the field's bright
    level, unmoved by one bright object however large (it spans a few tiles at most)."""
    h, w = (x.shape[0] // n) * n, (x.shape[1] // n) * n
    if h < n or w < n:
        return float(np.percentile(x, 99))
    tiles = x[:h, :w].reshape(n, h // n, n, w // n).swapaxes(1, 2).reshape(n * n, -1)
    return float(np.median(np.percentile(tiles, 99, axis=1)))


def noise_sigma(image: np.ndarray, row_step: int = 1) -> float:
    """Camera noise of an image: the robust spread of horizontal neighbour differences.

    Parameters
    ----------
    image : numpy.ndarray, shape (height, width)
        Any real dtype.
    row_step : int
        Use every ``row_step``-th row only (a cheaper estimate of the same quantity).

    Returns
    -------
    float
        1.4826 x the median absolute deviation of ``(x[:, 1:] - x[:, :-1]) / sqrt(2)``: the
        standard deviation of white noise, insensitive to edges and smooth gradients (they
        touch few differences).
    """
    x = np.asarray(image)[:: max(1, int(row_step))].astype(np.float32, copy=False)
    d = (x[:, 1:] - x[:, :-1]).ravel() / np.float32(math.sqrt(2))
    if d.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def image_stats(image: np.ndarray, full_scale: float | None = None, debris_contrast: float = 3.0) -> ImageStats:
    """Measure what the defect rules of :func:`assess_fields` need, on one 2-D image.

    The maximum, the saturated fraction and the noise come from the full-resolution pixels
    (the noise from every ``f**2``-th row, see :func:`noise_sigma`); the rest runs on the
    ``f`` x ``f`` block means (``f`` = :func:`block_factor`: 1 up to :data:`QC_GRID` px, 2 up
    to twice that ...), each Gaussian narrowed so that block mean and Gaussian together have
    the full-resolution band's width, the grid's noise taken as ``noise / f`` (block means of
    white noise), and lengths and areas given back in full-resolution pixels.

    Parameters
    ----------
    image : numpy.ndarray, shape (height, width)
        The pixels as stored (uint8, uint16 or float); not modified.
    full_scale : float, optional
        The saturation value, ``2**bit_depth - 1``; default the integer dtype's maximum
        (None for a float image: saturation not assessed).
    debris_contrast : float
        Debris threshold: background + this many times the field's bright level.

    Returns
    -------
    ImageStats
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image_stats needs a 2-D image, got shape {img.shape}")
    if full_scale is None and np.issubdtype(img.dtype, np.integer):
        full_scale = float(np.iinfo(img.dtype).max)
    x = img.astype(np.float32)
    top = float(x.max())
    sat = float(np.count_nonzero(x >= full_scale)) / x.size if full_scale is not None else 0.0
    f = block_factor(x.shape)
    noise = max(noise_sigma(x, f * f), NOISE_FLOOR)
    x = _block_mean(x, f)
    sigma = noise / f  # block means of white noise
    gain = _gains(f)
    # isolated hot pixels (brighter than all 8 neighbours by > 5 noise) are capped: optics blur every
    # real structure over several pixels, so only camera defects and cosmic rays are touched
    x = np.minimum(x, _ring_max(x) + np.float32(5 * sigma))
    g1 = _blur(x, _grid_sigma(1, f))
    g2 = _blur(x, _grid_sigma(2, f))
    g4 = _blur(x, _grid_sigma(4, f))
    g16 = _blur(x, _grid_sigma(16, f))
    snr = float(np.percentile(np.abs(g2 - g16), 99.9)) / (sigma * gain["snr"] * _Z999)
    fine = float(np.var(g1 - g2)) - (sigma * gain["fine"]) ** 2
    coarse = float(np.var(g4 - g16)) - (sigma * gain["coarse"]) ** 2
    focus = max(fine, 0.0) / coarse if coarse > 0 else math.nan
    del g2, g4, g16
    med = float(np.median(g1))
    fg = g1 > med + 5 * sigma * gain["g1"]
    level = float(np.percentile(g1[fg], 90)) - med if fg.any() else 0.0
    ref = max(_tiled_p99(g1) - med, level)
    extent, area = 0.0, 0
    if ref > 0:
        labels, n = ndi.label(g1 > med + debris_contrast * ref, structure=np.ones((3, 3), bool))
        if n:
            boxes = ndi.find_objects(labels)
            diag = np.array([math.hypot(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in boxes])
            k = int(np.argmax(diag))
            extent, area = f * float(diag[k]), f * f * int(np.count_nonzero(labels == k + 1))
    return ImageStats(top, full_scale, sat, noise, snr, focus, extent, area)


@dataclass(frozen=True)
class FieldDefect:
    """One defect found on one image of a field.

    Attributes
    ----------
    well : str
    field_id : int
    channel : str
        The channel whose image shows it (``focus_channel`` for ``out_of_focus``).
    file_name : str
        The image file.
    kind : str
        One of :data:`~assets_pkg.core.qc.config.DEFECT_KINDS`.
    action : {"exclude", "block", "warn"}
        What the configuration does with it.
    measure : str
        The quantity measured (:data:`MEASURES`), named as the report's field.
    value : float
        Its value.
    detail : str
        One line in words, with the threshold.
    """

    well: str
    field_id: int
    channel: str
    file_name: str
    kind: str
    action: str
    measure: str
    value: float
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def assess_fields(table: pd.DataFrame, stats: Iterable[ImageStats | None], qc: PlateQCConfig) -> pd.DataFrame:
    """Decide the defects of every image of a plate.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per image: ``well``, ``field_id``, ``channel``, ``file_name`` and
        ``pixel_size_um`` (NaN or None where unknown).
    stats : iterable of ImageStats or None
        One per row of ``table`` (None where the image could not be decoded: not assessed).
    qc : PlateQCConfig
        Thresholds and actions.

    Returns
    -------
    pandas.DataFrame
        Aligned with ``table``; per kind, ``<measure>`` (float, NaN where not assessed),
        ``defect.<kind>`` (bool) and ``detail.<kind>`` (str or None).
    """
    stats = list(stats)
    n = len(table)
    if len(stats) != n:
        raise ValueError(f"{len(stats)} image stats for {n} rows")
    out = pd.DataFrame(index=table.index)
    ok = np.array([s is not None for s in stats])
    chan = table["channel"].astype(object).to_numpy()
    px = np.array([_num(v) for v in table["pixel_size_um"]]) if "pixel_size_um" in table else np.full(n, np.nan)

    def col(attr: str) -> np.ndarray:
        return np.array([getattr(s, attr) if s is not None else np.nan for s in stats], dtype=float)

    snr, noise, sat = col("signal_snr"), col("noise"), col("saturated_fraction")
    blank = ok & (snr < qc.blank_snr)
    saturated = ok & ~blank & (sat > qc.saturated_fraction)
    usable = ok & ~blank & ~saturated

    focus = col("focus")
    judged = usable & (chan == qc.focus_channel) & np.isfinite(focus)
    ratio = np.full(n, np.nan)
    reference = float(np.median(focus[judged])) if judged.sum() >= qc.focus_min_fields else math.nan
    if reference > 0:
        ratio[judged] = focus[judged] / reference
    blurred = judged & (ratio < qc.focus_ratio)

    diameter_px = qc.nucleus_diameter_um / np.where(px > 0, px, np.nan)
    nuclei = np.where(usable, col("bright_extent_px") / diameter_px, np.nan)
    debris = usable & (nuclei >= qc.debris_nuclei)

    measures = {"blank": np.where(ok, snr, np.nan), "saturated": np.where(ok, sat, np.nan),
                "out_of_focus": ratio, "debris": nuclei}
    flags = {"blank": blank, "saturated": saturated, "out_of_focus": blurred, "debris": debris}
    n_judged = int(judged.sum())
    for kind in DEFECT_KINDS:
        out[MEASURES[kind]] = measures[kind]
        out[f"defect.{kind}"] = flags[kind]
        details = []
        for i in range(n):
            if not flags[kind][i]:
                details.append(None)
                continue
            s = stats[i]
            if kind == "blank":
                details.append(f"blank {chan[i]} channel: its brightest structure is {snr[i]:.1f} x the camera "
                               f"noise ({noise[i]:.1f} ADU), below {qc.blank_snr:g}")
            elif kind == "saturated":
                details.append(f"{100 * sat[i]:.2f} % of the {chan[i]} pixels sit at the maximum {s.full_scale:g}, "
                               f"above {100 * qc.saturated_fraction:g} %: saturated")
            elif kind == "out_of_focus":
                details.append(f"fine detail of the {chan[i]} channel is {ratio[i]:.3f} x the plate's median "
                               f"({n_judged} fields), below {qc.focus_ratio:g}: out of focus")
            else:
                details.append(f"bright object {s.bright_extent_px:.0f} px long ({nuclei[i]:.1f} nucleus diameters of "
                               f"{qc.nucleus_diameter_um:g} µm), {s.bright_area_px} px, above "
                               f"{qc.debris_contrast:g} x the field's bright level in the {chan[i]} channel: debris")
        out[f"detail.{kind}"] = pd.Series(details, index=out.index, dtype=object)
    return out


def defects_from_table(table: pd.DataFrame, assessed: pd.DataFrame, qc: PlateQCConfig) -> list[FieldDefect]:
    """The defects of :func:`assess_fields`'s result as :class:`FieldDefect` objects.

    Sorted by well, field_id, kind and channel.
    """
    out = []
    for kind in DEFECT_KINDS:
        hit = assessed[f"defect.{kind}"].to_numpy(bool)
        for i in np.flatnonzero(hit):
            r = table.iloc[i]
            out.append(FieldDefect(str(r["well"]), int(_num(r["field_id"])), str(r["channel"]), str(r["file_name"]),
                                   kind, qc.action(kind), MEASURES[kind],
                                   float(assessed[MEASURES[kind]].iloc[i]), str(assessed[f"detail.{kind}"].iloc[i])))
    order = {k: j for j, k in enumerate(DEFECT_KINDS)}
    return sorted(out, key=lambda d: (d.well, d.field_id, order[d.kind], d.channel))
