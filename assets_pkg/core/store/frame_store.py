"""The frame store: nucleus-centred frames per plate in Zarr v3 arrays over TensorStore.

Every byte (arrays, JSON manifests, Parquet tables) goes through one TensorStore key-value
store (:class:`tensorstore.KvStore`), so the store lives wherever a kvstore driver reaches: a
local folder, ``memory://`` (tests), ``gs://bucket/prefix/``, ``s3://...`` or any kvstore JSON
spec, by configuration alone.

Layout under the root::

    plates/<plate_id>/manifest.json                 which version is current (a copy of its manifest)
    plates/<plate_id>/<version>/manifest.json       the version's own manifest (readable by id)
    plates/<plate_id>/<version>/frames/             zarr3 array (N, H, W, C) float32,
                                                    axes (frame, y, x, channel)
    plates/<plate_id>/<version>/frames.parquet      frame table, one row per frame
    catalog/manifest.json, catalog/<version>/       concatenation of plate tables (catalog.parquet)
    masks/<plate_id>/manifest.json                  nucleus label images of a plate's fields:
    masks/<plate_id>/<version>/labels/              zarr3 (F, H, W) int32, axes (field, y, x)
    masks/<plate_id>/<version>/fields.parquet       one row per field
    pins/<name>.json                                versions kept by a pin (see :mod:`.retention`)

Every write makes an immutable version and never deletes another (:mod:`.versioned`): the
version is written under a fresh id (the array inside a TensorStore transaction), then the
plate's pointer moves by a conditional write, retried on conflict.  Any number of writers, in
any processes, may write the same plate at once: every version they write stays intact and
readable by id (``read_manifest(plate_id, version=...)``, ``read_batch`` rows with a
``plate_version`` column), and the current one is the one created last.  One array per
plate, so adding a plate never rewrites another.  The catalog is rebuilt by a retrying
conditional update (:meth:`FrameStore.update_catalog`), so concurrent ingests of different
plates never drop one.  Old versions go only through garbage collection
(:meth:`FrameStore.collect_garbage`, policy in :mod:`.retention`).

Chunking (see :data:`DEFAULT_LAYOUT`, chosen with ``benchmarks/bench_store.py``): Zarr v3
``sharding_indexed`` with one frame per inner chunk and :data:`DEFAULT_SHARD_FRAMES` frames
per shard, so a random frame costs one small byte-range read while a plate is a few hundred
files rather than one per frame.  Every chunk carries a crc32c checksum: a damaged chunk is a
:class:`~assets_pkg.core.errors.StoreError` naming the plate, the version and the chunk, never
wrong numbers; :meth:`FrameStore.verify` scans the whole store (:mod:`.integrity`).

Arrays are opened with ``fill_missing_data_reads=False`` and written with
``store_data_equal_to_fill_value=True``: a missing chunk is an error, never silent zeros.
Reads without a version read the current one: the pointer is re-validated on every call (one
small conditional read per plate), so a reader never serves a plate version that has been
replaced.

The module holds what is about plates (:class:`FrameStore`: plate arrays and tables, batched
reads, the catalog, nucleus masks); the kvstore, versions, manifests and pins are
:class:`~.versioned.VersionedStore`, its base, and the chunking is :mod:`.layout`.

Why one module: a plate's array, table and manifest are written by the two writers
(:meth:`FrameStore.write_plate`, :meth:`FrameStore.write_plate_stream`, sharing the manifest
code) and read back by the batched readers against the same layout and version rules; split,
each half would have to import the other's private key and manifest helpers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import tensorstore as ts

from ..errors import StoreError
from ..imaging.plates import check_plate_id
from .frames import FRAME_CHANNELS
from .integrity import VerifyReport, verify_store
from .layout import AXES, DEFAULT_LAYOUT, DEFAULT_SHARD_FRAMES, ChunkLayout
from .naming import (
    MANIFEST_NAME,
    MANIFEST_SCHEMA_VERSION,
    MASKS_PREFIX,
    PLATES_PREFIX,
    check_provenance,
    check_version,
    now_iso,
    table_to_parquet,
)
from .retention import DEFAULT_GRACE_SECONDS, collect_garbage
from .versioned import VersionedStore

__all__ = [
    "AXES",
    "DEFAULT_LAYOUT",
    "DEFAULT_SHARD_FRAMES",
    "ChunkLayout",
    "FrameStore",
]

CATALOG_NAME = "catalog"
ARRAY_NAME = "frames"
TABLE_NAME = "frames.parquet"
MASKS_ARRAY_NAME = "labels"
MASKS_TABLE_NAME = "fields.parquet"


def _masks_metadata(shape: Sequence[int]) -> dict:
    """Zarr v3 metadata of a masks array (F, H, W) int32: one zstd, crc32c-checked chunk per field."""
    shape = [int(x) for x in shape]
    return {
        "shape": shape,
        "data_type": "int32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, *shape[1:]]}},
        "chunk_key_encoding": {"name": "default"},
        "fill_value": 0,
        "codecs": [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": 3}},
            {"name": "crc32c"},
        ],
        "dimension_names": ["field", "y", "x"],
    }



def _settle(future) -> None:
    """Wait for a TensorStore write future, if any, ignoring its outcome (cleanup after an error)."""
    if future is None:
        return
    try:
        future.result()
    except Exception:  # noqa: BLE001 - the error being raised already says what failed
        pass

class FrameStore(VersionedStore):
    """Frames of many plates, one versioned zarr3 array per plate (see module notes).

    Parameters
    ----------
    root : str, path-like or dict
        A local folder (default driver ``file``), a kvstore URL (``file:///abs/path``,
        ``memory://``, ``gs://bucket/prefix``), or a TensorStore kvstore JSON spec such as
        ``{"driver": "gcs", "bucket": "b", "path": "cellscape/frames/"}``.
    layout : ChunkLayout
        Chunking of arrays written by this object (arrays already stored keep theirs).
    context : tensorstore.Context, optional
        Shared TensorStore resources (caches, concurrency limits, credentials).  A
        ``memory://`` store lives as long as its context: two ``FrameStore("memory://")``
        objects are two different stores unless they share one.
    single_writer : bool
        See :class:`~.versioned.VersionedStore` (an ``s3`` store with emulated conditional writes).
    """

    def __init__(
        self,
        root: str | os.PathLike | Mapping,
        layout: ChunkLayout = DEFAULT_LAYOUT,
        context: ts.Context | None = None,
        *,
        single_writer: bool = False,
    ):
        self.layout = layout
        super().__init__(root, context, single_writer=single_writer)

    # ------------------------------------------------------------------ plate keys
    @staticmethod
    def _plate_prefix(plate_id: str) -> str:
        return f"{PLATES_PREFIX}{plate_id}/"

    def _manifest_key(self, plate_id: str) -> str:
        return self._plate_prefix(plate_id) + MANIFEST_NAME

    # ------------------------------------------------------------------ writing
    def write_plate(
        self,
        plate_id: str,
        frames: np.ndarray,
        table: pd.DataFrame,
        provenance: Mapping | None = None,
        channels: Sequence[str] | None = None,
    ) -> dict:
        """Store the frames of one plate as a new version; return its manifest.

        Parameters
        ----------
        plate_id : str
            Checked with :func:`assets_pkg.core.imaging.plates.check_plate_id`.
        frames : ndarray, shape (N, H, W, C)
            Axis order (frame, y, x, channel); cast to float32.
        table : pandas.DataFrame
            One row per frame, kept as given, except that ``frame_index`` (0..N-1) and
            ``plate_id`` are added when absent and must match when present.
        provenance : mapping, optional
            JSON-serialisable facts recorded in the manifest (dataset md5, source checksums,
            code version ...).
        channels : sequence of str, optional
            Channel names; default :data:`assets_pkg.core.store.frames.FRAME_CHANNELS` for C = 3.

        Returns
        -------
        dict
            The new version's manifest: ``plate_id``, ``version``, ``n_frames``, ``shape``,
            ``chunk_shape`` (stored object), ``read_chunk_shape``, ``dtype``, ``axes``,
            ``channels``, ``created``, ``array_path``, ``table_path``, ``table_sha256``,
            ``table_columns``, ``layout``, ``provenance``.  It is current on return unless a
            concurrent writer's version, created later, already is (the later one wins; this
            one stays readable by id).

        Raises
        ------
        StoreError
            Bad plate id, frames or table, or provenance that is not JSON.  Storage errors
            propagate as raised by TensorStore; in every case the versions already stored stay
            intact and the current one stays current.
        """
        check_plate_id(plate_id)
        frames = np.asarray(frames)
        if frames.ndim != 4 or not np.issubdtype(frames.dtype, np.number):
            raise StoreError(
                f"frames must be a numeric array (N, H, W, C), got {frames.dtype} {frames.shape}",
                field="frames",
            )
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        n = frames.shape[0]
        table = self._check_table(plate_id, table, n)
        prov = check_provenance(provenance)
        if channels is None:
            channels = FRAME_CHANNELS if frames.shape[-1] == len(FRAME_CHANNELS) else None
        elif len(channels) != frames.shape[-1]:
            raise StoreError(
                f"{len(channels)} channel names for {frames.shape[-1]} channels", field="channels"
            )

        metadata = self.layout.metadata(frames.shape)

        def build(prefix: str, version: str) -> dict:
            array_path = prefix + ARRAY_NAME + "/"
            self._write_array(array_path, frames, metadata)
            return self._finish_plate_version(prefix, version, plate_id, frames.shape, table, channels, prov)

        return self._versioned_write(self._plate_prefix(plate_id), build)

    def write_plate_stream(
        self,
        plate_id: str,
        batches: Iterable[tuple[np.ndarray, pd.DataFrame]],
        frame_shape: Sequence[int],
        provenance: Mapping | None = None,
        channels: Sequence[str] | None = None,
    ) -> dict:
        """:meth:`write_plate` for frames that arrive in batches, never all in memory at once.

        ``batches`` yields ``(frames, table)`` pairs: frames of shape (n, H, W, C) (cast to
        float32; ``(H, W, C) == frame_shape``) and their ``n`` table rows (without
        ``frame_index``, which is numbered over the whole plate).  Frames are written as whole
        shards while they arrive (the array is created with an open-ended first axis, then cut
        to the number of frames), so memory holds about one shard, not the plate.  The version
        becomes visible only once complete, exactly as with :meth:`write_plate`; an exception
        from ``batches`` leaves no version behind.  Returns the version's manifest.
        """
        check_plate_id(plate_id)
        frame_shape = tuple(int(s) for s in frame_shape)
        prov = check_provenance(provenance)
        if channels is None:
            channels = FRAME_CHANNELS if frame_shape[-1] == len(FRAME_CHANNELS) else None
        elif len(channels) != frame_shape[-1]:
            raise StoreError(f"{len(channels)} channel names for {frame_shape[-1]} channels", field="channels")
        outer = self.layout.shard_frames or self.layout.chunk_frames

        def build(prefix: str, version: str) -> dict:
            array_path = prefix + ARRAY_NAME + "/"
            arr = self._open_array_at(array_path, metadata=self.layout.metadata((2**40, *frame_shape)))
            tables: list[pd.DataFrame] = []
            buf: list[np.ndarray] = []
            n_buf = n = 0
            pending = None

            def flush(upto: int) -> None:  # write the first ``upto`` buffered frames at offset n
                nonlocal buf, n_buf, n, pending
                block = np.concatenate(buf) if len(buf) > 1 else buf[0]
                if pending is not None:
                    pending.result()
                pending = arr[n : n + upto].write(np.ascontiguousarray(block[:upto])) if upto else None
                rest = block[upto:]
                buf, n_buf, n = ([rest] if len(rest) else []), len(rest), n + upto

            try:
                for frames, table in batches:
                    frames = np.asarray(frames, dtype=np.float32)
                    if frames.ndim != 4 or tuple(frames.shape[1:]) != frame_shape:
                        raise StoreError(f"frames of shape {frames.shape} in a stream of {frame_shape} frames",
                                         field="frames")
                    if len(table) != len(frames):
                        raise StoreError(f"table has {len(table)} rows for {len(frames)} frames", field="table")
                    tables.append(table)
                    if len(frames):
                        buf.append(frames)
                        n_buf += len(frames)
                    if n_buf >= outer:  # whole shards only: no shard is written twice
                        flush(n_buf // outer * outer)
                if n_buf:
                    flush(n_buf)
            except BaseException:
                _settle(pending)  # a write still in flight would land after the partial version is removed
                raise
            if pending is not None:
                pending.result()
            arr.resize(exclusive_max=[n, *frame_shape], resize_metadata_only=True).result()
            table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
            table = self._check_table(plate_id, table, n)
            return self._finish_plate_version(prefix, version, plate_id, (n, *frame_shape), table, channels, prov)

        return self._versioned_write(self._plate_prefix(plate_id), build)

    def _finish_plate_version(self, prefix: str, version: str, plate_id: str, shape: Sequence[int],
                              table: pd.DataFrame, channels: Sequence[str] | None, prov: dict) -> dict:
        """Write a plate version's table; return its manifest (the array is already written)."""
        metadata = self.layout.metadata(shape)
        table_path = prefix + TABLE_NAME
        table_bytes = table_to_parquet(table)
        self._write_bytes(table_path, table_bytes)
        return {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "kind": "plate_frames",
            "plate_id": plate_id,
            "version": version,
            "n_frames": int(shape[0]),
            "shape": [int(s) for s in shape],
            "chunk_shape": metadata["chunk_grid"]["configuration"]["chunk_shape"],
            "read_chunk_shape": [self.layout.chunk_frames, *map(int, shape[1:])],
            "dtype": "float32",
            "axes": list(AXES),
            "channels": None if channels is None else list(channels),
            "created": now_iso(),
            "array_path": prefix + ARRAY_NAME + "/",
            "table_path": table_path,
            "table_sha256": hashlib.sha256(table_bytes).hexdigest(),
            "table_columns": [str(c) for c in table.columns],
            "layout": self.layout.describe(),
            "provenance": prov,
        }

    @staticmethod
    def _check_table(plate_id: str, table: pd.DataFrame, n: int) -> pd.DataFrame:
        if not isinstance(table, pd.DataFrame):
            raise StoreError(f"table must be a pandas DataFrame, got {type(table).__name__}", field="table")
        if len(table) != n:
            raise StoreError(f"table has {len(table)} rows for {n} frames", field="table")
        table = table.reset_index(drop=True).copy()
        if "frame_index" not in table.columns:
            table.insert(0, "frame_index", np.arange(n, dtype=np.int64))
        else:
            fi = pd.to_numeric(table["frame_index"], errors="coerce")
            if fi.isna().any() or not np.array_equal(fi.to_numpy(dtype=np.float64), np.arange(n)):
                raise StoreError("frame_index must be 0..N-1 in row order", field="frame_index")
            table["frame_index"] = fi.astype(np.int64)
        if "plate_id" not in table.columns:
            table.insert(1, "plate_id", plate_id)
        elif not (table["plate_id"].astype(str) == plate_id).all():
            bad = sorted(set(table["plate_id"].astype(str)) - {plate_id})[:3]
            raise StoreError(f"plate_id column holds {bad}, expected {plate_id!r}", field="plate_id")
        return table

    def delete_plate(self, plate_id: str) -> None:
        """Remove a plate, every version of its frames and masks, pinned or not.

        The pointer goes first (readers stop seeing the plate), then the data.
        """
        check_plate_id(plate_id)
        self._kv.delete_range(
            ts.KvStore.KeyRange(self._manifest_key(plate_id), self._manifest_key(plate_id) + "\0")
        ).result()
        self._delete_prefix(self._plate_prefix(plate_id))
        self._delete_prefix(self._masks_prefix(plate_id))
        self._opened = {k: v for k, v in self._opened.items() if k[1] != plate_id}

    # ------------------------------------------------------------------ reading plates
    def plate_ids(self) -> list[str]:
        """Ids of the plates that have a current version, sorted."""
        ids = []
        for k in self._list(PLATES_PREFIX):
            parts = k.split("/")
            if len(parts) == 2 and parts[1] == MANIFEST_NAME:
                ids.append(parts[0])
        return sorted(ids)

    def read_manifest(self, plate_id: str, version: str | None = None) -> dict:
        """The manifest of a plate's current version, or of ``version`` (see :meth:`write_plate`)."""
        check_plate_id(plate_id)
        return self.version_manifest("plates", plate_id, version)

    def read_table(self, plate_id: str, version: str | None = None) -> pd.DataFrame:
        """The frame table of a plate's current version, or of ``version``."""
        check_plate_id(plate_id)
        return self.version_table("plates", plate_id, version)

    def open_array(self, plate_id: str, version: str | None = None) -> ts.TensorStore:
        """A version's array (current when None), (N, H, W, C) float32, axes (frame, y, x, channel)."""
        check_plate_id(plate_id)
        return self.version_array("plates", plate_id, version)[1]

    def read_frames(
        self, plate_id: str, indices: Iterable[int] | np.ndarray, version: str | None = None
    ) -> np.ndarray:
        """Frames of one plate by frame index, in the order asked (duplicates allowed).

        The indices are sorted and de-duplicated into one batched TensorStore read of the
        current version, or of ``version``.

        Returns
        -------
        ndarray of float32, shape (len(indices), H, W, C)
        """
        check_plate_id(plate_id)
        idx = np.asarray(indices, dtype=np.int64).ravel()
        data, inv = self._collect(self._submit({plate_id: idx}, {plate_id: version}), {plate_id: version})[plate_id]
        if np.array_equal(inv, np.arange(len(inv))):
            return data  # already sorted and unique: no reordering copy
        return data[inv]

    # ------------------------------------------------------------------ batched reads
    def _submit(self, requests: Mapping[str, np.ndarray], versions: Mapping[str, str | None]) -> dict:
        """Issue one sorted, de-duplicated read per plate (of its named or current version) in one batch."""
        opened = {pid: self.version_array("plates", pid, versions.get(pid)) for pid in requests}
        futs = {}
        with ts.Batch() as batch:
            for pid, idx in requests.items():
                man, arr = opened[pid]
                n = man["n_frames"]
                if idx.size and (idx.min() < 0 or idx.max() >= n):
                    bad = idx[(idx < 0) | (idx >= n)][:5].tolist()
                    raise StoreError(
                        f"frame indices {bad} out of range 0..{n - 1} for plate {pid!r} version {man['version']}",
                        field="frame_index",
                    )
                uniq, inv = np.unique(idx, return_inverse=True)
                fut = arr[uniq].read(batch=batch) if uniq.size else None
                futs[pid] = (man, arr, uniq, inv, fut)
        return futs

    def _collect(self, futs: dict, versions: Mapping[str, str | None]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Wait for the reads: per plate, (frames at the sorted unique indices, inverse map).

        A failed read raises StoreError naming the plate, the version and the damaged chunks
        (or saying that the version was removed by garbage collection).  A read of the current
        version whose version was replaced and collected meanwhile is retried once on the new one.
        """
        out = {}
        for pid, (man, arr, uniq, inv, fut) in futs.items():
            if fut is None:
                out[pid] = (np.empty((0, *man["shape"][1:]), np.float32), inv)
                continue
            try:
                data = fut.result()
            except ValueError as e:
                if versions.get(pid) is None and self.current_version("plates", pid) != man["version"]:
                    data, _ = self._collect(self._submit({pid: uniq}, {pid: None}), {pid: None})[pid]
                else:
                    raise self._damage_error("plates", pid, man, arr, uniq, e) from e
            out[pid] = (data, inv)
        return out

    def read_batch(self, rows) -> np.ndarray:
        """Gather frames across plates, in request order.

        Parameters
        ----------
        rows : pandas.DataFrame or iterable of (plate_id, frame_index)
            A DataFrame needs columns ``plate_id`` and ``frame_index`` (catalog rows work); when
            it also has ``plate_version``, exactly those versions are read (current or not),
            so a catalog or split keeps reading the frames it was built from.

        Returns
        -------
        ndarray of float32, shape (len(rows), H, W, C)
            One batched read per plate, all issued concurrently (TensorStore futures in one
            :class:`tensorstore.Batch`).  No rows give shape (0, 0, 0, 0).

        Raises
        ------
        StoreError
            An unknown plate, an index out of range, a named version that is not stored (e.g.
            removed by garbage collection: the message names plate and version), or damaged
            chunk data (the message names plate, version and chunk).
        """
        if isinstance(rows, pd.DataFrame):
            for c in ("plate_id", "frame_index"):
                if c not in rows.columns:
                    raise StoreError(f"rows need a {c!r} column", field=c)
            pids = rows["plate_id"].astype(str).to_numpy()
            fidx = rows["frame_index"].to_numpy(dtype=np.int64)
            versions = rows["plate_version"].astype(str).to_numpy() if "plate_version" in rows else None
        else:
            pairs = list(rows)
            pids = np.asarray([str(p) for p, _ in pairs], dtype=object)
            fidx = np.asarray([int(i) for _, i in pairs], dtype=np.int64)
            versions = None
        m = len(pids)
        if m == 0:
            return np.empty((0, 0, 0, 0), np.float32)
        codes, plates = pd.factorize(pids)
        requests, positions, want = {}, {}, {}
        for k, pid in enumerate(plates):
            check_plate_id(pid)
            pos = np.flatnonzero(codes == k)
            positions[pid] = pos
            requests[pid] = fidx[pos]
            want[pid] = None
            if versions is not None:
                named = set(versions[pos])
                if len(named) != 1:
                    raise StoreError(
                        f"rows name several versions {sorted(named)} of plate {pid!r}", field="plate_version"
                    )
                want[pid] = check_version(named.pop(), field="plate_version")
        data = self._collect(self._submit(requests, want), want)
        shapes = {tuple(d.shape[1:]) for d, _ in data.values()}
        if len(shapes) != 1:
            raise StoreError(f"plates hold frames of different shapes {sorted(shapes)}", field="shape")
        out = np.empty((m, *shapes.pop()), np.float32)
        for pid, pos in positions.items():
            d, inv = data[pid]
            if len(d) == len(inv):
                # No duplicates: inv is a permutation, so scatter the read rows directly.
                out[pos[np.argsort(inv)]] = d
            else:
                out[pos] = d[inv]
        return out

    # ------------------------------------------------------------------ catalog
    def catalog(self) -> pd.DataFrame:
        """All plate tables (current versions) concatenated, plates in sorted id order.

        Adds ``row_id`` (0..M-1 over the catalog), ``plate_index`` (position of the plate in
        the catalog's plate list) and ``plate_version`` (the version each row was read from).
        A plate deleted while the catalog is built is left out.
        """
        ids = self.plate_ids()
        mans = [self._read_json(self._manifest_key(p)) for p in ids]
        mans = [m for m in mans if m is not None]
        raws = self._read_many([m["table_path"] for m in mans])
        parts = []
        for i, (man, raw) in enumerate(zip(mans, raws, strict=True)):
            t = self._table_from_manifest(man, raw)
            t.insert(0, "plate_index", np.int64(i))
            t["plate_version"] = man["version"]
            parts.append(t)
        if not parts:
            return pd.DataFrame(
                {
                    "row_id": pd.Series([], dtype=np.int64),
                    "plate_index": pd.Series([], dtype=np.int64),
                    "plate_id": pd.Series([], dtype=object),
                    "frame_index": pd.Series([], dtype=np.int64),
                    "plate_version": pd.Series([], dtype=object),
                }
            )
        cat = pd.concat(parts, ignore_index=True)
        cat.insert(0, "row_id", np.arange(len(cat), dtype=np.int64))
        return cat

    def write_catalog(self, df: pd.DataFrame, provenance: Mapping | None = None) -> dict:
        """Store a catalog computed by the caller as a new version; return its manifest.

        Two callers that built their catalogs concurrently may each miss the other's plate;
        :meth:`update_catalog` rebuilds on conflict and never does.
        """
        return self.write_dataset_table(CATALOG_NAME, df, provenance)

    def update_catalog(
        self,
        provenance: Mapping | None = None,
        augment: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    ) -> dict:
        """Rebuild the catalog from the plates stored now and make it current, retrying on conflict.

        Parameters
        ----------
        provenance : mapping, optional
            Recorded in the manifest, with ``plates`` (the catalog's plate ids) added.
        augment : callable, optional
            ``augment(catalog) -> catalog`` (e.g. adds a dense protein id), applied to each
            rebuild.

        Returns
        -------
        dict
            The manifest of the catalog version made current (see
            :meth:`~.versioned.VersionedStore.update_dataset_table`).
        """
        prov = check_provenance(provenance)

        def build() -> tuple[pd.DataFrame, dict]:
            cat = self.catalog()
            if augment is not None:
                cat = augment(cat)
            return cat, {**prov, "plates": sorted(cat["plate_id"].astype(str).unique().tolist())}

        return self.update_dataset_table(CATALOG_NAME, build)

    def read_catalog_manifest(self, version: str | None = None) -> dict:
        """The catalog manifest: current, or ``version``."""
        return self.read_dataset_manifest(CATALOG_NAME, version)

    def read_catalog(self, version: str | None = None) -> pd.DataFrame:
        """The catalog table (see :meth:`write_catalog`): current, or ``version``."""
        return self.read_dataset_table(CATALOG_NAME, version)

    # ------------------------------------------------------------------ nucleus masks
    @staticmethod
    def _masks_prefix(plate_id: str) -> str:
        return f"{MASKS_PREFIX}{plate_id}/"

    def write_masks(
        self,
        plate_id: str,
        masks: np.ndarray,
        table: pd.DataFrame,
        provenance: Mapping | None = None,
    ) -> dict:
        """Store the nucleus label images of a plate's fields as a new version; return its manifest.

        Versioned exactly like :meth:`write_plate`, under ``masks/<plate_id>/``.

        Parameters
        ----------
        masks : ndarray of int, shape (F, H, W)
            One label image per field (0 = background), axes (field, y, x); stored int32,
            one zstd-compressed, crc32c-checked chunk per field.
        table : pandas.DataFrame
            One row per field (e.g. ``well``, ``field_id``), kept as given.
        provenance : mapping, optional
            JSON-serialisable facts recorded in the manifest.
        """
        check_plate_id(plate_id)
        masks = np.asarray(masks)
        if masks.ndim != 3 or not np.issubdtype(masks.dtype, np.integer):
            raise StoreError(
                f"masks must be an integer array (F, H, W), got {masks.dtype} {masks.shape}",
                field="masks",
            )
        if masks.size and (masks.min() < 0 or masks.max() > np.iinfo(np.int32).max):
            raise StoreError("mask labels must fit in 0..2**31-1", field="masks")
        masks = np.ascontiguousarray(masks, dtype=np.int32)
        if not isinstance(table, pd.DataFrame) or len(table) != len(masks):
            raise StoreError(
                f"table must be a DataFrame with one row per field ({len(masks)})", field="table"
            )
        table = table.reset_index(drop=True)
        prov = check_provenance(provenance)
        shape = [int(x) for x in masks.shape]

        def build(prefix: str, version: str) -> dict:
            array_path = prefix + MASKS_ARRAY_NAME + "/"
            self._write_array(array_path, masks, _masks_metadata(shape))
            return self._finish_masks_version(prefix, version, plate_id, shape, table, prov)

        return self._versioned_write(self._masks_prefix(plate_id), build)

    def write_masks_stream(
        self,
        plate_id: str,
        fields: Iterable[tuple[np.ndarray, Mapping]],
        field_shape: Sequence[int],
        provenance: Mapping | None = None,
    ) -> dict:
        """:meth:`write_masks` for label images that arrive one field at a time, never all in memory.

        ``fields`` yields ``(labels, row)`` pairs: one label image of shape ``field_shape``
        (H, W) and its table row (a mapping, e.g. ``{"well": ..., "field_id": ...}``).  Each
        field is written as its own chunk when it arrives (the array is created with an
        open-ended first axis, then cut to the number of fields); the version becomes visible
        only once complete, and an exception from ``fields`` leaves no version behind.  The
        stored array, table and manifest are those :meth:`write_masks` writes for the stacked
        labels.  Returns the version's manifest.
        """
        check_plate_id(plate_id)
        field_shape = [int(s) for s in field_shape]
        if len(field_shape) != 2 or min(field_shape) < 1:
            raise StoreError(f"field_shape must be (height, width), got {field_shape}", field="field_shape")
        prov = check_provenance(provenance)

        def build(prefix: str, version: str) -> dict:
            array_path = prefix + MASKS_ARRAY_NAME + "/"
            arr = self._open_array_at(array_path, metadata=_masks_metadata([2**40, *field_shape]))
            rows: list[Mapping] = []
            pending = None
            try:
                for labels, row in fields:
                    labels = np.asarray(labels)
                    if tuple(labels.shape) != tuple(field_shape) or not np.issubdtype(labels.dtype, np.integer):
                        raise StoreError(f"labels of {labels.dtype} {labels.shape} in a stream of "
                                         f"{tuple(field_shape)} integer label images", field="masks")
                    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int32).max):
                        raise StoreError("mask labels must fit in 0..2**31-1", field="masks")
                    if pending is not None:
                        pending.result()
                    pending = arr[len(rows)].write(np.ascontiguousarray(labels, dtype=np.int32))
                    rows.append(dict(row))
            except BaseException:
                _settle(pending)  # a write still in flight would land after the partial version is removed
                raise
            if pending is not None:
                pending.result()
            shape = [len(rows), *field_shape]
            arr.resize(exclusive_max=shape, resize_metadata_only=True).result()
            return self._finish_masks_version(prefix, version, plate_id, shape, pd.DataFrame(rows), prov)

        return self._versioned_write(self._masks_prefix(plate_id), build)

    def _finish_masks_version(self, prefix: str, version: str, plate_id: str, shape: list[int],
                              table: pd.DataFrame, prov: dict) -> dict:
        """Write a masks version's table; return its manifest (the array is already written)."""
        table_path = prefix + MASKS_TABLE_NAME
        raw = table_to_parquet(table)
        self._write_bytes(table_path, raw)
        return {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "kind": "nucleus_masks",
            "plate_id": plate_id,
            "version": version,
            "n_fields": shape[0],
            "shape": shape,
            "dtype": "int32",
            "axes": ["field", "y", "x"],
            "created": now_iso(),
            "array_path": prefix + MASKS_ARRAY_NAME + "/",
            "table_path": table_path,
            "table_sha256": hashlib.sha256(raw).hexdigest(),
            "provenance": prov,
        }

    def read_masks_manifest(self, plate_id: str, version: str | None = None) -> dict:
        """The masks manifest of a plate (see :meth:`write_masks`): current, or ``version``."""
        check_plate_id(plate_id)
        return self.version_manifest("masks", plate_id, version)

    def read_masks(self, plate_id: str, version: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """Label images (F, H, W) int32 and field table of a plate's masks: current, or ``version``."""
        check_plate_id(plate_id)
        man, arr = self.version_array("masks", plate_id, version)
        try:
            labels = arr.read().result()
        except ValueError as e:
            raise self._damage_error("masks", plate_id, man, arr, None, e, axis="fields") from e
        return labels, self._table_from_manifest(man)

    def iter_masks(self, plate_id: str, version: str | None = None) -> tuple[pd.DataFrame, Iterator[np.ndarray]]:
        """:meth:`read_masks` one field at a time: the field table, and an iterator over the label
        images (H, W) int32 in table order (the next field is read while the caller works on one)."""
        check_plate_id(plate_id)
        man, arr = self.version_array("masks", plate_id, version)
        table = self._table_from_manifest(man)

        def fields() -> Iterator[np.ndarray]:
            n = int(arr.shape[0])
            fut = arr[0].read() if n else None
            for i in range(n):
                try:
                    labels = fut.result()
                except ValueError as e:
                    raise self._damage_error("masks", plate_id, man, arr, np.array([i]), e, axis="fields") from e
                fut = arr[i + 1].read() if i + 1 < n else None
                yield labels

        return table, fields()

    # ------------------------------------------------------------------ retention and integrity
    def collect_garbage(self, grace_seconds: float = DEFAULT_GRACE_SECONDS, dry_run: bool = False) -> dict:
        """Remove the versions the retention policy does not keep (see :mod:`.retention`).

        Returns ``{"removed": [...], "kept": [...], "dry_run": bool}``, one dict per version
        (``kind``, ``name``, ``version``, ``reason``); with ``dry_run`` nothing is removed.
        """
        return collect_garbage(self, grace_seconds=grace_seconds, dry_run=dry_run)

    def verify(self, batch_bytes: int = 64 << 20, progress: Callable[[str], None] | None = None) -> VerifyReport:
        """Read every stored version of every plate, mask and table in full and check it.

        See :func:`~.integrity.verify_store`.
        """
        return verify_store(self, batch_bytes=batch_bytes, progress=progress)
