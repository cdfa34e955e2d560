"""Batches of frames for training: sorted batched TensorStore reads, a background prefetch
thread, device transfer ahead of use, and an in-memory cache when the split fits.

The order of frames is a pure function of ``(seed, epoch)``, so a resumed run sees exactly the
batches an uninterrupted run would have seen.

In a multi-process data-parallel run every process iterates the same global batches but reads
only its rows of each (``part``); its cache then fills with the frames it has read.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..store.frame_store import FrameStore

#: Splits up to this many bytes are read once and served from memory.
DEFAULT_CACHE_BYTES = 4 << 30


@dataclass
class Batch:
    """One batch: frames (N, 100, 100, C) float32 and integer labels (N,), on host or device;
    ``size`` is N of the global batch (a process may hold only its part of it, see ``part``)."""

    frames: object
    labels: object
    size: int


class FrameLoader:
    """Iterate batches of a set of frames held in a :class:`FrameStore`.

    Parameters
    ----------
    store : FrameStore
    rows : pandas.DataFrame
        The frames to serve, with columns ``plate_id``, ``frame_index`` and ``label``
        (int, the protein class).
    batch_size : int
    shuffle : bool
        Shuffle every epoch with ``np.random.default_rng((seed, epoch))``.
    drop_remainder : bool
        Drop the last partial batch (training); keep it for evaluation.
    seed : int
    cache : bool or "auto"
        Keep frames in host memory once read; "auto" does so when they fit in
        :data:`DEFAULT_CACHE_BYTES`. All are read up front, or with ``part`` as they are first
        needed (so a process reads only frames of its parts).
    prefetch : int
        Batches read and transferred ahead of the consumer (0 = synchronous).
    put : callable, optional
        ``put(frames, labels) -> (frames, labels)`` moving a host batch to the device (with
        the data-parallel sharding); run on the prefetch thread so the transfer overlaps
        compute. With ``part`` it is called as ``put(frames, labels, size=N)`` on this
        process's rows of a global batch of N (e.g. :meth:`Devices.put_batch
        <assets_pkg.core.ml.devices.Devices.put_batch>`).
    part : callable, optional
        ``part(N) -> slice``: the rows of each batch of N this process reads (e.g.
        :meth:`Devices.host_rows <assets_pkg.core.ml.devices.Devices.host_rows>`); default all.
    """

    def __init__(
        self,
        store: FrameStore,
        rows: pd.DataFrame,
        batch_size: int,
        shuffle: bool = True,
        drop_remainder: bool = True,
        seed: int = 0,
        cache: bool | str = "auto",
        prefetch: int = 2,
        put: Callable | None = None,
        part: Callable[[int], slice] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        missing = {"plate_id", "frame_index", "label"} - set(rows.columns)
        if missing:
            raise ValueError(f"rows lack columns {sorted(missing)}")
        self.store = store
        self.rows = rows[["plate_id", "frame_index", "label"]].reset_index(drop=True)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self.seed = int(seed)
        self.prefetch = int(prefetch)
        self.put = put
        self.part = part
        self.labels = self.rows["label"].to_numpy(np.int32)
        self._plates = self.rows["plate_id"].astype(str).to_numpy()
        self._index = self.rows["frame_index"].to_numpy(np.int64)
        n = len(self.rows)
        frame_bytes, shape = 0, None
        if n:
            shape = store.read_manifest(str(self._plates[0]))["shape"]
            frame_bytes = int(np.prod(shape[1:])) * 4
        if cache == "auto":
            cache = n * frame_bytes <= DEFAULT_CACHE_BYTES
        self._cache, self._have = None, None
        if cache and n and part is None:
            self._cache = self._read(np.arange(n))
        elif cache and n:  # filled as rows are first read
            self._cache = np.empty((n, *shape[1:]), np.float32)
            self._have = np.zeros(n, bool)

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.rows)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def order(self, epoch: int) -> np.ndarray:
        """Row order of an epoch (a permutation when shuffling)."""
        n = len(self.rows)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng((self.seed, int(epoch))).permutation(n)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """Frames of the given row positions, in that order, one sorted batched read per plate."""
        pairs = list(zip(self._plates[rows], self._index[rows], strict=True))
        return self.store.read_batch(pairs)

    def host_batch(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames and labels of row positions, read from the cache or the store."""
        if self._cache is None:
            return self._read(rows), self.labels[rows]
        if self._have is not None:
            missing = np.unique(rows[~self._have[rows]])
            if missing.size:
                self._cache[missing] = self._read(missing)
                self._have[missing] = True
        return self._cache[rows], self.labels[rows]

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Batches of one epoch, from ``start_batch`` on (to resume mid-epoch)."""
        order = self.order(epoch)
        bs = self.batch_size
        chunks = [order[i : i + bs] for i in range(start_batch * bs, len(order), bs)]
        if self.drop_remainder and chunks and len(chunks[-1]) < bs:
            chunks = chunks[:-1]

        def make(rows: np.ndarray) -> Batch:
            if self.part is None:
                frames, labels = self.host_batch(rows)
                if self.put is not None:
                    frames, labels = self.put(frames, labels)
            else:
                frames, labels = self.host_batch(rows[self.part(len(rows))])
                if self.put is not None:
                    frames, labels = self.put(frames, labels, size=len(rows))
            return Batch(frames, labels, len(rows))

        if self.prefetch <= 0:
            for rows in chunks:
                yield make(rows)
            return
        yield from _prefetched(map(make, chunks), self.prefetch)


_DONE = object()


def _prefetched(items: Iterator, depth: int) -> Iterator:
    """Run an iterator on a background thread, ``depth`` items ahead; errors re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        """Queue an item unless the consumer has gone; never blocks past ``stop``."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(e)

    t = threading.Thread(target=work, name="frame-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=5)
