"""plate_hcs: the plate as OME-Zarr HCS in the store's folder, labels from the masks version nuclei_masks recorded."""

import json

import dagster as dg
import numpy as np
import tensorstore as ts

from assets_pkg.core.imaging.plates import read_plate
from assets_pkg.core.imaging.simulator import simulate_plates
from assets_pkg.core.store.frame_store import FrameStore
from assets_pkg.core.store.hcs_source import read_hcs_plate
from assets_pkg.definitions import defs
from assets_pkg.defs import hcs, imaging, qc
from assets_pkg.defs import store as store_defs
from assets_pkg.defs.io import HANDLE_IO_MANAGER, HandleIOManager
from assets_pkg.defs.resources import CellscapeResource

ASSETS = [imaging.plate_images, qc.plate_metadata, qc.plate_metadata_suites, store_defs.nuclei_masks, hcs.plate_hcs]


def _labels(out, well_dir: str) -> np.ndarray:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{out}/{well_dir}/labels/nuclei/0/"}}
    return ts.open(spec).result().read().result()[0]


def test_plate_hcs_writes_the_recorded_masks_into_the_store_folder(tmp_path):
    root = tmp_path / "project"
    simulate_plates(root / "data" / "plates", n_plates=1, seed=5, wells=2, fields_per_well=2, field_size=128)
    resources = {"cellscape": CellscapeResource(root=str(root)), HANDLE_IO_MANAGER: HandleIOManager()}
    out = root / "artifacts" / "frames" / "hcs" / "plate01.ome.zarr"
    store = FrameStore(str(root / "artifacts" / "frames"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("plates", ["plate01"])
        res = dg.materialize(ASSETS, partition_key="plate01", instance=instance, resources=resources)
        assert res.success
        version = res.asset_materializations_for_node("nuclei_masks")[0].metadata["store_version"].value
        md = res.asset_materializations_for_node("plate_hcs")[0].metadata
        assert md["path"].value == str(out) and (md["wells"].value, md["fields"].value) == (2, 4)
        assert md["masks_version"].value == version and md["labelled_fields"].value == 4
        masks, table = store.read_masks("plate01", version)
        first = table.index[(table["well"] == "A01") & (table["field_id"] == 0)][0]
        np.testing.assert_array_equal(_labels(out, "A/1/0"), masks[first])
        plate = read_hcs_plate(out)  # opens as an ingest source; its metadata is the folder's
        assert plate.metadata.equals(read_plate(root / "data" / "plates" / "plate01").metadata)

        # a newer masks version the handle does not name: plate_hcs keeps to the recorded one, replacing its export
        store.write_masks("plate01", np.zeros_like(masks), table, {"detector": "other"})
        res2 = dg.materialize(ASSETS, selection=[hcs.plate_hcs], partition_key="plate01", instance=instance,
                              resources=resources)
        assert res2.success
        np.testing.assert_array_equal(_labels(out, "A/1/0"), masks[first])
        root_attrs = json.loads((out / "zarr.json").read_text())["attributes"]["cellscape"]
        assert root_attrs["masks_version"] == version
        assert sorted(p.name for p in out.parent.iterdir()) == ["plate01.ome.zarr"]  # no temporary left
    assert hcs.plate_hcs.key in defs.resolve_job_def("ingest_plate_job").asset_layer.selected_asset_keys
