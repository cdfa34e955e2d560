"""Step 2 of a field, the fluorophore maps: Hoechst chromatin and the 17 protein patterns.

Each protein pattern (one per OpenCell localization class, :data:`PATTERNS`) maps a
:class:`~.geometry.Geometry` and a random stream to a float32 image of the padded canvas,
shape (height, width), axis order (y, x), whose bright structures are ~1; a protein's map
mixes the patterns of its localizations with weights :data:`GRADE_WEIGHT` by grade.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..plates import LOCALIZATIONS
from .common import smooth_noise, splat
from .geometry import Geometry

#: Relative weight of a localization by its grade (3 prominent, 2 clear, 1 weak).
GRADE_WEIGHT = {3: 1.0, 2: 0.4, 1: 0.15}


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


# --------------------------------------------------------------------------------------
# Hoechst
# --------------------------------------------------------------------------------------


def chromatin_density(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    """Chromatin density inside nuclei, mean ~1 (float32): texture, bright periphery,
    nucleoli as holes with a bright perinucleolar rim, condensed mitotic chromatin."""
    s = g.px_per_um
    tex = np.exp(
        0.26 * smooth_noise(rng, g.shape, 0.15 * s)
        + 0.3 * smooth_noise(rng, g.shape, 0.5 * s)
        + 0.15 * smooth_noise(rng, g.shape, 1.2 * s)
    )
    rim = 1 + 0.8 * np.exp(-g.d_in / (0.3 * s))
    nol = g.nucleolus
    nol_wide = ndi.gaussian_filter(nol, 0.35 * s)
    peri = np.clip(nol_wide * 1.6 - nol, 0, None)
    dens = tex * rim * (1 - 0.85 * nol) * (1 + 1.2 * peri)
    mit = g.mitotic[g.nuclei]
    dens = np.where(mit, 2.0 * np.exp(0.5 * smooth_noise(rng, g.shape, 0.3 * s)), dens)
    return np.where(g.nuclei > 0, dens, 0).astype(np.float32)


# --------------------------------------------------------------------------------------
# protein patterns: each returns a float32 map whose bright structures are ~1
# --------------------------------------------------------------------------------------


def _p_nucleoplasm(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    tex = np.exp(0.12 * smooth_noise(rng, g.shape, 0.3 * s))
    out = g.nuc_mask * (1 - 0.85 * g.nucleolus) * tex * 0.8
    return np.where(g.mitotic[g.nuclei], 0.25, out).astype(np.float32) * g.nuc_mask


def _p_nucleolus_gc(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    tex = 0.85 + 0.15 * smooth_noise(rng, g.shape, 0.25 * s)
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
        dots = splat(g.shape, np.concatenate(ys), np.concatenate(xs), np.concatenate(ws), 0.15 * s)
    else:
        dots = np.zeros(g.shape, np.float32)
    return (dots + 0.15 * g.nucleolus + 0.03 * g.nuc_mask).astype(np.float32)


def _p_chromatin(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    return (chromatin_density(g, rng) * 0.45).astype(np.float32)


def _p_nuclear_membrane(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    w = 0.22 * s
    d = np.where(g.nuc_mask, g.d_in, g.d_out)
    line = np.exp(-0.5 * (d / w) ** 2)
    pores = np.exp(0.25 * smooth_noise(rng, g.shape, 0.2 * s))
    out = line * pores + 0.04 * g.nuc_mask
    return np.where(g.mitotic[np.maximum(g.nuclei, g.cells)], 0.1 * (g.cells > 0), out).astype(
        np.float32
    )


def _p_nuclear_punctae(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    weight = g.nuc_mask * (1 - g.nucleolus) * (g.d_in > 0.3 * s) * ~g.mitotic[g.nuclei]
    n = int(g.n * rng.integers(6, 22))
    y, x = _sample_pixels(rng, weight, n)
    dots = splat(g.shape, y, x, rng.lognormal(0, 0.35, len(y)), rng.uniform(0.2, 0.35) * s)
    return (dots + 0.12 * g.nuc_mask * (1 - 0.8 * g.nucleolus)).astype(np.float32)

def _perinuclear(g: Geometry, scale_um: float, floor: float) -> np.ndarray:
    return (floor + np.exp(-g.d_out / (scale_um * g.px_per_um))) * g.cyto_mask


def _p_cytoplasmic(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    tex = np.exp(0.12 * smooth_noise(rng, g.shape, 0.4 * s))
    return (0.75 * g.soft_cyto * tex + 0.06 * g.nuc_mask).astype(np.float32)


def _p_er(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    n1 = smooth_noise(rng, g.shape, 0.35 * s)
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
    frag = np.clip(0.55 + 0.6 * smooth_noise(rng, g.shape, 0.3 * s), 0, None)
    ribbon = ang * rad * frag * (lab > 0) * ~g.mitotic[lab]
    return (1.4 * np.minimum(ribbon, 1.2) + 0.05 * g.soft_cyto).astype(np.float32)


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
    img = splat(g.shape, ys, xs, np.full(len(ys), 0.3), 0.12 * s)
    return (np.minimum(img, 1.2) + 0.04 * g.soft_cyto).astype(np.float32)


def _p_vesicles(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    n = int(g.n * rng.integers(20, 55))
    y, x = _sample_pixels(rng, _perinuclear(g, 3.0, 0.4) * (g.d_cell_edge > 1), n)
    dots = splat(g.shape, y, x, rng.lognormal(0, 0.45, len(y)), rng.uniform(0.18, 0.3) * s)
    return (dots + 0.08 * g.soft_cyto).astype(np.float32)


def _p_membrane(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    line = np.exp(-0.5 * (g.d_cell_edge / (0.2 * s)) ** 2) * (g.cells > 0)
    tex = np.exp(0.2 * smooth_noise(rng, g.shape, 0.4 * s))
    return (line * tex + 0.08 * g.soft_cyto).astype(np.float32)


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
    img = splat(g.shape, ys[keep], xs[keep], wts[keep], 0.1 * s)
    cortex = np.exp(-0.5 * (g.d_cell_edge / (0.3 * s)) ** 2) * (g.cells > 0)
    return (np.minimum(img, 1.2) + 0.3 * cortex + 0.12 * g.soft_cyto).astype(np.float32)


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
        return 0.05 * g.soft_cyto
    phi = g.polarity[ids] + rng.normal(0, 0.3, len(ids))
    y, x = _edge_point(g, ids, phi, rng.uniform(0.2, 0.9, len(ids)) * s)
    two = rng.random(len(ids)) < 0.6
    sep = rng.uniform(0.4, 0.9, len(ids)) * s
    a2 = rng.uniform(0, 2 * np.pi, len(ids))
    ys = np.concatenate([y, (y + sep * np.sin(a2))[two]])
    xs = np.concatenate([x, (x + sep * np.cos(a2))[two]])
    wts = rng.uniform(2.0, 3.0, len(ys))
    dots = splat(g.shape, ys, xs, wts, 0.18 * s)
    halo = splat(g.shape, y, x, np.full(len(y), 0.08), 0.8 * s)
    return (dots + halo + 0.04 * g.soft_cyto).astype(np.float32)


def _p_big_aggregates(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    n = int(rng.binomial(g.n, 0.6) * rng.integers(2, 5))
    y, x = _sample_pixels(rng, g.cyto_mask * (g.d_cell_edge > 0.6 * s), n)
    img = np.zeros(g.shape, np.float32)
    for r in (0.25, 0.5):  # two scales make lumpy, irregular blobs
        img += splat(
            g.shape,
            y + rng.normal(0, r * s, len(y)),
            x + rng.normal(0, r * s, len(x)),
            rng.uniform(0.5, 1.0, len(y)),
            rng.uniform(0.35, 0.6) * s,
        )
    return (np.minimum(img, 1.6) + 0.3 * g.soft_cyto).astype(np.float32)


def _p_cell_contact(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    d = ndi.distance_transform_edt(~g.contacts).astype(np.float32)
    line = np.exp(-0.5 * (d / (0.25 * s)) ** 2) * (g.cells > 0)
    tex = np.clip(0.6 + 0.6 * smooth_noise(rng, g.shape, 0.4 * s), 0, None)
    free = np.exp(-0.5 * (g.d_cell_edge / (0.2 * s)) ** 2) * (g.cells > 0)
    return (line * tex + 0.1 * free + 0.1 * g.soft_cyto).astype(np.float32)


def _p_focal_adhesions(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.px_per_um
    # at the cell periphery, mostly along free edges; a few under the cell body
    edge = g.cyto_mask * ((g.d_cell_edge < 1.2 * s) * np.where(g.contacts, 0.15, 1.0) + 0.03)
    n = int(g.n * rng.integers(8, 18))
    ys, xs = _worms(g, rng, n, edge.astype(np.float32), (0.8, 2.0), 0.1, along_theta=True, steps=12)
    img = splat(g.shape, ys, xs, np.full(len(ys), 0.5), 0.12 * s)
    return (np.minimum(img, 1.4) + 0.25 * g.soft_cyto).astype(np.float32)


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
