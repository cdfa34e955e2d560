"""A SIMCEP-like simulator of fluorescent cell populations with exact instance masks.

Modelled on SIMCEP (Lehmussola et al., IEEE TMI 2007) as used for BBBC005: each image shows
``count`` cells; every cell has a cell body (cytoplasm) and a nucleus, both shaped as closed
smoothing splines through jittered polar points, filled with a texture, placed by rejection
sampling with a clustering probability and an overlap limit, then imaged through a point
spread function, a focus blur, vignetting, background autofluorescence and camera noise.

One layout gives two images, in BBBC005's naming ``<well>_C<count>_F<blur>_s<site>_w<stain>``:

- the nucleus stain, ``w1`` by default, and the cell-body stain, ``w2`` by default.  The
  BBBC005 page says "1 = cell body stain, 2 = nuclei stain", but the pixels of the real files
  say the reverse: ``w1`` images hold small round objects (about 31 px across, the nucleus
  size) and ``w2`` images larger irregular ones (about 63 px, the cell size).  The simulator
  follows the pixels, so models trained on it see what they will meet; ``nuclei_stain=2``
  gives the documented convention.

Per image file an exact instance mask is written to ``masks/`` under the same stem: nucleus
labels for the nucleus stain, cell labels for the body stain (label ``k`` is the same cell in
both).  A new nucleus may lie on earlier nuclei by at most ``max_nucleus_overlap`` of its
area, a new cell body on earlier bodies by at most ``max_overlap``; shared pixels belong to
the later cell, except that every cell owns its visible nucleus, so each of the ``count``
labels is present in both masks (checked).  Clustered cells are placed at
``cluster_distance`` cell radii from an existing cell, so that, as in the real files, about a
fifth of the nuclei touch a neighbour at 100 cells per field.

Sizes follow the real BBBC005 F1 files (nucleus area about 780 px, cell about 3,100 px;
object intensity about 140 of 255 on a background of 0..3).  Focus blur follows the BBBC005
page: a Gaussian of sigma ``0.25 * F`` truncated at a diameter of ``F`` pixels (MATLAB's
``fspecial('gaussian', F, 0.25 * F)`` with zero padding), none for ``F = 1``.

Byte-reproducible: image ``i`` draws from ``SeedSequence(seed).spawn(n)[i]`` only (so it does
not depend on ``n_images``), and TIFFs are written without timestamps
(:func:`assets_pkg.core.imaging.io.write_tiff`).

Images are 2-D (height, width) uint8; label images uint16 with 0 = background.

Why one module: it is one short pipeline over one parameter set (:class:`CellSimParams`,
about 100 lines, most of them the documentation of its fields): placement, rendering and
writing all read those fields and share :class:`SimulationError`, and the whole is ~5 % over
the size guide.  If it grows, cut it into a package along its sections (shapes and layout |
rendering | folders), the parameters in a module of their own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.interpolate import splev, splprep
from skimage import draw

from ..errors import CellscapeError
from .bbbc import BBBC005_COUNTS, bbbc005_name
from .io import write_tiff

MASKS_DIR = "masks"


class SimulationError(CellscapeError):
    """The simulator could not produce what was asked (for example too many cells to fit)."""


@dataclass(frozen=True)
class CellSimParams:
    """Appearance and placement of simulated cells (sizes in pixels, intensities in 0..255).

    Attributes
    ----------
    nucleus_radius_px, cell_radius_px : float
        Mean radii (BBBC005: about 15.7 and 31.5).
    radius_cv : float
        Coefficient of variation of radii between cells.
    elongation : float
        Largest axis ratio; each object draws one in ``1 .. elongation``.
    shape_jitter : float
        Relative radial jitter of the spline's control points.
    n_control : int
        Control points of each closed spline.
    nucleus_offset : float
        Largest offset of a nucleus from its cell's centre, as a fraction of
        ``cell_radius - nucleus_radius``.
    clustering_prob : float
        Probability that a new cell is placed next to an existing one (BBBC005: 0.25).
    cluster_distance : (float, float)
        Range of the distance from that cell's centre, in cell radii.
    max_overlap : float
        Largest fraction of a new cell body's area that may lie on earlier bodies.
    max_nucleus_overlap : float
        Largest fraction of a new nucleus's area that may lie on earlier nuclei (the newer
        nucleus owns the shared pixels).
    min_visible : float
        Smallest fraction of a nucleus's area that must lie inside the image.
    max_tries_per_cell : int
        Rejected positions in a row after which a layout is abandoned.
    max_layouts : int
        Layouts tried before :class:`SimulationError` is raised.
    nucleus_intensity, cell_intensity : float
        Mean object intensity before noise.
    intensity_cv : float
        Coefficient of variation of intensity between objects.
    nucleus_texture, cell_texture : float
        Relative amplitude of the intensity texture inside objects.
    nucleus_texture_px, cell_texture_px : float
        Grain size (Gaussian sigma of the texture field).
    psf_sigma_px : float
        In-focus optical blur.
    vignetting : float
        Relative intensity loss in the image corners.
    background : float
        Mean background autofluorescence.
    background_variation : float
        Amplitude of its slow spatial variation.
    photons_per_dn : float
        Detected photons per grey level (shot noise: Poisson of ``signal * photons_per_dn``).
    read_noise : float
        Camera read noise (standard deviation in grey levels; BBBC005 used a CCD noise
        variance of 1e-4 of the full range, about 2.5 grey levels).
    """

    nucleus_radius_px: float = 15.7
    cell_radius_px: float = 31.5
    radius_cv: float = 0.08
    elongation: float = 1.35
    shape_jitter: float = 0.12
    n_control: int = 9
    nucleus_offset: float = 0.35
    clustering_prob: float = 0.25
    cluster_distance: tuple[float, float] = (0.7, 1.5)
    max_overlap: float = 0.5
    max_nucleus_overlap: float = 0.1
    min_visible: float = 0.5
    max_tries_per_cell: int = 400
    max_layouts: int = 5
    nucleus_intensity: float = 150.0
    cell_intensity: float = 150.0
    intensity_cv: float = 0.15
    nucleus_texture: float = 0.15
    cell_texture: float = 0.10
    nucleus_texture_px: float = 1.5
    cell_texture_px: float = 3.0
    psf_sigma_px: float = 1.2
    vignetting: float = 0.15
    background: float = 1.5
    background_variation: float = 1.0
    photons_per_dn: float = 4.0
    read_noise: float = 1.0

    def __post_init__(self):
        for name in ("nucleus_radius_px", "cell_radius_px", "photons_per_dn"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.nucleus_radius_px >= self.cell_radius_px:
            raise ValueError("nucleus_radius_px must be smaller than cell_radius_px")
        for name in (
            "clustering_prob",
            "max_overlap",
            "max_nucleus_overlap",
            "min_visible",
            "vignetting",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.n_control < 4:
            raise ValueError(f"n_control must be >= 4, got {self.n_control}")


@dataclass
class SimulatedCells:
    """One simulated field (both stains) and its ground truth.

    Attributes
    ----------
    nuclei, cells : ndarray of uint8, shape (height, width)
        Nucleus-stain and cell-body-stain images.
    nucleus_labels, cell_labels : ndarray of uint16, shape (height, width)
        Instance masks; label ``k`` is the same cell in both, 1..count.
    count : int
        Number of cells (= number of labels in each mask).
    blur : int
        Focus blur index F.
    centres : ndarray of float64, shape (count, 2)
        Cell centres (y, x).
    layouts_tried : int
        Layouts drawn until one held ``count`` cells.
    """

    nuclei: np.ndarray
    cells: np.ndarray
    nucleus_labels: np.ndarray
    cell_labels: np.ndarray
    count: int
    blur: int
    centres: np.ndarray
    layouts_tried: int


def blur_sigma(blur_index: float) -> float:
    """Gaussian sigma of BBBC005's focus blur index ``F``: ``0.25 * F``, 0 for ``F <= 1``."""
    f = float(blur_index)
    if f < 0:
        raise ValueError(f"blur index must be >= 0, got {blur_index}")
    return 0.0 if f <= 1.0 else 0.25 * f


def focus_blur(image: np.ndarray, blur_index: float) -> np.ndarray:
    """Apply BBBC005's focus blur: a Gaussian (sigma ``0.25 F``) cut at a diameter of ``F`` px.

    Parameters
    ----------
    image : ndarray, shape (height, width)
        Not modified.
    blur_index : float
        BBBC005's ``F`` (1 = in focus, 48 = the blurriest).

    Returns
    -------
    ndarray of float32
        Zero padding at the borders, as MATLAB's ``imfilter``.
    """
    img = np.asarray(image, dtype=np.float32)
    s = blur_sigma(blur_index)
    if s == 0.0:
        return img.copy()
    return ndi.gaussian_filter(img, s, truncate=2.0, mode="constant", cval=0.0)


# ---------------------------------------------------------------------------- shapes
def spline_outline(
    rng: np.random.Generator,
    centre: tuple[float, float],
    radius: float,
    elongation: float = 1.0,
    jitter: float = 0.1,
    n_control: int = 9,
    n_points: int = 96,
) -> np.ndarray:
    """A closed smooth outline through jittered polar control points.

    Parameters
    ----------
    rng : numpy.random.Generator
    centre : (float, float)
        (y, x) of the shape's centre.
    radius : float
        Mean radius in pixels.
    elongation : float
        Axis ratio of the underlying ellipse (>= 1), at a random orientation; the area equals
        a circle of ``radius``.
    jitter : float
        Relative standard deviation of the control points' radii (clipped to +-2.5 sd).
    n_control : int
        Number of control points, at jittered, increasing angles.
    n_points : int
        Number of points of the returned outline.

    Returns
    -------
    ndarray of float64, shape (n_points, 2)
        (y, x) vertices of a periodic cubic spline (``scipy.interpolate.splprep``, ``per=1``).
    """
    k = np.arange(n_control)
    theta = 2 * np.pi * (k + rng.uniform(-0.3, 0.3, n_control)) / n_control
    r = radius * (1.0 + jitter * np.clip(rng.standard_normal(n_control), -2.5, 2.5))
    a = np.sqrt(max(elongation, 1.0))
    phi = rng.uniform(0, np.pi)
    u, v = r * np.cos(theta) * a, r * np.sin(theta) / a
    x = centre[1] + u * np.cos(phi) - v * np.sin(phi)
    y = centre[0] + u * np.sin(phi) + v * np.cos(phi)
    tck, _ = splprep([np.r_[x, x[0]], np.r_[y, y[0]]], s=0, per=1, k=3)
    xs, ys = splev(np.linspace(0.0, 1.0, n_points, endpoint=False), tck)
    return np.stack([ys, xs], axis=1)


def _raster(outline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pixels inside an outline, unclipped (may lie outside the image)."""
    return draw.polygon(outline[:, 0], outline[:, 1])


# ---------------------------------------------------------------------------- layout
@dataclass
class _Cell:
    centre: tuple[float, float]
    body: tuple[np.ndarray, np.ndarray]
    nucleus: tuple[np.ndarray, np.ndarray]


def _propose(rng, cells, shape, p: CellSimParams) -> tuple[float, float]:
    h, w = shape
    if cells and rng.random() < p.clustering_prob:
        base = cells[int(rng.integers(len(cells)))].centre
        ang = rng.uniform(0, 2 * np.pi)
        d = p.cell_radius_px * rng.uniform(*p.cluster_distance)
        return base[0] + d * np.sin(ang), base[1] + d * np.cos(ang)
    return rng.uniform(0, h), rng.uniform(0, w)


def _inside(rr, cc, shape):
    ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
    return rr[ok], cc[ok]


def _try_cell(rng, centre, shape, p: CellSimParams, nuc_owner, body_any) -> _Cell | None:
    """One placement attempt; None when it breaks a rule (see module notes)."""
    h, w = shape
    if not (0 <= centre[0] < h and 0 <= centre[1] < w):
        return None
    size = np.exp(p.radius_cv * np.clip(rng.standard_normal(2), -2.5, 2.5))
    rc, rn = p.cell_radius_px * size[0], p.nucleus_radius_px * size[1]
    body_out = spline_outline(
        rng, centre, rc, rng.uniform(1.0, p.elongation), p.shape_jitter, p.n_control
    )
    ang = rng.uniform(0, 2 * np.pi)
    off = p.nucleus_offset * max(rc - rn, 0.0) * np.sqrt(rng.random())
    nc = (centre[0] + off * np.sin(ang), centre[1] + off * np.cos(ang))
    nuc_out = spline_outline(
        rng, nc, rn, rng.uniform(1.0, p.elongation), p.shape_jitter * 0.7, p.n_control
    )
    nr, ncc = _raster(nuc_out)
    if nr.size == 0:
        return None
    nr_in, nc_in = _inside(nr, ncc, shape)
    if nr_in.size < p.min_visible * nr.size or nr_in.size == 0:
        return None
    if np.count_nonzero(nuc_owner[nr_in, nc_in]) > p.max_nucleus_overlap * nr.size:
        return None
    br, bc = _inside(*_raster(body_out), shape)
    if br.size == 0:
        return None
    # the nucleus must lie inside its own body
    y0, x0 = int(min(br.min(), nr_in.min())), int(min(bc.min(), nc_in.min()))
    hh = int(max(br.max(), nr_in.max())) - y0 + 1
    ww = int(max(bc.max(), nc_in.max())) - x0 + 1
    local = np.zeros((hh, ww), bool)
    local[br - y0, bc - x0] = True
    if not local[nr_in - y0, nc_in - x0].all():
        return None
    if np.count_nonzero(body_any[br, bc]) > p.max_overlap * br.size:
        return None
    return _Cell(centre=(float(centre[0]), float(centre[1])), body=(br, bc), nucleus=(nr_in, nc_in))


def place_cells(
    rng: np.random.Generator, count: int, shape: tuple[int, int], params: CellSimParams
) -> tuple[list[_Cell], int]:
    """Place ``count`` cells by rejection sampling; raise when they do not fit.

    Returns
    -------
    (cells, layouts_tried)

    Raises
    ------
    SimulationError
        When ``params.max_layouts`` layouts each stalled (``params.max_tries_per_cell``
        rejections in a row) before holding ``count`` cells; the message gives the most
        cells placed.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    best = 0
    for layout in range(1, params.max_layouts + 1):
        nuc_owner = np.zeros(shape, bool)
        body_any = np.zeros(shape, bool)
        cells: list[_Cell] = []
        fails = 0
        while len(cells) < count and fails < params.max_tries_per_cell:
            cell = _try_cell(rng, _propose(rng, cells, shape, params), shape, params, nuc_owner, body_any)
            if cell is None:
                fails += 1
                continue
            fails = 0
            cells.append(cell)
            nuc_owner[cell.nucleus] = True
            body_any[cell.body] = True
        if len(cells) == count:
            return cells, layout
        best = max(best, len(cells))
    raise SimulationError(
        f"could place only {best} of {count} cells in a {shape[0]}x{shape[1]} image after "
        f"{params.max_layouts} layouts (max_overlap={params.max_overlap}, "
        f"cell_radius_px={params.cell_radius_px}); use fewer cells, a larger image, smaller "
        "cells or a larger max_overlap",
        field="count",
    )


# ---------------------------------------------------------------------------- rendering
def _texture(rng, shape, sigma: float) -> np.ndarray:
    """Smooth zero-mean, unit-sd random field of grain ``sigma`` (coarse ones drawn small)."""
    step = max(1, int(sigma // 4))
    small = (-(-shape[0] // step) + 1, -(-shape[1] // step) + 1)
    f = ndi.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma / step, mode="wrap")
    if step > 1:
        f = ndi.zoom(f, step, order=1, grid_mode=False)
    f = f[: shape[0], : shape[1]]
    sd = float(f.std())
    return (f - f.mean()) / sd if sd > 0 else f


def _illumination(rng, shape, vignetting: float) -> np.ndarray:
    h, w = shape
    cy = h / 2 + rng.uniform(-0.05, 0.05) * h
    cx = w / 2 + rng.uniform(-0.05, 0.05) * w
    yy = (np.arange(h, dtype=np.float32)[:, None] - cy) / (h / 2)
    xx = (np.arange(w, dtype=np.float32)[None, :] - cx) / (w / 2)
    return 1.0 - vignetting * (yy**2 + xx**2) / 2.0


def _camera(rng, expected: np.ndarray, p: CellSimParams) -> np.ndarray:
    photons = rng.poisson(np.clip(expected, 0, None) * p.photons_per_dn)
    signal = photons / p.photons_per_dn + rng.normal(0.0, p.read_noise, expected.shape)
    return np.clip(np.rint(signal), 0, 255).astype(np.uint8)


def render_cells(
    rng: np.random.Generator | np.random.SeedSequence | int,
    count: int,
    blur: int = 1,
    size: tuple[int, int] = (520, 696),
    params: CellSimParams | None = None,
) -> SimulatedCells:
    """Simulate one field (both stains) in memory.

    Parameters
    ----------
    rng : Generator, SeedSequence or int
        Source of randomness; the same seed gives the same arrays.
    count : int
        Number of cells (>= 0); reached exactly or :class:`SimulationError` is raised.
    blur : int
        BBBC005 focus blur index F (1 = in focus).
    size : (int, int)
        (height, width).
    params : CellSimParams, optional

    Returns
    -------
    SimulatedCells
    """
    p = params or CellSimParams()
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    shape = (int(size[0]), int(size[1]))
    if min(shape) < 1:
        raise ValueError(f"size must be positive, got {size}")
    cells, layouts = place_cells(rng, int(count), shape, p)
    nuc_lab = np.zeros(shape, np.uint16)
    cell_lab = np.zeros(shape, np.uint16)
    nuc_sig = np.zeros(shape, np.float32)
    body_sig = np.zeros(shape, np.float32)
    spread = np.exp(p.intensity_cv * np.clip(rng.standard_normal((max(len(cells), 1), 2)), -2.5, 2.5))
    for k, c in enumerate(cells, start=1):
        cell_lab[c.body] = k  # later cells lie on top
        nuc_lab[c.nucleus] = k
        nuc_sig[c.nucleus] = p.nucleus_intensity * spread[k - 1, 0]
        # overlapping cytoplasm shows the brighter cell, as SIMCEP's BBBC005 images look
        body_sig[c.body] = np.maximum(body_sig[c.body], p.cell_intensity * spread[k - 1, 1])
    for k, c in enumerate(cells, start=1):
        cell_lab[c.nucleus] = k  # every cell owns its whole nucleus
    for what, lab in (("nucleus", nuc_lab), ("cell", cell_lab)):
        present = np.unique(lab)
        if present.size - 1 != len(cells):  # a check of the rules above, never expected
            raise SimulationError(
                f"{what} mask holds {present.size - 1} labels for {len(cells)} cells", field="count"
            )
    nuc_sig *= 1.0 + p.nucleus_texture * _texture(rng, shape, p.nucleus_texture_px)
    body_sig *= 1.0 + p.cell_texture * _texture(rng, shape, p.cell_texture_px)
    illum = _illumination(rng, shape, p.vignetting)
    images = []
    for sig in (nuc_sig, body_sig):
        sharp = ndi.gaussian_filter(np.clip(sig, 0, None), p.psf_sigma_px, mode="constant")
        blurred = focus_blur(sharp, blur)
        autofl = p.background + p.background_variation * _texture(rng, shape, min(shape) / 6.0)
        images.append(_camera(rng, illum * (blurred + np.clip(autofl, 0, None)), p))
    centres = np.array([c.centre for c in cells], dtype=np.float64).reshape(-1, 2)
    return SimulatedCells(
        nuclei=images[0],
        cells=images[1],
        nucleus_labels=nuc_lab,
        cell_labels=cell_lab,
        count=len(cells),
        blur=int(blur),
        centres=centres,
        layouts_tried=layouts,
    )


# ---------------------------------------------------------------------------- folders
def _resolve_counts(counts, n_images: int, children) -> list[int]:
    if counts is None:
        return [
            int(np.random.default_rng(ch.spawn(1)[0]).choice(BBBC005_COUNTS)) for ch in children
        ]
    if np.isscalar(counts):
        return [int(counts)] * n_images
    counts = [int(c) for c in counts]
    if len(counts) != n_images:
        raise ValueError(f"counts has {len(counts)} entries for {n_images} images")
    return counts


def simulate_cells(
    out_dir: str | Path,
    n_images: int,
    seed: int,
    size: tuple[int, int] = (520, 696),
    counts: int | Sequence[int] | None = None,
    blur_levels: Sequence[int] = (1, 23, 48),
    params: CellSimParams | None = None,
    nuclei_stain: int = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Write a BBBC005-style folder of simulated fields with exact masks.

    Parameters
    ----------
    out_dir : path-like
        Destination; created if missing.  Images go to ``out_dir``, masks (same stem) to
        ``out_dir/masks``.
    n_images : int
        Number of simulated fields; each gives two image files (both stains).
    seed : int
        Root seed; field ``i`` uses ``SeedSequence(seed).spawn(...)[i]`` alone.
    size : (int, int)
        (height, width), default BBBC005's 520 x 696.
    counts : int or sequence of int, optional
        Cells per field: one number for all, one per field, or None to draw each from
        BBBC005's counts (:data:`assets_pkg.core.imaging.bbbc.BBBC005_COUNTS`).
    blur_levels : sequence of int
        Focus blur indices F, used in turn (field ``i`` gets ``blur_levels[i % len]``).
    params : CellSimParams, optional
        Appearance and placement.
    nuclei_stain : {1, 2}
        Stain number of the nucleus image (the other is the cell body); see module notes.
    overwrite : bool
        Replace files already there; otherwise an existing file is an error and nothing is
        written.
    progress : bool
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per image file: ``name``, ``path``, ``mask_path``, ``well``, ``count``,
        ``blur``, ``site``, ``stain``, ``content`` (``"nuclei"`` or ``"cells"``), ``field``
        (index ``i``), ``layouts_tried``.

    Raises
    ------
    SimulationError
        When a field cannot hold its count (nothing later is written), or a file exists and
        ``overwrite`` is False.
    """
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    if nuclei_stain not in (1, 2):
        raise ValueError(f"nuclei_stain must be 1 or 2, got {nuclei_stain}")
    blur_levels = [int(b) for b in blur_levels]
    if not blur_levels:
        raise ValueError("blur_levels must not be empty")
    p = params or CellSimParams()
    out = Path(out_dir)
    children = np.random.SeedSequence(int(seed)).spawn(n_images)
    count_list = _resolve_counts(counts, n_images, children)
    if any(c < 0 for c in count_list):
        raise ValueError("counts must be >= 0")
    body_stain = 3 - nuclei_stain
    plan, sites = [], {}
    for i, (count, blur) in enumerate(
        zip(count_list, (blur_levels[i % len(blur_levels)] for i in range(n_images)), strict=True)
    ):
        key = (count, blur)
        sites[key] = sites.get(key, 0) + 1
        plan.append((i, count, blur, sites[key]))
    targets = [
        out / sub / bbbc005_name(c, b, s, w)
        for _, c, b, s in plan
        for w in (1, 2)
        for sub in (".", MASKS_DIR)
    ]
    if not overwrite:
        clash = [t for t in targets if t.exists()]
        if clash:
            raise SimulationError(
                f"{len(clash)} file(s) already exist, first {clash[0].name}; pass overwrite=True",
                path=clash[0],
            )
    (out / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    items = plan
    if progress:
        from tqdm import tqdm

        items = tqdm(plan, desc="simulate cells", unit="field")
    desc = "cellscape cellsim " + str(
        {k: v for k, v in asdict(p).items()} | {"seed": int(seed)}
    )
    rows = []
    for i, count, blur, site in items:
        sim = render_cells(np.random.default_rng(children[i]), count, blur, size, p)
        content = {nuclei_stain: ("nuclei", sim.nuclei, sim.nucleus_labels)}
        content[body_stain] = ("cells", sim.cells, sim.cell_labels)
        for stain in (1, 2):
            kind, image, labels = content[stain]
            name = bbbc005_name(count, blur, site, stain)
            path, mpath = out / name, out / MASKS_DIR / name
            _write_atomic(path, image, desc + f" field={i} stain={stain} content={kind}")
            _write_atomic(mpath, labels, f"instance labels of {name}")
            rows.append(
                {
                    "name": Path(name).stem,
                    "path": path,
                    "mask_path": mpath,
                    "well": name.split("_")[0],
                    "count": count,
                    "blur": blur,
                    "site": site,
                    "stain": stain,
                    "content": kind,
                    "field": i,
                    "layouts_tried": sim.layouts_tried,
                }
            )
    return pd.DataFrame(rows)


def _write_atomic(path: Path, image: np.ndarray, description: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    write_tiff(tmp, image, description=description)
    os.replace(tmp, path)
