"""Concurrent writers as real processes ('spawn'): nothing written is lost, the store stays readable.

Each test starts 4 processes that wait on a barrier before every write, so their writes
overlap; on the code before versions were immutable, the first test left an unreadable plate
(a newer writer deleted a version still in flight, which then became current) and the second
dropped plates from the catalog (a read-modify-write race).
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pandas as pd

from assets_pkg.core.store.frame_store import ChunkLayout, FrameStore

SMALL = ChunkLayout(chunk_frames=1, shard_frames=4)
WRITERS = 4
ROUNDS = 3
N_FRAMES = 12


def frames_for(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((N_FRAMES, 8, 8, 3), dtype=np.float32)


def table_for(plate_id: str) -> pd.DataFrame:
    return pd.DataFrame({"frame_index": np.arange(N_FRAMES), "plate_id": plate_id, "gene": "ACTB"})


def _same_plate_writer(root: str, writer: int, barrier, queue) -> None:
    store = FrameStore(root, layout=SMALL)
    written = []
    for r in range(ROUNDS):
        barrier.wait()
        seed = 100 * writer + r
        written.append((store.write_plate("P1", frames_for(seed), table_for("P1"))["version"], seed))
    queue.put(written)


def _new_plate_writer(root: str, writer: int, barrier, queue) -> None:
    store = FrameStore(root, layout=SMALL)
    missing = []
    for r in range(ROUNDS):
        barrier.wait()
        pid = f"P{writer}r{r}"
        store.write_plate(pid, frames_for(100 * writer + r), table_for(pid))
        store.update_catalog({"writer": writer})  # what `cellscape ingest` does after its plates
        barrier.wait()
        if writer == 0:  # every plate written so far must be in the catalog
            have = set(store.read_catalog()["plate_id"])
            missing += sorted({f"P{w}r{q}" for w in range(WRITERS) for q in range(r + 1)} - have)
    queue.put(missing)


def _cas_counter(root: str, writer: int, barrier, queue) -> None:
    store = FrameStore(root)
    barrier.wait()
    done = conflicts = 0
    while done < 50:
        raw, generation = store._read_stamped("counter")
        value = int(raw or b"0")
        if store._write_if("counter", str(value + 1).encode(), generation):
            done += 1
        else:
            conflicts += 1
    queue.put(conflicts)


def _run(target, root: Path) -> list:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [ctx.Process(target=target, args=(str(root), w, barrier, queue)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def test_concurrent_writers_of_one_plate_lose_nothing(tmp_path):
    written = [w for ws in _run(_same_plate_writer, tmp_path) for w in ws]
    store = FrameStore(tmp_path)
    assert len({v for v, _ in written}) == WRITERS * ROUNDS
    # Every version written is intact and readable by id ...
    for version, seed in written:
        assert store.read_manifest("P1", version)["version"] == version
        np.testing.assert_array_equal(store.read_frames("P1", np.arange(N_FRAMES), version=version), frames_for(seed))
    # ... and the current one, readable, is the one created last.
    current = store.read_manifest("P1")["version"]
    assert current == max(v for v, _ in written)
    np.testing.assert_array_equal(store.read_frames("P1", np.arange(N_FRAMES)), frames_for(dict(written)[current]))
    assert store.verify().ok


def test_concurrent_ingests_of_different_plates_keep_every_plate_in_the_catalog(tmp_path):
    missing = _run(_new_plate_writer, tmp_path)
    assert missing == [[]] * WRITERS, f"plates dropped from the catalog: {missing}"
    store = FrameStore(tmp_path)
    cat = store.read_catalog()
    assert len(cat) == WRITERS * ROUNDS * N_FRAMES
    assert len(store.read_batch(cat)) == len(cat)


def test_conditional_writes_are_atomic_across_processes(tmp_path):
    _run(_cas_counter, tmp_path)  # each writer retries its conflicts until 50 increments went through
    assert FrameStore(tmp_path)._read_bytes("counter") == str(WRITERS * 50).encode()  # none lost
