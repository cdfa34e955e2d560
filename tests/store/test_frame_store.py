"""FrameStore: layout, versioned writes, failure safety, batched reads, catalog, masks.

Concurrency (processes), reads by version, garbage collection and checksums are in
test_store_versions.py, test_store_concurrency.py and test_store_integrity.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tensorstore as ts

from assets_pkg.core.errors import PlateFormatError, StoreError
from assets_pkg.core.store import frame_store as store_mod
from assets_pkg.core.store.frame_store import DEFAULT_LAYOUT, ChunkLayout, FrameStore

SMALL = ChunkLayout(chunk_frames=1, shard_frames=4)


def frames_for(n, seed=0, size=8):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, 3), dtype=np.float32)


def table_for(plate_id, n):
    return pd.DataFrame(
        {
            "frame_index": np.arange(n, dtype=np.int64),
            "frame_id": [f"{plate_id}/A01/f01/n{i + 1}" for i in range(n)],
            "plate_id": plate_id,
            "well": "A01",
            "gene": "ACTB",
            "localization": "cytoskeleton;cytoplasmic",
        }
    )


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    root = "memory://" if request.param == "memory" else tmp_path / "frames"
    return FrameStore(root, layout=SMALL)


def keys(st, prefix=""):
    return sorted(st._list(prefix))


def test_write_and_read_back(store):
    fr = frames_for(10)
    man = store.write_plate("P1", fr, table_for("P1", 10), {"dataset_md5": "abc", "n": 1})
    assert man["plate_id"] == "P1" and man["n_frames"] == 10
    assert man["shape"] == [10, 8, 8, 3] and man["dtype"] == "float32"
    assert man["chunk_shape"] == [4, 8, 8, 3] and man["read_chunk_shape"] == [1, 8, 8, 3]
    assert man["axes"] == ["frame", "y", "x", "channel"]
    assert man["channels"] == ["protein", "nucleus", "distance"]
    assert man["provenance"] == {"dataset_md5": "abc", "n": 1}
    assert store.read_manifest("P1") == man
    assert store.plate_ids() == ["P1"]
    t = store.read_table("P1")
    pd.testing.assert_frame_equal(t, table_for("P1", 10), check_dtype=False)
    np.testing.assert_array_equal(store.read_frames("P1", [3, 1, 3, 9]), fr[[3, 1, 3, 9]])
    np.testing.assert_array_equal(store.read_frames("P1", np.arange(10)), fr)
    arr = store.open_array("P1")
    assert isinstance(arr, ts.TensorStore) and arr.shape == (10, 8, 8, 3)
    np.testing.assert_array_equal(arr[2:4].read().result(), fr[2:4])
    assert store.read_frames("P1", []).shape == (0, 8, 8, 3)


def test_layout_on_disk(tmp_path):
    st = FrameStore(tmp_path, layout=SMALL)
    st.write_plate("P1", frames_for(10), table_for("P1", 10))
    v = st.read_manifest("P1")["version"]
    assert keys(st) == sorted(
        [
            "plates/P1/manifest.json",
            f"plates/P1/{v}/manifest.json",
            f"plates/P1/{v}/frames.parquet",
            f"plates/P1/{v}/frames/zarr.json",
            *[f"plates/P1/{v}/frames/c/{i}/0/0/0" for i in range(3)],  # 3 shards of 4 frames
        ]
    )
    meta = json.loads((tmp_path / f"plates/P1/{v}/frames/zarr.json").read_text())
    assert meta["codecs"][0]["name"] == "sharding_indexed"
    inner = meta["codecs"][0]["configuration"]["codecs"]
    assert [c["name"] for c in inner] == ["bytes", "crc32c"]  # every chunk is checksummed
    assert json.loads((tmp_path / f"plates/P1/{v}/manifest.json").read_text()) == st.read_manifest("P1")
    assert meta["dimension_names"] == ["frame", "y", "x", "channel"]


def test_default_layout_is_sharded_single_frames():
    assert DEFAULT_LAYOUT.chunk_frames == 1 and DEFAULT_LAYOUT.shard_frames == 256
    meta = DEFAULT_LAYOUT.metadata((1000, 100, 100, 3))
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [256, 100, 100, 3]
    assert meta["codecs"][0]["configuration"]["chunk_shape"] == [1, 100, 100, 3]
    with pytest.raises(ValueError):
        ChunkLayout(chunk_frames=3, shard_frames=8)


@pytest.mark.parametrize("layout", [ChunkLayout(4, None), ChunkLayout(1, 4, compression="zstd")])
def test_other_layouts_round_trip(tmp_path, layout):
    st = FrameStore(tmp_path, layout=layout)
    fr = frames_for(9)
    st.write_plate("P1", fr, table_for("P1", 9))
    np.testing.assert_array_equal(st.read_frames("P1", [8, 0, 5]), fr[[8, 0, 5]])


def test_rewrite_makes_a_new_current_version_and_keeps_the_old_one(store):
    fr1 = frames_for(10, seed=1)
    v1 = store.write_plate("P1", fr1, table_for("P1", 10))["version"]
    fr2 = frames_for(6, seed=2)
    man = store.write_plate("P1", fr2, table_for("P1", 6), {"run": 2})
    assert man["version"] != v1 and man["version"] > v1  # time-ordered ids
    assert store.read_manifest("P1")["n_frames"] == 6
    np.testing.assert_array_equal(store.read_frames("P1", np.arange(6)), fr2)
    with pytest.raises(StoreError, match="out of range"):
        store.read_frames("P1", [6])
    # The old version is intact and readable by id until garbage collection removes it.
    assert store.read_manifest("P1", version=v1)["n_frames"] == 10
    np.testing.assert_array_equal(store.read_frames("P1", [9, 0], version=v1), fr1[[9, 0]])
    assert [v["current"] for v in store.versions("P1")] == [False, True]


def test_failure_before_manifest_swap_keeps_previous_version(store, monkeypatch):
    fr1 = frames_for(10, seed=1)
    man1 = store.write_plate("P1", fr1, table_for("P1", 10), {"run": 1})
    before = keys(store)

    def boom(_table):
        raise RuntimeError("disk full while writing the table")

    monkeypatch.setattr(store_mod, "table_to_parquet", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        store.write_plate("P1", frames_for(12, seed=2), table_for("P1", 12), {"run": 2})
    monkeypatch.undo()
    # The array of the new version was written, then removed; the old one is current and whole.
    assert keys(store) == before
    assert store.read_manifest("P1") == man1
    np.testing.assert_array_equal(store.read_frames("P1", np.arange(10)), fr1)
    pd.testing.assert_frame_equal(store.read_table("P1"), table_for("P1", 10), check_dtype=False)


def test_failed_manifest_write_and_failed_cleanup_leave_orphan_swept_later(store, monkeypatch):
    fr1 = frames_for(10, seed=1)
    man1 = store.write_plate("P1", fr1, table_for("P1", 10))
    real_write = FrameStore._write_bytes

    def failing_write(self, key, data):
        if key.endswith("manifest.json"):
            raise OSError("connection reset while swapping the manifest")
        return real_write(self, key, data)

    def failing_delete(self, prefix):
        raise OSError("connection reset while cleaning up")

    monkeypatch.setattr(FrameStore, "_write_bytes", failing_write)
    monkeypatch.setattr(FrameStore, "_delete_prefix", failing_delete)
    with pytest.raises(OSError, match="swapping the manifest"):
        store.write_plate("P1", frames_for(12, seed=2), table_for("P1", 12))
    monkeypatch.undo()
    assert store.read_manifest("P1") == man1
    np.testing.assert_array_equal(store.read_frames("P1", np.arange(10)), fr1)
    versions = {k.split("/")[0] for k in keys(store, "plates/P1/") if "/" in k}
    assert len(versions) == 2  # the orphan is still there ...
    assert [v["complete"] for v in store.versions("P1")] == [True, False]
    man3 = store.write_plate("P1", frames_for(3, seed=3), table_for("P1", 3))
    store.collect_garbage(grace_seconds=0)
    versions = {k.split("/")[0] for k in keys(store, "plates/P1/") if "/" in k}
    assert versions == {man3["version"]}  # ... and swept by garbage collection


def test_adding_a_plate_does_not_touch_others(tmp_path):
    st = FrameStore(tmp_path, layout=SMALL)
    st.write_plate("P1", frames_for(10), table_for("P1", 10))
    p1 = {p: p.stat().st_mtime_ns for p in (tmp_path / "plates" / "P1").rglob("*") if p.is_file()}
    st.write_plate("P2", frames_for(5), table_for("P2", 5))
    st.write_plate("P3", frames_for(5), table_for("P3", 5))
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "plates" / "P1").rglob("*") if p.is_file()}
    assert after == p1
    assert st.plate_ids() == ["P1", "P2", "P3"]


def test_readers_of_a_rewritten_plate_retry_with_the_new_version(tmp_path):
    writer = FrameStore(tmp_path, layout=SMALL)
    reader = FrameStore(tmp_path, layout=SMALL)
    writer.write_plate("P1", frames_for(8, seed=1), table_for("P1", 8))
    reader.read_frames("P1", [0])  # caches version 1
    fr2 = frames_for(8, seed=2)
    writer.write_plate("P1", fr2, table_for("P1", 8))
    # The reader re-validates the pointer on every read: it sees version 2, not its cached 1.
    np.testing.assert_array_equal(reader.read_frames("P1", [5, 2]), fr2[[5, 2]])


def test_missing_chunks_are_errors_not_zeros(tmp_path):
    st = FrameStore(tmp_path, layout=SMALL)
    fr = frames_for(8)
    fr[4:] = 0  # an all-zero shard is still stored
    st.write_plate("P1", fr, table_for("P1", 8))
    np.testing.assert_array_equal(st.read_frames("P1", [5]), fr[[5]])
    v = st.read_manifest("P1")["version"]
    (tmp_path / f"plates/P1/{v}/frames/c/1/0/0/0").unlink()
    with pytest.raises(StoreError, match=f"plate 'P1' version {v}.*frames 4..7.*NOT_FOUND"):
        FrameStore(tmp_path).read_frames("P1", [5])


def test_read_batch_across_plates_in_request_order(store):
    f1, f2 = frames_for(10, seed=1), frames_for(7, seed=2)
    store.write_plate("A", f1, table_for("A", 10))
    store.write_plate("B", f2, table_for("B", 7))
    pairs = [("B", 3), ("A", 9), ("A", 0), ("B", 3), ("A", 4), ("B", 6)]
    got = store.read_batch(pairs)
    want = np.stack([{"A": f1, "B": f2}[p][i] for p, i in pairs])
    np.testing.assert_array_equal(got, want)
    cat = store.catalog()
    rows = cat.sample(frac=1.0, random_state=0)
    np.testing.assert_array_equal(
        store.read_batch(rows),
        np.stack([{"A": f1, "B": f2}[p][i] for p, i in zip(rows.plate_id, rows.frame_index, strict=True)]),
    )
    assert store.read_batch([]).shape[0] == 0
    with pytest.raises(StoreError):
        store.read_batch([("C", 0)])


def test_catalog(store):
    store.write_plate("B", frames_for(3), table_for("B", 3))
    store.write_plate("A", frames_for(2), table_for("A", 2))
    cat = store.catalog()
    assert cat["row_id"].tolist() == [0, 1, 2, 3, 4]
    assert cat["plate_id"].tolist() == ["A", "A", "B", "B", "B"]
    assert cat["plate_index"].tolist() == [0, 0, 1, 1, 1]
    assert cat["frame_index"].tolist() == [0, 1, 0, 1, 2]
    assert set(cat["plate_version"]) == {store.read_manifest(p)["version"] for p in "AB"}
    assert {"frame_id", "gene", "localization"} <= set(cat.columns)
    man = store.write_catalog(cat, {"dataset_md5": "x"})
    assert man["n_rows"] == 5 and man["n_plates"] == 2 and man["provenance"] == {"dataset_md5": "x"}
    pd.testing.assert_frame_equal(store.read_catalog(), cat, check_dtype=False)
    man2 = store.write_catalog(cat.iloc[:2])
    assert len(store.read_catalog()) == 2 and store.read_catalog_manifest() == man2
    assert len(store.read_catalog(version=man["version"])) == 5  # the first version stays readable
    # Catalog rows name plate versions: rows of a re-ingested plate read the version they name.
    old = store.read_batch(cat)
    store.write_plate("A", frames_for(2, seed=9), table_for("A", 2))
    np.testing.assert_array_equal(store.read_batch(cat), old)
    new = store.read_batch(store.catalog())
    np.testing.assert_array_equal(new[:2], frames_for(2, seed=9))


def test_empty_store_and_empty_plate(store):
    assert store.plate_ids() == []
    assert len(store.catalog()) == 0
    with pytest.raises(StoreError, match="not in the store"):
        store.read_manifest("P1")
    with pytest.raises(StoreError, match="no catalog"):
        store.read_catalog()
    man = store.write_plate("P0", np.zeros((0, 8, 8, 3), np.float32), table_for("P0", 0))
    assert man["n_frames"] == 0
    assert store.read_frames("P0", []).shape == (0, 8, 8, 3)
    assert len(store.read_table("P0")) == 0


def test_validation(store):
    with pytest.raises(PlateFormatError, match="invalid plate id"):
        store.write_plate("../evil", frames_for(2), table_for("x", 2))
    with pytest.raises(StoreError, match="rows"):
        store.write_plate("P1", frames_for(2), table_for("P1", 3))
    with pytest.raises(StoreError, match="frame_index"):
        store.write_plate("P1", frames_for(2), table_for("P1", 2).iloc[::-1])
    with pytest.raises(StoreError, match="plate_id"):
        store.write_plate("P1", frames_for(2), table_for("P2", 2))
    with pytest.raises(StoreError, match="frames"):
        store.write_plate("P1", np.zeros((2, 8, 8)), table_for("P1", 2))
    with pytest.raises(StoreError, match="JSON"):
        store.write_plate("P1", frames_for(2), table_for("P1", 2), {"bad": object()})
    assert store.plate_ids() == []  # nothing was written by the failed calls
    # frame_index and plate_id are added when absent.
    store.write_plate("P1", frames_for(2), pd.DataFrame({"gene": ["A", "B"]}))
    t = store.read_table("P1")
    assert t["frame_index"].tolist() == [0, 1] and t["plate_id"].tolist() == ["P1", "P1"]


def test_roots(tmp_path):
    fr = frames_for(3)
    a = FrameStore(f"file://{tmp_path}/a")
    a.write_plate("P1", fr, table_for("P1", 3))
    assert (tmp_path / "a" / "plates" / "P1" / "manifest.json").is_file()
    b = FrameStore({"driver": "file", "path": str(tmp_path / "a")})
    np.testing.assert_array_equal(b.read_frames("P1", [2]), fr[[2]])
    # A memory store lives in its context: shared context, shared store.
    ctx = ts.Context()
    m1 = FrameStore("memory://x/", context=ctx)
    m1.write_plate("P1", fr, table_for("P1", 3))
    assert FrameStore("memory://x/", context=ctx).plate_ids() == ["P1"]
    assert FrameStore("memory://x/").plate_ids() == []
    assert "file://" in repr(a)


def test_masks_round_trip_and_versions(store):
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 5, (3, 16, 12)).astype(np.int32)
    fields = pd.DataFrame({"well": ["A01", "A01", "B02"], "field_id": [1, 2, 1]})
    man = store.write_masks("P1", masks, fields, {"detector": "classical"})
    assert man["kind"] == "nucleus_masks" and man["shape"] == [3, 16, 12]
    got, table = store.read_masks("P1")
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, masks)
    pd.testing.assert_frame_equal(table, fields)
    assert store.plate_ids() == []  # masks alone do not make a plate of frames
    man2 = store.write_masks("P1", masks[:1], fields.iloc[:1])
    assert store.read_masks_manifest("P1") == man2
    np.testing.assert_array_equal(store.read_masks("P1")[0], masks[:1])
    np.testing.assert_array_equal(store.read_masks("P1", version=man["version"])[0], masks)
    assert [v["version"] for v in store.versions("P1", kind="masks")] == [man["version"], man2["version"]]
    with pytest.raises(StoreError, match="integer"):
        store.write_masks("P1", masks.astype(float), fields)
    with pytest.raises(StoreError, match="no masks"):
        store.read_masks("P2")


def test_masks_stream_stores_what_write_masks_stores_one_field_at_a_time(store):
    rng = np.random.default_rng(1)
    masks = rng.integers(0, 9, (3, 16, 12)).astype(np.int64)
    fields = pd.DataFrame({"well": ["A01", "A01", "B02"], "field_id": [1, 2, 1]})
    whole = store.write_masks("P1", masks, fields, {"detector": "classical"})
    rows = fields.to_dict("records")
    man = store.write_masks_stream("P2", ((m, r) for m, r in zip(masks, rows, strict=True)), (16, 12),
                                   {"detector": "classical"})
    drop = ("plate_id", "version", "created", "array_path", "table_path")
    assert {k: v for k, v in man.items() if k not in drop} == {k: v for k, v in whole.items() if k not in drop}
    got, table = store.read_masks("P2")
    assert got.dtype == np.int32 and got.shape == (3, 16, 12)
    np.testing.assert_array_equal(got, masks)
    pd.testing.assert_frame_equal(table, fields)
    # one field at a time back, in table order, of any version
    table, it = store.iter_masks("P2", version=man["version"])
    pd.testing.assert_frame_equal(table, fields)
    np.testing.assert_array_equal(np.stack(list(it)), masks)
    # a bad field, or a failing source, leaves no new version behind
    with pytest.raises(StoreError, match="stream of"):
        store.write_masks_stream("P2", iter([(masks[0][:8], rows[0])]), (16, 12))

    def failing():
        yield masks[0], rows[0]
        raise RuntimeError("detector crashed")

    with pytest.raises(RuntimeError, match="detector crashed"):
        store.write_masks_stream("P2", failing(), (16, 12))
    assert [v["version"] for v in store.versions("P2", kind="masks")] == [man["version"]]
    assert store.read_masks_manifest("P2") == man


def test_delete_plate(store):
    store.write_plate("P1", frames_for(3), table_for("P1", 3))
    store.write_masks("P1", np.zeros((1, 4, 4), np.int32), pd.DataFrame({"well": ["A01"]}))
    store.write_plate("P2", frames_for(3), table_for("P2", 3))
    store.delete_plate("P1")
    assert store.plate_ids() == ["P2"]
    assert keys(store, "plates/P1/") == [] and keys(store, "masks/P1/") == []
    with pytest.raises(StoreError):
        store.read_frames("P1", [0])
