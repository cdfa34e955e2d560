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
