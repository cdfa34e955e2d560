"""Step 1 of a field, the layout: nuclei, cell bodies and nucleoli on a padded canvas.

Nuclei are irregular ellipses placed in HEK293T-like colonies (clustered, touching, slightly
compressed where they meet); a cell body is grown from each nucleus by a distance-limited,
asymmetric Voronoi partition.  A few cells are mitotic (small, round, condensed and bright).
Nucleoli (1-4 per nucleus) sit inside.  :func:`make_geometry` draws a :class:`Geometry`;
images have axis order (y, x), lengths are in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .common import FIELD_SIZE, PIXEL_SIZE_UM, smooth_noise

# Cell layout, in micrometres (converted with the pixel size).
_CELLS_PER_UM2 = 32.0 / (FIELD_SIZE * PIXEL_SIZE_UM) ** 2  # ~32 cells per 512 px field
_NUC_SEMI_MAJOR_UM = (7.2, 1.0)  # mean, sd of the semi-major axis
_NUC_AXIS_RATIO = (0.66, 0.92)
_MITOTIC_FRACTION = 0.03
_CYTO_EXTENT_UM = (2.2, 4.5)  # how far a cell reaches beyond its nucleus


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

    @property
    def soft_cyto(self) -> np.ndarray:
        """Cytoplasm mask smoothed by a Gaussian of 0.25 um, zero outside the cytoplasm."""
        if "soft_cyto" not in self._cache:
            c = ndi.gaussian_filter(self.cyto_mask.astype(np.float32), 0.25 * self.px_per_um)
            self._cache["soft_cyto"] = c * self.cyto_mask
        return self._cache["soft_cyto"]


def make_geometry(
    rng: np.random.Generator, shape: tuple[int, int], px_per_um: float, density: float
) -> Geometry:
    """Draw the cells of one field.

    Parameters
    ----------
    rng : numpy.random.Generator
        The field's layout stream.
    shape : (int, int)
        (height, width) of the padded canvas in pixels.
    px_per_um : float
        Pixels per micrometre.
    density : float
        Multiplies the mean number of cells.
    """
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
    extent *= 1 + 0.3 * smooth_noise(rng, shape, 2.0 * s)
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
