"""Nucleus-centred frames: fixed-size crops of a field, as cytoself trains on.

A frame is a float32 array of shape (crop_size, crop_size, 3), axis order (y, x, channel),
channels :data:`FRAME_CHANNELS`:

0. ``protein``: the tagged protein, normalized per field;
1. ``nucleus``: the DNA stain, normalized per field;
2. ``distance``: signed Euclidean distance to the nearest nuclear boundary, in frame pixels,
   positive inside any nucleus and negative outside, computed from the mask of all nuclei of
   the field after downsampling.  The boundary lies half way between an inside and an outside
   pixel, so the two pixels on either side of it read +0.5 and -0.5.

The field is downsampled once by ``downsample`` (2.0 = half resolution; anti-aliased) so that
a 100-pixel frame holds about three cells, as in cytoself (OpenCell fields at 0.206 um/px are
halved, giving 0.41 um per frame pixel and 41 um frames).  Coordinates map between the two
grids by pixel centres: full-resolution pixel ``y`` lies at ``(y + 0.5) / downsample - 0.5``.

Intensity normalization, per field and channel (robust to hot pixels and to a few very bright
cells): ``(x - p_low) / (p_high - p_low)`` with the ``percentiles`` (default 1 and 99.8) of the
downsampled channel; nothing is clipped, so the background sits near 0 and bright nuclei near 1.
A constant channel (for example an absent protein channel of zeros) becomes all zeros.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage import transform

from ..segmentation.nuclei import nucleus_centres

#: Columns of a plate's frame table (the ingest code fills them; the store keeps them).
FRAME_TABLE_COLUMNS: tuple[str, ...] = (
    "frame_index",
    "frame_id",
    "plate_id",
    "well",
    "field_id",
    "gene",
    "ensg_id",
    "localization",
    "localization_grades",
    "centre_y",
    "centre_x",
    "nucleus_label",
    "nucleus_area_px",
)

FRAME_CHANNELS: tuple[str, ...] = ("protein", "nucleus", "distance")
DEFAULT_CROP_SIZE = 100


def default_downsample(pixel_size_um: float, target_um_per_px: float = 0.4) -> float:
    """Downsampling factor that brings a field to about ``target_um_per_px`` per pixel.

    Never below 1 (fields are not upsampled).  ``default_downsample(0.206) == 2.0`` up to
    rounding: the factor is rounded to the nearest 0.5 when within 5 % of it, so that the usual
    cases use the exact block-mean path.

    Parameters
    ----------
    pixel_size_um : float
        Pixel size of the field at the sample, micrometres.
    target_um_per_px : float
        Wanted frame pixel size, micrometres (default 0.4, cytoself's OpenCell frames).
    """
    if not pixel_size_um > 0 or not target_um_per_px > 0:
        raise ValueError(
            f"pixel sizes must be > 0, got pixel_size_um={pixel_size_um}, "
            f"target_um_per_px={target_um_per_px}"
        )
    f = float(target_um_per_px) / float(pixel_size_um)
    half = round(f * 2) / 2
    if half > 0 and abs(f - half) <= 0.05 * half:
        f = half
    return max(1.0, f)


def downsample_image(image: np.ndarray, downsample: float) -> np.ndarray:
    """Anti-aliased downsampling of a 2-D image; float32 out.

    Integer factors use an exact block mean over ``downsample x downsample`` pixels (the last
    partial row and column of blocks are dropped, so the output is ``floor(shape / f)``);
    other factors use :func:`skimage.transform.rescale` with Gaussian anti-aliasing and
    bilinear interpolation (output ``round(shape / f)``).
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    if not downsample >= 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")
    if downsample == 1:
        return img.copy()
    if float(downsample).is_integer():
        k = int(downsample)
        h, w = img.shape[0] // k, img.shape[1] // k
        return img[: h * k, : w * k].reshape(h, k, w, k).mean(axis=(1, 3), dtype=np.float32)
    out = transform.rescale(
        img, 1.0 / downsample, order=1, anti_aliasing=True, preserve_range=True
    )
    return out.astype(np.float32, copy=False)


def normalize_field(image: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.8)) -> np.ndarray:
    """``(x - p_low) / (p_high - p_low)``, float32, unclipped; zeros for a constant image."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, percentiles)
    span = float(hi - lo)
    if not span > 0:
        return np.zeros(img.shape, np.float32)
    return ((img - np.float32(lo)) / np.float32(span)).astype(np.float32, copy=False)


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance to the mask boundary, pixels: positive inside, negative outside.

    The boundary lies between pixels, so values are ``edt(mask) - 0.5`` inside and
    ``0.5 - edt(~mask)`` outside (+0.5 / -0.5 on either side of it).  A mask with no
    foreground (or no background) gives ``-inf`` (``+inf``) everywhere, replaced by minus (plus)
    the image diagonal so the array stays finite.
    """
    mask = np.asarray(mask, dtype=bool)
    diag = float(np.sqrt(np.sum(np.square(mask.shape))))
    if not mask.any():
        return np.full(mask.shape, -diag, np.float32)
    if mask.all():
        return np.full(mask.shape, diag, np.float32)
    inside = ndi.distance_transform_edt(mask)
    outside = ndi.distance_transform_edt(~mask)
    return np.where(mask, inside - 0.5, 0.5 - outside).astype(np.float32)


def full_to_frame_coords(coord: np.ndarray | float, downsample: float) -> np.ndarray:
    """Full-resolution pixel coordinate(s) -> downsampled pixel coordinate(s) (pixel centres)."""
    return (np.asarray(coord, dtype=np.float64) + 0.5) / float(downsample) - 0.5


def frame_to_full_coords(coord: np.ndarray | float, downsample: float) -> np.ndarray:
    """Downsampled pixel coordinate(s) -> full-resolution pixel coordinate(s) (pixel centres)."""
    return (np.asarray(coord, dtype=np.float64) + 0.5) * float(downsample) - 0.5


def upsample_labels(labels_d: np.ndarray, downsample: float, shape: tuple[int, int]) -> np.ndarray:
    """Label image of a downsampled field brought back to the full-resolution grid (nearest).

    Full-resolution pixel ``(y, x)`` takes the label of the downsampled pixel that holds its
    centre, ``floor((y + 0.5) / downsample)`` (clipped to the downsampled field, so the rows and
    columns a block mean drops take their neighbour's label).  With an integer factor,
    :func:`downsample_image` of the upsampled mask gives back the downsampled mask exactly.

    Parameters
    ----------
    labels_d : ndarray of int, shape (h, w)
        Labels at the frame scale.
    downsample : float
        The factor that made ``labels_d`` (>= 1).
    shape : (int, int)
        Full-resolution (height, width).

    Returns
    -------
    ndarray of int32, shape ``shape``
    """
    lab = np.asarray(labels_d)
    if lab.ndim != 2:
        raise ValueError(f"expected a 2-D label image, got shape {lab.shape}")
    f = float(downsample)
    iy = np.minimum(np.floor((np.arange(shape[0]) + 0.5) / f).astype(np.int64), lab.shape[0] - 1)
    ix = np.minimum(np.floor((np.arange(shape[1]) + 0.5) / f).astype(np.int64), lab.shape[1] - 1)
    return np.ascontiguousarray(lab.astype(np.int32, copy=False)[iy[:, None], ix[None, :]])


def extract_frames(
    nucleus_img: np.ndarray,
    protein_img: np.ndarray | None,
    labels: np.ndarray,
    downsample: float,
    crop_size: int = DEFAULT_CROP_SIZE,
    min_border: int = 0,
    *,
    mode: str = "drop",
    centres: pd.DataFrame | None = None,
    percentiles: tuple[float, float] = (1.0, 99.8),
) -> tuple[np.ndarray, pd.DataFrame]:
    """Cut one nucleus-centred frame per nucleus out of a field.

    Parameters
    ----------
    nucleus_img : ndarray, shape (height, width)
        DNA channel at full resolution (any real dtype).  Not modified.
    protein_img : ndarray, shape (height, width), or None
        Protein channel; None gives an all-zero protein channel.
    labels : ndarray of int, shape (height, width)
        Nucleus label image of the field (0 = background), e.g. from
        :func:`assets_pkg.core.segmentation.nuclei.detect_nuclei`.
    downsample : float
        Factor >= 1 by which the field is shrunk before cropping (see module notes).
    crop_size : int
        Frame side in downsampled pixels (default 100).
    min_border : int
        Frames are kept only when they lie at least this many downsampled pixels inside the
        field (default 0: the frame must fit).  Ignored when ``mode="reflect"``.
    mode : {"drop", "reflect"}
        What to do with frames that would leave the field: drop them (default), or fill the
        outside by mirror reflection of the field (``numpy.pad(mode="reflect")``).
    centres : pandas.DataFrame, optional
        Rows ``label, centre_y, centre_x`` (full-resolution pixels) to crop around; default
        :func:`assets_pkg.core.segmentation.nuclei.nucleus_centres` of ``labels``.
    percentiles : (float, float)
        Low and high percentiles of the per-field normalization.

    Returns
    -------
    frames : ndarray of float32, shape (N, crop_size, crop_size, 3)
        Axis order (frame, y, x, channel); channels (protein, nucleus, distance).
    centres : pandas.DataFrame
        One row per frame, in frame order: the rows of ``centres`` that were kept, plus
        ``frame_y0``, ``frame_x0`` (top-left corner of the frame in downsampled pixels; may be
        negative with ``mode="reflect"``).  The nucleus centre falls on frame pixel
        ``(crop_size // 2, crop_size // 2)``.
    """
    nuc = np.asarray(nucleus_img)
    lab = np.asarray(labels)
    if nuc.ndim != 2:
        raise ValueError(f"nucleus_img must be 2-D (height, width), got shape {nuc.shape}")
    if lab.shape != nuc.shape:
        raise ValueError(f"labels shape {lab.shape} differs from nucleus_img shape {nuc.shape}")
    if protein_img is not None and np.shape(protein_img) != nuc.shape:
        raise ValueError(
            f"protein_img shape {np.shape(protein_img)} differs from nucleus_img shape {nuc.shape}"
        )
    if mode not in ("drop", "reflect"):
        raise ValueError(f"mode must be 'drop' or 'reflect', got {mode!r}")
    crop_size = int(crop_size)
    if crop_size < 1:
        raise ValueError(f"crop_size must be >= 1, got {crop_size}")
    if centres is None:
        centres = nucleus_centres(lab)
    centres = centres.reset_index(drop=True)

    # One pass over the whole field: downsample, then cut every frame at the frame scale.
    nuc_d = downsample_image(nuc, downsample)
    pro_d = None if protein_img is None else downsample_image(protein_img, downsample)
    mask_d = downsample_image((lab > 0).astype(np.float32), downsample) >= 0.5
    cy = full_to_frame_coords(centres["centre_y"].to_numpy(), downsample)
    cx = full_to_frame_coords(centres["centre_x"].to_numpy(), downsample)
    frames, keep, y0k, x0k = cut_frames(
        nuc_d, pro_d, mask_d, cy, cx, crop_size, min_border, mode=mode, percentiles=percentiles
    )
    out = centres.loc[keep].reset_index(drop=True).copy()
    out["frame_y0"] = y0k
    out["frame_x0"] = x0k
    return frames, out


def cut_frames(
    nucleus_d: np.ndarray,
    protein_d: np.ndarray | None,
    mask_d: np.ndarray,
    centre_y: np.ndarray,
    centre_x: np.ndarray,
    crop_size: int = DEFAULT_CROP_SIZE,
    min_border: int = 0,
    *,
    mode: str = "drop",
    percentiles: tuple[float, float] = (1.0, 99.8),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frames of a field that is already at the frame scale (the second half of :func:`extract_frames`).

    Parameters
    ----------
    nucleus_d, protein_d : ndarray, shape (h, w)
        Downsampled, not yet normalized channels (float32); ``protein_d`` None gives zeros.
    mask_d : ndarray of bool, shape (h, w)
        Mask of all nuclei of the field at the frame scale (source of the distance channel).
    centre_y, centre_x : ndarray of float, shape (M,)
        Nucleus centres in frame pixels (pixel centres at integer coordinates).
    crop_size, min_border, mode, percentiles
        As in :func:`extract_frames`.

    Returns
    -------
    frames : ndarray of float32, shape (N, crop_size, crop_size, 3)
    keep : ndarray of bool, shape (M,)
        Which centres gave a frame (frames are in centre order).
    frame_y0, frame_x0 : ndarray of int64, shape (N,)
        Top-left corner of each frame in frame pixels.
    """
    if mode not in ("drop", "reflect"):
        raise ValueError(f"mode must be 'drop' or 'reflect', got {mode!r}")
    crop_size = int(crop_size)
    if crop_size < 1:
        raise ValueError(f"crop_size must be >= 1, got {crop_size}")
    nuc_d = normalize_field(nucleus_d, percentiles)
    pro_d = np.zeros_like(nuc_d) if protein_d is None else normalize_field(protein_d, percentiles)
    h, w = nuc_d.shape
    half = crop_size // 2
    y0 = np.rint(np.asarray(centre_y, np.float64)).astype(np.int64) - half
    x0 = np.rint(np.asarray(centre_x, np.float64)).astype(np.int64) - half
    if mode == "drop":
        b = int(min_border)
        keep = (y0 >= b) & (x0 >= b) & (y0 + crop_size <= h - b) & (x0 + crop_size <= w - b)
    else:
        keep = np.ones(len(y0), bool)
        if crop_size >= min(h, w):
            raise ValueError(
                f"mode='reflect' needs a downsampled field larger than the frame: field "
                f"{h}x{w}, crop_size {crop_size}"
            )
    y0k, x0k = y0[keep], x0[keep]
    n = int(keep.sum())
    frames = np.empty((n, crop_size, crop_size, 3), np.float32)
    if n == 0:
        return frames, keep, y0k, x0k
    # One distance transform per field; every frame gathered with one fancy index into a
    # strided view of each channel (the reflect mode pads the channels first).
    channels = (pro_d, nuc_d, signed_distance(mask_d))
    pad = crop_size if mode == "reflect" else 0
    for c, chan in enumerate(channels):
        if pad:
            chan = np.pad(chan, pad, mode="reflect")
        windows = np.lib.stride_tricks.sliding_window_view(chan, (crop_size, crop_size))
        frames[..., c] = windows[y0k + pad, x0k + pad]
    return frames, keep, y0k, x0k
