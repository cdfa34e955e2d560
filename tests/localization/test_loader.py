"""The frame loader: order from (seed, epoch), cache and store paths agree, prefetch stops cleanly."""

import threading
import time

import numpy as np
import pandas as pd
import pytest

from assets_pkg.core.errors import StoreError
from assets_pkg.core.localization.loader import FrameLoader
from assets_pkg.core.store.frame_store import FrameStore


@pytest.fixture
def store(tmp_path):
    s = FrameStore(str(tmp_path / "store"))
    for p in range(2):
        frames = np.arange(10 * 100 * 100 * 3, dtype=np.float32).reshape(10, 100, 100, 3) + 1e6 * p
        s.write_plate(f"P{p}", frames, pd.DataFrame({"frame_index": np.arange(10)}))
    return s


def rows(store):
    cat = store.catalog()
    return cat.assign(label=np.arange(len(cat)) % 3)


def test_cached_and_store_paths_serve_the_same_batches_in_seeded_order(store):
    r = rows(store)
    a = FrameLoader(store, r, 4, seed=7, cache=True, prefetch=2)
    b = FrameLoader(store, r, 4, seed=7, cache=False, prefetch=0)
    assert a.cached and not b.cached and len(a) == 5
    for ba, bb in zip(a.epoch(1), b.epoch(1), strict=True):
        np.testing.assert_array_equal(ba.frames, bb.frames)
        np.testing.assert_array_equal(ba.labels, bb.labels)
    order = a.order(1)
    first = next(iter(a.epoch(1)))
    expect = store.read_batch(list(zip(r.plate_id.iloc[order[:4]], r.frame_index.iloc[order[:4]], strict=True)))
    np.testing.assert_array_equal(first.frames, expect)
    assert not np.array_equal(a.order(1), a.order(2))
    # resuming mid-epoch serves exactly the remaining batches
    rest = [x.labels for x in a.epoch(1, start_batch=2)]
    full = [x.labels for x in a.epoch(1)]
    assert len(rest) == 3 and all(np.array_equal(x, y) for x, y in zip(rest, full[2:], strict=True))


def test_evaluation_keeps_the_partial_last_batch(store):
    ld = FrameLoader(store, rows(store), 8, shuffle=False, drop_remainder=False, cache=False)
    assert [b.size for b in ld.epoch(0)] == [8, 8, 4]


def test_closing_early_stops_the_prefetch_thread_promptly(store):
    ld = FrameLoader(store, rows(store), 4, cache=True, prefetch=2)
    it = ld.epoch(0)
    next(it)
    time.sleep(0.3)  # let the worker fill the queue and reach the end of the epoch
    t0 = time.perf_counter()
    it.close()
    assert time.perf_counter() - t0 < 1.0
    assert not any(t.name == "frame-prefetch" and t.is_alive() for t in threading.enumerate())


def test_an_error_while_reading_reaches_the_consumer(store):
    r = rows(store)
    r.loc[3, "frame_index"] = 99  # no such frame
    ld = FrameLoader(store, r, 4, shuffle=False, cache=False, prefetch=2)
    with pytest.raises(StoreError, match="out of range"):
        list(ld.epoch(0))
