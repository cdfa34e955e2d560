"""Readers: image folders and released cytoself arrays, on small files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from assets_pkg.core.errors import PlateFormatError
from assets_pkg.core.store.frames import FRAME_TABLE_COLUMNS
from assets_pkg.core.store.sources import (
    read_cytoself_arrays,
    read_image_folder,
)


def disc_stack(n, size=20, r=5):
    """n crops with a centred bright disc in the nucleus channel."""
    yy, xx = np.mgrid[:size, :size]
    d = ((yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= r**2).astype(np.float32)
    nuc = np.repeat(d[None], n, axis=0) * 0.8 + 0.1
    pro = np.random.default_rng(0).random((n, size, size), dtype=np.float32)
    return pro, nuc


# ---------------------------------------------------------------------------- image folders
def test_image_folder_pairs_by_name(tmp_path):
    a = np.full((6, 7), 10, np.uint16)
    b = np.full((6, 7), 20, np.uint16)
    tifffile.imwrite(tmp_path / "A01_f01_nucleus.tif", a)
    tifffile.imwrite(tmp_path / "A01_f01_protein.tif", b)
    tifffile.imwrite(tmp_path / "A01_f02_nucleus.tif", a + 1)
    tifffile.imwrite(tmp_path / "plate_A02_s1_w1.TIF", a + 2)  # BBBC005-style
    tifffile.imwrite(tmp_path / "plate_A02_s1_w2.TIF", b + 2)
    (tmp_path / "metadata.csv").write_text("not an image\n")
    tifffile.imwrite(tmp_path / "overview_thumb.tif", a)  # matches neither: ignored
    out = read_image_folder(tmp_path)
    names = [n for n, _, _ in out]
    assert names == ["A01_f01", "A01_f02", "plate_A02_s1"]
    d = {n: (x, y) for n, x, y in out}
    np.testing.assert_array_equal(d["A01_f01"][0], a)
    np.testing.assert_array_equal(d["A01_f01"][1], b)
    # Nucleus only: a zero protein channel of the same shape and dtype.
    assert d["A01_f02"][1].dtype == np.uint16 and not d["A01_f02"][1].any()
    np.testing.assert_array_equal(d["plate_A02_s1"][1], b + 2)


def test_image_folder_custom_patterns_and_png(tmp_path):
    from skimage import io

    io.imsave(tmp_path / "x1_dna.png", np.full((4, 4), 9, np.uint8), check_contrast=False)
    io.imsave(tmp_path / "x1_tag.png", np.full((4, 4), 3, np.uint8), check_contrast=False)
    out = read_image_folder(tmp_path, nucleus_pattern="dna", protein_pattern="tag")
    assert [(n, x.max(), y.max()) for n, x, y in out] == [("x1", 9, 3)]


def test_image_folder_errors(tmp_path):
    with pytest.raises(PlateFormatError, match="does not exist"):
        read_image_folder(tmp_path / "nope")
    with pytest.raises(PlateFormatError, match="no nucleus image"):
        read_image_folder(tmp_path)
    tifffile.imwrite(tmp_path / "A_protein.tif", np.zeros((3, 3), np.uint16))
    with pytest.raises(PlateFormatError, match="without a nucleus"):
        read_image_folder(tmp_path)
    tifffile.imwrite(tmp_path / "A_nucleus.tif", np.zeros((4, 3), np.uint16))
    with pytest.raises(PlateFormatError, match="shape"):
        read_image_folder(tmp_path)
    tifffile.imwrite(tmp_path / "A_nuc.tif", np.zeros((3, 3), np.uint16))
    with pytest.raises(PlateFormatError, match="two nucleus images"):
        read_image_folder(tmp_path)


# ---------------------------------------------------------------------------- cytoself (a)
def write_image_data(folder, k, n, channels, seed=0):
    pro, nuc = disc_stack(n)
    dist = np.zeros_like(nuc)
    parts = [pro, nuc]
    if channels >= 3:
        # Released distance channel with the opposite sign convention (negative inside).
        dist = -(nuc - 0.5) * 10
        parts.append(dist)
    if channels >= 4:
        parts.append((nuc > 0.5).astype(np.float32))
    np.save(folder / f"Image_data{k:02d}.npy", np.stack(parts, axis=-1))
    lab = pd.DataFrame(
        {
            "ensg": ["ENSG01"] * (n - 2) + ["ENSG02"] * 2,
            "name": ["ACTB"] * (n - 2) + ["LMNB1"] * 2,
            "loc_grade1": ["cytoskeleton;cytoplasmic"] * (n - 2) + ["nuclear_membrane"] * 2,
            "loc_grade2": [np.nan] * (n - 2) + ["nucleoplasm"] * 2,
            "loc_grade3": ["membrane"] * (n - 2) + [np.nan] * 2,
            "protein_id": [1] * (n - 2) + [2] * 2,
            "FOV_id": ["fovA"] * 2 + ["fovB"] * (n - 4) + ["fovC"] * 2,
        }
    )
    lab.to_csv(folder / f"Label_data{k:02d}.csv", index=False)
    return pro, nuc, dist


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_cytoself_image_data(tmp_path, channels):
    pro, nuc, dist = write_image_data(tmp_path, 0, 6, channels)
    write_image_data(tmp_path, 1, 4, channels)
    frames, table = read_cytoself_arrays(tmp_path, plate_id="oc")
    assert frames.shape == (10, 20, 20, 3) and frames.dtype == np.float32
    np.testing.assert_allclose(frames[:6, ..., 0], pro)
    np.testing.assert_allclose(frames[:6, ..., 1], nuc)
    d = frames[..., 2]
    assert (d[:, 10, 10] > 0).all() and (d[:, 0, 0] < 0).all()  # positive inside
    if channels >= 3:
        np.testing.assert_allclose(d[:6], -dist)  # released values kept, sign flipped
    else:
        # Computed from the mask: the disc (radius 5) edge lies between pixels 5 and 4 from
        # the centre along a row.
        assert d[0, 10, 15] == pytest.approx(0.5) and d[0, 10, 16] == pytest.approx(-0.5)
    assert list(table.columns[: len(FRAME_TABLE_COLUMNS)]) == list(FRAME_TABLE_COLUMNS)
    assert table["frame_index"].tolist() == list(range(10))
    assert table["plate_id"].eq("oc").all()
    assert table["source_file"].tolist() == ["Image_data00.npy"] * 6 + ["Image_data01.npy"] * 4
    r0 = table.iloc[0]
    assert (r0.gene, r0.ensg_id) == ("ACTB", "ENSG01")
    assert r0.localization == "cytoskeleton;cytoplasmic;membrane"
    assert r0.localization_grades == "cytoskeleton:3;cytoplasmic:3;membrane:1"
    r5 = table.iloc[5]
    assert r5.localization_grades == "nuclear_membrane:3;nucleoplasm:2"
    # Fields numbered per protein, nuclei per field; ids unique within a file.
    assert table["field_id"].tolist()[:6] == [0, 0, 1, 1, 0, 0]
    assert table["nucleus_label"].tolist()[:6] == [1, 2, 1, 2, 1, 2]
    assert table["frame_id"].iloc[0] == "oc/ACTB/f00/n0001"
    assert table["centre_y"].isna().all()


def test_cytoself_image_data_errors(tmp_path):
    np.save(tmp_path / "Image_data00.npy", np.zeros((3, 20, 20, 2), np.float32))
    with pytest.raises(PlateFormatError, match="Label_data00.csv is missing"):
        read_cytoself_arrays(tmp_path)
    pd.DataFrame({"ensg": ["E"] * 2, "name": ["G"] * 2}).to_csv(tmp_path / "Label_data00.csv")
    with pytest.raises(PlateFormatError, match="2 label rows for 3 images"):
        read_cytoself_arrays(tmp_path)
    np.save(tmp_path / "Image_data00.npy", np.zeros((2, 20, 20, 5), np.float32))
    with pytest.raises(PlateFormatError, match="shape"):
        read_cytoself_arrays(tmp_path)
    with pytest.raises(PlateFormatError, match="no cytoself arrays"):
        read_cytoself_arrays(tmp_path / "..")


# ---------------------------------------------------------------------------- cytoself (b)
def test_cytoself_per_protein_arrays(tmp_path):
    pro, nuc = disc_stack(3)
    np.save(tmp_path / "ENSG01_ACTB_pro.npy", pro)
    np.save(tmp_path / "ENSG01_ACTB_nuc.npy", nuc)
    np.save(
        tmp_path / "ENSG01_ACTB_label.npy",
        np.array([["ENSG01", "ACTB", "cytoskeleton"]] * 3, dtype=object),
        allow_pickle=True,
    )
    pro2, nuc2 = disc_stack(2)
    np.save(tmp_path / "LMNB1_pro.npy", pro2)
    np.save(tmp_path / "LMNB1_nuc.npy", nuc2)
    np.save(tmp_path / "LMNB1_nucdist.npy", (nuc2 - 0.5) * 4)  # positive inside already
    lab7 = np.array(
        [["ENSG02", "LMNB1", "nuclear_membrane", np.nan, "er", 7, f"fov{i}"] for i in range(2)],
        dtype=object,
    )
    np.save(tmp_path / "LMNB1_label.npy", lab7, allow_pickle=True)
    frames, table = read_cytoself_arrays(tmp_path, plate_id="sample")
    assert frames.shape == (5, 20, 20, 3)
    np.testing.assert_allclose(frames[:3, ..., 0], pro)
    np.testing.assert_allclose(frames[3:, ..., 2], (nuc2 - 0.5) * 4)
    assert (frames[:3, 10, 10, 2] > 0).all()
    assert table["gene"].tolist() == ["ACTB"] * 3 + ["LMNB1"] * 2
    assert table["localization"].tolist() == ["cytoskeleton"] * 3 + ["nuclear_membrane;er"] * 2
    assert table["localization_grades"].iloc[3] == "nuclear_membrane:3;er:1"
    assert table["field_id"].tolist() == [0, 0, 0, 0, 1]
    assert table["frame_id"].tolist()[-1] == "sample/LMNB1/f01/n0001"


def test_cytoself_per_protein_errors(tmp_path):
    np.save(tmp_path / "X_label.npy", np.array([["E", "X", "er"]] * 2, dtype=object), allow_pickle=True)
    with pytest.raises(PlateFormatError, match="missing"):
        read_cytoself_arrays(tmp_path)
    pro, nuc = disc_stack(3)
    np.save(tmp_path / "X_pro.npy", pro)
    np.save(tmp_path / "X_nuc.npy", nuc)
    with pytest.raises(PlateFormatError, match="expected shape"):
        read_cytoself_arrays(tmp_path)
    np.save(tmp_path / "X_label.npy", np.array([["E", "X"]] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(PlateFormatError, match="columns"):
        read_cytoself_arrays(tmp_path)


class _Payload:
    """Unpickling this would run a command; the reader must refuse it."""

    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/cellscape-pwned",))


def test_label_npy_with_a_code_payload_is_refused_not_executed(tmp_path):
    from assets_pkg.core.store.sources import read_cytoself_arrays

    rng = np.random.default_rng(0)
    np.save(tmp_path / "X_pro.npy", rng.random((2, 100, 100)).astype(np.float32))
    np.save(tmp_path / "X_nuc.npy", rng.random((2, 100, 100)).astype(np.float32))
    np.save(tmp_path / "X_label.npy", np.array([[_Payload(), "G", "er"]] * 2, dtype=object), allow_pickle=True)
    with pytest.raises(PlateFormatError, match="refusing to load"):
        read_cytoself_arrays(tmp_path)
    assert not Path("/tmp/cellscape-pwned").exists()


def test_cytoself_label_without_ensg_is_refused_naming_file_and_field(tmp_path):
    # an empty ensg would reach the catalog as an empty protein key
    pro, nuc = disc_stack(2)
    np.save(tmp_path / "X_pro.npy", pro)
    np.save(tmp_path / "X_nuc.npy", nuc)
    np.save(tmp_path / "X_label.npy", np.array([["E1", "X", "er"], [None, "X", "er"]], dtype=object), allow_pickle=True)
    with pytest.raises(PlateFormatError, match="X_label.npy: field 'ensg': label row 1 has no ensg"):
        read_cytoself_arrays(tmp_path)


def test_cytoself_frames_without_fov_form_pseudo_fields_per_protein(tmp_path):
    # layout (a) with FOV_id missing for some rows: those rows are chunked per protein in file order
    write_image_data(tmp_path, 0, 10, 2)  # ACTB x 8 (fovA x2, fovB x6), LMNB1 x 2 (fovC)
    lab = pd.read_csv(tmp_path / "Label_data00.csv")
    lab.loc[2:7, "FOV_id"] = np.nan  # ACTB's fovB frames lose their FOV
    lab.to_csv(tmp_path / "Label_data00.csv", index=False)
    _, table = read_cytoself_arrays(tmp_path, plate_id="oc", frames_per_pseudo_field=4)
    assert table["well"].tolist() == ["ACTB"] * 8 + ["LMNB1"] * 2
    assert table["field_id"].tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 0, 0]
    assert table["source_fov"].tolist() == ["fovA"] * 2 + [""] * 6 + ["fovC"] * 2
    assert table["nucleus_label"].tolist() == [1, 2, 1, 2, 3, 4, 1, 2, 1, 2]
