"""Nucleus detection: hand-made images with known answers, then the real OpenCell fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assets_pkg.core.segmentation.nuclei import detect_nuclei, expected_diameter_px, nucleus_centres
from assets_pkg.core.store.frames import default_downsample, extract_frames, frame_to_full_coords

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
FOVS = sorted((DATA / "opencell" / "fovs").glob("*.tif"))
OPENCELL_PIXEL_SIZE_UM = 0.206  # Andor iXon 888 (13 um pixels) behind a 63x objective


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def field(discs, shape=(128, 128), bg=100, fg=1000, dtype=np.uint16, seed=0):
    img = np.full(shape, bg, np.float64)
    for cy, cx, r in discs:
        img[disc(shape, cy, cx, r)] = fg
    img += np.random.default_rng(seed).normal(0, 10, shape)
    return np.clip(img, 0, None).astype(dtype)


def centres_sorted(labels):
    c = nucleus_centres(labels).sort_values("centre_x")
    return c[["centre_y", "centre_x"]].to_numpy()


def test_two_separated_discs_give_two_labels_at_their_centres():
    img = field([(40, 35, 14), (80, 95, 14)])
    lab = detect_nuclei(img, nucleus_diameter_px=28)
    assert lab.dtype == np.int32 and lab.shape == img.shape
    assert lab.max() == 2
    np.testing.assert_allclose(centres_sorted(lab), [[40, 35], [80, 95]], atol=1.0)


def test_two_touching_discs_are_split():
    # Centres 26 px apart, radius 15: the discs overlap in a 4 px wide neck.
    img = field([(64, 51, 15), (64, 77, 15)])
    lab = detect_nuclei(img, nucleus_diameter_px=30)
    assert lab.max() == 2
    np.testing.assert_allclose(centres_sorted(lab), [[64, 51], [64, 77]], atol=2.5)
    # Unsplit, the same image is one object.
    assert detect_nuclei(img, nucleus_diameter_px=30, split=False).max() == 1


def test_empty_and_constant_images_have_no_nuclei():
    assert detect_nuclei(np.zeros((64, 64), np.uint16)).max() == 0
    assert detect_nuclei(np.full((64, 64), 500, np.uint16)).max() == 0
    noise = np.random.default_rng(1).normal(100, 5, (64, 64))
    # Pure noise: whatever Otsu picks, nothing nucleus-sized survives.
    assert detect_nuclei(noise, nucleus_diameter_px=30).max() == 0


def test_small_objects_are_removed():
    img = field([(40, 40, 14), (100, 100, 3)])
    lab = detect_nuclei(img, nucleus_diameter_px=28)
    assert lab.max() == 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_dtypes_and_input_not_mutated(dtype):
    img = field([(40, 35, 14), (80, 95, 14)], fg=200, bg=20, dtype=dtype)
    before = img.copy()
    lab = detect_nuclei(img, nucleus_diameter_px=28)
    assert lab.max() == 2
    np.testing.assert_array_equal(img, before)


def test_physical_diameter():
    assert expected_diameter_px(0.2, nucleus_diameter_um=10) == pytest.approx(50)
    assert expected_diameter_px(None, nucleus_diameter_px=12) == 12
    with pytest.raises(ValueError):
        expected_diameter_px(0.0)
    # 28 px discs found with pixel size + physical diameter as with the pixel diameter.
    img = field([(40, 35, 14), (80, 95, 14)])
    a = detect_nuclei(img, pixel_size_um=0.5, nucleus_diameter_um=14)
    b = detect_nuclei(img, nucleus_diameter_px=28)
    np.testing.assert_array_equal(a, b)


def test_nucleus_centres_columns_and_crescent():
    lab = np.zeros((60, 60), np.int32)
    lab[disc(lab.shape, 30, 30, 20) & ~disc(lab.shape, 30, 40, 17)] = 3  # crescent
    c = nucleus_centres(lab)
    assert list(c.columns) == ["label", "centre_y", "centre_x", "area_px"]
    assert c["label"].tolist() == [3]
    y, x = int(round(c.centre_y[0])), int(round(c.centre_x[0]))
    # The centroid of a crescent lies outside it; the centre given lies inside.
    assert lab[y, x] == 3
    assert c.area_px[0] == (lab == 3).sum()
    empty = nucleus_centres(np.zeros((5, 5), np.int32))
    assert len(empty) == 0 and list(empty.columns) == ["label", "centre_y", "centre_x", "area_px"]


@pytest.mark.skipif(not FOVS, reason=f"reference data not found at {DATA} (../shared/data)")
@pytest.mark.parametrize("path", FOVS, ids=[p.stem for p in FOVS])
def test_real_opencell_fields(path):
    import tifffile

    img = tifffile.imread(path)
    lab = detect_nuclei(img, pixel_size_um=OPENCELL_PIXEL_SIZE_UM)
    # 1024x1024 HEK293T fields hold 30..100 nuclei (counted by eye: 33..95 found here).
    assert 25 <= lab.max() <= 120
    areas = np.bincount(lab.ravel())[1:]
    d = expected_diameter_px(OPENCELL_PIXEL_SIZE_UM)
    # Median nucleus about the expected size (a disc of the expected diameter = 1.0).
    assert 0.5 < np.median(areas) / (np.pi * d**2 / 4) < 1.5

    ds = default_downsample(OPENCELL_PIXEL_SIZE_UM)
    frames, centres = extract_frames(img, None, lab, ds)
    assert len(frames) >= 20
    half = frames.shape[1] // 2
    # The centre pixel of every frame lies inside the nucleus it was cut around.
    cy = np.rint(frame_to_full_coords(centres.frame_y0 + half, ds)).astype(int)
    cx = np.rint(frame_to_full_coords(centres.frame_x0 + half, ds)).astype(int)
    np.testing.assert_array_equal(lab[cy, cx], centres["label"].to_numpy())
    assert (frames[:, half, half, 2] > 0).all()
