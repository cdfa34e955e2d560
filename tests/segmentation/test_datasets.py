"""Cell image set readers: tiny files written here, then the real BBBC data when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage import io

from assets_pkg.core.imaging import bbbc
from assets_pkg.core.imaging.io import write_tiff
from assets_pkg.core.segmentation import datasets as cs

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
BBBC039 = DATA / "bbbc039"
BBBC005 = DATA / "bbbc005"
needs_039 = pytest.mark.skipif(
    not (BBBC039 / "masks").is_dir(), reason=f"BBBC039 reference data not found at {BBBC039}"
)
needs_005 = pytest.mark.skipif(
    not BBBC005.is_dir(), reason=f"BBBC005 reference data not found at {BBBC005}"
)


def test_coloured_png_mask_components_of_one_value(tmp_path):
    ch0 = np.zeros((10, 12), np.uint8)
    ch0[1:4, 1:4] = 1  # nucleus a
    ch0[1:4, 4:7] = 2  # nucleus b touching a, other value
    ch0[6:9, 1:3] = 1  # nucleus c, same value as a but separate
    ch0[6:9, 3:5] = 1  # ... and d: diagonal-only contact with nothing, but touches c
    ch0[6:9, 5:7] = 3
    ch0[0, 11] = 1  # e: corner pixel
    ch0[1, 10] = 1  # f: touches e only diagonally -> separate (4-connectivity)
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = ch0
    rgba[..., 3] = 255
    p = tmp_path / "m.png"
    io.imsave(p, rgba, check_contrast=False)
    lab = cs.load_mask(p)
    assert lab.dtype == np.int32 and lab.shape == (10, 12)
    # a, b, (c+d are one 4-connected region of value 1), the value-3 block, e, f
    assert lab.max() == 6
    assert lab[2, 2] != lab[2, 5]
    assert lab[7, 1] == lab[7, 4]
    assert lab[0, 11] != lab[1, 10]
    assert (lab > 0).sum() == (ch0 > 0).sum()


def test_label_tiff_and_binary_masks(tmp_path):
    lab = np.zeros((8, 8), np.uint16)
    lab[0:3, 0:3] = 7
    lab[0:3, 3:6] = 9
    lab[5:8, 0:3] = 30
    lab[5:8, 5:8] = 31
    lab[4, 4] = 1000
    write_tiff(tmp_path / "l.tif", lab)
    out = cs.load_mask(tmp_path / "l.tif")
    assert out.max() == 5 and out.dtype == np.int32
    np.testing.assert_array_equal(out > 0, lab > 0)
    # the same file forced as coloured splits nothing here (each label is connected)
    assert cs.load_mask(tmp_path / "l.tif", kind="coloured").max() == 5
    # a label split in two pieces stays one instance when read as labels
    lab2 = lab.copy()
    lab2[7, 7] = 7
    write_tiff(tmp_path / "l2.tif", lab2)
    assert cs.load_mask(tmp_path / "l2.tif").max() == 5
    # binary mask: components
    binary = (lab > 0).astype(np.uint8) * 255
    write_tiff(tmp_path / "b.tif", binary)
    assert cs.load_mask(tmp_path / "b.tif").max() == 4  # 7 and 9 touch: one component
    with pytest.raises(cs.CellSetError, match="unknown mask kind"):
        cs.load_mask(tmp_path / "b.tif", kind="rgb")
    with pytest.raises(cs.CellSetError, match="missing"):
        cs.load_mask(tmp_path / "nope.png")


def test_pairing_by_stem_and_lazy_set(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img = np.arange(48, dtype=np.uint16).reshape(6, 8)
    write_tiff(tmp_path / "images" / "b.tif", img)
    io.imsave(tmp_path / "images" / "a.png", img.astype(np.uint8), check_contrast=False)
    write_tiff(tmp_path / "images" / "c.TIF", img)  # no mask
    m = np.zeros((6, 8), np.uint16)
    m[1:3, 1:3] = 4
    write_tiff(tmp_path / "masks" / "a.tif", m)
    write_tiff(tmp_path / "masks" / "b.tif", m)
    write_tiff(tmp_path / "masks" / "zz.tif", m)  # orphan mask: ignored
    s = cs.read_image_mask_folder(tmp_path / "images", tmp_path / "masks")
    assert s.names == ["a", "b", "c"] and len(s) == 3
    name, image, labels = s[0]
    assert name == "a" and image.dtype == np.uint8 and labels.max() == 1
    name, image, labels = s[2]
    assert name == "c" and labels is None and image.dtype == np.uint16
    assert [n for n, _, _ in s[:2]] == ["a", "b"]
    assert s.subset(["b"]).names == ["b"]
    with pytest.raises(cs.CellSetError, match="without a mask"):
        cs.read_image_mask_folder(tmp_path / "images", tmp_path / "masks", require_masks=True)
    write_tiff(tmp_path / "images" / "a.tif", img)
    with pytest.raises(cs.CellSetError, match="share the stem"):
        cs.pair_by_stem(tmp_path / "images")
    with pytest.raises(cs.CellSetError, match="does not exist"):
        cs.pair_by_stem(tmp_path / "nothing")


def test_mask_shape_mismatch_is_reported(tmp_path):
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    write_tiff(tmp_path / "i" / "x.tif", np.zeros((4, 4), np.uint8))
    write_tiff(tmp_path / "m" / "x.tif", np.zeros((4, 5), np.uint8))
    s = cs.read_image_mask_folder(tmp_path / "i", tmp_path / "m")
    with pytest.raises(cs.CellSetError, match="differs from image shape"):
        s[0]


def test_bbbc005_table_and_split(tmp_path):
    names = [bbbc.bbbc005_name(c, f, 1, w) for c in (1, 5, 10) for f in (1, 48) for w in (1, 2)]
    for n in names:
        write_tiff(tmp_path / n, np.zeros((4, 4), np.uint8))
    t = cs.bbbc005_table(tmp_path)
    assert len(t) == 12 and list(t.columns) == [
        "name", "path", "well", "count", "blur", "site", "stain", "mask_path"
    ]  # fmt: skip
    assert sorted(t["count"].unique()) == [1, 5, 10]
    split = cs.bbbc005_split(t)
    assert (split == "test").sum() == 4  # one of each (blur, stain) triple
    assert set(t.loc[split == "test", "count"]) == {10}
    write_tiff(tmp_path / "other.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(cs.CellSetError, match="other.tif"):
        cs.bbbc005_table(tmp_path)


def test_bbbc039_split_is_by_sorted_name():
    train, test = cs.bbbc039_split([f"f{i:03d}" for i in range(150)][::-1])
    assert train[0] == "f000" and train[-1] == "f099" and test == [f"f{i:03d}" for i in range(100, 150)]


@needs_039
def test_real_bbbc039_masks():
    s = cs.read_bbbc039(BBBC039)
    assert len(s) == 150
    name, image, labels = s[0]
    assert image.dtype == np.uint16 and image.shape == (520, 696)
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert 50 <= labels.max() <= 200, f"{name}: {labels.max()} nuclei"
    # labels are consecutive and every nucleus is 4-connected
    assert np.unique(labels).size == labels.max() + 1
    train, test = cs.bbbc039_split(s.names)
    assert (len(train), len(test)) == (100, 50)


@needs_005
def test_real_bbbc005_names_match_the_plate_layout():
    t = cs.bbbc005_table(BBBC005)
    assert len(t) == 180
    info = t["name"].map(bbbc.parse_bbbc005_name)
    cols = info.map(lambda d: d["column"])
    rows = info.map(lambda d: d["row"])
    np.testing.assert_array_equal(t["count"], [bbbc.BBBC005_COUNTS[c - 1] for c in cols])
    np.testing.assert_array_equal(
        t["blur"], [bbbc.BBBC005_BLURS["ABCDEFGHIJKLMNOP".index(r)] for r in rows]
    )
    assert set(t["blur"]) == {1, 23, 48} and set(t["stain"]) == {1, 2}
    assert t.groupby(["blur", "stain"]).size().eq(30).all()
    img = tifffile.imread(t["path"].iloc[0])
    assert img.dtype == np.uint8 and img.shape == (520, 696)
    split = cs.bbbc005_split(t)
    assert split.value_counts().to_dict() == {"train": 120, "test": 60}


def _strata_table(n_per=10, strata=((1, 1), (1, 2), (48, 1))):
    """n_per rows per (blur, stain), counts 1..n_per in name order; each row its own field."""
    rows = [{"name": bbbc.bbbc005_name(c, b, s, w), "count": c, "blur": b, "site": s, "stain": w}
            for (b, w) in strata for s, c in enumerate(range(1, n_per + 1), start=1)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3)  # row order and index must not matter


def test_stratified_folds_cover_balance_and_spread():
    t = _strata_table()
    fold = cs.stratified_folds(t, 5, seed=0)
    assert fold.name == "fold" and fold.index.equals(t.index) and set(fold) == set(range(5))
    per = t.assign(fold=fold).groupby(["blur", "stain", "fold"]).size()
    assert (per == 2).all() and len(per) == 15  # every stratum: 2 rows in each of the 5 folds
    # dealt in count order: each fold gets one of the 5 lowest and one of the 5 highest counts
    low = t.assign(fold=fold)[t["count"] <= 5].groupby(["blur", "stain"]).fold.nunique()
    assert (low == 5).all()
    assert fold.equals(cs.stratified_folds(t, 5, seed=0))
    assert len({tuple(cs.stratified_folds(t, 5, seed=s).sort_index()) for s in range(4)}) > 1
    uneven = cs.stratified_folds(_strata_table(n_per=7), 3, seed=1)
    sizes = _strata_table(n_per=7).assign(fold=uneven).groupby(["blur", "stain", "fold"]).size()
    assert set(sizes) == {2, 3} and len(sizes) == 9


def test_stratified_folds_keep_a_field_in_one_fold():
    t = _strata_table(n_per=10, strata=((1, 1), (1, 2), (48, 1), (48, 2)))
    # the same field (count, site) imaged in several strata: must not straddle folds
    t.loc[(t["count"] == 3), "site"] = 1
    t.loc[(t["count"] == 7) & (t.blur == 48), "site"] = 2
    t.loc[(t["count"] == 7) & (t.blur == 1), "site"] = 2
    for seed in range(5):
        fold = cs.stratified_folds(t, 5, seed=seed)
        assert t.assign(fold=fold).groupby(["count", "site"]).fold.nunique().max() == 1
        assert (t.assign(fold=fold).groupby(["blur", "stain", "fold"]).size() == 2).all()
    free = cs.stratified_folds(t, 5, groups=None, seed=0)
    assert free.index.equals(t.index)


def test_stratified_folds_errors():
    t = _strata_table(n_per=4)
    with pytest.raises(ValueError, match="n_folds"):
        cs.stratified_folds(t, 1)
    with pytest.raises(ValueError, match="fewer than 5 folds"):
        cs.stratified_folds(t, 5)
    with pytest.raises(ValueError, match="lacks"):
        cs.stratified_folds(t.drop(columns="site"), 2)


@needs_005
def test_real_bbbc005_five_folds():
    t = cs.bbbc005_table(BBBC005)
    t["fold"] = cs.stratified_folds(t, 5, seed=0)
    assert (t.groupby(["blur", "stain", "fold"]).size() == 6).all()
    # 15 fields appear in more than one (blur, stain) group in this copy; each stays in one fold
    shared = t.groupby(["count", "site"]).filter(lambda g: len(g) > 1)
    assert shared.groupby(["count", "site"]).ngroups == 15
    assert shared.groupby(["count", "site"]).fold.nunique().max() == 1
