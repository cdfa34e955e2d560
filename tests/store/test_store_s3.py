"""The frame store on S3-compatible object storage: a real moto server on loopback (``s3`` fixture).

TensorStore's ``s3`` driver with an ``endpoint`` holds plates, masks, the catalog and pins;
versions, ``verify`` (damaged chunks named) and garbage collection work as on a folder; the
pointer swap is a real conditional write (``If-Match``/``If-None-Match``), atomic across
processes; a spec that asks for emulated conditional writes is refused for writing; and the
``cellscape`` command line ingests and trains against the bucket.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re

import numpy as np
import pandas as pd
import pytest

from assets_pkg.cli import main
from assets_pkg.core.errors import StoreError
from assets_pkg.core.store.frame_store import ChunkLayout, FrameStore

SMALL = ChunkLayout(chunk_frames=1, shard_frames=4)


def frames_for(n, seed=0, size=8):
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


def table_for(plate_id, n):
    return pd.DataFrame({"frame_index": np.arange(n), "plate_id": plate_id, "gene": "ACTB"})


@pytest.fixture
def spec(s3):
    """A kvstore spec for a fresh bucket on the session's moto server."""
    return s3.kvstore_spec(s3.create_bucket())


def test_frame_store_on_s3_versions_catalog_verify_gc_and_damage(s3, spec):
    store = FrameStore(spec, layout=SMALL)
    # the root has no URL form (explicit endpoint): messages name it by its spec
    assert json.loads(store.url)["bucket"] == spec["bucket"] and spec["bucket"] in repr(store)
    old = store.write_plate("P1", frames_for(8, seed=1), table_for("P1", 8))
    fr = frames_for(8, seed=2)
    new = store.write_plate("P1", fr, table_for("P1", 8))
    store.write_plate("P2", frames_for(3, seed=3), table_for("P2", 3))
    store.write_masks("P1", np.arange(2 * 8 * 8, dtype=np.int32).reshape(2, 8, 8) % 5,
                      pd.DataFrame({"well": ["A01", "A02"]}))
    store.update_catalog({"dataset_md5": None})
    store.pin("run1", {"plates": {"P2": store.read_manifest("P2")["version"]}})

    # a second client (its own connection pool and caches) sees the same store
    other = FrameStore(spec)
    assert other.plate_ids() == ["P1", "P2"]
    np.testing.assert_array_equal(other.read_frames("P1", np.arange(8)), fr)
    cat = other.read_catalog()
    assert len(cat) == 11 and len(other.read_batch(cat)) == 11
    assert other.read_manifest("P1", old["version"])["version"] == old["version"]
    assert set(other.pins()) == {"run1"}
    assert other.verify().ok

    res = other.collect_garbage(grace_seconds=0)
    assert [(e["name"], e["version"]) for e in res["removed"]] == [("P1", old["version"])]
    with pytest.raises(StoreError, match=f"version {old['version']} of plate 'P1' is not in the store"):
        store.read_manifest("P1", old["version"])
    np.testing.assert_array_equal(store.read_frames("P1", [0, 7]), fr[[0, 7]])

    # damage one shard object in the bucket: verify and reads name plate, version and chunk
    key = f"{spec['path']}plates/P1/{new['version']}/frames/c/1/0/0/0"
    client = s3.client()
    raw = bytearray(client.get_object(Bucket=spec["bucket"], Key=key)["Body"].read())
    raw[10] ^= 0x01
    client.put_object(Bucket=spec["bucket"], Key=key, Body=bytes(raw))
    report = FrameStore(spec).verify()
    assert not report.ok and len(report.problems) == 1
    assert f"plate 'P1' version {new['version']}" in str(report.problems[0])
    with pytest.raises(StoreError, match=rf"plate 'P1' version {new['version']}: 1 damaged chunk.*frames 4\.\.4"):
        FrameStore(spec).read_frames("P1", [4])


def _cas_counter(spec: dict, env: dict, barrier, queue) -> None:
    os.environ.update(env)
    store = FrameStore(spec)
    barrier.wait()
    done = 0
    while done < 25:
        raw, generation = store._read_stamped("counter")
        if store._write_if("counter", str(int(raw or b"0") + 1).encode(), generation):
            done += 1
    queue.put(done)


def test_pointer_swaps_are_conditional_writes_atomic_across_processes(s3, spec):
    store = FrameStore(spec)
    _, missing = store._read_stamped("k")
    assert store._write_if("k", b"1", missing)  # create only if absent (If-None-Match: *)
    assert not store._write_if("k", b"x", missing)
    raw, gen = store._read_stamped("k")
    assert store._write_if("k", b"2", gen)  # replace only if unchanged (If-Match: etag)
    assert not store._write_if("k", b"y", gen) and store._read_bytes("k") == b"2"

    ctx = mp.get_context("spawn")
    writers = 4
    barrier, queue = ctx.Barrier(writers), ctx.Queue()
    procs = [ctx.Process(target=_cas_counter, args=(spec, s3.env(), barrier, queue)) for _ in range(writers)]
    for p in procs:
        p.start()
    assert [queue.get(timeout=120) for _ in procs] == [25] * writers
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert store._read_bytes("counter") == str(writers * 25).encode()  # no increment lost


def test_emulated_conditional_writes_are_refused_unless_single_writer(spec):
    emulated = {**spec, "use_conditional_write": False}
    with pytest.raises(StoreError, match="use_conditional_write false") as e:
        FrameStore(emulated).write_plate("P1", frames_for(2), table_for("P1", 2))
    assert e.value.field == "use_conditional_write"
    assert FrameStore(spec).plate_ids() == []  # nothing became current
    FrameStore(emulated, single_writer=True).write_plate("P1", frames_for(2), table_for("P1", 2))
    np.testing.assert_array_equal(FrameStore(emulated).read_frames("P1", [1]), frames_for(2)[[1]])


def test_cli_ingest_train_verify_gc_against_the_bucket(s3, spec, tmp_path, capsys):
    plates = tmp_path / "plates"
    assert main(["simulate-plates", "--out", str(plates), "--plates", "2", "--seed", "5", "--wells", "4",
                 "--fields-per-well", "2", "--field-size", "384"]) == 0
    text = json.dumps(spec)
    assert main(["ingest", str(plates / "plate01"), str(plates / "plate02"), "--store", text]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^catalog: \d+ frames from 2 plates$", out, re.M)
    model = tmp_path / "model"
    assert main(["train", "--frames", text, "--out", str(model), "--preset", "tiny", "--epochs", "1"]) == 0
    assert (model / "model.json").is_file() and (model / "history.csv").is_file()
    listed = s3.client().list_objects_v2(Bucket=spec["bucket"], Prefix=spec["path"] + "catalog/")
    assert listed["KeyCount"] >= 2  # the catalog lives in the bucket, not on the local disk
    capsys.readouterr()
    assert main(["verify", text]) == 0
    assert "0 problem(s) in 2 plate version(s)" in capsys.readouterr().out
    assert main(["gc", text, "--grace-hours", "0"]) == 0
