"""The virtual microscope: synthetic OpenCell-like plates of live HEK293T cells.

Each field is a pair of 2-D uint16 images of shape (field_size, field_size), axis order
(y, x): channel ``nucleus`` (Hoechst 33342) and channel ``protein`` (an endogenously tagged
protein, mNeonGreen).  A field is rendered in four steps, all vectorised NumPy / SciPy (the
only Python loops run over cells, never over pixels):

1. **Layout** (:class:`Geometry`): nuclei are irregular ellipses placed in HEK293T-like
   colonies (clustered, touching, slightly compressed where they meet); a cell body is grown
   from each nucleus by a distance-limited, asymmetric Voronoi partition.  A few cells are
   mitotic (small, round, condensed and bright).  Nucleoli (1-4 per nucleus) sit inside.
2. **Fluorophore maps** in ADU above background: Hoechst is chromatin texture with a
   brighter periphery and dark nucleoli; the protein channel mixes one pattern per
   localization class (:data:`PATTERNS`), weighted by grade, scaled by a per-protein
   expression level and a per-cell factor.
3. **Optics**: Gaussian PSF, a little out-of-focus haze (the max projection of a confocal
   stack), smooth vignetting.
4. **Camera**: Poisson shot noise, gain, ~100 ADU offset, Gaussian read noise, rounding and
   clipping into uint16.

Optional acquisition defects (out of focus, saturation, debris) are planned from their own
random stream and recorded.  Every random draw comes from a :class:`numpy.random.Generator`
seeded by a :class:`numpy.random.SeedSequence` whose ``spawn_key`` names the plate, well,
field and purpose, so a field's pixels depend only on (seed, plate, well, field) and never on
iteration order, wall clock or hash order: the same arguments write byte-identical plates.

:func:`simulate_plates` writes plate folders through :func:`assets_pkg.core.imaging.plates.write_plate`;
:func:`render_field` renders one field and returns its ground truth (nucleus and cell label
images, nucleolus mask) for tests and for scoring segmentation.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from . import plates
from .plates import LOCALIZATIONS, Localization, WellInfo

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

#: Camera model (effective, EMCCD-like): offset, read noise and gain.
CAMERA_OFFSET_ADU = 100.0
READ_NOISE_ADU = 6.0
GAIN_ADU_PER_E = 6.0
FULL_SCALE = 65535

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

#: Relative weight of a localization by its grade (3 prominent, 2 clear, 1 weak).
GRADE_WEIGHT = {3: 1.0, 2: 0.4, 1: 0.15}

#: Defect kinds :func:`simulate_plates` can inject.
DEFECT_KINDS: tuple[str, ...] = ("out_of_focus", "saturated", "debris")

DEFECTS_COLUMNS = ("plate_id", "well", "field_id", "channel", "defect", "detail")

# Cell layout, in micrometres (converted with the pixel size).
_CELLS_PER_UM2 = 32.0 / (FIELD_SIZE * PIXEL_SIZE_UM) ** 2  # ~32 cells per 512 px field
_NUC_SEMI_MAJOR_UM = (7.2, 1.0)  # mean, sd of the semi-major axis
_NUC_AXIS_RATIO = (0.66, 0.92)
_MITOTIC_FRACTION = 0.03
_CYTO_EXTENT_UM = (2.2, 4.5)  # how far a cell reaches beyond its nucleus
_PAD_UM = 6.0  # rendered margin, cropped at the end (no edge artefacts)

# Stream numbers of the SeedSequence spawn keys.
_S_FIELD, _S_PROTEIN, _S_PLATE, _S_PANEL = 0, 1, 2, 3
_F_LAYOUT, _F_PROTEIN, _F_CAMERA, _F_DEFECT = 0, 1, 2, 3


# --------------------------------------------------------------------------------------
# random streams and small helpers
# --------------------------------------------------------------------------------------


def _seq(seed: int | np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """A SeedSequence for ``seed`` extended by ``key`` (no state, order independent)."""
    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(seed.entropy, spawn_key=tuple(seed.spawn_key) + key)
    return np.random.SeedSequence(int(seed), spawn_key=key)


def _rng(seed: int | np.random.SeedSequence, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(_seq(seed, *key)))


def _upsample(small: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
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


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation (float32).

    Correlation lengths of 4 px and more are synthesised on a coarser grid and upsampled.
    """
    f = int(sigma // 2) if sigma >= 4 else 1
    small_shape = (-(-shape[0] // f), -(-shape[1] // f))
    white = rng.standard_normal(small_shape, dtype=np.float32)
    sig = sigma / f
    out = ndi.gaussian_filter(white, sig, mode="wrap") if sig > 0 else white
    out *= np.float32(1.0 / out.std()) if sig > 0 else np.float32(1.0)
    return out if f == 1 else _upsample(out, f, shape)


def _blur_wide(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur for large ``sigma`` (px), computed on a block-averaged grid."""
    f = max(int(sigma // 3), 1)
    if f == 1:
        return ndi.gaussian_filter(img, sigma)
    h, w = img.shape
    hp, wp = -(-h // f) * f, -(-w // f) * f
    src = np.pad(img, ((0, hp - h), (0, wp - w)), mode="edge") if (hp, wp) != (h, w) else img
    small = src.reshape(hp // f, f, wp // f, f).mean(axis=(1, 3))
    small = ndi.gaussian_filter(small, math.sqrt(max(sigma**2 - (f**2 - 1) / 12.0, 0.25)) / f)
    return _upsample(small.astype(np.float32), f, (h, w))


def _splat(
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


def _near_distance(mask: np.ndarray) -> np.ndarray:
    """Distance (px, float32) from each True pixel to the nearest False one: the mean of the
    chessboard and city-block chamfer distances, within ~8 % of Euclidean and ~4x faster.
    Used for the short-range profiles (rims, lines) of the patterns."""
    cb = ndi.distance_transform_cdt(mask, metric="chessboard")
    tc = ndi.distance_transform_cdt(mask, metric="taxicab")
    return (0.5 * (cb + tc)).astype(np.float32)


def _label_edges(labels: np.ndarray) -> np.ndarray:
    """Pixels of a label image whose 4-neighbour holds another label (bool)."""
    e = np.zeros(labels.shape, bool)
    d = labels[1:, :] != labels[:-1, :]
    e[1:, :] |= d
    e[:-1, :] |= d
    d = labels[:, 1:] != labels[:, :-1]
    e[:, 1:] |= d
    e[:, :-1] |= d
    return e & (labels > 0)


def _sample_pixels(
    rng: np.random.Generator, weight: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pixel positions drawn with probability proportional to ``weight`` (+ sub-pixel jitter)."""
    flat = weight.ravel().astype(np.float64)
    total = flat.sum()
    if n <= 0 or total <= 0:
        return np.zeros(0), np.zeros(0)
    cdf = np.cumsum(flat)
    idx = np.searchsorted(cdf, rng.random(n) * total, side="right")
    idx = np.minimum(idx, flat.size - 1)
    y, x = np.divmod(idx, weight.shape[1])
    return y + rng.uniform(-0.5, 0.5, n), x + rng.uniform(-0.5, 0.5, n)


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def psf_sigma_px(
    emission_nm: float,
    pixel_size_um: float = PIXEL_SIZE_UM,
    numerical_aperture: float = NUMERICAL_APERTURE,
) -> float:
    """Gaussian PSF sigma in pixels: 0.21 lambda/NA widened by 0.15 um for the z max projection."""
    s_um = math.hypot(0.21 * emission_nm / 1000.0 / numerical_aperture, 0.15)
    return s_um / pixel_size_um


# --------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------


@dataclass
class Geometry:
    """Cells of one field on the padded canvas, with the distance maps patterns need.

    All images have shape (height, width) of the padded canvas, axis order (y, x); lengths
    are in pixels.  Arrays indexed by cell hold one entry per cell id, index 0 unused.
    """

    shape: tuple[int, int]
    px_per_um: float
    nuclei: np.ndarray  # int32 label image, 0 = background
    cells: np.ndarray  # int32 label image, nucleus included
    nucleolus: np.ndarray  # float32 0..1 occupancy of nucleoli
    cy: np.ndarray  # nucleus centre y per cell id
    cx: np.ndarray
    semi_major: np.ndarray
    polarity: np.ndarray  # angle (rad) of the cell's larger side: Golgi / centrosome side
    mitotic: np.ndarray  # bool per cell id
    nucleoli_yx: np.ndarray  # (k, 3): cell id, y, x of each nucleolus centre
    nucleoli_r: np.ndarray  # (k,) radius in px
    d_in: np.ndarray  # distance inside a nucleus to its edge
    d_out: np.ndarray  # distance outside nuclei to the nearest nucleus
    theta: np.ndarray  # angle of each pixel around its own nucleus centre
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.cy) - 1

    @property
    def nuc_mask(self) -> np.ndarray:
        return self.nuclei > 0

    @property
    def cyto_mask(self) -> np.ndarray:
        if "cyto" not in self._cache:
            self._cache["cyto"] = (self.cells > 0) & (self.nuclei == 0)
        return self._cache["cyto"]

    @property
    def d_cell_edge(self) -> np.ndarray:
        """Distance inside a cell to its boundary (with background or another cell)."""
        if "dce" not in self._cache:
            inner = (self.cells > 0) & ~_label_edges(self.cells)
            self._cache["dce"] = _near_distance(inner)
        return self._cache["dce"]

    @property
    def contacts(self) -> np.ndarray:
        """Cell pixels touching another cell (not background)."""
        if "contacts" not in self._cache:
            c = self.cells
            e = np.zeros(c.shape, bool)
            for a, b in (
                (np.s_[1:, :], np.s_[:-1, :]),
                (np.s_[:-1, :], np.s_[1:, :]),
                (np.s_[:, 1:], np.s_[:, :-1]),
                (np.s_[:, :-1], np.s_[:, 1:]),
            ):
                e[a] |= (c[a] != c[b]) & (c[b] > 0)
            self._cache["contacts"] = e & (c > 0)
        return self._cache["contacts"]


def _make_geometry(
    rng: np.random.Generator, shape: tuple[int, int], px_per_um: float, density: float
) -> Geometry:
    h, w = shape
    s = px_per_um
    area_um2 = h * w / s**2
    n = int(rng.poisson(_CELLS_PER_UM2 * area_um2 * density * rng.uniform(0.7, 1.25)))
    n = max(n, 1)

    # nucleus shape parameters (px)
    mitotic = rng.random(n) < _MITOTIC_FRACTION
    a = np.clip(rng.normal(*_NUC_SEMI_MAJOR_UM, n), 4.5, 9.5) * s
    ratio = rng.uniform(*_NUC_AXIS_RATIO, n)
    a = np.where(mitotic, rng.uniform(3.6, 4.6, n) * s, a)
    ratio = np.where(mitotic, rng.uniform(0.5, 0.75, n), ratio)
    b = a * ratio
    r_eff = np.sqrt(a * b)

    ang = rng.uniform(0, np.pi, n)
    harm = rng.normal(0, 1, (n, 3)) * np.array([0.05, 0.06, 0.025])  # k = 2, 3, 4
    harm_ph = rng.uniform(0, 2 * np.pi, (n, 3))

    # colonies: a few cluster centres, cells drawn around them, then relaxed so that
    # neighbouring nuclei keep a thin, variable band of cytoplasm between them
    n_col = 2 + int(rng.poisson(2.0))
    col_c = np.stack([rng.uniform(0.15, 0.85, n_col) * h, rng.uniform(0.15, 0.85, n_col) * w], 1)
    col_of = rng.choice(n_col, size=n, p=rng.dirichlet(np.full(n_col, 2.0)))
    counts = np.bincount(col_of, minlength=n_col)
    spread = np.sqrt(np.maximum(counts, 1))[col_of] * np.mean(r_eff) * 0.9
    pos = col_c[col_of] + rng.normal(0, 1, (n, 2)) * spread[:, None]
    gap = rng.uniform(0.8, 4.5, n) * s
    want_gap = 0.5 * (gap[:, None] + gap[None, :])
    ca_, sa_ = np.cos(ang)[:, None], np.sin(ang)[:, None]
    ab = (a * b)[:, None]
    for _ in range(40):
        d = pos[:, None, :] - pos[None, :, :]
        dist = np.sqrt((d**2).sum(-1)) + np.eye(n)
        # radius of each ellipse towards the other nucleus (direction cosines in its frame)
        uy, ux = d[..., 0] / dist, d[..., 1] / dist
        c_ = ux * ca_ + uy * sa_
        s_ = uy * ca_ - ux * sa_
        ri = ab / np.sqrt((b[:, None] * c_) ** 2 + (a[:, None] * s_) ** 2 + 1e-9)
        want = ri + ri.T + want_gap
        push = np.clip(want - dist, 0, None) / dist
        np.fill_diagonal(push, 0)
        pos += 0.45 * (d * push[..., None]).sum(1)
        pos += 0.01 * (col_c[col_of] - pos)
    cy, cx = pos[:, 0], pos[:, 1]

    labels = np.zeros(shape, np.int32)
    best = np.ones(shape, np.float32)
    nucleolus = np.zeros(shape, np.float32)
    nyx, nr = [], []
    for i in range(n):
        rad = a[i] * (1 + np.abs(harm[i]).sum()) + 2
        y0, y1 = max(int(cy[i] - rad), 0), min(int(cy[i] + rad) + 2, h)
        x0, x1 = max(int(cx[i] - rad), 0), min(int(cx[i] + rad) + 2, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy[i])
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx[i])
        ca, sa = math.cos(ang[i]), math.sin(ang[i])
        xr = xx * ca + yy * sa
        yr = -xx * sa + yy * ca
        # radial profile 1 + sum_k A_k cos(k theta + phase_k), k = 2..4, via powers of e^(i theta)
        r = np.sqrt(xr * xr + yr * yr) + np.float32(1e-6)
        z = (xr + 1j * yr) / r
        z2 = z * z
        coef = harm[i] * np.exp(1j * harm_ph[i])
        shape_r = 1 + (coef[0] * z2 + coef[1] * z2 * z + coef[2] * z2 * z2).real
        q = np.sqrt((xr / a[i]) ** 2 + (yr / b[i]) ** 2) / shape_r
        box_b, box_l = best[y0:y1, x0:x1], labels[y0:y1, x0:x1]
        win = q < box_b
        box_b[win] = q[win]
        box_l[win] = i + 1

    # nucleoli: 1-4 blobs in the inner part of each interphase nucleus, drawn once every
    # nucleus is in place so that they stay inside their own nucleus
    for i in range(n):
        if mitotic[i]:
            continue
        k = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.35, 0.28, 0.12]))
        u = np.sqrt(rng.random(k)) * 0.5
        phi = rng.uniform(0, 2 * np.pi, k)
        rn = rng.uniform(0.9, 1.9, k) * s * math.sqrt(ratio[i])
        el = rng.uniform(0.7, 1.0, k)
        nang = rng.uniform(0, np.pi, k)
        ca, sa = math.cos(ang[i]), math.sin(ang[i])
        for j in range(k):
            px_, py_ = u[j] * a[i] * math.cos(phi[j]), u[j] * b[i] * math.sin(phi[j])
            ny, nx = cy[i] + px_ * sa + py_ * ca, cx[i] + px_ * ca - py_ * sa
            rad = rn[j] + 2
            y0, y1 = max(int(ny - rad), 0), min(int(ny + rad) + 2, h)
            x0, x1 = max(int(nx - rad), 0), min(int(nx + rad) + 2, w)
            if y0 >= y1 or x0 >= x1:
                continue
            dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(ny)
            dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(nx)
            c2, s2 = math.cos(nang[j]), math.sin(nang[j])
            qn = np.sqrt(
                ((dx * c2 + dy * s2) / rn[j]) ** 2 + ((-dx * s2 + dy * c2) / (rn[j] * el[j])) ** 2
            )
            occ = np.clip(1.5 - qn * 1.5, 0, 1) * (labels[y0:y1, x0:x1] == i + 1)
            np.maximum(nucleolus[y0:y1, x0:x1], occ, out=nucleolus[y0:y1, x0:x1])
            nyx.append((i + 1, ny, nx))
            nr.append(rn[j])

    # cell bodies: asymmetric, noisy reach beyond the nucleus, limited by neighbours (Voronoi)
    d_out, idx = ndi.distance_transform_edt(labels == 0, return_indices=True)
    near = labels[idx[0], idx[1]]
    d_out = d_out.astype(np.float32)
    cyp = np.concatenate([[0.0], cy]).astype(np.float32)
    cxp = np.concatenate([[0.0], cx]).astype(np.float32)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    own = np.where(labels > 0, labels, near)
    theta = np.arctan2(yy - cyp[own], xx - cxp[own]).astype(np.float32)
    polarity = np.concatenate([[0.0], rng.uniform(-np.pi, np.pi, n)])
    reach = np.concatenate([[0.0], rng.uniform(*_CYTO_EXTENT_UM, n) * s])
    reach[1:][mitotic] = 3.0 * s
    asym = np.concatenate([[0.0], rng.uniform(0.2, 0.6, n)])
    asym[1:][mitotic] = 0.05
    f32 = np.float32
    extent = reach.astype(f32)[near] * (
        1 + asym.astype(f32)[near] * np.cos(theta - polarity.astype(f32)[near])
    )
    extent *= 1 + 0.3 * _noise(rng, shape, 2.0 * s)
    cells = np.where(labels > 0, labels, np.where(d_out <= extent, near, 0)).astype(np.int32)

    inner = (labels > 0) & ~_label_edges(labels)
    d_in = _near_distance(inner)
    return Geometry(
        shape=shape,
        px_per_um=s,
        nuclei=labels,
        cells=cells,
        nucleolus=nucleolus,
        cy=cyp.astype(np.float64),
        cx=cxp.astype(np.float64),
        semi_major=np.concatenate([[0.0], a]),
        polarity=polarity,
        mitotic=np.concatenate([[False], mitotic]),
        nucleoli_yx=np.array(nyx, np.float64).reshape(-1, 3),
        nucleoli_r=np.array(nr, np.float64),
        d_in=d_in,
        d_out=d_out,
        theta=theta,
    )


# --------------------------------------------------------------------------------------
# Hoechst
# --------------------------------------------------------------------------------------


def _chromatin(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    """Chromatin density inside nuclei, mean ~1 (float32): texture, bright periphery,
    nucleoli as holes with a bright perinucleolar rim, condensed mitotic chromatin."""
    s = g.px_per_um
    tex = np.exp(
        0.26 * _noise(rng, g.shape, 0.15 * s)
        + 0.3 * _noise(rng, g.shape, 0.5 * s)
        + 0.15 * _noise(rng, g.shape, 1.2 * s)
    )
    rim = 1 + 0.8 * np.exp(-g.d_in / (0.3 * s))
    nol = g.nucleolus
    nol_wide = ndi.gaussian_filter(nol, 0.35 * s)
    peri = np.clip(nol_wide * 1.6 - nol, 0, None)
    dens = tex * rim * (1 - 0.85 * nol) * (1 + 1.2 * peri)
    mit = g.mitotic[g.nuclei]
    dens = np.where(mit, 2.0 * np.exp(0.5 * _noise(rng, g.shape, 0.3 * s)), dens)
    return np.where(g.nuclei > 0, dens, 0).astype(np.float32)


# --------------------------------------------------------------------------------------
# protein patterns: each returns a float32 map whose bright structures are ~1
# --------------------------------------------------------------------------------------


def _p_nucleoplasm(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    tex = np.exp(0.12 * _noise(rng, g.shape, 0.3 * s))
    out = g.nuc_mask * (1 - 0.85 * g.nucleolus) * tex * 0.8
    return np.where(g.mitotic[g.nuclei], 0.25, out).astype(np.float32) * g.nuc_mask


def _p_nucleolus_gc(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    tex = 0.85 + 0.15 * _noise(rng, g.shape, 0.25 * s)
    return (g.nucleolus * tex + 0.04 * g.nuc_mask).astype(np.float32)


def _p_nucleolus_fc_dfc(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    ys, xs, ws = [], [], []
    for (_, y, x), r in zip(g.nucleoli_yx, g.nucleoli_r, strict=True):
        k = int(rng.integers(3, 9))
        rr = np.sqrt(rng.random(k)) * r * 0.7
        ph = rng.uniform(0, 2 * np.pi, k)
        ys.append(y + rr * np.sin(ph))
        xs.append(x + rr * np.cos(ph))
        ws.append(rng.uniform(0.6, 1.2, k))
    if ys:
        dots = _splat(g.shape, np.concatenate(ys), np.concatenate(xs), np.concatenate(ws), 0.15 * s)
    else:
        dots = np.zeros(g.shape, np.float32)
    return (dots + 0.15 * g.nucleolus + 0.03 * g.nuc_mask).astype(np.float32)


def _p_chromatin(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    return (_chromatin(g, rng) * 0.45).astype(np.float32)


def _p_nuclear_membrane(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    w = 0.22 * s
    d = np.where(g.nuc_mask, g.d_in, g.d_out)
    line = np.exp(-0.5 * (d / w) ** 2)
    pores = np.exp(0.25 * _noise(rng, g.shape, 0.2 * s))
    out = line * pores + 0.04 * g.nuc_mask
    return np.where(g.mitotic[np.maximum(g.nuclei, g.cells)], 0.1 * (g.cells > 0), out).astype(
        np.float32
    )


def _p_nuclear_punctae(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    weight = g.nuc_mask * (1 - g.nucleolus) * (g.d_in > 0.3 * s) * ~g.mitotic[g.nuclei]
    n = int(g.n * rng.integers(6, 22))
    y, x = _sample_pixels(rng, weight, n)
    dots = _splat(g.shape, y, x, rng.lognormal(0, 0.35, len(y)), rng.uniform(0.2, 0.35) * s)
    return (dots + 0.12 * g.nuc_mask * (1 - 0.8 * g.nucleolus)).astype(np.float32)


def _soft_cyto(g: Geometry) -> np.ndarray:
    if "soft_cyto" not in g._cache:
        c = ndi.gaussian_filter(g.cyto_mask.astype(np.float32), 0.25 * g.px_per_um)
        g._cache["soft_cyto"] = c * g.cyto_mask
    return g._cache["soft_cyto"]


def _perinuclear(g: Geometry, scale_um: float, floor: float) -> np.ndarray:
    return (floor + np.exp(-g.d_out / (scale_um * g.px_per_um))) * g.cyto_mask


def _p_cytoplasmic(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    tex = np.exp(0.12 * _noise(rng, g.shape, 0.4 * s))
    return (0.75 * _soft_cyto(g) * tex + 0.06 * g.nuc_mask).astype(np.float32)


def _p_er(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    n1 = _noise(rng, g.shape, 0.35 * s)
    net = np.exp(-((n1 / 0.28) ** 2))  # zero crossings of band-limited noise: a reticulum
    dens = _perinuclear(g, 2.0, 0.35)
    env = np.exp(-0.5 * (np.where(g.nuc_mask, g.d_in, g.d_out) / (0.25 * s)) ** 2)
    out = dens * (0.75 * net + 0.2) + 0.5 * env * (g.cells > 0)
    return out.astype(np.float32)


def _p_golgi(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    lab = g.cells
    dphi = _wrap(g.theta - g.polarity[lab])
    width = rng.uniform(0.5, 0.8)
    ang = np.exp(-0.5 * (dphi / width) ** 2)
    # signed distance to the nuclear edge: the ribbon hugs the nucleus and, in a max
    # projection, partly overlies its edge
    d = np.where(g.nuc_mask, -g.d_in, g.d_out)
    rad = np.exp(-0.5 * ((d - 0.5 * s) / (0.7 * s)) ** 2)
    frag = np.clip(0.55 + 0.6 * _noise(rng, g.shape, 0.3 * s), 0, None)
    ribbon = ang * rad * frag * (lab > 0) * ~g.mitotic[lab]
    return (1.4 * np.minimum(ribbon, 1.2) + 0.05 * _soft_cyto(g)).astype(np.float32)


def _worms(
    g: Geometry,
    rng: np.random.Generator,
    n: int,
    weight: np.ndarray,
    length_um: tuple[float, float],
    curl: float,
    along_theta: bool = False,
    steps: int = 24,
) -> tuple[np.ndarray, np.ndarray]:
    """Points along ``n`` short curved segments starting at pixels drawn from ``weight``;
    points leaving the starting cell are dropped."""
    s = g.px_per_um
    y0, x0 = _sample_pixels(rng, weight, n)
    if len(y0) == 0:
        return np.zeros(0), np.zeros(0)
    h, w = g.shape
    iy = np.clip(np.rint(y0).astype(int), 0, h - 1)
    ix = np.clip(np.rint(x0).astype(int), 0, w - 1)
    own = g.cells[iy, ix]
    if along_theta:
        a0 = g.theta[iy, ix] + rng.normal(0, 0.2, len(y0))
    else:
        a0 = rng.uniform(0, 2 * np.pi, len(y0))
    length = rng.uniform(*length_um, len(y0)) * s
    t = np.linspace(0, 1, steps)[None, :]
    k = rng.normal(0, curl, len(y0))[:, None]
    ang = a0[:, None] + k * t * 2
    step = length[:, None] / (steps - 1)
    ys = y0[:, None] + np.cumsum(np.sin(ang) * step, 1) - np.sin(ang[:, :1]) * step
    xs = x0[:, None] + np.cumsum(np.cos(ang) * step, 1) - np.cos(ang[:, :1]) * step
    yi = np.clip(np.rint(ys).astype(int), 0, h - 1)
    xi = np.clip(np.rint(xs).astype(int), 0, w - 1)
    keep = (g.cells[yi, xi] == own[:, None]) & (g.nuclei[yi, xi] == 0)
    return ys[keep], xs[keep]


def _p_mitochondria(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    n = int(g.n * rng.integers(25, 45))
    ys, xs = _worms(g, rng, n, _perinuclear(g, 2.0, 0.3), (0.6, 2.4), 0.9)
    img = _splat(g.shape, ys, xs, np.full(len(ys), 0.3), 0.12 * s)
    return (np.minimum(img, 1.2) + 0.04 * _soft_cyto(g)).astype(np.float32)


def _p_vesicles(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    n = int(g.n * rng.integers(20, 55))
    y, x = _sample_pixels(rng, _perinuclear(g, 3.0, 0.4) * (g.d_cell_edge > 1), n)
    dots = _splat(g.shape, y, x, rng.lognormal(0, 0.45, len(y)), rng.uniform(0.18, 0.3) * s)
    return (dots + 0.08 * _soft_cyto(g)).astype(np.float32)


def _p_membrane(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    line = np.exp(-0.5 * (g.d_cell_edge / (0.2 * s)) ** 2) * (g.cells > 0)
    tex = np.exp(0.2 * _noise(rng, g.shape, 0.4 * s))
    return (line * tex + 0.08 * _soft_cyto(g)).astype(np.float32)


def _p_cytoskeleton(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    """Filament meshwork: long, gently curved fibres through the whole cell (a max projection
    shows those running above and below the nucleus too), a cortical rim, a diffuse pool."""
    s = g.px_per_um
    n = g.n * int(rng.integers(18, 32))
    y0, x0 = _sample_pixels(rng, (g.cells > 0).astype(np.float32), n)
    if len(y0) == 0:
        return np.zeros(g.shape, np.float32)
    h, w = g.shape
    iy = np.clip(np.rint(y0).astype(int), 0, h - 1)
    ix = np.clip(np.rint(x0).astype(int), 0, w - 1)
    own = g.cells[iy, ix]
    steps = 48
    a0 = rng.uniform(0, np.pi, len(y0))
    length = rng.uniform(4, 12, len(y0)) * s
    t = np.linspace(-0.5, 0.5, steps)[None, :]
    ang = a0[:, None] + rng.normal(0, 0.8, len(y0))[:, None] * t
    step = length[:, None] / (steps - 1)
    ys = (
        y0[:, None] + np.cumsum(np.sin(ang) * step, 1) - 0.5 * length[:, None] * np.sin(a0)[:, None]
    )
    xs = (
        x0[:, None] + np.cumsum(np.cos(ang) * step, 1) - 0.5 * length[:, None] * np.cos(a0)[:, None]
    )
    yi = np.clip(np.rint(ys).astype(int), 0, h - 1)
    xi = np.clip(np.rint(xs).astype(int), 0, w - 1)
    keep = g.cells[yi, xi] == own[:, None]
    over_nucleus = np.where(g.nuclei[yi, xi] > 0, 0.5, 1.0)
    wts = rng.uniform(0.15, 0.35, len(y0))[:, None] * over_nucleus
    img = _splat(g.shape, ys[keep], xs[keep], wts[keep], 0.1 * s)
    cortex = np.exp(-0.5 * (g.d_cell_edge / (0.3 * s)) ** 2) * (g.cells > 0)
    return (np.minimum(img, 1.2) + 0.3 * cortex + 0.12 * _soft_cyto(g)).astype(np.float32)


def _edge_point(
    g: Geometry, ids: np.ndarray, phi: np.ndarray, beyond: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Point ``beyond`` px outside the nucleus edge of each cell, along angle ``phi``."""
    r = np.linspace(0, 1, 64)[None, :] * (g.semi_major[ids] * 1.4 + 2)[:, None]
    ys = g.cy[ids][:, None] + np.sin(phi)[:, None] * r
    xs = g.cx[ids][:, None] + np.cos(phi)[:, None] * r
    h, w = g.shape
    inside = (
        g.nuclei[
            np.clip(np.rint(ys).astype(int), 0, h - 1), np.clip(np.rint(xs).astype(int), 0, w - 1)
        ]
        == ids[:, None]
    )
    last = 63 - np.argmax(inside[:, ::-1], axis=1)
    r_edge = r[np.arange(len(ids)), last] + beyond
    return g.cy[ids] + np.sin(phi) * r_edge, g.cx[ids] + np.cos(phi) * r_edge


def _p_centrosome(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    ids = np.arange(1, g.n + 1)
    ids = ids[~g.mitotic[1:]]
    if len(ids) == 0:
        return 0.05 * _soft_cyto(g)
    phi = g.polarity[ids] + rng.normal(0, 0.3, len(ids))
    y, x = _edge_point(g, ids, phi, rng.uniform(0.2, 0.9, len(ids)) * s)
    two = rng.random(len(ids)) < 0.6
    sep = rng.uniform(0.4, 0.9, len(ids)) * s
    a2 = rng.uniform(0, 2 * np.pi, len(ids))
    ys = np.concatenate([y, (y + sep * np.sin(a2))[two]])
    xs = np.concatenate([x, (x + sep * np.cos(a2))[two]])
    wts = rng.uniform(2.0, 3.0, len(ys))
    dots = _splat(g.shape, ys, xs, wts, 0.18 * s)
    halo = _splat(g.shape, y, x, np.full(len(y), 0.08), 0.8 * s)
    return (dots + halo + 0.04 * _soft_cyto(g)).astype(np.float32)


def _p_big_aggregates(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    n = int(rng.binomial(g.n, 0.6) * rng.integers(2, 5))
    y, x = _sample_pixels(rng, g.cyto_mask * (g.d_cell_edge > 0.6 * s), n)
    img = np.zeros(g.shape, np.float32)
    for r in (0.25, 0.5):  # two scales make lumpy, irregular blobs
        img += _splat(
            g.shape,
            y + rng.normal(0, r * s, len(y)),
            x + rng.normal(0, r * s, len(x)),
            rng.uniform(0.5, 1.0, len(y)),
            rng.uniform(0.35, 0.6) * s,
        )
    return (np.minimum(img, 1.6) + 0.3 * _soft_cyto(g)).astype(np.float32)


def _p_cell_contact(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    d = ndi.distance_transform_edt(~g.contacts).astype(np.float32)
    line = np.exp(-0.5 * (d / (0.25 * s)) ** 2) * (g.cells > 0)
    tex = np.clip(0.6 + 0.6 * _noise(rng, g.shape, 0.4 * s), 0, None)
    free = np.exp(-0.5 * (g.d_cell_edge / (0.2 * s)) ** 2) * (g.cells > 0)
    return (line * tex + 0.1 * free + 0.1 * _soft_cyto(g)).astype(np.float32)


def _p_focal_adhesions(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    # at the cell periphery, mostly along free edges; a few under the cell body
    edge = g.cyto_mask * ((g.d_cell_edge < 1.2 * s) * np.where(g.contacts, 0.15, 1.0) + 0.03)
    n = int(g.n * rng.integers(8, 18))
    ys, xs = _worms(g, rng, n, edge.astype(np.float32), (0.8, 2.0), 0.1, along_theta=True, steps=12)
    img = _splat(g.shape, ys, xs, np.full(len(ys), 0.5), 0.12 * s)
    return (np.minimum(img, 1.4) + 0.25 * _soft_cyto(g)).astype(np.float32)


#: Pattern renderer per localization class (OpenCell names).
PATTERNS = {
    "nucleoplasm": _p_nucleoplasm,
    "nucleolus_gc": _p_nucleolus_gc,
    "nucleolus_fc_dfc": _p_nucleolus_fc_dfc,
    "chromatin": _p_chromatin,
    "nuclear_membrane": _p_nuclear_membrane,
    "nuclear_punctae": _p_nuclear_punctae,
    "cytoplasmic": _p_cytoplasmic,
    "er": _p_er,
    "golgi": _p_golgi,
    "mitochondria": _p_mitochondria,
    "vesicles": _p_vesicles,
    "membrane": _p_membrane,
    "cytoskeleton": _p_cytoskeleton,
    "centrosome": _p_centrosome,
    "big_aggregates": _p_big_aggregates,
    "cell_contact": _p_cell_contact,
    "focal_adhesions": _p_focal_adhesions,
}
if tuple(PATTERNS) != LOCALIZATIONS:  # pragma: no cover - guards the vocabulary in plates.py
    raise ImportError("simulator.PATTERNS must cover plates.LOCALIZATIONS in order")


# --------------------------------------------------------------------------------------
# defects, illumination, camera
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DefectPlan:
    """One planned acquisition defect of a field.

    Attributes
    ----------
    kind : str
        One of :data:`DEFECT_KINDS`.
    channels : tuple of str
        Channels affected.
    params : tuple of (str, float)
        Parameters in pixels / ADU / field fractions, as sorted pairs.
    detail : str
        Human-readable description, written to defects.csv.
    """

    kind: str
    channels: tuple[str, ...]
    params: tuple[tuple[str, float], ...]
    detail: str

    def get(self, key: str) -> float:
        return dict(self.params)[key]


def plan_defect(
    kind: str,
    seed: int | np.random.SeedSequence,
    field_size: int = FIELD_SIZE,
    pixel_size_um: float = PIXEL_SIZE_UM,
) -> DefectPlan:
    """Draw the parameters of one defect of ``kind`` from ``seed`` (no rendering).

    Parameters
    ----------
    kind : {'out_of_focus', 'saturated', 'debris'}
    seed : int or numpy.random.SeedSequence
    field_size : int
        Field side in pixels.
    pixel_size_um : float
        Micrometres per pixel.
    """
    if kind not in DEFECT_KINDS:
        raise ValueError(f"unknown defect {kind!r}; expected one of {DEFECT_KINDS}")
    rng = _rng(seed)
    s = 1.0 / pixel_size_um
    if kind == "out_of_focus":
        sigma = float(rng.uniform(1.0, 2.0) * s)
        return DefectPlan(
            kind,
            ("nucleus", "protein"),
            (("sigma_px", sigma),),
            f"defocus blur, Gaussian sigma {sigma:.1f} px",
        )
    ch = "protein" if rng.random() < 0.6 else "nucleus"
    y, x = (float(v) for v in rng.uniform(0.15, 0.85, 2) * field_size)
    if kind == "saturated":
        r = float(rng.uniform(0.12, 0.25) * field_size)
        peak = float(rng.uniform(2.5, 4.0) * FULL_SCALE)
        params = (
            ("peak_adu", peak),
            ("radius_px", r),
            ("seed", float(rng.integers(2**31))),
            ("x", x),
            ("y", y),
        )
        return DefectPlan(
            kind,
            (ch,),
            params,
            f"overexposed region clipped at {FULL_SCALE} ADU, radius {r:.0f} px "
            f"at (x={x:.0f}, y={y:.0f})",
        )
    fibre = rng.random() < 0.6
    amp = float(rng.uniform(4000, 20000))
    length = float(rng.uniform(0.15, 0.5) * field_size)
    shape = "fibre" if fibre else "particle cluster"
    size = f"length {length:.0f} px" if fibre else f"size {length / 6:.0f} px"
    return DefectPlan(
        kind,
        (ch,),
        (
            ("amp_adu", amp),
            ("fibre", float(fibre)),
            ("length_px", length),
            ("seed", float(rng.integers(2**31))),
            ("x", x),
            ("y", y),
        ),
        f"bright {shape}, {size}, ~{amp:.0f} ADU at (x={x:.0f}, y={y:.0f})",
    )


def _defect_signal(
    plan: DefectPlan, shape: tuple[int, int], off: int, px_per_um: float
) -> np.ndarray:
    """Additive signal (ADU, float32) of a saturated region or debris on the padded canvas."""
    h, w = shape
    y, x = plan.get("y") + off, plan.get("x") + off
    if plan.kind == "saturated":
        r = plan.get("radius_px")
        yy = np.arange(h, dtype=np.float32)[:, None] - y
        xx = np.arange(w, dtype=np.float32)[None, :] - x
        rng = _rng(int(plan.get("seed")))
        blob = np.exp(-0.5 * (yy**2 + xx**2) / (0.6 * r) ** 2)
        blob *= np.exp(0.4 * _noise(rng, shape, 0.2 * r))  # an irregular, lumpy region
        return (plan.get("peak_adu") * blob).astype(np.float32)
    rng = _rng(int(plan.get("seed")))
    length = plan.get("length_px")
    if plan.get("fibre") > 0.5:
        steps = int(length * 2)
        ang = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.06, steps))
        ys = y + np.cumsum(np.sin(ang) * 0.5)
        xs = x + np.cumsum(np.cos(ang) * 0.5)
        wts = np.clip(1 + 0.3 * rng.standard_normal(steps), 0.3, None) * 0.4
        img = _splat(shape, ys, xs, wts, 0.35 * px_per_um)
    else:
        k = int(rng.integers(8, 30))
        ys = y + rng.normal(0, length / 12, k)
        xs = x + rng.normal(0, length / 12, k)
        img = _splat(shape, ys, xs, rng.uniform(0.5, 1.0, k), rng.uniform(0.3, 0.8) * px_per_um)
    return (plan.get("amp_adu") * np.minimum(img, 1.5)).astype(np.float32)


def illumination_profile(
    shape: tuple[int, int], centre: tuple[float, float], strength: float
) -> np.ndarray:
    """Smooth vignette: 1 at ``centre`` (fractions of height, width), ``1 - strength`` at the
    farthest corner (float32, shape ``shape``)."""
    h, w = shape
    yy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h - centre[0]
    xx = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w - centre[1]
    r2 = yy**2 + xx**2
    rmax = max((a - centre[0]) ** 2 + (b - centre[1]) ** 2 for a in (0, 1) for b in (0, 1))
    return (1 - strength * r2 / rmax).astype(np.float32)


def _camera(rng: np.random.Generator, photons_adu: np.ndarray) -> np.ndarray:
    """Expected ADU above offset -> uint16 camera image (shot noise, offset, read noise)."""
    lam = np.maximum(photons_adu, 0).astype(np.float64) / GAIN_ADU_PER_E
    e = rng.poisson(lam).astype(np.float32)
    adu = e * np.float32(GAIN_ADU_PER_E) + np.float32(CAMERA_OFFSET_ADU)
    adu += rng.standard_normal(lam.shape, dtype=np.float32) * np.float32(READ_NOISE_ADU)
    return np.clip(np.rint(adu), 0, FULL_SCALE).astype(np.uint16)


# --------------------------------------------------------------------------------------
# one field
# --------------------------------------------------------------------------------------


@dataclass
class SimulatedField:
    """One rendered field and its ground truth.

    Attributes
    ----------
    nucleus, protein : numpy.ndarray
        uint16, shape (field_size, field_size), axis order (y, x): camera images in ADU.
    nucleus_labels : numpy.ndarray
        int32, same shape: 0 background, k > 0 the nucleus of cell k (ids need not be
        consecutive: cells are laid out on a padded canvas and cropped).
    cell_labels : numpy.ndarray
        int32, same shape: the whole cell k, nucleus included.
    nucleolus_mask : numpy.ndarray
        bool, same shape.
    protein_signal : numpy.ndarray
        float32, same shape: noiseless, unblurred protein fluorophore map (ADU above
        background at the illumination centre) before optics and camera.
    defects : list of (channel, defect, detail)
        Defects rendered into this field.
    """

    nucleus: np.ndarray
    protein: np.ndarray
    nucleus_labels: np.ndarray
    cell_labels: np.ndarray
    nucleolus_mask: np.ndarray
    protein_signal: np.ndarray
    defects: list[tuple[str, str, str]] = field(default_factory=list)


def _as_locs(localizations) -> tuple[Localization, ...]:
    out = []
    for loc in localizations:
        if isinstance(loc, Localization):
            out.append(loc)
        elif isinstance(loc, str):
            out.append(Localization(loc, 3))
        else:
            name, grade = loc
            out.append(Localization(str(name), int(grade)))
    for loc in out:
        if loc.name not in PATTERNS:
            raise ValueError(f"unknown localization {loc.name!r}; expected one of {LOCALIZATIONS}")
        if loc.grade not in GRADE_WEIGHT:
            raise ValueError(f"grade of {loc.name!r} must be 1, 2 or 3, got {loc.grade}")
    return tuple(out)


def render_field(
    localizations: Sequence = ("nucleoplasm",),
    seed: int | np.random.SeedSequence = 0,
    *,
    field_size: int = FIELD_SIZE,
    pixel_size_um: float = PIXEL_SIZE_UM,
    expression: float = 1500.0,
    density: float = 1.0,
    illumination: Mapping[str, tuple[tuple[float, float], float]] | None = None,
    defect: DefectPlan | str | None = None,
) -> SimulatedField:
    """Render one field: a Hoechst image and a tagged-protein image with ground truth.

    Parameters
    ----------
    localizations : sequence
        The protein's localizations: :class:`~assets_pkg.core.imaging.plates.Localization` objects,
        ``(name, grade)`` pairs or bare names (grade 3), names from
        :data:`~assets_pkg.core.imaging.plates.LOCALIZATIONS`.  Patterns are mixed with weights
        :data:`GRADE_WEIGHT` by grade.
    seed : int or numpy.random.SeedSequence
        Everything random derives from it (layout, protein pattern, camera noise, defect
        parameters use separate child streams).
    field_size : int
        Side of the square field in pixels.
    pixel_size_um : float
        Micrometres per pixel at the sample; cell sizes are physical, so a smaller pixel
        size gives larger cells in pixels.
    expression : float
        Brightness of the protein's bright structures in ADU above background at the
        illumination centre (before per-cell variation, which is log-normal, sigma 0.3).
    density : float
        Multiplies the mean number of cells (about 32 per 512 x 512 field at 0.2 um).
    illumination : mapping channel -> ((centre_y, centre_x), strength), optional
        Vignette per channel (centre as fractions of the field); drawn from ``seed`` if
        omitted.
    defect : DefectPlan or str, optional
        A planned defect (:func:`plan_defect`) or a kind, planned from ``seed``.

    Returns
    -------
    SimulatedField
    """
    if field_size < 16:
        raise ValueError(f"field_size must be at least 16 px, got {field_size}")
    if not 0.02 <= pixel_size_um <= 2.0:
        raise ValueError(f"pixel_size_um must be in 0.02..2 um, got {pixel_size_um}")
    locs = _as_locs(localizations)
    if isinstance(defect, str):
        defect = plan_defect(defect, _seq(seed, _F_DEFECT), field_size, pixel_size_um)

    s = 1.0 / pixel_size_um
    pad = int(math.ceil(_PAD_UM * s))
    shape = (field_size + 2 * pad, field_size + 2 * pad)
    crop = (slice(pad, pad + field_size), slice(pad, pad + field_size))

    g = _make_geometry(_rng(seed, _F_LAYOUT), shape, s, density)
    rng_p = _rng(seed, _F_PROTEIN)
    rng_c = _rng(seed, _F_CAMERA)

    # Hoechst fluorophore map (ADU above background)
    nuc_level = np.concatenate([[0.0], rng_c.lognormal(0, 0.2, g.n)]).astype(np.float32)
    hoechst = 1650.0 * nuc_level[g.nuclei] * _chromatin(g, rng_c)
    hoechst += 40.0 * _soft_cyto(g)  # faint cytoplasmic Hoechst

    # protein fluorophore map
    total_w = 0.0
    prot = np.zeros(shape, np.float32)
    for loc in locs:
        wgt = GRADE_WEIGHT[loc.grade]
        prot += wgt * PATTERNS[loc.name](g, rng_p)
        total_w = max(total_w, wgt)
    cell_level = np.concatenate([[0.0], rng_p.lognormal(0, 0.3, g.n)]).astype(np.float32)
    prot *= np.float32(expression / max(total_w, 1e-6)) * cell_level[g.cells]
    prot += 35.0 * (g.cells > 0)  # cellular autofluorescence in the green channel

    signals = {"nucleus": hoechst.astype(np.float32), "protein": prot}
    rows: list[tuple[str, str, str]] = []
    if defect is not None:
        for ch in defect.channels:
            rows.append((ch, defect.kind, defect.detail))
        if defect.kind in ("saturated", "debris"):
            ch = defect.channels[0]
            signals[ch] = signals[ch] + _defect_signal(defect, shape, pad, s)

    if illumination is None:
        rng_i = _rng(seed, _F_CAMERA, 1)
        centre = tuple(float(v) for v in rng_i.normal(0.5, 0.06, 2))
        illumination = {ch: (centre, float(rng_i.uniform(0.15, 0.35))) for ch in CHANNELS}

    out = {}
    for ch, sig in signals.items():
        em = CHANNELS[ch]["emission_nm"]
        sigma = psf_sigma_px(em, pixel_size_um)
        haze_w = 0.08
        if defect is not None and defect.kind == "out_of_focus":
            sigma = math.hypot(sigma, defect.get("sigma_px"))
            haze_w = 0.25
        img = ndi.gaussian_filter(sig, sigma) if sigma < 4 else _blur_wide(sig, sigma)
        img = (1 - haze_w) * img + haze_w * _blur_wide(sig, 2.5 * s)
        img = img[crop] + np.float32(CHANNELS[ch]["background_adu"])
        centre, strength = illumination[ch]
        img *= illumination_profile(img.shape, centre, strength)
        out[ch] = _camera(rng_c, img)

    return SimulatedField(
        nucleus=out["nucleus"],
        protein=out["protein"],
        nucleus_labels=np.ascontiguousarray(g.nuclei[crop]),
        cell_labels=np.ascontiguousarray(g.cells[crop]),
        nucleolus_mask=np.ascontiguousarray(g.nucleolus[crop] > 0.5),
        protein_signal=np.ascontiguousarray(prot[crop]),
        defects=rows,
    )


# --------------------------------------------------------------------------------------
# plates
# --------------------------------------------------------------------------------------


def _parse_start(start_time: str) -> datetime:
    try:
        t = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"start_time {start_time!r} is not an ISO 8601 timestamp") from e
    if t.tzinfo is None:
        raise ValueError(f"start_time {start_time!r} has no time zone; end it with 'Z' (UTC)")
    return t.astimezone(UTC)


def acquisition_time(start: datetime, plate_index: int, well_index: int, field_id: int) -> str:
    """ISO 8601 UTC time of a field: plates a day apart, wells 2 min apart, fields 15 s apart."""
    t = start + timedelta(days=plate_index, minutes=2 * well_index, seconds=15 * field_id)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def protein_expression(seed: int, well: WellInfo) -> float:
    """Deterministic expression level (ADU) of a protein: log-normal, median 1500 ADU."""
    key = int(well.ensg_id[4:]) if well.ensg_id[4:].isdigit() else sum(well.ensg_id.encode())
    rng = _rng(seed, _S_PROTEIN, key)
    return float(np.clip(rng.lognormal(math.log(1500.0), 0.55), 300.0, 12000.0))


def _resolve_panel(proteins) -> tuple[list[WellInfo], str]:
    from .proteins import load_panel

    if proteins is None:
        return load_panel(None), "default_panel.csv"
    if isinstance(proteins, pd.DataFrame):
        return load_panel(proteins), "<DataFrame>"
    if isinstance(proteins, (str, Path)):
        return load_panel(proteins), Path(proteins).name
    panel = list(proteins)
    if not panel or not all(isinstance(w, WellInfo) for w in panel):
        raise TypeError("proteins must be None, a CSV path, a DataFrame or a list of WellInfo")
    return panel, "<list>"


class _LazyImages(Mapping):
    """(well, field_id, channel) -> uint16 image, rendered on first access of a field.

    Keeps one field (both channels) in memory, so a plate of any size is written with
    bounded memory, and advances the progress bar as fields are rendered.
    """

    def __init__(self, keys, render, bar):
        self._keys = list(keys)
        self._set = set(self._keys)
        self._render = render
        self._bar = bar
        self._cached: tuple | None = None
        self._field: SimulatedField | None = None

    def __getitem__(self, key):
        if key not in self._set:
            raise KeyError(key)
        well, fid, ch = key
        if self._cached != (well, fid):
            self._field = self._render(well, fid)
            self._cached = (well, fid)
            if self._bar is not None:
                self._bar.update(1)
        return getattr(self._field, ch)

    def __iter__(self) -> Iterator:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def simulate_plates(
    out_dir,
    n_plates: int,
    seed: int,
    proteins=None,
    wells: int = 8,
    fields_per_well: int = 2,
    field_size: int = FIELD_SIZE,
    defects: bool = False,
    defect_rate: float = 0.1,
    plate_prefix: str = "plate",
    start_time: str = "2026-01-05T09:00:00Z",
    progress: bool = False,
) -> list[Path]:
    """Write synthetic OpenCell-like plate folders.

    Parameters
    ----------
    out_dir : path-like
        Parent folder; plates land in ``out_dir/<plate_prefix><NN>`` (``plate01`` ...).
        None of them may exist yet (checked before anything is rendered).
    n_plates : int
        Number of plates.
    seed : int
        Seeds everything: panel order, layouts, patterns, noise, defects.
    proteins : None, path-like, pandas.DataFrame or list of WellInfo
        The panel: ``None`` for the packaged default, or an OpenCell-format annotation table
        (see :func:`assets_pkg.core.imaging.proteins.load_panel`).
    wells : int
        Wells per plate (``A01`` .. in row-major 384-well order), one protein per well.
        The panel is shuffled once from ``seed``; plate k (0-based) takes panel entries
        ``k * wells .. k * wells + wells - 1`` (modulo the panel size), so enough plates
        cover the whole panel.
    fields_per_well : int
        Fields imaged per well.
    field_size : int
        Side of each square image in pixels (pixel size 0.2 um).
    defects : bool
        Inject acquisition defects and write ``defects.csv``.
    defect_rate : float
        Probability that a field has a defect (one of :data:`DEFECT_KINDS`, equally likely).
    plate_prefix : str
        Plate id prefix.
    start_time : str
        ISO 8601 time with zone of the first field; later fields are offset from it
        deterministically (:func:`acquisition_time`).
    progress : bool
        Show a tqdm progress bar over fields.

    Returns
    -------
    list of Path
        The plate folders, in order.
    """
    if n_plates < 1:
        raise ValueError(f"n_plates must be >= 1, got {n_plates}")
    if fields_per_well < 1:
        raise ValueError(f"fields_per_well must be >= 1, got {fields_per_well}")
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must be in 0..1, got {defect_rate}")
    start = _parse_start(start_time)
    well_list = plates.well_names(wells)
    panel, panel_source = _resolve_panel(proteins)
    out_dir = Path(out_dir)
    plate_ids = [plates.check_plate_id(f"{plate_prefix}{k + 1:02d}") for k in range(n_plates)]
    for pid in plate_ids:
        if (out_dir / pid).exists():
            raise plates.PlateFormatError(
                "plate folder already exists; refusing to overwrite", path=out_dir / pid
            )

    order = _rng(seed, _S_PANEL).permutation(len(panel))
    from .proteins import panel_to_frame

    panel_sha = hashlib.sha256(
        panel_to_frame(panel).to_csv(index=False, lineterminator="\n").encode()
    ).hexdigest()

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_plates * wells * fields_per_well, desc="simulating fields", unit="field")

    written: list[Path] = []
    try:
        for k, pid in enumerate(plate_ids):
            prng = _rng(seed, _S_PLATE, k)
            centre = tuple(float(v) for v in prng.normal(0.5, 0.05, 2))
            plate_illum = {ch: (centre, float(prng.uniform(0.15, 0.3))) for ch in CHANNELS}
            plate_wells = {
                w: panel[order[(k * wells + j) % len(panel)]] for j, w in enumerate(well_list)
            }
            levels = {w: protein_expression(seed, info) for w, info in plate_wells.items()}

            plans: dict[tuple[str, int], DefectPlan] = {}
            rows, defect_rows = [], []
            for j, w in enumerate(well_list):
                info = plate_wells[w]
                for f in range(fields_per_well):
                    if defects:
                        drng = _rng(seed, _S_FIELD, k, j, f, _F_DEFECT)
                        if drng.random() < defect_rate:
                            kind = DEFECT_KINDS[int(drng.integers(len(DEFECT_KINDS)))]
                            plan = plan_defect(
                                kind,
                                _seq(seed, _S_FIELD, k, j, f, _F_DEFECT, 1),
                                field_size,
                                PIXEL_SIZE_UM,
                            )
                            plans[(w, f)] = plan
                            for ch in plan.channels:
                                defect_rows.append((pid, w, f, ch, plan.kind, plan.detail))
                    t = acquisition_time(start, k, j, f)
                    for ch, c in CHANNELS.items():
                        rows.append(
                            {
                                "well": w,
                                "field_id": f,
                                "channel": ch,
                                "bit_depth": BIT_DEPTH,
                                "gene": info.gene,
                                "ensg_id": info.ensg_id,
                                "cell_line": CELL_LINE,
                                "instrument": INSTRUMENT,
                                "objective": OBJECTIVE,
                                "numerical_aperture": NUMERICAL_APERTURE,
                                "pixel_size_um": PIXEL_SIZE_UM,
                                "exposure_ms": c["exposure_ms"],
                                "excitation_nm": c["excitation_nm"],
                                "emission_nm": c["emission_nm"],
                                "acquisition_time": t,
                                "operator": OPERATOR,
                                "fixation": FIXATION,
                                "stain": c["stain"],
                                "site": SITE,
                            }
                        )

            well_index = {w: j for j, w in enumerate(well_list)}

            def render(
                w: str,
                f: int,
                k=k,
                plate_wells=plate_wells,
                levels=levels,
                plans=plans,
                plate_illum=plate_illum,
                well_index=well_index,
            ) -> SimulatedField:
                return render_field(
                    plate_wells[w].localizations,
                    _seq(seed, _S_FIELD, k, well_index[w], f),
                    field_size=field_size,
                    pixel_size_um=PIXEL_SIZE_UM,
                    expression=levels[w],
                    illumination=plate_illum,
                    defect=plans.get((w, f)),
                )

            keys = [
                (w, f, ch) for w in well_list for f in range(fields_per_well) for ch in CHANNELS
            ]
            extra_files = None
            if defects:
                buf = io.StringIO()
                pd.DataFrame(defect_rows, columns=list(DEFECTS_COLUMNS)).to_csv(
                    buf, index=False, lineterminator="\n"
                )
                extra_files = {plates.DEFECTS_CSV: buf.getvalue().encode("utf-8")}
            extra_info = {
                "instrument": INSTRUMENT,
                "objective": OBJECTIVE,
                "numerical_aperture": NUMERICAL_APERTURE,
                "pixel_size_um": PIXEL_SIZE_UM,
                "field_size": field_size,
                "fields_per_well": fields_per_well,
                "cell_line": CELL_LINE,
                "channels": {
                    ch: {kk: v for kk, v in c.items() if kk != "background_adu"}
                    for ch, c in CHANNELS.items()
                },
                "simulator": {
                    "name": SIMULATOR_NAME,
                    "version": SIMULATOR_VERSION,
                    "seed": int(seed),
                    "plate_index": k,
                    "n_plates": n_plates,
                    "wells": wells,
                    "defects": bool(defects),
                    "defect_rate": float(defect_rate),
                    "start_time": start_time,
                    "panel_source": panel_source,
                    "panel_size": len(panel),
                    "panel_sha256": panel_sha,
                    "camera_offset_adu": CAMERA_OFFSET_ADU,
                    "read_noise_adu": READ_NOISE_ADU,
                    "gain_adu_per_e": GAIN_ADU_PER_E,
                    "expression_adu": {w: round(v, 1) for w, v in sorted(levels.items())},
                },
            }
            written.append(
                plates.write_plate(
                    out_dir,
                    pid,
                    _LazyImages(keys, render, bar),
                    rows,
                    plate_wells,
                    extra_info=extra_info,
                    extra_files=extra_files,
                )
            )
    finally:
        if bar is not None:
            bar.close()
    return written
