"""Nucleus-centred frames on hand-made fields with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assets_pkg.core.store.frames import (
    FRAME_CHANNELS,
    default_downsample,
    downsample_image,
    extract_frames,
    frame_to_full_coords,
    full_to_frame_coords,
    normalize_field,
    signed_distance,
)


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def make_field(shape=(200, 240), discs=((100, 120, 20),)):
    labels = np.zeros(shape, np.int32)
    for k, (cy, cx, r) in enumerate(discs, start=1):
        labels[disc(shape, cy, cx, r)] = k
    nucleus = np.where(labels > 0, 1000, 100).astype(np.uint16)
    protein = np.zeros(shape, np.uint16)
    protein[:, : shape[1] // 2] = 500  # left half bright
    return nucleus, protein, labels


def test_default_downsample():
    assert default_downsample(0.206) == 2.0
    assert default_downsample(0.1) == 4.0
    assert default_downsample(0.4) == 1.0
    assert default_downsample(0.65) == 1.0  # never upsampled
    assert default_downsample(0.13) == 3.0  # 3.08 snaps to 3 (within 5 %)
    assert default_downsample(0.16) == pytest.approx(0.4 / 0.16)  # 2.5 exactly
    assert default_downsample(0.18) == pytest.approx(0.4 / 0.18)  # 2.22: no snapping
    with pytest.raises(ValueError):
        default_downsample(0)


def test_downsample_block_mean_and_rescale():
    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(downsample_image(img, 2), [[2.5, 4.5], [10.5, 12.5]])
    assert downsample_image(np.ones((101, 99)), 2).shape == (50, 49)
    out = downsample_image(np.ones((90, 90), np.uint16) * 7, 1.5)
    assert out.shape == (60, 60) and out.dtype == np.float32
    np.testing.assert_allclose(out, 7, atol=1e-4)


def test_coordinate_maps_are_inverse():
    y = np.array([0.0, 10.0, 99.5])
    np.testing.assert_allclose(frame_to_full_coords(full_to_frame_coords(y, 2.5), 2.5), y)
    # The 2x2 block {0, 1} downsamples to pixel 0, whose centre is full-res 0.5.
    assert frame_to_full_coords(0, 2) == 0.5


def test_normalize_field():
    img = np.linspace(0, 100, 1001)
    out = normalize_field(img, (0, 100))
    assert out.dtype == np.float32
    assert out.min() == 0 and out.max() == pytest.approx(1)
    np.testing.assert_array_equal(normalize_field(np.full(10, 5.0)), 0)


def test_signed_distance_sign_and_zero_crossing():
    mask = np.zeros((1, 11), bool)
    mask[0, 3:8] = True
    d = signed_distance(mask)
    # Inside +0.5, +1.5, +2.5 from the edge inwards; outside -0.5, -1.5 ...
    np.testing.assert_allclose(d[0], [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 1.5, 0.5, -0.5, -1.5, -2.5])
    assert np.isfinite(signed_distance(np.zeros((4, 4), bool))).all()


def test_frame_centred_on_disc():
    nucleus, protein, labels = make_field(discs=((100, 120, 20),))
    frames, centres = extract_frames(nucleus, protein, labels, downsample=2, crop_size=40)
    assert frames.shape == (1, 40, 40, 3) and frames.dtype == np.float32
    assert len(FRAME_CHANNELS) == 3
    nuc = frames[0, ..., 1]
    # The disc (radius 10 frame pixels) is centred: its intensity centroid is the frame centre
    # up to the half-pixel of the even crop size.
    yy, xx = np.mgrid[:40, :40]
    w = nuc - nuc.min()
    cy, cx = (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()
    assert abs(cy - 19.5) <= 0.6 and abs(cx - 19.5) <= 0.6
    assert nuc[20, 20] == pytest.approx(1, abs=0.05) and nuc[0, 0] == pytest.approx(0, abs=0.05)
    # Protein: left half of the field bright; the frame's left half is bright too.
    assert frames[0, 20, 5, 0] > 0.9 and frames[0, 20, 35, 0] < 0.1
    assert centres.loc[0, "label"] == 1
    assert {"frame_y0", "frame_x0"} <= set(centres.columns)


def test_distance_channel():
    nucleus, protein, labels = make_field(discs=((100, 120, 20),))
    frames, _ = extract_frames(nucleus, protein, labels, downsample=2, crop_size=40)
    d = frames[0, ..., 2]
    assert d[20, 20] > 8  # centre: about one radius (10 frame px) deep
    assert d[0, 0] < -10  # corner: far outside
    # Along the row through the centre the sign changes at the disc edge, 10 px from centre.
    row = d[20]
    inside = np.flatnonzero(row > 0)
    assert 8 <= inside.min() <= 11 and 29 <= inside.max() <= 31
    # Values at the crossing are +-0.5 (the boundary is between pixels).
    k = inside.min()
    assert row[k] == pytest.approx(0.5) and row[k - 1] == pytest.approx(-0.5)


def test_frames_leaving_the_field_are_dropped_or_reflected():
    nucleus, protein, labels = make_field(discs=((100, 120, 20), (20, 20, 12)))
    frames, centres = extract_frames(nucleus, protein, labels, downsample=2, crop_size=40)
    assert centres["label"].tolist() == [1]  # the disc near the corner would leave the field
    frames, centres = extract_frames(
        nucleus, protein, labels, downsample=2, crop_size=40, mode="reflect"
    )
    assert sorted(centres["label"].tolist()) == [1, 2]
    assert frames.shape == (2, 40, 40, 3)
    corner = frames[centres["label"].to_numpy() == 2][0]
    assert corner[..., 2][20, 20] > 0  # still centred on its nucleus
    # min_border keeps frames away from the edge.
    _, centres = extract_frames(nucleus, protein, labels, downsample=2, crop_size=40, min_border=40)
    assert len(centres) == 0


def test_no_protein_channel_and_no_nuclei():
    nucleus, _, labels = make_field()
    frames, _ = extract_frames(nucleus, None, labels, downsample=2, crop_size=40)
    np.testing.assert_array_equal(frames[..., 0], 0)
    frames, centres = extract_frames(nucleus, None, np.zeros_like(labels), downsample=2, crop_size=40)
    assert frames.shape == (0, 40, 40, 3) and len(centres) == 0


def test_given_centres_and_inputs_unchanged():
    nucleus, protein, labels = make_field()
    before = (nucleus.copy(), protein.copy(), labels.copy())
    c = pd.DataFrame({"label": [7], "centre_y": [100.0], "centre_x": [120.0]})
    frames, centres = extract_frames(nucleus, protein, labels, downsample=1.5, crop_size=31, centres=c)
    assert frames.shape == (1, 31, 31, 3) and centres["label"].tolist() == [7]
    assert frames[0, 15, 15, 2] > 0
    for a, b in zip(before, (nucleus, protein, labels), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_inputs():
    nucleus, protein, labels = make_field()
    with pytest.raises(ValueError, match="labels shape"):
        extract_frames(nucleus, protein, labels[:-1], downsample=2)
    with pytest.raises(ValueError, match="mode"):
        extract_frames(nucleus, protein, labels, downsample=2, mode="wrap")
    with pytest.raises(ValueError, match="downsample"):
        extract_frames(nucleus, protein, labels, downsample=0.5)
