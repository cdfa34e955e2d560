"""The Dagster layer: definitions load, assets materialize on a temporary instance, checks block,
the sensor picks up complete plates only."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from plate_factory import set_value
from ui_checks import assert_ui_metadata

from assets_pkg.core.imaging.plates import METADATA_CSV, read_plate
from assets_pkg.core.imaging.simulator import simulate_plates
from assets_pkg.core.store.config import FrameConfig, NucleusConfig
from assets_pkg.core.store.frame_store import FrameStore
from assets_pkg.core.store.ingest import crop_plate_frames, detect_plate_nuclei
from assets_pkg.definitions import defs
from assets_pkg.defs import imaging, qc
from assets_pkg.defs import store as store_defs
from assets_pkg.defs.automation import new_plate_sensor
from assets_pkg.defs.io import HANDLE_IO_MANAGER, HandleIOManager
from assets_pkg.defs.localization import atlas, model
from assets_pkg.defs.metadata import table_frame
from assets_pkg.defs.resources import CellscapeResource, PlateQCSettings

REPO = Path(__file__).resolve().parents[2]
PLATE_ASSETS = [imaging.plate_images, qc.plate_metadata, qc.plate_metadata_suites, store_defs.nuclei_masks, store_defs.plate_frames]
DATASET_ASSETS = [store_defs.dataset_version, store_defs.frame_catalog, store_defs.dataset_splits]
MODEL_ASSETS = [model.localization_model, model.localization_model_ablation, model.current_model]
ALL = PLATE_ASSETS + DATASET_ASSETS + MODEL_ASSETS


def _resources(root: Path) -> dict:
    return {"cellscape": CellscapeResource(root=str(root)), HANDLE_IO_MANAGER: HandleIOManager()}


def test_definitions_hold_the_ingest_graph():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"plate_images", "plate_metadata", "nuclei_masks", "plate_frames", "frame_catalog",
            "dataset_splits", "dataset_version", "cell_image_sets", "segmentation_model", "counting_model",
            "segmentation_results"} <= keys
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert {"schema_suite", "provenance_suite", "checksums_suite", "geometry_suite", "splits_disjoint"} <= checks
    assert defs.resolve_sensor_def("new_plate_sensor") is not None
    assert defs.resolve_job_def("ingest_plate_job") is not None
    assert defs.resolve_job_def("segmentation_job") is not None


def test_declarative_automation_is_on_by_default():
    sensor = defs.resolve_sensor_def("automation_condition_sensor")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    frame_catalog = dg.AssetKey("frame_catalog")
    assert frame_catalog in sensor.asset_selection.resolve(defs.resolve_asset_graph())
    assert defs.resolve_assets_def(frame_catalog).automation_conditions_by_key[frame_catalog] is not None


def test_dagster_definitions_validate_passes():
    env = dict(os.environ, DAGSTER_HOME=str(REPO / "dagster_home"))
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture
def project(tmp_path):
    """A project root with two small simulated plates under data/plates (two fields per well, so a
    field-exclusive split can fill train and valid)."""
    root = tmp_path / "project"
    simulate_plates(root / "data" / "plates", n_plates=2, seed=5, wells=2, fields_per_well=2, field_size=320)
    return root


def _materialize_plate(root: Path, pk: str, instance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        PLATE_ASSETS,
        partition_key=pk,
        instance=instance,
        resources=_resources(root),
        raise_on_error=False,
    )


def test_plate_assets_materialize_and_a_failing_check_blocks_frames(project):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("plates", ["plate01", "plate02"])
        res = _materialize_plate(project, "plate01", instance)
        assert res.success
        mats = {e.asset_key.to_user_string(): e for e in res.get_asset_materialization_events()}
        assert set(mats) == {"plate_images", "plate_metadata", "nuclei_masks", "plate_frames"}
        checks = res.get_asset_check_evaluations()
        assert len(checks) == 5 and all(c.passed for c in checks)
        md = res.asset_materializations_for_node("plate_frames")[0].metadata
        assert md["frames"].value > 0 and "frames_figure" in md
        # the UI's view: figures fit the metadata dialog with the full-size file beside; tables typed
        assert sum(assert_ui_metadata(e.materialization.metadata) for e in mats.values()) == 2
        preview = mats["plate_metadata"].materialization.metadata["preview"]
        assert isinstance(preview, dg.TableMetadataValue) and "sha256" not in table_frame(preview).columns
        assert (project / "artifacts" / "figures" / "plate01" / "frames_grid.png").stat().st_size > 10_000
        assert (project / "artifacts" / "figures" / "plate01" / "nuclei_field.png").stat().st_size > 10_000

        store = FrameStore(str(project / "artifacts" / "frames"))
        before = store.read_table("plate01")
        frames_before = store.read_frames("plate01", np.arange(len(before)))
        assert frames_before.shape == (len(before), 100, 100, 3)
        assert np.isfinite(frames_before).all()

        # plate02 gets a checksum mismatch: the checks fail, frames are never cut
        plate02 = project / "data" / "plates" / "plate02"
        name = read_plate(plate02).metadata["file_name"].iloc[0]
        set_value(plate02, name, "sha256", "0" * 64)
        raw_before = {p.name: p.read_bytes() for p in plate02.iterdir()}
        res2 = _materialize_plate(project, "plate02", instance)
        assert not res2.success
        failed = [c for c in res2.get_asset_check_evaluations() if not c.passed]
        assert [c.check_name for c in failed] == ["checksums_suite"]
        # every check result names its plate (the UI shows no partition for check results)
        for c in res2.get_asset_check_evaluations():
            assert c.metadata["plate"].value == "plate02" and c.description.startswith("plate plate02:")
        assert "failed" in failed[0].description
        failures = table_frame(failed[0].metadata["failures"])
        assert list(failures.columns) == ["expectation", "column", "files", "message", "examples"]
        assert "sha256" in failures.to_string()
        passed = next(c for c in res2.get_asset_check_evaluations() if c.passed)
        assert table_frame(passed.metadata["failures"]).empty
        done = {e.asset_key.to_user_string() for e in res2.get_asset_materialization_events()}
        assert "plate_frames" not in done and "nuclei_masks" not in done
        # the earlier plate is intact and nothing was stored for plate02; raw folder untouched
        assert store.plate_ids() == ["plate01"]
        pd.testing.assert_frame_equal(store.read_table("plate01"), before)
        np.testing.assert_array_equal(store.read_frames("plate01", np.arange(len(before))), frames_before)
        assert {p.name: p.read_bytes() for p in plate02.iterdir()} == raw_before


def test_plate_assets_stream_fields_into_the_store_and_store_what_the_whole_plate_steps_give(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (plate_dir,) = simulate_plates(root / "data" / "plates", n_plates=1, seed=5, wells=2, fields_per_well=2,
                                   field_size=320)

    def whole_plate(*args, **kwargs):
        raise AssertionError("a whole plate's masks or frames in memory")

    for name in ("write_plate", "write_masks", "read_masks"):
        monkeypatch.setattr(FrameStore, name, whole_plate)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("plates", ["plate01"])
        res = _materialize_plate(root, "plate01", instance)
        assert res.success
        masks_md = res.asset_materializations_for_node("nuclei_masks")[0].metadata
        frames_md = res.asset_materializations_for_node("plate_frames")[0].metadata
    monkeypatch.undo()
    plate = read_plate(plate_dir)
    nuclei = detect_plate_nuclei(plate, NucleusConfig())
    frames, table = crop_plate_frames(plate, nuclei, FrameConfig())
    store = FrameStore(str(root / "artifacts" / "frames"))
    masks, mask_table = store.read_masks("plate01")
    np.testing.assert_array_equal(masks, np.stack([n.labels for n in nuclei]))
    assert list(zip(mask_table["well"], mask_table["field_id"], strict=True)) == [(n.well, n.field_id) for n in nuclei]
    assert masks_md["fields"].value == len(nuclei) and masks_md["nuclei"].value == sum(len(n.centres) for n in nuclei)
    pd.testing.assert_frame_equal(store.read_table("plate01"), table)
    np.testing.assert_array_equal(store.read_frames("plate01", np.arange(len(table))), frames)
    assert frames_md["frames"].value == len(table) and frames_md["shape"].value == str(frames.shape)
    assert frames_md["store_version"].value == store.read_manifest("plate01")["version"]


def test_image_defects_are_a_blocking_check_and_excluded_fields_are_left_out(tmp_path):
    root = tmp_path / "project"
    simulate_plates(root / "data" / "plates", n_plates=1, seed=56, wells=3, fields_per_well=3, field_size=256,
                    defects=True, defect_rate=0.7)  # 2 blank, 2 saturated, 1 out-of-focus field; 4 good
    excluded = "A01 f00, A01 f01, A02 f00, A02 f01, A02 f02"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("plates", ["plate01"])
        res = _materialize_plate(root, "plate01", instance)
        assert res.success
        (images,) = [c for c in res.get_asset_check_evaluations() if c.check_name == "images_suite"]
        assert images.passed and images.description == (
            f"plate plate01: images suite passed; 5 field(s) excluded from ingest: {excluded}")
        assert images.metadata["plate"].value == "plate01" and images.metadata["excluded_fields"].value == excluded
        assert "A02_f00_nucleus.tif" in set(table_frame(images.metadata["defects"])["file"])
        md = res.asset_materializations_for_node("nuclei_masks")[0].metadata
        assert md["fields"].value == 4 and md["excluded_fields"].value == excluded
        masks, mask_table = FrameStore(str(root / "artifacts" / "frames")).read_masks("plate01")
        assert sorted(zip(mask_table["well"], mask_table["field_id"], strict=True)) == [
            ("A01", 2), ("A03", 0), ("A03", 1), ("A03", 2)]

        # blank set to block on the resource: the check fails, naming the plate and the fields, and blocks
        res2 = dg.materialize(
            PLATE_ASSETS, partition_key="plate01", instance=instance, raise_on_error=False,
            resources={"cellscape": CellscapeResource(root=str(root), qc=PlateQCSettings(blank="block")),
                       HANDLE_IO_MANAGER: HandleIOManager()})
        assert not res2.success
        (failed,) = [c for c in res2.get_asset_check_evaluations() if not c.passed]
        assert failed.check_name == "images_suite"
        assert failed.description.startswith("plate plate01: images suite failed 1 expectation(s); blocked by "
                                              "field(s) A02 f00, A02 f02")
        assert failed.metadata["blocked_fields"].value == "A02 f00, A02 f02"
        assert "signal_snr" in table_frame(failed.metadata["failures"]).to_string()
        done = {e.asset_key.to_user_string() for e in res2.get_asset_materialization_events()}
        assert "nuclei_masks" not in done and "plate_frames" not in done


def _dvc(root: Path, *args: str):
    dvc = Path(sys.executable).parent / "dvc"
    subprocess.run([str(dvc), *args], cwd=root, check=True, capture_output=True, text=True)


def test_dataset_assets_pin_catalog_and_split(project, tmp_path):
    _dvc(project, "init", "--no-scm", "-q")
    _dvc(project, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    _dvc(project, "add", "-q", "data")
    resources = _resources(project)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("plates", ["plate01", "plate02"])
        for pk in ("plate01", "plate02"):
            assert _materialize_plate(project, pk, instance).success
        res = dg.materialize(
            ALL, selection=DATASET_ASSETS,
            instance=instance, resources=resources,
            # 4 proteins with one field each: only a protein-exclusive split can fill train and valid
            run_config={"ops": {"dataset_splits": {"config": {"train": 0.5, "valid": 0.5, "test": 0.0,
                                                              "exclusive_by": "protein"}}}},
        )
        assert res.success
        md5 = res.asset_materializations_for_node("dataset_version")[0].metadata["dataset_md5"].value
        per_plate = table_frame(res.asset_materializations_for_node("frame_catalog")[0].metadata["per_plate"])
        assert list(per_plate.columns) == ["plate_id", "frames", "proteins"] and len(per_plate) == 2
        summary = table_frame(res.asset_materializations_for_node("dataset_splits")[0].metadata["summary"])
        assert summary.columns[0] == "split" and set(summary["split"]) <= {"train", "valid", "test"}
        # data.dvc pinned all of data/ (the earlier layout): now one pin per plate and the index
        assert md5 in (project / "data.dvc").read_text() and not md5.endswith(".dir")
        assert sorted(p.name for p in (project / "data" / "plates").glob("*.dvc")) == ["plate01.dvc", "plate02.dvc"]
        assert "plate01" in (project / "data" / "plates.yaml").read_text()
        assert any((tmp_path / "remote").rglob("*")), "dvc push put nothing in the remote"
        store = FrameStore(str(project / "artifacts" / "frames"))
        cat = store.read_catalog()
        assert len(cat) == sum(len(store.read_table(p)) for p in ("plate01", "plate02"))
        assert cat["protein_id"].nunique() == cat["ensg_id"].nunique() == 4
        assert store.read_catalog_manifest()["provenance"]["dataset_md5"] == md5
        splits = store.read_dataset_table("splits")
        assert set(splits["split"]) == {"train", "valid"} and len(splits) == len(cat)
        check = res.get_asset_check_evaluations()[0]
        assert check.check_name == "splits_disjoint" and check.passed
        # lineage by version id: each step names the versions it read
        handles = Path(instance.storage_directory()) / "handles"
        version = json.loads((handles / "dataset_version.json").read_text())
        catalog_h = json.loads((handles / "frame_catalog.json").read_text())
        splits_h = json.loads((handles / "dataset_splits.json").read_text())
        plates = {p: store.read_manifest(p)["version"] for p in ("plate01", "plate02")}
        assert {p: v["plate_version"] for p, v in version["plates"].items()} == plates == catalog_h["plates"]
        assert version["dataset_md5"] == catalog_h["dataset_md5"] == splits_h["dataset_md5"] == md5
        assert splits_h["catalog_version"] == catalog_h["catalog_version"] == store.read_catalog_manifest()["version"]
        assert set(cat["plate_version"]) == set(plates.values())

        # plate01 re-ingested: a new plate version, but the recorded catalog still reads the old one
        assert _materialize_plate(project, "plate01", instance).success
        assert store.read_manifest("plate01")["version"] != plates["plate01"]
        old = store.read_dataset_table("catalog", version=catalog_h["catalog_version"])
        pd.testing.assert_frame_equal(old, cat)
        assert len(store.read_batch(old.head(5))) == 5  # the old plate version is still readable by id
        # the next pin and catalog pick up the new plate version (a re-pin is part of the flow)
        res = dg.materialize(ALL, selection=DATASET_ASSETS[:2], instance=instance, resources=resources)
        assert res.success
        catalog_h2 = json.loads((handles / "frame_catalog.json").read_text())
        assert catalog_h2["plates"]["plate01"] == store.read_manifest("plate01")["version"]
        assert catalog_h2["catalog_version"] != catalog_h["catalog_version"]


def test_splits_check_fails_an_empty_split_instead_of_passing_vacuously(tmp_path):
    # one field per protein, field-exclusive: every frame lands in train and valid stays empty
    root = tmp_path / "project"
    store = FrameStore(str(root / "artifacts" / "frames"))
    n = 8
    store.write_plate("p", np.zeros((n, 20, 20, 3), np.float32), pd.DataFrame({
        "frame_id": [f"p/A{i // 2:02d}/f00/n{i % 2:04d}" for i in range(n)], "well": [f"A{i // 2:02d}" for i in range(n)],
        "field_id": 0, "gene": [f"G{i // 2}" for i in range(n)], "ensg_id": [f"ENSG{i // 2:011d}" for i in range(n)]}))
    man = store.write_catalog(store.catalog())
    handles = tmp_path / "handles"
    handles.mkdir()
    (handles / "frame_catalog.json").write_text(json.dumps({
        "catalog_version": man["version"], "dataset_md5": None, "content_key": "k",
        "plates": {"p": store.read_manifest("p")["version"]}}))
    resources = {"cellscape": CellscapeResource(root=str(root)), HANDLE_IO_MANAGER: HandleIOManager(base_dir=str(handles))}
    res = dg.materialize(ALL, selection=[store_defs.dataset_splits], resources=resources,
                         run_config={"ops": {"dataset_splits": {"config": {"train": 0.5, "valid": 0.5, "test": 0.0}}}},
                         raise_on_error=False)
    check = res.get_asset_check_evaluations()[0]
    assert check.check_name == "splits_disjoint" and not check.passed
    assert check.metadata["empty_splits"].value == "valid"
    assert check.metadata["frames_per_split"].value == {"train": 8, "valid": 0, "test": 0}
    assert check.metadata["problems"].value.startswith("valid is empty although the config gives it 0.5 of the fields")
    assert check.metadata["fractions"].value == "0.5/0.5/0" and check.metadata["exclusive_by"].value == "field"
    # the handle says so, and a model refuses it before training
    assert json.loads((handles / "dataset_splits.json").read_text())["disjoint"] is False
    res = dg.materialize(ALL, selection=[model.localization_model], resources=resources, raise_on_error=False)
    assert not res.success
    assert "failed splits_disjoint" in str(res.failure_data_for_node("localization_model").error)


def test_new_plate_sensor_picks_complete_settled_plates_only(project):
    plates_dir = project / "data" / "plates"
    old = time.time() - 60
    for p in plates_dir.rglob("*"):
        os.utime(p, (old, old))
    # a half-copied plate: metadata lists a file that is not there yet
    half = plates_dir / "plate03"
    shutil.copytree(plates_dir / "plate02", half)
    (half / "plate.json").write_text((half / "plate.json").read_text().replace("plate02", "plate03"))
    meta = (half / METADATA_CSV).read_text().replace("plate02", "plate03")
    (half / METADATA_CSV).write_text(meta)
    next(half.glob("*_protein.tif")).unlink()
    for p in half.rglob("*"):
        os.utime(p, (old, old))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("plates", ["plate01"])
        ctx = dg.build_sensor_context(instance=instance, resources={"cellscape": CellscapeResource(root=str(project))})
        result = new_plate_sensor(ctx)
        assert [r.partition_key for r in result.run_requests] == ["plate02"]
        assert result.dynamic_partitions_requests[0].partition_keys == ["plate02"]
        # a plate still being written (fresh mtime) waits for the next tick
        (plates_dir / "plate02" / "plate.json").touch()
        result = new_plate_sensor(dg.build_sensor_context(instance=instance, resources={"cellscape": CellscapeResource(root=str(project))}))
        assert isinstance(result, dg.SkipReason)


def test_model_assets_train_the_tiny_preset_and_the_atlas_reads_their_own_split(project, tmp_path):
    _dvc(project, "init", "--no-scm", "-q")
    _dvc(project, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    _dvc(project, "add", "-q", "data")
    resources = _resources(project)
    small = {"preset": "tiny", "epochs": 2, "batch_size": 8}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("plates", ["plate01", "plate02"])
        for pk in ("plate01", "plate02"):
            assert _materialize_plate(project, pk, instance).success
        cellscape = CellscapeResource(root=str(project))
        assert isinstance(model.retrain_request(instance, cellscape), dg.RunRequest)  # plates, no model yet
        res = dg.materialize(
            ALL, selection=DATASET_ASSETS + MODEL_ASSETS,
            instance=instance, resources=resources,
            run_config={"ops": {
                # one field per protein: a field-exclusive split can only fill train (the check fails
                # an empty split the config asks for), and the health check then reads train metrics
                "dataset_splits": {"config": {"train": 0.5, "valid": 0.5, "test": 0.0}},
                "localization_model": {"config": small},
                "localization_model_ablation": {"config": small},
            }},
        )
        assert res.success
        handles = Path(instance.storage_directory()) / "handles"
        splits_h = json.loads((handles / "dataset_splits.json").read_text())
        for name, weight in (("localization_model", 1.0), ("localization_model_ablation", 0.0)):
            md = res.asset_materializations_for_node(name)[0].metadata
            assert md["classification_weight"].value == weight
            ckpt = Path(md["checkpoint_dir"].value)
            assert (ckpt / "metrics.json").is_file() and (ckpt / "checkpoints").is_dir()
            assert (ckpt / "model.json").is_file()
            assert (ckpt / "figures" / "reconstructions.png").stat().st_size > 5_000
            assert (ckpt / "figures" / "curves.png").stat().st_size > 5_000
            assert "data:image/png;base64" in md["reconstructions"].value
            assert assert_ui_metadata(md) == 2
            assert list(table_frame(md["history"]).columns[:1]) == ["epoch"]
            # the model records the exact versions it read, and pins them in the store
            prov = json.loads((ckpt / "model.json").read_text())["provenance"]
            assert prov["splits_store_version"] == splits_h["splits_version"]
            assert prov["plates"] == splits_h["plates"] and prov["dataset_md5"] == splits_h["dataset_md5"]
        store = FrameStore(str(project / "artifacts" / "frames"))
        assert any(p.startswith("model-localization_model-") for p in store.pins())
        checks = {c.asset_key.to_user_string(): c for c in res.get_asset_check_evaluations() if c.check_name == "model_health"}
        assert set(checks) == {"localization_model", "localization_model_ablation"}
        for c in checks.values():
            assert c.metadata["perplexity"].value > 0
        promoted = json.loads((handles / "current_model.json").read_text())
        assert promoted["current"]["checkpoint"] == str(ckpt.parent.parent / "localization_model" / ckpt.name)
        assert promoted["previous"] is None

        # re-split after training (another seed): the atlas still embeds the model's own split version
        res = dg.materialize(ALL, selection=[store_defs.dataset_splits], instance=instance, resources=resources,
                             run_config={"ops": {"dataset_splits": {"config": {"seed": 7, "train": 0.5,
                                                                                 "valid": 0.5, "test": 0.0}}}})
        assert res.success
        assert json.loads((handles / "dataset_splits.json").read_text())["splits_version"] != splits_h["splits_version"]
        atlas_assets = [atlas.frame_embeddings, atlas.protein_spectra, atlas.feature_spectrum_clusters,
                        atlas.umap_projection, atlas.localization_report]
        res = dg.materialize(
            ALL + atlas_assets, selection=atlas_assets, instance=instance, resources=resources,
            run_config={"ops": {"feature_spectrum_clusters": {"config": {"n_clusters": 4}},
                                "localization_report": {"config": {"k": 2, "score_split": "valid"}},
                                "umap_projection": {"config": {"n_neighbors": 5}}}},
        )
        assert res.success
        emb_h = json.loads((handles / "frame_embeddings.json").read_text())
        assert emb_h["splits_store_version"] == splits_h["splits_version"]
        assert emb_h["frames"] == len(store.read_dataset_table("splits", version=splits_h["splits_version"]))
        md = res.asset_materializations_for_node("localization_report")[0].metadata
        report = Path(md["path"].value)
        scores_table = table_frame(md["scores"])
        assert list(scores_table.columns) == ["score", "localization_model", "localization_model_ablation", "classical"]
        # atlas figures: code correlation and spectra per model, UMAPs, aligned UMAPs
        assert sum(assert_ui_metadata(e.materialization.metadata) for e in res.get_asset_materialization_events()) == 6
        for name in ("localization_model", "localization_model_ablation"):
            assert 0 <= md[f"{name}_knn_accuracy"].value <= 1
            assert (report / f"{name}_spectra.parquet").is_file() and (report / f"{name}_matrices.npz").is_file()
            with np.load(report / f"{name}_matrices.npz", allow_pickle=False) as z:
                assert "model" in str(z["provenance"]) and z["leaf_order"].size == z["used_codes"].size
        assert (report / "figures" / "aligned_umaps.png").stat().st_size > 5_000
        scores = json.loads((report / "scores.json").read_text())
        assert set(scores["scores"]) == {"localization_model", "localization_model_ablation", "classical"}
        assert scores["baselines"] == ["classical"] and scores["score_config"]["score_split"] == "valid"
        assert scores["provenance"]["n_clusters"] == 4  # feature_spectrum_clusters' own count
        assert all(Path(m["checkpoint"]).is_dir() for m in scores["provenance"]["models"].values())
        # nothing new since the model: the nightly schedule skips, also after re-ingesting identical files
        assert isinstance(model.retrain_request(instance, cellscape), dg.SkipReason)
        assert _materialize_plate(project, "plate01", instance).success
        assert isinstance(model.retrain_request(instance, cellscape), dg.SkipReason)


def test_dvc_yaml_and_params_parse():
    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc), "stage", "list"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert {"validate", "ingest", "train", "report"} <= {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}


def test_dvc_lock_is_committed_and_matches_the_code_and_params():
    """dvc.lock records the code and params every stage ran with: a change to a stage's code or
    params without `dvc repro` (and committing dvc.lock) fails here, so `dvc status` stays clean
    after `dvc pull` in a fresh clone.  Data and outputs are not checked (a clone may lack them)."""
    import yaml

    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    assert {"validate", "ingest", "train", "report"} <= set(lock["stages"])
    for stage in lock["stages"].values():
        assert all("md5" in o for o in stage.get("outs", [])), "every output is hashed in dvc.lock"
    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc), "status", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout or "{}")
    stale = {}
    for stage, changes in status.items():
        for change in changes if isinstance(changes, list) else []:
            for kind in ("changed deps", "changed params"):
                for path, what in (change.get(kind) or {}).items() if isinstance(change, dict) else []:
                    if kind == "changed params" or path.startswith(("assets_pkg", "params.yaml")):
                        stale.setdefault(stage, []).append(f"{path}: {what}")
    assert not stale, f"dvc.lock is stale (run `dvc repro` and commit dvc.lock): {stale}"


# The cellscape command each DVC stage runs.
_STAGE_COMMAND = {"validate": "cmd_validate", "ingest": "cmd_ingest", "train": "cmd_train", "report": "cmd_report"}
# Library modules that cannot change a stage's output: exception classes (messages only).
_NO_OUTPUT_EFFECT = {"assets_pkg/core/errors.py"}


def _command_imports(command: str) -> list[str]:
    """The assets_pkg modules a cellscape command imports lazily, with those of the CLI helpers it
    calls (transitively, across the cli*.py modules), read from the code rather than listed by hand."""
    import ast

    funcs = {}
    for path in sorted((REPO / "assets_pkg").glob("cli*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                funcs.setdefault(node.name, node)
    modules, seen, todo = set(), set(), [command]
    while todo:
        name = todo.pop()
        if name in seen or name not in funcs:
            continue
        seen.add(name)
        for node in ast.walk(funcs[name]):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                modules.add(f"assets_pkg.{node.module}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                todo.append(node.func.id)
    return sorted(modules)


@pytest.mark.parametrize("stage", sorted(_STAGE_COMMAND))
def test_dvc_stage_depends_on_every_library_module_it_runs(stage):
    """A library module that a stage's command imports but dvc.yaml does not list would change
    the output without `dvc repro` noticing (the report once listed 7 of the 16 localization
    modules it imports; the train stage read frames through the store without listing it)."""
    import yaml

    entries = _command_imports(_STAGE_COMMAND[stage])
    assert entries, f"{_STAGE_COMMAND[stage]} imports nothing lazily"
    probe = (
        "import importlib, sys\n"
        f"for m in {entries!r}: importlib.import_module(m)\n"
        "print('\\n'.join(sorted(getattr(m, '__file__', None) or '' for n, m in sys.modules.items()"
        " if n.startswith('assets_pkg'))))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    used = {Path(f).resolve().relative_to(REPO).as_posix() for f in proc.stdout.splitlines() if f}
    library = {p for p in used if p.startswith("assets_pkg/core/") and not p.endswith("__init__.py")}
    assert {f"{m.replace('.', '/')}.py" for m in entries} <= library, f"{entries} were not imported"
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
    missing = sorted(p for p in library - _NO_OUTPUT_EFFECT
                     if not any(p == d or p.startswith(d.rstrip("/") + "/") for d in deps))
    assert not missing, f"dvc.yaml stage {stage!r} runs {missing} but does not list them as deps"
