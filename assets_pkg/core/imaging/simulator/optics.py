"""Optics and camera of the virtual microscope (steps 3 and 4 of a field).

Optics: a Gaussian PSF (:func:`psf_sigma_px`), out-of-focus haze of a max projection (a wide
blur, :func:`blur_wide`) and smooth vignetting (:func:`illumination_profile`).  Camera
(:func:`camera_image`): Poisson shot noise, gain, ~100 ADU offset, Gaussian read noise,
rounding and clipping into uint16.  Images are 2-D, axis order (y, x).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from .common import NUMERICAL_APERTURE, PIXEL_SIZE_UM, upsample

#: Camera model (effective, EMCCD-like): offset, read noise and gain.
CAMERA_OFFSET_ADU = 100.0
READ_NOISE_ADU = 6.0
GAIN_ADU_PER_E = 6.0
FULL_SCALE = 65535


def psf_sigma_px(
    emission_nm: float,
    pixel_size_um: float = PIXEL_SIZE_UM,
    numerical_aperture: float = NUMERICAL_APERTURE,
) -> float:
    """Gaussian PSF sigma in pixels: 0.21 lambda/NA widened by 0.15 um for the z max projection."""
    s_um = math.hypot(0.21 * emission_nm / 1000.0 / numerical_aperture, 0.15)
    return s_um / pixel_size_um


def blur_wide(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur for large ``sigma`` (px), computed on a block-averaged grid."""
    f = max(int(sigma // 3), 1)
    if f == 1:
        return ndi.gaussian_filter(img, sigma)
    h, w = img.shape
    hp, wp = -(-h // f) * f, -(-w // f) * f
    src = np.pad(img, ((0, hp - h), (0, wp - w)), mode="edge") if (hp, wp) != (h, w) else img
    small = src.reshape(hp // f, f, wp // f, f).mean(axis=(1, 3))
    small = ndi.gaussian_filter(small, math.sqrt(max(sigma**2 - (f**2 - 1) / 12.0, 0.25)) / f)
    return upsample(small.astype(np.float32), f, (h, w))


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


def camera_image(rng: np.random.Generator, photons_adu: np.ndarray) -> np.ndarray:
    """Expected ADU above offset -> uint16 camera image (shot noise, offset, read noise)."""
    lam = np.maximum(photons_adu, 0).astype(np.float64) / GAIN_ADU_PER_E
    e = rng.poisson(lam).astype(np.float32)
    adu = e * np.float32(GAIN_ADU_PER_E) + np.float32(CAMERA_OFFSET_ADU)
    adu += rng.standard_normal(lam.shape, dtype=np.float32) * np.float32(READ_NOISE_ADU)
    return np.clip(np.rint(adu), 0, FULL_SCALE).astype(np.uint16)
