"""Gates: a model whose blocking health check failed is never promoted, embedded or counted as the
last model; the nightly schedule retrains on changed plate *content*, with the promoted model's
config, and retries a failed night once.  Model handles are written by hand (no training)."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets_pkg.core.store.frame_store import FrameStore
from assets_pkg.core.store.lineage import content_key
from assets_pkg.definitions import defs
from assets_pkg.defs.io import HANDLE_IO_MANAGER, HandleIOManager
from assets_pkg.defs.localization import atlas, model
from assets_pkg.defs.resources import CellscapeResource


def _handle(tmp_path: Path, run: str, passed: bool, key: str = "k0", config: dict | None = None) -> dict:
    ckpt = tmp_path / "models" / run
    ckpt.mkdir(parents=True, exist_ok=True)
    return {"name": "localization_model", "checkpoint": str(ckpt), "step": 3, "run_id": run * 4,
            "config": config or {"preset": "tiny", "epochs": 3}, "dataset_md5": "abc.dir", "split_version": "s",
            "splits_store_version": "v1", "catalog_version": "c1", "plates": {"plate01": "p1"},
            "content_key": key, "health": {"passed": passed, "problems": "none" if passed else "codebook collapse"}}


@pytest.fixture
def env(tmp_path):
    handles = tmp_path / "handles"
    handles.mkdir()
    cellscape = CellscapeResource(root=str(tmp_path))
    resources = {"cellscape": cellscape, HANDLE_IO_MANAGER: HandleIOManager(base_dir=str(handles))}
    with dg.instance_for_test() as instance:
        yield instance, handles, cellscape, resources


def _promote(instance, handles: Path, resources: dict, handle: dict) -> dg.ExecuteInProcessResult:
    (handles / "localization_model.json").write_text(json.dumps(handle))
    return dg.materialize(list(defs.assets), selection=[model.current_model],
                          instance=instance, resources=resources, raise_on_error=False)


def test_a_model_that_failed_its_health_check_is_never_promoted(env, tmp_path):
    instance, handles, cellscape, resources = env
    good = _handle(tmp_path, "good", passed=True)
    assert _promote(instance, handles, resources, good).success
    bad = _handle(tmp_path, "bad", passed=False)
    res = _promote(instance, handles, resources, bad)
    assert not res.success
    assert "failed model_health" in str(res.failure_data_for_node("current_model").error)
    promoted = model.latest_handle(instance, model.current_model.key)
    assert promoted["current"]["checkpoint"] == good["checkpoint"]  # the good one stays current
    # a second healthy model is promoted and names the one it replaced
    newer = _handle(tmp_path, "newer", passed=True)
    assert _promote(instance, handles, resources, newer).success
    promoted = model.latest_handle(instance, model.current_model.key)
    assert promoted["current"]["checkpoint"] == newer["checkpoint"]
    assert promoted["previous"]["checkpoint"] == good["checkpoint"]


def test_the_atlas_leaves_out_an_unhealthy_ablation(env, tmp_path):
    instance, handles, cellscape, resources = env
    promoted = {"current": _handle(tmp_path, "good", True), "previous": _handle(tmp_path, "older", True)}
    ablation = _handle(tmp_path, "abl", passed=False)

    class Ctx:  # the helper only logs through the context
        class log:  # noqa: N801
            messages: list = []
            info = warning = staticmethod(lambda m: Ctx.log.messages.append(m))

    picked = atlas._models_to_embed(Ctx, promoted, ablation)
    assert set(picked) == {"localization_model", "localization_model_previous"}
    assert any("failed model_health" in m for m in Ctx.log.messages)
    ablation["health"]["passed"] = True
    assert "localization_model_ablation" in atlas._models_to_embed(Ctx, promoted, ablation)
    assert set(atlas._models_to_embed(Ctx, promoted, None)) == {"localization_model", "localization_model_previous"}


def _write_plate(store: FrameStore, pid: str, digest: str) -> None:
    frames = np.zeros((2, 4, 4, 3), np.float32)
    table = pd.DataFrame({"frame_id": [f"{pid}/a", f"{pid}/b"], "ensg_id": ["E1", "E2"]})
    store.write_plate(pid, frames, table, {"content_sha256": digest})


@dg.asset
def _failing_training():
    raise RuntimeError("the night's training failed")


def test_the_schedule_retrains_on_changed_content_with_the_promoted_config_and_retries_once(env, tmp_path):
    instance, handles, cellscape, resources = env
    assert isinstance(model.retrain_request(instance, cellscape), dg.SkipReason)  # no plates
    store = cellscape.store()
    _write_plate(store, "plate01", "d1")
    req = model.retrain_request(instance, cellscape)
    assert isinstance(req, dg.RunRequest) and req.tags["reason"] == "no model yet"
    key = content_key({"plate01": "d1"})
    assert req.tags[model.RETRAIN_TAG] == key

    # a promoted model trained on this content: nothing to do, also after an identical re-ingest
    config = {"preset": "full", "epochs": 7, "learning_rate": 0.0005}
    assert _promote(instance, handles, resources, _handle(tmp_path, "good", True, key, config)).success
    assert isinstance(model.retrain_request(instance, cellscape), dg.SkipReason)
    _write_plate(store, "plate01", "d1")  # new store version, same raw content
    assert isinstance(model.retrain_request(instance, cellscape), dg.SkipReason)
    # an unhealthy newer model does not count as the last model
    bad_key = content_key({"plate01": "d1", "plate02": "d2"})
    assert not _promote(instance, handles, resources, _handle(tmp_path, "bad", False, bad_key)).success

    # new content: retrain with the promoted model's own config
    _write_plate(store, "plate02", "d2")
    req = model.retrain_request(instance, cellscape)
    assert isinstance(req, dg.RunRequest)
    assert req.run_config["ops"]["localization_model"]["config"] == config
    assert req.tags[model.RETRAIN_TAG] == bad_key and req.tags["attempt"] == "1"
    # the night fails: retried once, then left alone
    for attempt in ("1", "2"):
        dg.materialize([_failing_training], instance=instance, raise_on_error=False,
                       tags={model.RETRAIN_TAG: bad_key, "attempt": attempt})
        req = model.retrain_request(instance, cellscape)
        if attempt == "1":
            assert isinstance(req, dg.RunRequest) and req.tags["attempt"] == "2"
            assert req.run_key != f"retrain-{bad_key[:16]}-1"
    assert isinstance(req, dg.SkipReason) and "failed 2 times" in req.skip_message


def test_an_ingested_plate_is_re_pinned_and_catalogued_by_automation():
    """After a plate's frames land (sensor-driven ingest), the automation sensor requests the DVC
    re-pin and the catalog in one go, so a recorded md5 always holds the plates used."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("plates", ["plate01"])
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert result.total_requested == 0
        instance.report_runless_asset_event(dg.AssetMaterialization("plate_frames", partition="plate01"))
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        requested = {r.key.to_user_string() for r in result.results if r.true_subset.size}
        assert {"dataset_version", "frame_catalog"} <= requested
        assert "localization_model" not in requested  # training stays on demand / nightly
