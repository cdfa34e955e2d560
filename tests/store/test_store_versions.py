"""Versions readable by id, conditional pointer moves, pins and garbage collection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from assets_pkg.core.errors import StoreError
from assets_pkg.core.store.frame_store import ChunkLayout, FrameStore
from assets_pkg.core.store.naming import new_version, version_time
from assets_pkg.core.store.retention import collect_garbage

SMALL = ChunkLayout(chunk_frames=1, shard_frames=4)


def frames_for(n, seed=0, size=8):
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


def table_for(plate_id, n):
    return pd.DataFrame({"frame_index": np.arange(n), "plate_id": plate_id, "gene": "ACTB"})


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    return FrameStore("memory://" if request.param == "memory" else tmp_path / "frames", layout=SMALL)


def test_every_version_is_readable_by_id(store):
    fr1, fr2 = frames_for(5, seed=1), frames_for(3, seed=2)
    m1 = store.write_plate("P1", fr1, table_for("P1", 5))
    m2 = store.write_plate("P1", fr2, table_for("P1", 3))
    assert store.read_manifest("P1") == m2 and store.read_manifest("P1", version=m1["version"]) == m1
    assert len(store.read_table("P1", version=m1["version"])) == 5 and len(store.read_table("P1")) == 3
    np.testing.assert_array_equal(store.open_array("P1", m1["version"]).read().result(), fr1)
    listed = store.versions("P1")
    assert [v["version"] for v in listed] == [m1["version"], m2["version"]]
    assert [(v["current"], v["complete"], v["pinned_by"]) for v in listed] == [(False, True, []), (True, True, [])]
    assert listed[0]["created"].startswith(str(version_time(m1["version"]).date()))
    # read_batch reads exactly the version each row names, current or not, in request order.
    rows = pd.DataFrame({"plate_id": ["P1", "P1"], "frame_index": [4, 0], "plate_version": m1["version"]})
    np.testing.assert_array_equal(store.read_batch(rows), fr1[[4, 0]])
    with pytest.raises(StoreError, match=f"out of range 0..2 for plate 'P1' version {m2['version']}"):
        store.read_frames("P1", [4])  # without a version: the current one
    # Dataset tables likewise.
    t1 = store.write_dataset_table("splits", pd.DataFrame({"plate_id": ["P1"], "split": ["train"]}))
    store.write_dataset_table("splits", pd.DataFrame({"plate_id": ["P1"], "split": ["test"]}))
    assert store.read_dataset_table("splits")["split"].tolist() == ["test"]
    assert store.read_dataset_table("splits", version=t1["version"])["split"].tolist() == ["train"]
    assert store.read_dataset_manifest("splits", version=t1["version"]) == t1


def test_unknown_versions_and_bad_ids_are_store_errors(store):
    m = store.write_plate("P1", frames_for(2), table_for("P1", 2))
    other = new_version()
    with pytest.raises(StoreError, match=f"version {other} of plate 'P1' is not in the store"):
        store.read_manifest("P1", version=other)
    rows = pd.DataFrame({"plate_id": ["P1"], "frame_index": [0], "plate_version": [other]})
    with pytest.raises(StoreError, match=f"version {other} of plate 'P1'"):
        store.read_batch(rows)
    for bad in ("../x", "v1", m["version"] + "/.."):
        with pytest.raises(StoreError, match="not a version id"):
            store.read_manifest("P1", version=bad)
    with pytest.raises(StoreError, match="several versions"):
        store.read_batch(pd.DataFrame({"plate_id": ["P1", "P1"], "frame_index": [0, 1],
                                       "plate_version": [m["version"], other]}))
    with pytest.raises(StoreError, match="reserved"):
        store.write_dataset_table("plates", pd.DataFrame({"a": [1]}))


def test_conditional_pointer_write_refuses_a_stale_generation(store):
    key = "plates/P1/manifest.json"
    raw, missing = store._read_stamped(key)
    assert raw is None
    m1 = store.write_plate("P1", frames_for(2, seed=1), table_for("P1", 2))
    # A writer that read "no pointer yet" cannot overwrite the pointer written since.
    assert not store._write_if(key, b"{}", missing)
    raw, gen1 = store._read_stamped(key)
    store.write_plate("P1", frames_for(2, seed=2), table_for("P1", 2))
    assert not store._write_if(key, raw, gen1)  # nor can one that read version 1
    assert store.read_manifest("P1")["version"] > m1["version"]
    _, gen2 = store._read_stamped(key)
    assert store._write_if(key, raw, gen2)  # the fresh generation succeeds
    assert store.read_manifest("P1") == m1


def test_a_later_created_version_wins_the_race(store, monkeypatch):
    """A writer whose pointer move meets a newer concurrent version leaves the pointer."""
    fr_old, fr_new = frames_for(4, seed=1), frames_for(4, seed=2)
    real_write_if = FrameStore._write_if
    state = {"raced": False}

    def racing_write_if(self, key, data, generation):
        if not state["raced"]:  # another writer creates and publishes a newer version first
            state["raced"] = True
            state["newer"] = FrameStore(self._spec, layout=SMALL, context=self.context).write_plate(
                "P1", fr_new, table_for("P1", 4))
        return real_write_if(self, key, data, generation)

    monkeypatch.setattr(FrameStore, "_write_if", racing_write_if)
    mine = store.write_plate("P1", fr_old, table_for("P1", 4))
    monkeypatch.undo()
    assert mine["version"] < state["newer"]["version"]
    assert store.read_manifest("P1") == state["newer"]  # the later-created version is current
    np.testing.assert_array_equal(store.read_frames("P1", np.arange(4), version=mine["version"]), fr_old)


def test_catalog_update_rebuilds_on_conflict(store):
    """A catalog update whose pointer moved meanwhile rebuilds: no plate is dropped."""
    store.write_plate("A", frames_for(2), table_for("A", 2))
    other = FrameStore(store._spec, layout=SMALL, context=store.context)
    calls = []

    def augment(cat):
        calls.append(sorted(set(cat["plate_id"])))
        if len(calls) == 1:  # a concurrent ingest adds plate B and publishes its catalog
            other.write_plate("B", frames_for(3), table_for("B", 3))
            other.update_catalog({"by": "other"})
        return cat

    man = store.update_catalog({"by": "me"}, augment=augment)
    assert calls == [["A"], ["A", "B"]]
    assert man["provenance"] == {"by": "me", "plates": ["A", "B"]} and man["n_rows"] == 5
    assert store.read_catalog_manifest() == man
    assert sorted(set(store.read_catalog()["plate_id"])) == ["A", "B"]
    # The losing build was removed; the other writer's catalog stays readable by id.
    assert [v["complete"] for v in store.versions("catalog", kind="tables")] == [True, True]


def test_pins(store):
    m1 = store.write_plate("P1", frames_for(2), table_for("P1", 2))
    c1 = store.update_catalog()
    rec = store.pin("model-1", {"plates": {"P1": m1["version"]}, "tables": {"catalog": c1["version"]}}, "trained")
    assert rec["refs"]["plates"] == {"P1": m1["version"]} and rec["note"] == "trained"
    assert store.pins() == {"model-1": rec}
    assert store.versions("P1")[0]["pinned_by"] == ["model-1"]
    with pytest.raises(StoreError, match="not in the store"):
        store.pin("model-2", {"plates": {"P1": new_version()}})
    with pytest.raises(StoreError, match="refs"):
        store.pin("model-3", {"models": {}})
    assert store.unpin("model-1") and not store.unpin("model-1")
    assert "model-1" not in store.pins()


def test_gc_keeps_current_pinned_newer_and_young_and_removes_the_rest(store, monkeypatch):
    fr = [frames_for(3, seed=s) for s in range(4)]
    m = [store.write_plate("P1", f, table_for("P1", 3)) for f in fr[:3]]  # m[2] current
    store.write_masks("P1", np.zeros((1, 4, 4), np.int32), pd.DataFrame({"well": ["A01"]}))
    masks2 = store.write_masks("P1", np.ones((1, 4, 4), np.int32), pd.DataFrame({"well": ["A01"]}))
    c1 = store.update_catalog()
    store.write_plate("P2", frames_for(2), table_for("P2", 2))
    c2 = store.update_catalog()
    store.pin("run-1", {"plates": {"P1": m[0]["version"]}})
    # A version newer than the current one whose writer has not moved the pointer yet.
    monkeypatch.setattr(FrameStore, "_publish", lambda self, parent, manifest: False)
    in_flight = store.write_plate("P1", fr[3], table_for("P1", 3))
    monkeypatch.undo()
    assert store.read_manifest("P1") == m[2]

    # Everything is young: nothing goes.
    res = store.collect_garbage(dry_run=True)
    assert res["removed"] == [] and all("younger" in e["reason"] or e["reason"] in ("current",)
                                        or "pinned" in e["reason"] or "newer" in e["reason"] for e in res["kept"])
    # An hour later, a dry run lists the garbage and removes nothing.
    later = datetime.now(UTC) + timedelta(hours=2)
    dry = collect_garbage(store, dry_run=True, now=later)
    gone = {(e["kind"], e["name"], e["version"]) for e in dry["removed"]}
    assert gone == {("plates", "P1", m[1]["version"]), ("masks", "P1", store.versions("P1", "masks")[0]["version"]),
                    ("tables", "catalog", c1["version"])}
    assert store.read_manifest("P1", version=m[1]["version"])
    res = collect_garbage(store, now=later)
    assert {(e["kind"], e["name"], e["version"]) for e in res["removed"]} == gone
    reasons = {(e["kind"], e["name"], e["version"]): e["reason"] for e in res["kept"]}
    assert reasons[("plates", "P1", m[2]["version"])] == "current"
    assert reasons[("plates", "P1", m[0]["version"])] == "pinned by run-1"
    assert "newer" in reasons[("plates", "P1", in_flight["version"])]
    assert reasons[("masks", "P1", masks2["version"])] == "current"
    assert reasons[("tables", "catalog", c2["version"])] == "current"
    # What stays reads; what went is a StoreError naming plate and version.
    np.testing.assert_array_equal(store.read_frames("P1", [2], version=m[0]["version"]), fr[0][[2]])
    np.testing.assert_array_equal(store.read_frames("P1", [1]), fr[2][[1]])
    rows = store.read_catalog(version=c2["version"])
    assert len(store.read_batch(rows)) == 5
    stale = pd.DataFrame({"plate_id": ["P1"], "frame_index": [0], "plate_version": [m[1]["version"]]})
    with pytest.raises(StoreError, match=f"version {m[1]['version']} of plate 'P1' is not in the store"):
        store.read_batch(stale)
    assert [v["version"] for v in store.versions("P1")] == [m[0]["version"], m[2]["version"], in_flight["version"]]
    # Unpinned, the pinned version goes on the next collection.
    store.unpin("run-1")
    res = collect_garbage(store, now=later)
    assert [e["version"] for e in res["removed"]] == [m[0]["version"]]
    with pytest.raises(StoreError, match="grace_seconds"):
        store.collect_garbage(grace_seconds=-1)


def test_gc_removes_a_crashed_write_after_the_grace_period(store, monkeypatch):
    store.write_plate("P1", frames_for(2), table_for("P1", 2))
    monkeypatch.setattr(FrameStore, "_publish", lambda self, parent, manifest: 1 / 0)
    monkeypatch.setattr(FrameStore, "_discard", lambda self, parent, version: None)  # the process died
    with pytest.raises(ZeroDivisionError):
        store.write_plate("P1", frames_for(2, seed=5), table_for("P1", 2))
    monkeypatch.undo()
    assert len(store.versions("P1")) == 2
    assert collect_garbage(store, grace_seconds=3600)["removed"] == []
    # Newer than the current version, so kept while its writer might still finish ...
    res = collect_garbage(store, grace_seconds=0)
    assert res["removed"] == [] and "newer" in res["kept"][-1]["reason"]
    # ... until a later write makes it older than the current one.
    store.write_plate("P1", frames_for(2, seed=6), table_for("P1", 2))
    assert len(collect_garbage(store, grace_seconds=0)["removed"]) == 2
    assert len(store.versions("P1")) == 1


def test_a_current_read_whose_version_is_collected_meanwhile_retries_on_the_new_one(tmp_path, monkeypatch):
    st = FrameStore(tmp_path, layout=SMALL)
    st.write_plate("P1", frames_for(3, seed=1), table_for("P1", 3))
    fr2 = frames_for(3, seed=2)
    real_submit = FrameStore._submit
    calls = []

    class Gone:
        def result(self):
            raise ValueError("NOT_FOUND: the chunk was removed")

    def submit_then_replace_and_collect(self, requests, versions):
        futs = real_submit(self, requests, versions)
        if not calls:  # between issuing the read and collecting it: v2 lands, v1 is collected
            FrameStore(tmp_path, layout=SMALL).write_plate("P1", fr2, table_for("P1", 3))
            collect_garbage(FrameStore(tmp_path), grace_seconds=0)
            futs = {pid: (*f[:4], Gone()) for pid, f in futs.items()}
        calls.append(versions)
        return futs

    monkeypatch.setattr(FrameStore, "_submit", submit_then_replace_and_collect)
    np.testing.assert_array_equal(st.read_frames("P1", [2, 0]), fr2[[2, 0]])
    assert len(calls) == 2
