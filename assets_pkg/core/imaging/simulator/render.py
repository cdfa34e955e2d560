"""One field of the virtual microscope: layout, fluorophore maps, optics, camera, defect.

:func:`render_field` composes the steps of :mod:`.geometry`, :mod:`.patterns`,
:mod:`.optics` and :mod:`.defects` and returns the two camera images with their ground
truth (:class:`SimulatedField`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..plates import LOCALIZATIONS, Localization
from .common import (
    CHANNELS,
    FIELD_SIZE,
    PIXEL_SIZE_UM,
    SUB_CAMERA,
    SUB_DEFECT,
    SUB_LAYOUT,
    SUB_PROTEIN,
    child_rng,
    child_seq,
)
from .defects import DefectPlan, defect_signal, plan_defect
from .geometry import make_geometry
from .optics import blur_wide, camera_image, illumination_profile, psf_sigma_px
from .patterns import GRADE_WEIGHT, PATTERNS, chromatin_density

_PAD_UM = 6.0  # rendered margin, cropped at the end (no edge artefacts)


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
        defect = plan_defect(defect, child_seq(seed, SUB_DEFECT), field_size, pixel_size_um)

    s = 1.0 / pixel_size_um
    pad = int(math.ceil(_PAD_UM * s))
    shape = (field_size + 2 * pad, field_size + 2 * pad)
    crop = (slice(pad, pad + field_size), slice(pad, pad + field_size))

    g = make_geometry(child_rng(seed, SUB_LAYOUT), shape, s, density)
    rng_p = child_rng(seed, SUB_PROTEIN)
    rng_c = child_rng(seed, SUB_CAMERA)

    # Hoechst fluorophore map (ADU above background)
    nuc_level = np.concatenate([[0.0], rng_c.lognormal(0, 0.2, g.n)]).astype(np.float32)
    hoechst = 1650.0 * nuc_level[g.nuclei] * chromatin_density(g, rng_c)
    hoechst += 40.0 * g.soft_cyto  # faint cytoplasmic Hoechst

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
            signals[ch] = signals[ch] + defect_signal(defect, shape, pad, s)
        elif defect.kind == "blank":  # no stain: only the protein channel's autofluorescence is left
            ch = defect.channels[0]
            signals[ch] = (35.0 * (g.cells > 0)).astype(np.float32) if ch == "protein" else np.zeros_like(signals[ch])

    if illumination is None:
        rng_i = child_rng(seed, SUB_CAMERA, 1)
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
        img = ndi.gaussian_filter(sig, sigma) if sigma < 4 else blur_wide(sig, sigma)
        img = (1 - haze_w) * img + haze_w * blur_wide(sig, 2.5 * s)
        img = img[crop] + np.float32(CHANNELS[ch]["background_adu"])
        centre, strength = illumination[ch]
        img *= illumination_profile(img.shape, centre, strength)
        out[ch] = camera_image(rng_c, img)

    return SimulatedField(
        nucleus=out["nucleus"],
        protein=out["protein"],
        nucleus_labels=np.ascontiguousarray(g.nuclei[crop]),
        cell_labels=np.ascontiguousarray(g.cells[crop]),
        nucleolus_mask=np.ascontiguousarray(g.nucleolus[crop] > 0.5),
        protein_signal=np.ascontiguousarray(prot[crop]),
        defects=rows,
    )
