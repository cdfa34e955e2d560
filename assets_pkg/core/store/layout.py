"""How the frame store cuts a plate's (N, H, W, C) array into stored objects, and finds a bad one.

:class:`ChunkLayout` writes the Zarr v3 array metadata (chunk grid, codecs, sharding) of a
plate array, axes :data:`AXES`; :data:`DEFAULT_LAYOUT` is the layout chosen with
``benchmarks/bench_store.py`` (the measurements are in its comment).

Chunk data carry a zarr v3 ``crc32c`` checksum (the last codec of every chunk, inside shards
too; the shard index has its own), so a flipped byte in stored chunk data fails the read
instead of decoding to wrong numbers; arrays written before keep their own metadata and stay
readable.  :func:`damaged_chunks` finds which stored chunks of an array fail to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorstore as ts

AXES = ("frame", "y", "x", "channel")


@dataclass(frozen=True)
class ChunkLayout:
    """How a plate array is cut into stored objects.

    Attributes
    ----------
    chunk_frames : int
        Frames per zarr chunk (the unit read): with sharding, frames per inner chunk.
    shard_frames : int or None
        Frames per shard (the unit stored as one object), a multiple of ``chunk_frames``;
        None stores every chunk as its own object.
    compression : {"zstd", None}
        Chunk compression (zstd at ``level``) or none.
    level : int
        zstd level.
    checksum : bool
        Append the ``crc32c`` codec to every chunk (default), so corrupt chunk data fail loudly.
    """

    chunk_frames: int = 1
    shard_frames: int | None = 256
    compression: str | None = None
    level: int = 1
    checksum: bool = True

    def __post_init__(self):
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
        if self.shard_frames is not None and (
            self.shard_frames < self.chunk_frames or self.shard_frames % self.chunk_frames
        ):
            raise ValueError(
                f"shard_frames ({self.shard_frames}) must be a multiple of chunk_frames "
                f"({self.chunk_frames})"
            )
        if self.compression not in (None, "zstd"):
            raise ValueError(f"compression must be 'zstd' or None, got {self.compression!r}")

    def _bytes_codecs(self) -> list[dict]:
        codecs: list[dict] = [{"name": "bytes", "configuration": {"endian": "little"}}]
        if self.compression == "zstd":
            codecs.append({"name": "zstd", "configuration": {"level": int(self.level)}})
        if self.checksum:
            codecs.append({"name": "crc32c"})
        return codecs

    def metadata(self, shape: Sequence[int], dtype: str = "float32") -> dict:
        """Zarr v3 array metadata for an array of ``shape`` = (N, H, W, C)."""
        frame_shape = [int(s) for s in shape[1:]]
        outer = self.shard_frames if self.shard_frames is not None else self.chunk_frames
        if self.shard_frames is None:
            codecs = self._bytes_codecs()
        else:
            codecs = [
                {
                    "name": "sharding_indexed",
                    "configuration": {
                        "chunk_shape": [self.chunk_frames, *frame_shape],
                        "codecs": self._bytes_codecs(),
                        "index_codecs": [
                            {"name": "bytes", "configuration": {"endian": "little"}},
                            {"name": "crc32c"},
                        ],
                        "index_location": "end",
                    },
                }
            ]
        return {
            "shape": [int(s) for s in shape],
            "data_type": dtype,
            "chunk_grid": {
                "name": "regular",
                "configuration": {"chunk_shape": [outer, *frame_shape]},
            },
            "chunk_key_encoding": {"name": "default"},
            "fill_value": 0.0,
            "codecs": codecs,
            "dimension_names": list(AXES),
        }

    def describe(self) -> str:
        """One line for manifests, e.g. ``chunk 1 frame(s) in shards of 256, uncompressed, crc32c``."""
        s = f"chunk {self.chunk_frames} frame(s)"
        if self.shard_frames is not None:
            s += f" in shards of {self.shard_frames}"
        s += f", zstd-{self.level}" if self.compression else ", uncompressed"
        return s + (", crc32c" if self.checksum else "")


#: Frames per shard of the default layout.
DEFAULT_SHARD_FRAMES = 256

#: Default layout, chosen by ``benchmarks/bench_store.py`` (one run, default settings: 2048
#: synthetic 100x100x3 float32 frames, 246 MB, local disk, 2 shared CPU cores, page cache
#: warm, 20 random batches of 256 frames, median of 3 passes):
#:
#: ===================  ==========  =============  =======  ===============================
#: layout               write MB/s  read frames/s  objects  read ratio vs 1 frame/chunk
#: ===================  ==========  =============  =======  ===============================
#: 1 frame / chunk             127          9,395     2051  1.00
#: 8 frames / chunk            428          3,789      259  0.40
#: 32 frames / chunk           519          2,424       67  0.26
#: 64 frames / chunk           682          1,881       35  0.20
#: shard 64 x 1 frame          377         11,798       35  1.26
#: shard 256 x 1 frame         539         11,288       11  1.20
#: same, zstd-1                304          3,093       11  0.33 (stored 8 % smaller)
#: ===================  ==========  =============  =======  ===============================
#:
#: Plain chunks of k frames read k frames per wanted frame (a random batch touches ~256
#: chunks), so reads fall as k grows; one frame per chunk reads fast but writes one object
#: per frame.  Sharding keeps one-frame reads and writes one object per 256 frames (4x the
#: write speed of 1-frame chunks here, and far fewer requests on a cloud store).  zstd saved
#: little on float32 frames and cost two thirds of the read speed, so frames are stored
#: uncompressed.  The same run measured the default store at 0.18x the frames/s of a NumPy
#: memmap of the same frames (13.4k vs 73.8k frames/s; the memmap is a warm-cache memcpy).
#: These figures predate the crc32c codec.  ``benchmarks/bench_checksum.py`` (same frames,
#: random batches of 256, passes alternating, 2-core box shared with other jobs) measured the
#: read frames/s ratio crc32c / none at 0.44 (read_frames; 0.54 read_batch; write 0.48) with
#: the machine load near 9, and 0.75 (0.71; write 0.94) near 16: the installed TensorStore
#: wheel computes crc32c in software, about 1 GB/s per core (a warm-cache read of one 31 MB
#: chunk cost 2.7 GB/s of CPU without it, 0.72 GB/s with it), so on page-cached local reads
#: the checksum costs up to half the read speed; reads that wait on a disk or a cloud store
#: lose far less.  It stays on by default (wrong numbers read silently are worse);
#: ``ChunkLayout(checksum=False)`` writes a plate without it where read speed matters more.
DEFAULT_LAYOUT = ChunkLayout(chunk_frames=1, shard_frames=DEFAULT_SHARD_FRAMES, compression=None)


@dataclass(frozen=True)
class ChunkDamage:
    """A stored chunk along axis 0 of an array that failed to read.

    ``start``/``stop``: the axis-0 range (frames or fields) it holds; ``key``: the stored
    object (a shard when the array is sharded); ``detail``: TensorStore's message.
    """

    start: int
    stop: int
    key: str
    detail: str

    def where(self, axis: str = "frames") -> str:
        """``frames 4..4 (key .../c/1/0/0/0 (inner chunk 0))``."""
        return f"{axis} {self.start}..{self.stop - 1} (key {self.key})"

    def describe(self, axis: str = "frames") -> str:
        """:meth:`where` and TensorStore's message."""
        return f"{self.where(axis)}: {self.detail}"


def damaged_chunks(arr: ts.TensorStore, array_path: str, indices: np.ndarray | None = None) -> list[ChunkDamage]:
    """The stored chunks of ``arr`` (cut along axis 0 only) that fail to read.

    Reads each stored object (shard, or chunk when unsharded) holding one of ``indices`` (all
    when None) on its own; within a failing shard, each inner chunk.  A shard whose every
    inner chunk fails (a damaged shard index, a missing shard) is one entry.  Only for the
    error path and :func:`~.integrity.verify_store`: it reads chunk by chunk.
    """
    n = int(arr.shape[0])
    outer = int(arr.chunk_layout.write_chunk.shape[0])
    inner = int(arr.chunk_layout.read_chunk.shape[0])
    idx = np.arange(n) if indices is None else np.unique(np.asarray(indices, dtype=np.int64))
    zeros = "/".join(["0"] * (arr.rank - 1))
    out = []
    for s in np.unique(idx // outer).tolist():
        lo, hi = s * outer, min(n, (s + 1) * outer)
        key = f"{array_path}c/{s}/{zeros}" if zeros else f"{array_path}c/{s}"
        try:
            arr[lo:hi].read().result()
            continue
        except ValueError as e:
            whole = str(e)
        bad = []
        starts = list(range(lo, hi, inner)) if inner < outer else []
        for a in starts:
            b = min(hi, a + inner)
            try:
                arr[a:b].read().result()
            except ValueError as e:
                bad.append(ChunkDamage(a, b, f"{key} (inner chunk {(a - lo) // inner})", str(e)))
        out.extend(bad if bad and len(bad) < len(starts) else [ChunkDamage(lo, hi, key, whole)])
    return out
