"""Training targets of the segmentation U-Net from instance-label images, in NumPy.

- :func:`seg_targets`: the foreground and the per-object normalised distance to the boundary;
- :func:`centre_targets`: a Gaussian peak at every object's centre (the optional third output);
- :func:`contact_weights` and :func:`small_object_weights`: per-pixel loss weights where nuclei
  meet and on small objects.

Label images are (H, W) integer arrays, axis order (y, x), 0 = background and one positive id
per instance; every result is a float32 (H, W) map of the same shape.  The network and its loss
are in :mod:`assets_pkg.core.segmentation.unet`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["seg_targets", "centre_targets", "contact_weights", "small_object_weights"]


def _label_image(labels) -> np.ndarray:
    """``labels`` as an array, refused unless it is 2-D."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2-D label image, got shape {labels.shape}")
    return labels


def seg_targets(labels) -> tuple[np.ndarray, np.ndarray]:
    """Training targets of an instance-label image.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 = background, one positive id per instance.

    Returns
    -------
    foreground : ndarray of float32, shape (H, W)
        1 inside instances.
    distance : ndarray of float32, shape (H, W)
        Euclidean distance to the nearest background pixel or boundary with another
        instance, divided by its maximum within each instance (so 1 at the centre, in (0, 1]
        inside, 0 on boundaries between touching instances and outside).
    """
    labels = _label_image(labels)
    labels = labels.astype(np.int64)
    fg = labels > 0
    # Pixels 4-adjacent to a different instance separate touching instances.
    touching = np.zeros_like(fg)
    for a, b in (
        (np.s_[1:, :], np.s_[:-1, :]),
        (np.s_[:, 1:], np.s_[:, :-1]),
    ):
        diff = (labels[a] != labels[b]) & (labels[a] > 0) & (labels[b] > 0)
        touching[a] |= diff
        touching[b] |= diff
    separated = fg & ~touching
    dist = ndi.distance_transform_edt(separated).astype(np.float32)
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    maxima = np.asarray(ndi.maximum(dist, inverse, index=np.arange(ids.size)), np.float32)
    denom = maxima[inverse]
    distance = np.where(denom > 0, dist / np.where(denom > 0, denom, 1.0), 0.0).astype(np.float32)
    return fg.astype(np.float32), distance


def centre_targets(labels, sigma: float) -> np.ndarray:
    """Centre-detection target of an instance-label image: a Gaussian of standard deviation
    ``sigma`` pixels around each instance's centre (its centroid, or the pixel farthest from its
    boundary, the peak of :func:`seg_targets`' distance, when the centroid falls outside it), the
    maximum where two overlap.

    Every instance, a 15-pixel fragment as much as a 600-pixel nucleus, gets a peak of 1, unlike
    the per-instance normalised distance, whose peak a network smooths away on small objects.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 = background, one positive id per instance.
    sigma : float
        Width of the peaks, pixels (> 0).

    Returns
    -------
    ndarray of float32, shape (H, W)
        In [0, 1]; 1 at every centre pixel.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    labels = _label_image(labels).astype(np.int64)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return np.zeros(labels.shape, np.float32)
    h, w = labels.shape
    cy, cx = (np.clip(np.rint(c), 0, n - 1).astype(np.int64)
              for c, n in zip(np.asarray(ndi.center_of_mass(np.ones(labels.shape), labels, ids)).T, (h, w),
                              strict=True))
    outside = labels[cy, cx] != ids
    if outside.any():  # crescents and rings: the innermost pixel instead
        inner = np.asarray(ndi.maximum_position(seg_targets(labels)[1], labels, ids[outside]))
        cy[outside], cx[outside] = inner[:, 0], inner[:, 1]
    not_centre = np.ones(labels.shape, bool)
    not_centre[cy, cx] = False
    d = ndi.distance_transform_edt(not_centre)
    return np.exp(-(d**2) / (2.0 * sigma**2)).astype(np.float32)


def contact_weights(labels, weight: float, radius: int = 3) -> np.ndarray:
    """Per-pixel loss weights that stress where two nuclei meet or nearly meet.

    A pixel whose square neighbourhood of half-side ``radius`` holds two different instances
    (the line where touching nuclei meet, both sides of it, and narrow background gaps between
    nuclei) gets ``1 + weight``, every other pixel 1: the few pixels that decide whether two
    nuclei are split or merged count as much as a sizeable share of the field (the weight map
    of Ronneberger et al., 2015, as a band rather than a Gaussian of the two distances).

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 = background, one positive id per instance.
    weight : float
        Extra weight of contact pixels (0: all ones).
    radius : int
        Half-side of the neighbourhood, pixels.

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    labels = _label_image(labels)
    if weight <= 0 or radius < 1:
        return np.ones(labels.shape, np.float32)
    size = 2 * radius + 1
    lab = labels.astype(np.int64)
    big = int(lab.max()) + 1  # above every id (a float-rounded int64 max would not be)
    high = ndi.maximum_filter(lab, size=size, mode="constant", cval=0)
    low = ndi.minimum_filter(np.where(lab > 0, lab, big), size=size, mode="constant", cval=big)
    contact = (low != big) & (high != low)
    return (1.0 + weight * contact).astype(np.float32)


def small_object_weights(labels, weight: float, radius: int = 2, fraction: float = 0.25) -> np.ndarray:
    """Per-pixel loss weights that stress small objects: fragments, micronuclei, debris that the
    annotators labelled.

    A pixel of an instance whose area is below ``fraction`` times the median instance area, or
    within ``radius`` pixels of one (where a fragment meets its neighbour or the background),
    gets ``1 + weight``, every other pixel 1.  Unweighted, an object of 20 pixels is 0.05 % of a
    256² crop's loss and the network merges it into its neighbour or drops it, while the
    instance score counts it as much as a large nucleus.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 = background, one positive id per instance.
    weight : float
        Extra weight of small-object pixels (0: all ones).
    radius : int
        Half-side of the square band around a small object that is weighted too, pixels.
    fraction : float
        Objects smaller than ``fraction * median area`` of this image's instances are small.

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    labels = _label_image(labels)
    if weight <= 0 or labels.max() <= 0:
        return np.ones(labels.shape, np.float32)
    labels = labels.astype(np.int64)
    areas = np.bincount(labels.ravel())
    present = np.flatnonzero(areas[1:]) + 1
    small = np.zeros(areas.size, bool)
    small[present] = areas[present] < fraction * np.median(areas[present])
    mask = small[labels]
    if radius > 0:
        mask = ndi.maximum_filter(mask, size=2 * radius + 1, mode="constant", cval=False)
    return (1.0 + weight * mask).astype(np.float32)
