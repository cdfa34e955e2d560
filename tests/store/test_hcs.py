"""A plate as OME-Zarr HCS: NGFF 0.5 schemas (ome-zarr-models), ome-zarr-py's reader, TensorStore read-back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tensorstore as ts
from plate_factory import make_plate

from assets_pkg.core.errors import PlateFormatError, StoreError
from assets_pkg.core.imaging.io import read_image
from assets_pkg.core.imaging.plates import read_plate
from assets_pkg.core.store.frame_store import FrameStore
from assets_pkg.core.store.hcs import export_hcs, well_path


def _labels(plate):
    """One label image per field: a deterministic, field-specific pattern (F, H, W) int32."""
    fields = plate.fields()
    out = []
    for k, rec in enumerate(fields.itertuples(index=False)):
        h, w = read_image(plate.image_path(rec.nucleus)).shape
        lab = np.zeros((h, w), np.int32)
        lab[4 + k : 20 + k, 8:24] = 1
        lab[30:40, 30 + k : 50] = 2 + k
        out.append(lab)
    table = pd.DataFrame({"well": fields["well"].astype(str), "field_id": fields["field_id"].astype(int)})
    return np.stack(out), table


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("hcs")
    plate_dir = make_plate(root / "plates", wells=2, fields=2, size=64)
    plate = read_plate(plate_dir)
    store = FrameStore(root / "store")
    labels, table = _labels(plate)
    store.write_masks(plate.plate_id, labels, table, {"detector": "test"})
    before = {p.name: p.read_bytes() for p in plate_dir.iterdir()}
    info = export_hcs(plate_dir, root / "plate.ome.zarr", store)
    return plate_dir, plate, info, labels, table, before


def test_export_layout_and_summary(exported):
    plate_dir, plate, info, _, _, before = exported
    assert (info["wells"], info["fields"], info["labels"]) == (2, 4, True)
    assert info["pixel_size_um"] == pytest.approx(0.2)
    # sharded: per field 7 files (3 group and 2 array metadata, one shard per array), whatever the size
    assert info["files"] == 1 + 1 + 2 + 4 * 7
    shards = [p for p in (plate_dir.parent.parent / "plate.ome.zarr").rglob("*") if p.is_file() and "c" in p.parts]
    assert len(shards) == 8  # one image and one label shard per field
    root = json.loads((plate_dir.parent.parent / "plate.ome.zarr" / "zarr.json").read_text())
    assert root["attributes"]["ome"]["version"] == "0.5"
    assert [w["path"] for w in root["attributes"]["ome"]["plate"]["wells"]] == ["A/1", "A/2"]
    assert {p.name: p.read_bytes() for p in plate_dir.iterdir()} == before  # raw files untouched


def test_export_validates_against_ngff_05_schemas(exported):
    import zarr
    from ome_zarr_models.v05.hcs import HCS
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    path = exported[2]["path"]
    hcs = HCS.from_zarr(zarr.open_group(path, mode="r"))
    assert [w.path for w in hcs.ome_attributes.plate.wells] == ["A/1", "A/2"]
    wells = list(hcs.well_groups)
    assert len(wells) == 2 and all(len(w.ome_attributes.well.images) == 2 for w in wells)
    image = Image.from_zarr(zarr.open_group(f"{path}/A/1/0", mode="r"))
    ms = image.ome_attributes.multiscales[0]
    assert [a.name for a in ms.axes] == ["c", "y", "x"]
    assert ms.datasets[0].coordinateTransformations[0].scale == [1.0, 0.2, 0.2]
    omero = image.ome_attributes.omero  # transitional in NGFF 0.5: kept as given, not modelled
    assert [c["label"] for c in omero["channels"]] == ["nucleus", "protein"]
    label = ImageLabel.from_zarr(zarr.open_group(f"{path}/A/1/0/labels/nuclei", mode="r"))
    assert label.ome_attributes.image_label.source.image == "../../"


def test_ome_zarr_reader_opens_the_plate(exported):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    path = exported[2]["path"]
    nodes = list(Reader(parse_url(path))())
    assert [type(spec).__name__ for spec in nodes[0].specs] == ["Plate"]
    assert nodes[0].metadata["channel_names"] == ["nucleus", "protein"]
    # the reader tiles each well's first field into one plate image: 1 row x 2 columns of 64 px
    tiled = np.asarray(nodes[0].data[0])
    assert tiled.shape == (2, 64, 128)
    fields = exported[1].fields()
    for k, well in enumerate(["A01", "A02"]):
        first = fields[fields["well"] == well].sort_values("field_id").iloc[0]
        assert np.array_equal(tiled[0, :, 64 * k : 64 * (k + 1)], read_image(exported[1].image_path(first["nucleus"])))
    img_nodes = list(Reader(parse_url(f"{path}/A/2/1"))())
    pixels = np.asarray(img_nodes[0].data[0])
    assert pixels.shape == (2, 64, 64)
    assert img_nodes[0].metadata["channel_names"] == ["nucleus", "protein"]


def test_tensorstore_reads_back_fields_and_labels(exported):
    plate_dir, plate, info, labels, table, _ = exported
    path = info["path"]
    fields = plate.fields()
    for rec in fields.itertuples(index=False):
        r, c = well_path(rec.well)
        i = int((fields[fields["well"] == rec.well]["field_id"] < rec.field_id).sum())
        arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{path}/{r}/{c}/{i}/0/"}}).result()
        got = arr.read().result()
        assert got.dtype == np.uint16
        assert np.array_equal(got[0], read_image(plate.image_path(rec.nucleus)))
        assert np.array_equal(got[1], read_image(plate.image_path(rec.protein)))
        lab = ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{path}/{r}/{c}/{i}/labels/nuclei/0/"}}
        ).result().read().result()
        row = table.index[(table["well"] == rec.well) & (table["field_id"] == rec.field_id)][0]
        assert np.array_equal(lab[0], labels[row])


def test_export_refuses_existing_output_and_missing_masks(tmp_path):
    plate_dir = make_plate(tmp_path / "plates", wells=1, fields=1, size=32)
    (tmp_path / "taken.ome.zarr").mkdir()
    with pytest.raises(PlateFormatError, match="refusing to overwrite"):
        export_hcs(plate_dir, tmp_path / "taken.ome.zarr")
    with pytest.raises(StoreError) as e:
        export_hcs(plate_dir, tmp_path / "p.ome.zarr", FrameStore(tmp_path / "store"))
    assert e.value.field == "masks"
    assert not (tmp_path / "p.ome.zarr").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    info = export_hcs(plate_dir, tmp_path / "p.ome.zarr")  # images only
    assert info["labels"] is False and not (tmp_path / "p.ome.zarr" / "A" / "1" / "0" / "labels").exists()


def test_cli_export_hcs(tmp_path, capsys):
    from assets_pkg.cli import main

    plate_dir = make_plate(tmp_path / "plates", wells=1, fields=2, size=32)
    plate = read_plate(plate_dir)
    store = FrameStore(tmp_path / "store")
    labels, table = _labels(plate)
    version = store.write_masks(plate.plate_id, labels, table)["version"]
    out = tmp_path / "p.ome.zarr"
    assert main(["export-hcs", "--plates", str(tmp_path / "plates"), "--out", str(out)]) == 2
    assert "--store" in capsys.readouterr().err and not out.exists()
    argv = ["export-hcs", "--store", str(tmp_path / "store"), "--plates", str(tmp_path / "plates"),
            "--plate", plate.plate_id, "--out", str(out)]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert f"labels from masks {version}" in said and "2 fields" in said
    assert (out / "A" / "1" / "1" / "labels" / "nuclei" / "zarr.json").is_file()
    assert main(argv) == 2  # never overwritten
    assert "refusing to overwrite" in capsys.readouterr().err


def test_fields_that_are_not_a_multiple_of_the_inner_chunk_export_and_read_back(tmp_path):
    """A 320 px field (the browser test's plate) once failed: the shard was not a whole number of
    256 px inner chunks."""
    plate_dir = make_plate(tmp_path / "plates", wells=1, fields=1, size=320)
    plate = read_plate(plate_dir)
    info = export_hcs(plate_dir, tmp_path / "p.ome.zarr")
    assert info["fields"] == 1
    field = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tmp_path / "p.ome.zarr/A/1/0/0")}}).result()
    rec = plate.fields().iloc[0]
    assert field.shape[1:] == (320, 320)
    np.testing.assert_array_equal(field[0].read().result(), read_image(plate.image_path(rec.nucleus)))
