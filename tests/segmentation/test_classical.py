"""Classical baseline wrapper, watershed post-processing of network maps, folder scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import segmentation as skseg

from assets_pkg.core.imaging.io import write_tiff
from assets_pkg.core.segmentation import classical as seg
from assets_pkg.core.segmentation import datasets as cs
from assets_pkg.core.segmentation.metrics import match_instances
from assets_pkg.core.segmentation.nuclei import detect_nuclei

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
BBBC039 = DATA / "bbbc039"


def discs(shape, specs):
    """Label image of discs (cy, cx, r), later ones on top."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for k, (cy, cx, r) in enumerate(specs, start=1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = k
    return lab


def image_of(labels, seed=0):
    rng = np.random.default_rng(seed)
    img = np.where(labels > 0, 1000.0, 100.0) + rng.normal(0, 10, labels.shape)
    return np.clip(img, 0, None).astype(np.uint16)


TWO_TOUCHING = discs((96, 128), [(48, 50, 15), (48, 76, 15), (20, 110, 8)])


def test_classical_segment_is_detect_nuclei_with_preset_parameters():
    img = image_of(TWO_TOUCHING)
    lab = seg.classical_segment(img, 30)
    assert lab.dtype == np.int32 and lab.max() == 3
    np.testing.assert_array_equal(lab, detect_nuclei(img, nucleus_diameter_px=30))
    assert seg.classical_count(img, 30) == 3
    p = seg.classical_params("bbbc039", sigma=2.0, min_area=None)
    assert p == {**seg.CLASSICAL_PRESETS["bbbc039"], "sigma": 2.0}
    assert seg.classical_params("bbbc039", nucleus_diameter_px=12)["nucleus_diameter_px"] == 12
    with pytest.raises(KeyError, match="unknown preset"):
        seg.classical_segment(img, preset="nope")
    np.testing.assert_array_equal(
        seg.classical_segment(img, preset="bbbc039"),
        detect_nuclei(img, **seg.CLASSICAL_PRESETS["bbbc039"]),
    )
    assert img.sum() == image_of(TWO_TOUCHING).sum()  # input untouched


def normalised_distance(labels):
    """Per-object distance to the object's edge, divided by the object's maximum."""
    inner = (labels > 0) & ~skseg.find_boundaries(labels, mode="inner")
    d = ndi.distance_transform_edt(inner)
    dmax = ndi.maximum(d, labels, np.arange(labels.max() + 1))
    dmax = np.asarray(dmax)
    return np.where(labels > 0, d / np.maximum(dmax[labels], 1e-9), 0.0)


def test_instances_from_distance_map_split_touching_objects():
    truth = TWO_TOUCHING
    fg = (truth > 0).astype(np.float32) * 0.9 + 0.05
    lab = seg.instances_from_maps(fg, normalised_distance(truth), kind="distance")
    assert lab.dtype == np.int32 and lab.max() == 3
    m = match_instances(lab, truth, 0.8)
    assert m["tp"] == 3 and m["mean_matched_iou"] > 0.9


def test_instances_from_boundary_map():
    truth = TWO_TOUCHING
    boundary = skseg.find_boundaries(truth, mode="inner").astype(np.float32)
    fg = (truth > 0).astype(np.float32)
    lab = seg.instances_from_maps(fg, boundary, kind="boundary")
    m = match_instances(lab, truth, 0.9)
    assert (m["tp"], m["fp"], m["fn"]) == (3, 0, 0)


def test_unmarked_components_and_min_area():
    fg = np.zeros((20, 20), np.float32)
    fg[2:8, 2:8] = 1.0  # has an interior marker
    fg[12:14, 12:14] = 1.0  # 4 px, no marker (distance below threshold)
    dist = np.zeros_like(fg)
    dist[4:6, 4:6] = 1.0
    lab = seg.instances_from_maps(fg, dist, marker_threshold=0.5)
    assert lab.max() == 2 and lab[12, 12] == 2 and lab[2, 2] == 1
    lab = seg.instances_from_maps(fg, dist, marker_threshold=0.5, min_area=5)
    assert lab.max() == 1 and lab[12, 12] == 0
    assert seg.instances_from_maps(np.zeros((4, 4)), np.zeros((4, 4))).max() == 0
    with pytest.raises(ValueError, match="kind"):
        seg.instances_from_maps(fg, dist, kind="centre")
    with pytest.raises(ValueError, match="one shape"):
        seg.instances_from_maps(fg, dist[:5])


def test_score_folder_with_arrays_and_with_a_set(tmp_path):
    truth = TWO_TOUCHING
    img = image_of(truth)
    df = seg.score_folder([img, img], [truth, truth], lambda im: truth.copy(), names=["a", "b"])
    assert list(df["name"]) == ["a", "b"] and (df["f1"] == 1.0).all()
    assert {"seconds", "ap_50_95", "merges", "splits", "pixel_accuracy"} <= set(df.columns)
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    write_tiff(tmp_path / "i" / "x.tif", img)
    write_tiff(tmp_path / "m" / "x.tif", truth.astype(np.uint16))
    s = cs.read_image_mask_folder(tmp_path / "i", tmp_path / "m")
    df = seg.score_folder(s, None, lambda im: seg.classical_segment(im, 30), extra={"method": "c"})
    assert df.loc[0, "name"] == "x" and df.loc[0, "f1"] == 1.0 and df.loc[0, "method"] == "c"
    df = seg.score_folder([tmp_path / "i" / "x.tif"], [tmp_path / "m" / "x.tif"], lambda im: truth)
    assert df.loc[0, "name"] == "x"
    with pytest.raises(ValueError, match="masks"):
        seg.score_folder([img], [], lambda im: truth)
    with pytest.raises(ValueError, match="prediction shape"):
        seg.score_folder([img], [truth], lambda im: truth[:5])


@pytest.mark.skipif(not (BBBC039 / "masks").is_dir(), reason=f"BBBC039 data not found at {BBBC039}")
def test_classical_baseline_on_real_bbbc039_fields():
    s = cs.read_bbbc039(BBBC039)
    _, test = cs.bbbc039_split(s.names)
    df = seg.score_folder(s.subset(test[:3]), None, lambda im: seg.classical_segment(im, preset="bbbc039"))
    assert df["f1"].mean() > 0.8, df[["name", "f1"]]
