"""SIMCEP-like cell simulator: reproducible bytes, exact counts and masks, readable folders."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from assets_pkg.core.imaging import bbbc
from assets_pkg.core.imaging import cellsim as sim
from assets_pkg.core.imaging.plates import sha256_file
from assets_pkg.core.segmentation import datasets as cs

SMALL = (120, 160)
#: Smaller cells so that tests stay fast on small images.
P = sim.CellSimParams(nucleus_radius_px=6.0, cell_radius_px=12.0)


def digests(folder):
    return {
        p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_byte_reproducible_and_independent_of_n_images(tmp_path):
    kw = dict(seed=7, size=SMALL, counts=[3, 12, 0], blur_levels=(1, 23), params=P)
    t1 = sim.simulate_cells(tmp_path / "a", 3, **kw)
    sim.simulate_cells(tmp_path / "b", 3, **kw)
    da, db = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert da == db and len(da) == 12  # 3 fields x 2 stains x (image + mask)
    assert sorted(t1["name"]) == sorted(p.split("/")[-1].rsplit(".", 1)[0] for p in da if "/" not in p)
    # field 0 does not depend on how many fields are asked for
    sim.simulate_cells(tmp_path / "c", 1, seed=7, size=SMALL, counts=[3], blur_levels=(1,), params=P)
    dc = digests(tmp_path / "c")
    assert dc.items() <= da.items()
    # another seed gives other bytes
    sim.simulate_cells(tmp_path / "d", 1, seed=8, size=SMALL, counts=[3], blur_levels=(1,), params=P)
    assert digests(tmp_path / "d") != dc


def test_counts_reached_and_masks_consistent():
    for count in (0, 1, 25):
        s = sim.render_cells(np.random.default_rng(count), count, blur=1, size=SMALL, params=P)
        assert s.nuclei.dtype == np.uint8 and s.cells.dtype == np.uint8 and s.nuclei.shape == SMALL
        assert s.count == count and s.centres.shape == (count, 2)
        for lab in (s.nucleus_labels, s.cell_labels):
            assert lab.dtype == np.uint16
            np.testing.assert_array_equal(np.unique(lab[lab > 0]), np.arange(1, count + 1))
        # every nucleus lies inside its own cell
        inside = s.nucleus_labels > 0
        np.testing.assert_array_equal(s.cell_labels[inside], s.nucleus_labels[inside])
        # cells are brighter than the background in both stains
        if count:
            assert s.nuclei[inside].mean() > 3 * s.nuclei[s.cell_labels == 0].mean() + 10
            assert s.cells[s.cell_labels > 0].mean() > 3 * s.cells[s.cell_labels == 0].mean() + 10


def test_full_size_bbbc005_density_is_reached():
    s = sim.render_cells(np.random.default_rng(0), 100, blur=1)
    assert s.count == 100 and s.nuclei.shape == (520, 696)
    assert int(s.nucleus_labels.max()) == 100


def test_too_many_cells_raise():
    few_tries = sim.CellSimParams(
        nucleus_radius_px=6.0, cell_radius_px=12.0, max_tries_per_cell=30, max_layouts=2
    )
    with pytest.raises(sim.SimulationError, match="could place only"):
        sim.render_cells(0, 200, size=(48, 48), params=few_tries)


def test_blur_follows_bbbc005():
    assert sim.blur_sigma(1) == 0.0 and sim.blur_sigma(48) == 12.0
    img = np.zeros((41, 41), np.float32)
    img[20, 20] = 1.0
    np.testing.assert_array_equal(sim.focus_blur(img, 1), img)
    b = sim.focus_blur(img, 8)  # sigma 2, cut at radius 4 px
    assert b.sum() == pytest.approx(1.0, abs=1e-5)
    assert b[20, 25] == 0.0 and b[20, 24] > 0.0
    # blur lowers the sharpness of a simulated image
    def edges(blur):  # mean gradient after a little smoothing against the camera noise
        img = sim.render_cells(3, 10, blur=blur, size=SMALL, params=P).nuclei.astype(float)
        return np.abs(np.diff(ndi.gaussian_filter(img, 1.0), axis=1)).mean()

    assert edges(48) < 0.4 * edges(1)


def test_folder_is_readable_by_the_cellsets_readers(tmp_path):
    table = sim.simulate_cells(
        tmp_path, 3, seed=1, size=SMALL, counts=[9, 4, 9], blur_levels=(1, 48, 1), params=P
    )
    assert set(table["content"]) == {"nuclei", "cells"}
    assert set(table.loc[table["stain"] == 1, "content"]) == {"nuclei"}
    t = cs.bbbc005_table(tmp_path, tmp_path / sim.MASKS_DIR)
    assert len(t) == 6 and t["mask_path"].notna().all()
    assert sorted(t["count"]) == [4, 4, 9, 9, 9, 9]
    # the two C9 F1 fields get sites 1 and 2
    assert sorted(t.loc[(t["count"] == 9) & (t["blur"] == 1), "site"]) == [1, 1, 2, 2]
    s = cs.read_image_mask_folder(tmp_path, tmp_path / sim.MASKS_DIR, require_masks=True, mask_kind="labels")
    for name, image, labels in s:
        info = bbbc.parse_bbbc005_name(name)
        assert image.dtype == np.uint8 and labels.shape == image.shape
        assert labels.max() == info["count"]
    with pytest.raises(sim.SimulationError, match="already exist"):
        sim.simulate_cells(tmp_path, 1, seed=1, size=SMALL, counts=[9], blur_levels=[1], params=P)
    sim.simulate_cells(
        tmp_path, 1, seed=1, size=SMALL, counts=[9], blur_levels=[1], params=P, overwrite=True
    )


def test_counts_drawn_from_bbbc005_table_when_not_given(tmp_path):
    t = sim.simulate_cells(
        tmp_path, 2, seed=3, size=(200, 260), params=sim.CellSimParams(nucleus_radius_px=4, cell_radius_px=8)
    )
    assert set(t["count"]) <= set(bbbc.BBBC005_COUNTS)
    with pytest.raises(ValueError, match="entries"):
        sim.simulate_cells(tmp_path / "x", 2, seed=3, counts=[1])
