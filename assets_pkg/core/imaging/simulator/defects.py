"""Acquisition defects: out of focus, saturated regions, debris, blank channels.

A defect is planned (:func:`plan_defect`, parameters only, from its own random stream) and
recorded in ``defects.csv`` by the writer; :func:`~.render.render_field` applies it: a wider PSF and
more haze for ``out_of_focus``, an additive signal (:func:`defect_signal`) for ``saturated`` and
``debris``, and no stain for ``blank`` (the channel keeps background, camera noise and, for the
protein, the cells' autofluorescence: a well whose tag is not expressed, or a missed Hoechst
stain).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import FIELD_SIZE, PIXEL_SIZE_UM, child_rng, smooth_noise, splat
from .optics import FULL_SCALE

#: Defect kinds :func:`simulate_plates` can inject.
DEFECT_KINDS: tuple[str, ...] = ("out_of_focus", "saturated", "debris", "blank")

DEFECTS_COLUMNS = ("plate_id", "well", "field_id", "channel", "defect", "detail")


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
    kind : {'out_of_focus', 'saturated', 'debris', 'blank'}
    seed : int or numpy.random.SeedSequence
    field_size : int
        Field side in pixels.
    pixel_size_um : float
        Micrometres per pixel.
    """
    if kind not in DEFECT_KINDS:
        raise ValueError(f"unknown defect {kind!r}; expected one of {DEFECT_KINDS}")
    rng = child_rng(seed)
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
    if kind == "blank":
        return DefectPlan(kind, (ch,), (), f"blank {ch} channel: no stain, background and camera noise only")
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


def defect_signal(
    plan: DefectPlan, shape: tuple[int, int], off: int, px_per_um: float
) -> np.ndarray:
    """Additive signal (ADU, float32) of a saturated region or debris on the padded canvas."""
    h, w = shape
    y, x = plan.get("y") + off, plan.get("x") + off
    if plan.kind == "saturated":
        r = plan.get("radius_px")
        yy = np.arange(h, dtype=np.float32)[:, None] - y
        xx = np.arange(w, dtype=np.float32)[None, :] - x
        rng = child_rng(int(plan.get("seed")))
        blob = np.exp(-0.5 * (yy**2 + xx**2) / (0.6 * r) ** 2)
        blob *= np.exp(0.4 * smooth_noise(rng, shape, 0.2 * r))  # an irregular, lumpy region
        return (plan.get("peak_adu") * blob).astype(np.float32)
    rng = child_rng(int(plan.get("seed")))
    length = plan.get("length_px")
    if plan.get("fibre") > 0.5:
        steps = int(length * 2)
        ang = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.06, steps))
        ys = y + np.cumsum(np.sin(ang) * 0.5)
        xs = x + np.cumsum(np.cos(ang) * 0.5)
        wts = np.clip(1 + 0.3 * rng.standard_normal(steps), 0.3, None) * 0.4
        img = splat(shape, ys, xs, wts, 0.35 * px_per_um)
    else:
        k = int(rng.integers(8, 30))
        ys = y + rng.normal(0, length / 12, k)
        xs = x + rng.normal(0, length / 12, k)
        img = splat(shape, ys, xs, rng.uniform(0.5, 1.0, k), rng.uniform(0.3, 0.8) * px_per_um)
    return (plan.get("amp_adu") * np.minimum(img, 1.5)).astype(np.float32)
