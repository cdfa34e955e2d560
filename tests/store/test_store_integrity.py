"""Checksummed chunks: damaged chunk data fail loudly, naming plate, version and chunk; ``cellscape
verify`` and ``cellscape gc`` on a store."""

from __future__ import annotations

import json

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


def overwrite(path, offset, data: bytes):
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def flip(path, offset):
    raw = path.read_bytes()
    overwrite(path, offset, bytes([raw[offset] ^ 0x01]))


@pytest.fixture
def plate(tmp_path):
    """A store with plate P1 (8 frames, 2 shards of 4), a second plate and masks; and its frames."""
    root = tmp_path / "store"
    st = FrameStore(root, layout=SMALL)
    fr = frames_for(8, seed=1, size=40)
    man = st.write_plate("P1", fr, table_for("P1", 8))
    st.write_plate("P2", frames_for(3, seed=2, size=40), table_for("P2", 3))
    st.write_masks("P1", np.arange(2 * 16 * 16, dtype=np.int32).reshape(2, 16, 16) % 7,
                   pd.DataFrame({"well": ["A01", "A02"]}))
    st.update_catalog()
    return root, st, fr, man["version"]


def test_a_flipped_byte_in_chunk_data_is_a_store_error_naming_plate_version_and_chunk(plate):
    root, st, fr, v = plate
    shard = root / f"plates/P1/{v}/frames/c/1/0/0/0"  # frames 4..7; frame 4's data come first
    flip(shard, 10)
    cat = st.read_catalog()
    with pytest.raises(StoreError, match=rf"plate 'P1' version {v}: 1 damaged chunk.*frames 4\.\.4 "
                                         rf"\(key plates/P1/{v}/frames/c/1/0/0/0 \(inner chunk 0\)\).*[Dd]igest"):
        st.read_batch(cat)
    with pytest.raises(StoreError, match=f"plate 'P1' version {v}"):
        FrameStore(root).read_frames("P1", [4])
    # Frames in undamaged chunks, even in the same shard, still read.
    np.testing.assert_array_equal(st.read_frames("P1", [0, 5, 7]), fr[[0, 5, 7]])


def test_4_kib_of_0xff_over_chunk_data_is_a_store_error_not_nan_frames(plate):
    root, st, fr, v = plate
    overwrite(root / f"plates/P1/{v}/frames/c/0/0/0/0", 100, b"\xff" * 4096)
    with pytest.raises(StoreError, match=f"plate 'P1' version {v}.*frames 0..0"):
        st.read_batch(st.read_catalog())


def test_damage_in_an_unsharded_layout_and_in_masks(tmp_path):
    st = FrameStore(tmp_path, layout=ChunkLayout(chunk_frames=4, shard_frames=None))
    v = st.write_plate("P1", frames_for(8), table_for("P1", 8))["version"]
    flip(tmp_path / f"plates/P1/{v}/frames/c/1/0/0/0", 5)
    with pytest.raises(StoreError, match=f"plate 'P1' version {v}.*frames 4..7 .key plates/P1/{v}/frames/c/1/0/0/0"):
        st.read_frames("P1", [6])
    mv = st.write_masks("P1", np.ones((2, 8, 8), np.int32), pd.DataFrame({"well": ["A01", "A02"]}))["version"]
    flip(tmp_path / f"masks/P1/{mv}/labels/c/1/0/0", 3)
    with pytest.raises(StoreError, match=f"masks of plate 'P1' version {mv}.*fields 1..1"):
        st.read_masks("P1")
    _, fields = st.iter_masks("P1")
    assert next(fields).shape == (8, 8)  # the undamaged field reads
    with pytest.raises(StoreError, match=f"masks of plate 'P1' version {mv}.*fields 1..1"):
        next(fields)


def test_arrays_written_without_checksums_stay_readable(tmp_path):
    st = FrameStore(tmp_path, layout=ChunkLayout(chunk_frames=1, shard_frames=4, checksum=False))
    fr = frames_for(6)
    v = st.write_plate("P1", fr, table_for("P1", 6))["version"]
    meta = json.loads((tmp_path / f"plates/P1/{v}/frames/zarr.json").read_text())
    assert "crc32c" not in [c["name"] for c in meta["codecs"][0]["configuration"]["codecs"]]
    # A store from before versions carried their own manifest: only the pointer names it.
    (tmp_path / f"plates/P1/{v}/manifest.json").unlink()
    st2 = FrameStore(tmp_path)
    np.testing.assert_array_equal(st2.read_frames("P1", [5, 0], version=v), fr[[5, 0]])
    assert st2.versions("P1")[0]["complete"] and st2.verify().ok


def test_verify_cli_names_every_damaged_chunk_and_table(plate, capsys):
    root, st, fr, v = plate
    assert main(["verify", str(root)]) == 0
    out = capsys.readouterr().out
    assert "0 problem(s) in 2 plate version(s) (11 frames), 1 mask version(s) (2 fields), 1 table version(s)" in out
    flip(root / f"plates/P1/{v}/frames/c/1/0/0/0", 10)
    overwrite(root / f"plates/P1/{v}/frames/c/0/0/0/0", 100, b"\xff" * 4096)
    mv = st.read_masks_manifest("P1")["version"]
    flip(root / f"masks/P1/{mv}/labels/c/0/0/0", 12)
    cv = st.read_catalog_manifest()["version"]
    flip(root / f"catalog/{cv}/catalog.parquet", 40)
    assert main(["verify", str(root)]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PROBLEM")]
    assert len(lines) == 4, lines
    text = "\n".join(lines)
    assert f"plate 'P1' version {v}: frames 0..0 (key plates/P1/{v}/frames/c/0/0/0/0 (inner chunk 0))" in text
    assert f"plate 'P1' version {v}: frames 4..4 (key plates/P1/{v}/frames/c/1/0/0/0 (inner chunk 0))" in text
    assert f"masks of plate 'P1' version {mv}: fields 0..0 (key masks/P1/{mv}/labels/c/0/0/0)" in text
    assert f"catalog table version {cv}: catalog/{cv}/catalog.parquet" in text and "checksum" in text


def test_gc_cli(tmp_path, capsys):
    st = FrameStore(tmp_path, layout=SMALL)
    old = st.write_plate("P1", frames_for(2), table_for("P1", 2))["version"]
    st.write_plate("P1", frames_for(2, seed=3), table_for("P1", 2))
    assert main(["gc", str(tmp_path), "--dry-run"]) == 0
    assert "would remove 0 version(s), kept 2" in capsys.readouterr().out
    assert main(["gc", str(tmp_path), "--dry-run", "--grace-hours", "0"]) == 0
    assert f"would remove plate 'P1' {old}" in capsys.readouterr().out
    assert len(st.versions("P1")) == 2
    assert main(["gc", str(tmp_path), "--grace-hours", "0", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert f"removed plate 'P1' {old}" in out and "kept plate 'P1'" in out and ": current" in out
    assert len(st.versions("P1")) == 1
