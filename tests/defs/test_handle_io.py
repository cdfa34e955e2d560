"""HandleIOManager: outputs stored as JSON handles (never pickle) and handed to downstream assets."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from assets_pkg.defs.io import HANDLE_IO_MANAGER, HandleIOManager


@dg.asset(io_manager_key=HANDLE_IO_MANAGER)
def parent():
    return {"path": "/data/x", "ids": [1, 2], "n_clusters": 3}


@dg.asset(io_manager_key=HANDLE_IO_MANAGER)
def child(parent: dict):
    return {"from_parent": parent}


def test_handles_are_json_files_passed_to_the_child(tmp_path):
    with dg.instance_for_test() as instance:
        res = dg.materialize([parent, child], instance=instance, resources={HANDLE_IO_MANAGER: HandleIOManager()})
        assert res.success
        base = Path(instance.storage_directory()) / "handles"  # the default place
        assert json.loads((base / "parent.json").read_text()) == {"path": "/data/x", "ids": [1, 2], "n_clusters": 3}
        assert json.loads((base / "child.json").read_text()) == {"from_parent": parent()}
        md = res.asset_materializations_for_node("child")[0].metadata
        assert md["handle"].value == str(base / "child.json")
        # a later run of the child alone reads the stored parent handle
        res = dg.materialize([parent, child], selection=[child], instance=instance,
                             resources={HANDLE_IO_MANAGER: HandleIOManager(base_dir=str(base))})
        assert res.success and res.output_for_node("child") == {"from_parent": parent()}


def test_a_value_that_is_not_plain_json_fails_clearly(tmp_path):
    @dg.asset(io_manager_key=HANDLE_IO_MANAGER)
    def bad():
        return {"x": np.float32(1.0)}

    with dg.instance_for_test() as instance, pytest.raises(dg.DagsterInvariantViolationError, match="plain JSON"):
        dg.materialize([bad], instance=instance, resources={HANDLE_IO_MANAGER: HandleIOManager(base_dir=str(tmp_path))})
    assert not list(tmp_path.rglob("*.json"))


def test_a_missing_parent_handle_names_the_asset(tmp_path):
    with dg.instance_for_test() as instance, pytest.raises(dg.DagsterInvariantViolationError, match="no stored handle for parent"):
        dg.materialize([parent, child], selection=[child], instance=instance,
                       resources={HANDLE_IO_MANAGER: HandleIOManager(base_dir=str(tmp_path))})


PARTS = dg.StaticPartitionsDefinition(["plate01", "plate/02"])


@dg.asset(io_manager_key=HANDLE_IO_MANAGER, partitions_def=PARTS)
def per_plate(context: dg.AssetExecutionContext):
    return {"plate": context.partition_key}


@dg.asset(io_manager_key=HANDLE_IO_MANAGER, partitions_def=PARTS)
def per_plate_child(per_plate: dict):
    return {"seen": per_plate}


@dg.asset(io_manager_key=HANDLE_IO_MANAGER)
def all_plates(per_plate: dict):
    return {"plates": sorted(per_plate)}


def test_partitions_one_file_each_and_a_dict_for_a_whole_table_reader(tmp_path):
    resources = {HANDLE_IO_MANAGER: HandleIOManager(base_dir=str(tmp_path))}
    with dg.instance_for_test() as instance:
        for pk in PARTS.get_partition_keys():
            res = dg.materialize([per_plate, per_plate_child], partition_key=pk, instance=instance, resources=resources)
            assert res.output_for_node("per_plate_child") == {"seen": {"plate": pk}}
        assert sorted(p.name for p in (tmp_path / "per_plate").iterdir()) == ["plate%2F02.json", "plate01.json"]
        res = dg.materialize([per_plate, all_plates], selection=[all_plates], instance=instance, resources=resources)
        assert res.output_for_node("all_plates") == {"plates": ["plate/02", "plate01"]}
