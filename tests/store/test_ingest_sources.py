"""Other sources into the same frame store: image folders and released cytoself arrays."""

import numpy as np
import pandas as pd
import tifffile

from assets_pkg.cli import main
from assets_pkg.core.imaging.simulator import render_field
from assets_pkg.core.store.frame_store import FrameStore


def test_image_folder_import_detects_nuclei_and_stores_frames(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        f = render_field(("mitochondria",), seed=i, field_size=384)
        tifffile.imwrite(folder / f"site{i}_nuc.tif", f.nucleus)
        tifffile.imwrite(folder / f"site{i}_pro.tif", f.protein)
    rc = main(["import", str(folder), "--format", "images", "--store", str(tmp_path / "store"),
               "--plate-id", "myimgs", "--pixel-size-um", "0.2", "--gene", "TOMM20", "--ensg-id", "ENSG00000173726"])
    assert rc == 0
    store = FrameStore(str(tmp_path / "store"))
    table = store.read_table("myimgs")
    assert len(table) > 0 and set(table["well"]) <= {"site0", "site1"}
    assert (table["gene"] == "TOMM20").all()
    frames = store.read_frames("myimgs", np.arange(len(table)))
    assert frames.shape[1:] == (100, 100, 3)
    # the distance channel is positive at the centre (inside the nucleus)
    assert (frames[:, 50, 50, 2] > 0).all()


def test_cytoself_arrays_import(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "cyto"
    src.mkdir()
    img = rng.random((5, 100, 100, 2)).astype(np.float32)
    img[:, 35:65, 35:65, 1] += 2.0  # a bright nucleus in the middle
    np.save(src / "Image_data00.npy", img)
    pd.DataFrame({"ensg": ["ENSG00000113368"] * 5, "name": ["LMNB1"] * 5, "loc_grade1": ["nuclear_membrane"] * 5,
                  "loc_grade2": [""] * 5, "loc_grade3": [""] * 5, "protein_id": [0] * 5,
                  "FOV_id": [0, 0, 1, 1, 1]}).to_csv(src / "Label_data00.csv", index=False)
    assert main(["import", str(src), "--format", "cytoself", "--store", str(tmp_path / "store"), "--plate-id", "released"]) == 0
    store = FrameStore(str(tmp_path / "store"))
    table = store.read_table("released")
    assert len(table) == 5 and (table["gene"] == "LMNB1").all()
    frames = store.read_frames("released", [0, 4])
    np.testing.assert_allclose(frames[..., :2], img[[0, 4]], rtol=1e-6)
    assert frames[0, 50, 50, 2] > 0 > frames[0, 2, 2, 2]


def _per_protein_arrays(folder, genes=("ACTB", "LMNB1"), n=12, size=20):
    """cytoself's download_sample_data layout: *_pro/_nuc.npy and a 3-column *_label.npy (no FOV ids)."""
    rng = np.random.default_rng(2)
    for k, gene in enumerate(genes):
        np.save(folder / f"{gene}_pro.npy", rng.random((n, size, size)).astype(np.float32))
        nuc = np.zeros((n, size, size), np.float32)
        nuc[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
        np.save(folder / f"{gene}_nuc.npy", nuc)
        np.save(folder / f"{gene}_label.npy", np.array([[f"ENSG{k:011d}", gene, "er"]] * n, dtype=object),
                allow_pickle=True)


def test_cytoself_import_without_fov_ids_gets_wells_and_pseudo_fields_that_split(tmp_path, capsys):
    # Released arrays without FOV ids used to get no well and one field per protein: a
    # field-exclusive split put every frame in train and its check passed vacuously.
    from assets_pkg.core.store.config import SplitConfig
    from assets_pkg.core.store.splits import check_disjoint, make_splits

    src = tmp_path / "cyto"
    src.mkdir()
    _per_protein_arrays(src)
    store_dir = str(tmp_path / "store")
    assert main(["import", str(src), "--format", "cytoself", "--store", store_dir, "--plate-id", "released",
                 "--frames-per-pseudo-field", "3"]) == 0
    assert "24 in pseudo-fields of 3 consecutive frames per protein (8 fields)" in capsys.readouterr().out
    store = FrameStore(store_dir)
    cat = store.catalog()
    assert cat["well"].tolist() == ["ACTB"] * 12 + ["LMNB1"] * 12  # the gene is the well
    assert cat["field_id"].tolist() == [i // 3 for i in range(12)] * 2  # 3 consecutive frames per field
    assert store.read_manifest("released")["provenance"]["field_grouping"]["frames_per_pseudo_field"] == 3
    config = SplitConfig(0.5, 0.25, 0.25, "field", seed=0)
    splits = make_splits(cat, config)
    assert check_disjoint(splits, config) == []
    per_protein = splits.groupby(["ensg_id", "split"])["field_id"].nunique().unstack()
    assert (per_protein[["train", "valid", "test"]].to_numpy() == [[2, 1, 1], [2, 1, 1]]).all()

    # with the default pseudo-field size (40) 12 frames make one field per protein: the check
    # now says that valid and test are empty instead of passing
    assert main(["import", str(src), "--format", "cytoself", "--store", store_dir, "--plate-id", "released"]) == 0
    cat = store.catalog()
    assert cat.groupby("well")["field_id"].nunique().tolist() == [1, 1]
    problems = check_disjoint(make_splits(cat, config), config)
    assert [p.split()[0] for p in problems] == ["valid", "test"]
