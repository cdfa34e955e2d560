"""An OME-Zarr HCS plate as an ingest source: export -> ingest gives the folder's frames, table and provenance."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorstore as ts
from plate_factory import make_plate

from assets_pkg.core.errors import PlateFormatError, ValidationFailed
from assets_pkg.core.store import hcs_source
from assets_pkg.core.store.config import IngestParams
from assets_pkg.core.store.frame_store import FrameStore
from assets_pkg.core.store.hcs import export_hcs
from assets_pkg.core.store.hcs_source import read_hcs_plate
from assets_pkg.core.store.ingest import ingest_plate

#: 64 px fields (12.8 um): small crops so that some nuclei make frames
PARAMS = IngestParams(crop_size=16, nucleus_diameter_um=2.0)
PARAM_FLAGS = ["--crop-size", "16", "--nucleus-diameter-um", "2.0", "--workers", "1", "--no-catalog"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("hcsin")
    plate_dir = make_plate(root / "plates", wells=2, fields=2, size=64)
    export_hcs(plate_dir, root / "plate01.ome.zarr")
    return root, plate_dir, root / "plate01.ome.zarr"


def _stored(store: FrameStore, plate_id: str):
    table = store.read_table(plate_id)
    return store.read_frames(plate_id, np.arange(len(table))), table, store.read_manifest(plate_id)["provenance"]


def test_cli_ingest_of_the_export_equals_ingest_of_the_folder(exported, monkeypatch, capsys):
    from assets_pkg.cli import main

    root, plate_dir, zarr_dir = exported
    before = {p.name: p.read_bytes() for p in plate_dir.iterdir()}
    reads = []
    opener = hcs_source._open_array
    monkeypatch.setattr(hcs_source, "_open_array", lambda f: reads.append(f.array) or opener(f))
    assert main(["ingest", str(plate_dir), "--store", str(root / "from_dir"), *PARAM_FLAGS]) == 0
    assert main(["ingest", str(zarr_dir), "--store", str(root / "from_zarr"), *PARAM_FLAGS]) == 0
    assert "plate01: 4 fields" in capsys.readouterr().out
    assert main(["validate", str(zarr_dir)]) == 0  # the suites on the export, as on the folder
    assert "plate01" in capsys.readouterr().out
    f_dir, t_dir, p_dir = _stored(FrameStore(root / "from_dir"), "plate01")
    f_zarr, t_zarr, p_zarr = _stored(FrameStore(root / "from_zarr"), "plate01")
    assert len(t_dir) > 0
    np.testing.assert_array_equal(f_zarr, f_dir)
    pd.testing.assert_frame_equal(t_zarr, t_dir)
    assert p_zarr.pop("source") == str(zarr_dir.resolve()) and p_dir.pop("source") == str(plate_dir.resolve())
    p_zarr.pop("pin"), p_dir.pop("pin")  # "<path> is not pinned by any .dvc file"
    assert p_zarr == p_dir and p_zarr["source_digest"]
    # whole fields per read: each field array opened three times (validate; ingest's validation, then
    # its frames), never once per channel
    assert len(reads) == 3 * 4 and len(set(reads)) == 4
    assert {p.name: p.read_bytes() for p in plate_dir.iterdir()} == before  # raw files untouched


def test_read_hcs_plate_gives_metadata_wells_and_pixel_size(exported):
    _, plate_dir, zarr_dir = exported
    plate = read_hcs_plate(zarr_dir)
    from assets_pkg.core.imaging.plates import read_plate

    folder = read_plate(plate_dir)
    assert plate.plate_id == "plate01" and plate.pixel_size_um == pytest.approx(0.2)
    pd.testing.assert_frame_equal(plate.metadata, folder.metadata)
    assert plate.wells == folder.wells
    pd.testing.assert_frame_equal(plate.fields(), folder.fields())
    name = folder.fields()["protein"].iloc[3]
    np.testing.assert_array_equal(plate.read_field(name), folder.read_field(name))


def _edit_json(path, edit):
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _copy(exported, tmp_path):
    out = tmp_path / "plate01.ome.zarr"
    shutil.copytree(exported[2], out)
    return out


@pytest.mark.parametrize(("where", "field", "edit"), [
    ("zarr.json", "attributes.cellscape", lambda d: d["attributes"].pop("cellscape")),
    ("zarr.json", "attributes.cellscape.metadata", lambda d: d["attributes"]["cellscape"].pop("metadata")),
    ("zarr.json", "attributes.ome.plate.wells", lambda d: d["attributes"]["ome"]["plate"].pop("wells")),
    ("A/2/1/zarr.json", "attributes.ome.omero.channels", lambda d: d["attributes"]["ome"].pop("omero")),
    ("A/2/1/zarr.json", "attributes.ome.multiscales.0.datasets.0.coordinateTransformations",
     lambda d: d["attributes"]["ome"]["multiscales"][0]["datasets"][0].pop("coordinateTransformations")),
    ("A/1/0/zarr.json", "attributes.cellscape.pixel_sha256", lambda d: d["attributes"]["cellscape"].pop("pixel_sha256")),
])
def test_a_missing_metadata_field_is_an_error_naming_file_and_field(exported, tmp_path, where, field, edit):
    out = _copy(exported, tmp_path)
    _edit_json(out / where, edit)
    with pytest.raises(PlateFormatError) as e:
        ingest_plate(out, FrameStore(tmp_path / "store"), PARAMS, workers=1)
    assert e.value.path == str(out / where) and e.value.field == field
    assert not (tmp_path / "store" / "plates").exists()


def test_provenance_and_pixels_are_validated(exported, tmp_path):
    out = _copy(exported, tmp_path)
    # a blank operator in the metadata the export carries: the provenance suite refuses the plate
    def blank_operator(d):
        md = d["attributes"]["cellscape"]["metadata"]
        md["rows"][2][md["columns"].index("operator")] = None
    _edit_json(out / "zarr.json", blank_operator)
    with pytest.raises(ValidationFailed) as e:
        ingest_plate(out, FrameStore(tmp_path / "s1"), PARAMS, workers=1)
    failed = [s.name for s in e.value.report.suites if not s.success]
    assert failed == ["provenance"] and "operator" in str(e.value)

    # pixels changed after the export: the checksums suite names the file
    out2 = tmp_path / "b" / "plate01.ome.zarr"
    shutil.copytree(exported[2], out2)
    arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{out2}/A/2/0/0/"}}).result()
    arr[1, 5, 5] = arr[1, 5, 5].read().result() + 1
    with pytest.raises(ValidationFailed) as e:
        ingest_plate(out2, FrameStore(tmp_path / "s2"), PARAMS, workers=1)
    assert [s.name for s in e.value.report.suites if not s.success] == ["checksums"]
    assert "A02_f00_protein.tif" in str(e.value) and "differ from those exported" in str(e.value)
    assert not (tmp_path / "s1" / "plates").exists() and not (tmp_path / "s2" / "plates").exists()


def test_export_replace_swaps_the_plate_in(exported, tmp_path):
    _, plate_dir, _ = exported
    out = tmp_path / "p.ome.zarr"
    export_hcs(plate_dir, out)
    (out / "stale").write_text("from the previous export")
    info = export_hcs(plate_dir, out, replace=True)
    assert info["path"] == str(out) and not (out / "stale").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["p.ome.zarr"]  # no temporary left
    with pytest.raises(PlateFormatError, match="refusing to overwrite"):
        export_hcs(plate_dir, out)


def test_fields_the_masks_excluded_for_a_defect_are_exported_without_labels(exported, tmp_path):
    _, plate_dir, _ = exported
    store = FrameStore(tmp_path / "store")
    fields = read_hcs_plate(exported[2]).fields()
    kept = fields.iloc[:3]
    masks = np.ones((3, 64, 64), np.int32)
    table = pd.DataFrame({"well": kept["well"].astype(str), "field_id": kept["field_id"].astype(int)})
    left_out = {"well": str(fields["well"].iloc[3]), "field_id": int(fields["field_id"].iloc[3])}
    store.write_masks("plate01", masks, table, {"excluded_fields": [left_out]})
    info = export_hcs(plate_dir, tmp_path / "p.ome.zarr", store)
    assert info["labels"] and (info["fields"], info["labelled_fields"]) == (4, 3)
    assert (tmp_path / "p.ome.zarr" / "A" / "2" / "0" / "labels").is_dir()
    assert not (tmp_path / "p.ome.zarr" / "A" / "2" / "1" / "labels").exists()
