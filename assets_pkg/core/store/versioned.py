"""Immutable versions in one TensorStore key-value store, made current by conditional writes.

:class:`VersionedStore` is the storage half of :class:`~.frame_store.FrameStore`: it opens a
kvstore from a folder, URL or JSON spec (:func:`kvstore_spec`), reads and writes raw keys,
JSON and Parquet tables, opens zarr3 arrays, and writes versions.  Every versioned object (a
plate's frames, a plate's nucleus masks, a dataset table such as the catalog or the splits)
lives under its *parent* prefix::

    <parent>/manifest.json               the current pointer: a copy of the current version's manifest
    <parent>/<version>/manifest.json     the version's own manifest, written last (the version is complete)
    <parent>/<version>/...               the version's arrays and tables, never modified afterwards

Write protocol (:meth:`VersionedStore._versioned_write`):

1. a fresh version id (UTC time to the microsecond and a random suffix: ids sort by creation
   time, :func:`new_version`); the data go under ``<parent>/<version>/``, then its manifest;
2. the pointer moves by a *conditional* write: read the pointer and its storage generation,
   then write ``if_equal=generation`` (for a missing pointer, the "no value" generation).  If
   another writer moved the pointer in between, the write does not happen: re-read and retry.
   A pointer that already names a version created later than ours stays: the later-created
   version wins, and ours stays readable by id;
3. no write ever deletes another version.  If a write fails before its pointer moved, its own
   partial version is removed (best effort; garbage collection removes what is left).

The pointer therefore only moves forward in creation order, two writers never lose each
other's work, and a version, once complete, can be read by id until garbage collection
removes it (:mod:`.retention`: the current version, pinned versions, versions newer than the
current one and young versions are kept).  Dataset tables rebuilt from the store (the catalog)
use :meth:`VersionedStore.update_dataset_table`: on a conflict the table is rebuilt from the
fresh store and the write retried, so N concurrent catalog updates never drop a plate.

Conditional writes are compare-and-swap operations of the kvstore driver: ``gcs`` uses
generation preconditions, ``s3`` sends ``If-Match``/``If-None-Match`` with the PUT (S3
conditional writes, which TensorStore uses by default, also on an S3-compatible ``endpoint``;
``tests/store/test_store_s3.py`` checks the swap across processes on a moto server),
``memory`` a mutex, and ``file`` an exclusive OFD ``fcntl`` lock on ``<key>.__lock`` around
"compare generation, write a temporary, rename", so on a local folder (or a network file
system with working locks) the swap is safe across processes without a lock file of our own
(``tests/store/test_store_concurrency.py``).  An ``s3`` spec with ``"use_conditional_write":
false`` (for servers without conditional PUT) makes TensorStore emulate the condition with a
HEAD before an unconditional PUT: two writers both pass the HEAD and one update is lost
(4 processes x 50 increments kept 75).  Such a store refuses pointer writes
(:func:`~.naming.emulated_conditional_writes`) unless opened with ``single_writer=True``, the
caller's promise that one writer at a time uses it; reads are unaffected.

Arrays are opened with ``fill_missing_data_reads=False`` and written with
``store_data_equal_to_fill_value=True``: a missing chunk is an error, never silent zeros.  A
chunk that fails to read (missing, or a crc32c mismatch, :mod:`.layout`) is located with
:func:`damaged_chunks` and reported as :class:`~assets_pkg.core.errors.StoreError` naming the
object, the version and the chunk.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorstore as ts

from ..errors import StoreError, TableNotWritten
from ..imaging.plates import check_plate_id
from .layout import damaged_chunks
from .naming import (
    KINDS,
    MANIFEST_NAME,
    MANIFEST_SCHEMA_VERSION,
    MAX_ATTEMPTS,
    PINS_PREFIX,
    RESERVED_NAMES,
    backoff,
    check_provenance,
    check_version,
    describe_object,
    emulated_conditional_writes,
    is_safe_name,
    is_version,
    json_bytes,
    kvstore_spec,
    new_version,
    now_iso,
    prefix_range,
    table_to_parquet,
    version_parent,
    version_time,
)


class VersionedStore:
    """Versioned tables and arrays in one TensorStore kvstore (see module notes).

    Parameters
    ----------
    root : str, path-like or dict
        A local folder (default driver ``file``), a kvstore URL (``file:///abs/path``,
        ``memory://``, ``gs://bucket/prefix``), or a TensorStore kvstore JSON spec such as
        ``{"driver": "gcs", "bucket": "b", "path": "cellscape/frames/"}``.
    context : tensorstore.Context, optional
        Shared TensorStore resources (caches, concurrency limits, credentials).  A
        ``memory://`` store lives as long as its context: two stores opened on
        ``"memory://"`` are two different stores unless they share one.
    single_writer : bool
        Allow writes where the kvstore only emulates conditional writes (``s3`` with
        ``"use_conditional_write": false``): the caller guarantees one writer at a time.
    """

    def __init__(self, root: str | os.PathLike | Mapping, context: ts.Context | None = None,
                 *, single_writer: bool = False):
        self.context = context if context is not None else ts.Context()
        self._spec = kvstore_spec(root)
        self.single_writer = bool(single_writer)
        try:
            self._kv = ts.KvStore.open(self._spec, context=self.context).result()
        except ValueError as e:
            raise StoreError(f"cannot open kvstore {self._spec!r}: {e}", field="root") from e
        self._heads: dict[str, tuple[bytes, dict]] = {}  # pointer key -> (generation, manifest)
        self._opened: dict[tuple[str, str, str], tuple[dict, ts.TensorStore]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @property
    def url(self) -> str:
        """The root as a kvstore URL (or JSON spec text where the spec has no URL form).

        An ``s3`` store with an explicit ``endpoint`` (an S3-compatible server) has no URL
        form: TensorStore raises NotImplementedError for it.
        """
        try:
            return self._kv.url
        except (ValueError, AttributeError, NotImplementedError):
            return json.dumps(self._kv.spec().to_json(), sort_keys=True)

    # ------------------------------------------------------------------ raw key-value I/O
    def _read_bytes(self, key: str) -> bytes | None:
        r = self._kv.read(key).result()
        return None if r.state == "missing" else bytes(r.value)

    def _read_many(self, keys: Sequence[str]) -> list[bytes | None]:
        futures = [self._kv.read(k) for k in keys]
        out = []
        for f in futures:
            r = f.result()
            out.append(None if r.state == "missing" else bytes(r.value))
        return out

    def _read_stamped(self, key: str) -> tuple[bytes | None, bytes]:
        """The value of ``key`` (None when missing) and its storage generation."""
        r = self._kv.read(key).result()
        return (None if r.state == "missing" else bytes(r.value)), r.stamp.generation

    def _write_bytes(self, key: str, data: bytes) -> None:
        self._kv.write(key, data).result()

    def _write_if(self, key: str, data: bytes | None, generation: bytes) -> bool:
        """Write (or delete, ``data=None``) ``key`` only if its generation is still ``generation``."""
        if not self.single_writer and emulated_conditional_writes(self._spec):
            raise StoreError(
                "this s3 store has use_conditional_write false: TensorStore would emulate the "
                "conditional pointer write with HEAD then PUT, which loses concurrent updates; remove "
                "the option (the server must support If-Match/If-None-Match on PUT) or open the store "
                "with single_writer=True if one writer at a time is guaranteed",
                path=self._where(key), field="use_conditional_write")
        stamp = self._kv.write(key, data, if_equal=generation).result()
        return stamp.generation != b""  # an unmet condition answers the "unknown" generation

    def _delete_prefix(self, prefix: str) -> None:
        self._kv.delete_range(prefix_range(prefix)).result()

    def _list(self, prefix: str) -> list[str]:
        keys = self._kv.list(prefix_range(prefix), strip_prefix_length=len(prefix)).result()
        return [k.decode("utf-8") for k in keys]

    def _parse_json(self, raw: bytes | None, key: str) -> dict | None:
        if raw is None:
            return None
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(f"not valid JSON: {e}", path=self._where(key)) from e
        if not isinstance(obj, dict):
            raise StoreError("must hold a JSON object", path=self._where(key))
        return obj

    def _read_json(self, key: str) -> dict | None:
        return self._parse_json(self._read_bytes(key), key)

    def _where(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"

    def _open_array_at(self, path: str, transaction: ts.Transaction | None = None, **create) -> ts.TensorStore:
        spec: dict[str, Any] = {
            "driver": "zarr3",
            "fill_missing_data_reads": False,
            "store_data_equal_to_fill_value": True,
        }
        if create:
            spec["metadata"] = create["metadata"]
        return ts.open(
            spec,
            kvstore=self._kv / path,
            context=self.context,
            transaction=transaction,
            create=bool(create),
            open=not create,
        ).result()

    def _write_array(self, path: str, data: np.ndarray, metadata: dict) -> None:
        """Create a zarr3 array at ``path`` and write ``data`` in one TensorStore transaction."""
        txn = ts.Transaction()
        arr = self._open_array_at(path, transaction=txn, metadata=metadata)
        if data.size:
            arr.write(data).result()
        txn.commit_async().result()

    # ------------------------------------------------------------------ writing versions
    def _write_version(self, parent: str, build: Callable[[str, str], dict]) -> dict:
        """Write a complete new version under ``parent`` (data, then its own manifest); return it.

        ``build(prefix, version)`` writes the version's data under ``prefix`` and returns its
        manifest.  On failure the partial version is removed (best effort).
        """
        version = new_version()
        prefix = parent + version + "/"
        try:
            manifest = build(prefix, version)
            self._write_bytes(prefix + MANIFEST_NAME, json_bytes(manifest))
        except BaseException:
            self._discard(parent, version)
            raise
        return manifest

    def _discard(self, parent: str, version: str) -> None:
        """Remove our own version unless the pointer names it (best effort: gc sweeps the rest)."""
        try:
            head = self._read_json(parent + MANIFEST_NAME)
            if head is None or head.get("version") != version:
                self._delete_prefix(parent + version + "/")
        except Exception:  # noqa: BLE001 - best effort; garbage collection removes what is left
            pass

    def _publish(self, parent: str, manifest: dict) -> bool:
        """Point ``<parent>/manifest.json`` at ``manifest`` by a conditional write, retrying.

        Returns False, leaving the pointer, when it already names a version created later.
        """
        key = parent + MANIFEST_NAME
        data = json_bytes(manifest)
        for attempt in range(MAX_ATTEMPTS):
            raw, generation = self._read_stamped(key)
            head = self._parse_json(raw, key)
            if head is not None and str(head.get("version", "")) > manifest["version"]:
                return False
            if self._write_if(key, data, generation):
                return True
            backoff(attempt)
        raise StoreError(f"gave up moving the pointer after {MAX_ATTEMPTS} conflicting writes", path=self._where(key))

    def _versioned_write(self, parent: str, build: Callable[[str, str], dict]) -> dict:
        """Write a new version under ``parent`` and make it current unless a later one already is.

        Returns the new version's manifest.  Other versions are never touched; on any failure
        before the pointer names the new version, its partial data are removed (best effort).
        """
        manifest = self._write_version(parent, build)
        try:
            self._publish(parent, manifest)
        except BaseException:
            self._discard(parent, manifest["version"])
            raise
        return manifest

    # ------------------------------------------------------------------ reading versions
    def _head(self, parent: str) -> dict | None:
        """The current pointer's manifest (None when absent), re-validated on every call."""
        key = parent + MANIFEST_NAME
        cached = self._heads.get(key)
        r = self._kv.read(key, if_not_equal=cached[0] if cached else None).result()
        if r.state == "unspecified" and cached is not None:
            return cached[1]
        if r.state == "missing":
            self._heads.pop(key, None)
            return None
        man = self._parse_json(bytes(r.value), key)
        self._heads[key] = (r.stamp.generation, man)
        return man

    def current_version(self, kind: str, name: str) -> str | None:
        """The version the pointer of a plate (``kind="plates"``), its masks or a table names."""
        head = self._head(version_parent(kind, name))
        return None if head is None else head.get("version")

    def version_manifest(self, kind: str, name: str, version: str | None = None) -> dict:
        """The manifest of one version (the current one when ``version`` is None).

        Raises
        ------
        StoreError
            When the object has no current version, or the version is not stored (never
            written, or removed by garbage collection): the message names both.
        """
        parent = version_parent(kind, name)
        if version is None:
            man = self._head(parent)
            if man is None:
                message, fld = self._absent(kind, name)
                error = TableNotWritten if kind == "tables" else StoreError
                raise error(message, path=self._where(parent + MANIFEST_NAME), field=fld)
            return man
        check_version(version)
        man = self._read_json(parent + version + "/" + MANIFEST_NAME)
        if man is None:
            head = self._head(parent)
            if head is not None and head.get("version") == version:
                return head  # written before versions carried their own manifest
            raise StoreError(
                f"version {version} of {describe_object(kind, name)} is not in the store "
                "(never written, or removed by garbage collection)",
                path=self._where(parent + version + "/"),
                field="version",
            )
        return man

    @staticmethod
    def _absent(kind: str, name: str) -> tuple[str, str]:
        if kind == "plates":
            return f"plate {name!r} is not in the store", "plate_id"
        if kind == "masks":
            return f"no masks for plate {name!r} in the store", "plate_id"
        return f"no {name} table has been written", "name"

    def version_array(self, kind: str, name: str, version: str | None = None) -> tuple[dict, ts.TensorStore]:
        """The manifest and the opened array of one version (current when None); cached per version.

        A named version is immutable, so a cached one is served without a read (if it has been
        collected since, the next array read fails and says so).
        """
        if version is not None and (kind, name, version) in self._opened:
            return self._opened[(kind, name, version)]
        man = self.version_manifest(kind, name, version)
        key = (kind, name, man["version"])
        hit = self._opened.get(key)
        if hit is not None:
            return hit
        try:
            arr = self._open_array_at(man["array_path"])
        except ValueError as e:
            raise StoreError(
                f"version {man['version']} of {describe_object(kind, name)}: array cannot be opened: {e}",
                path=self._where(man["array_path"]),
                field="array_path",
            ) from e
        self._opened[key] = (man, arr)
        return man, arr

    def version_table(self, kind: str, name: str, version: str | None = None) -> pd.DataFrame:
        """The Parquet table of one version (current when None), checked against its sha256."""
        return self._table_from_manifest(self.version_manifest(kind, name, version))

    def _table_from_manifest(self, man: dict, raw: bytes | None = None) -> pd.DataFrame:
        key = man["table_path"]
        if raw is None:
            raw = self._read_bytes(key)
        if raw is None:
            raise StoreError("frame table is missing", path=self._where(key))
        if hashlib.sha256(raw).hexdigest() != man.get("table_sha256"):
            raise StoreError("frame table checksum differs from the manifest", path=self._where(key))
        return pd.read_parquet(io.BytesIO(raw), engine="pyarrow")

    def _damage_error(self, kind: str, name: str, man: dict, arr: ts.TensorStore,
                      indices: np.ndarray | None, err: Exception, axis: str = "frames") -> StoreError:
        """StoreError for a failed array read: version collected, or which chunk is damaged."""
        what = f"{describe_object(kind, name)} version {man['version']}"
        try:
            self.version_manifest(kind, name, man["version"])
        except StoreError as gone:
            return gone
        damage = damaged_chunks(arr, man["array_path"], indices)
        if not damage:
            return StoreError(f"{what}: read failed: {err}", path=self._where(man["array_path"]), field=axis)
        lines = "; ".join(d.describe(axis) for d in damage[:5]) + (" ..." if len(damage) > 5 else "")
        return StoreError(
            f"{what}: {len(damage)} damaged chunk(s) (checksum mismatch, undecodable or missing): {lines}",
            path=self._where(damage[0].key.split(" ")[0]),
            field=axis,
        )

    def versions(self, name: str, kind: str = "plates") -> list[dict]:
        """The stored versions of a plate (or ``kind="masks"``/``"tables"``), oldest first.

        Returns
        -------
        list of dict
            ``version``, ``created`` (ISO 8601, from the id), ``current`` (the pointer names
            it), ``complete`` (its manifest is written: readable by id), ``pinned_by``
            (names of the pins that keep it).
        """
        parent = version_parent(kind, name)
        head = self._head(parent)
        current = None if head is None else head.get("version")
        found: dict[str, bool] = {}
        for k in self._list(parent):
            v, _, rest = k.partition("/")
            if is_version(v):
                found[v] = found.get(v, False) or rest == MANIFEST_NAME
        pinned: dict[str, list[str]] = {}
        for pin_name, rec in self.pins().items():
            v = rec.get("refs", {}).get(kind, {}).get(name)
            if v:
                pinned.setdefault(v, []).append(pin_name)
        return [
            {"version": v, "created": version_time(v).isoformat(timespec="microseconds"),
             "current": v == current, "complete": done or v == current, "pinned_by": sorted(pinned.get(v, []))}
            for v, done in sorted(found.items())
        ]

    def inventory(self) -> dict[str, dict[str, list[str]]]:
        """Every versioned object and its stored version folders: ``{kind: {name: [versions]}}``.

        One listing of the whole store.  Objects with a pointer and no version folder appear
        with an empty list.
        """
        inv: dict[str, dict[str, set[str]]] = {k: {} for k in KINDS}
        for key in self._list(""):
            parts = key.split("/")
            if parts[0] in ("plates", "masks") and len(parts) >= 3:
                kind, name, rest = parts[0], parts[1], parts[2]
            elif parts[0] not in RESERVED_NAMES and len(parts) >= 2:
                kind, name, rest = "tables", parts[0], parts[1]
            else:
                continue
            if not is_safe_name(name):
                continue
            if is_version(rest):
                inv[kind].setdefault(name, set()).add(rest)
            elif rest == MANIFEST_NAME and len(parts) == (3 if kind != "tables" else 2):
                inv[kind].setdefault(name, set())
        return {k: {n: sorted(vs) for n, vs in sorted(d.items())} for k, d in inv.items()}

    def remove_version(self, kind: str, name: str, version: str) -> None:
        """Delete one stored version (its manifest first, then its data); never the current one.

        Used by garbage collection (:func:`~.retention.collect_garbage`), which decides what
        may go; readers of a removed version get a StoreError naming it.
        """
        parent = version_parent(kind, name)
        check_version(version)
        head = self._head(parent)
        if head is not None and head.get("version") == version:
            raise StoreError(f"version {version} of {describe_object(kind, name)} is current; not removed",
                             field="version")
        self._kv.write(parent + version + "/" + MANIFEST_NAME, None).result()
        self._delete_prefix(parent + version + "/")
        self._opened.pop((kind, name, version), None)

    # ------------------------------------------------------------------ pins
    def pin(self, name: str, refs: Mapping, note: str = "") -> dict:
        """Keep the versions named in ``refs`` through garbage collection; return the pin record.

        Parameters
        ----------
        name : str
            The pin's name (a model run, a report ...); letters, digits, ``_``, ``-``, ``.``.
            Pinning again under the same name replaces the record.
        refs : mapping
            ``{"plates": {plate_id: version}, "masks": {plate_id: version}, "tables": {name:
            version}}``; any of the three may be left out.  Every version must be stored.
        note : str
            Free text kept in the record (e.g. what read these versions).

        Raises
        ------
        StoreError
            A bad name, kind or version id, or a version that is not in the store.
        """
        check_plate_id(name)
        if not isinstance(refs, Mapping) or set(refs) - set(KINDS):
            raise StoreError(f"refs must map some of {sorted(KINDS)} to {{name: version}}", field="refs")
        clean: dict[str, dict[str, str]] = {}
        for kind, named in refs.items():
            if not isinstance(named, Mapping):
                raise StoreError(f"refs[{kind!r}] must map names to versions", field="refs")
            clean[kind] = {str(n): check_version(v, field=f"refs.{kind}.{n}") for n, v in named.items()}
        record = {"name": name, "refs": clean, "note": str(note), "created": now_iso()}
        self._write_bytes(f"{PINS_PREFIX}{name}.json", json_bytes(record))
        for kind, named in clean.items():  # after writing: a collector that ran first has removed it
            for n, v in named.items():
                self.version_manifest(kind, n, v)
        return record

    def unpin(self, name: str) -> bool:
        """Remove a pin; True if there was one."""
        check_plate_id(name)
        key = f"{PINS_PREFIX}{name}.json"
        if self._read_bytes(key) is None:
            return False
        self._kv.write(key, None).result()
        return True

    def pins(self) -> dict[str, dict]:
        """Every pin record by name (see :meth:`pin`)."""
        names = [k for k in self._list(PINS_PREFIX) if k.endswith(".json") and "/" not in k]
        raws = self._read_many([PINS_PREFIX + k for k in names])
        out = {}
        for k, raw in zip(names, raws, strict=True):
            rec = self._parse_json(raw, PINS_PREFIX + k)
            if rec is not None:
                out[k[: -len(".json")]] = rec
        return out

    # ------------------------------------------------------------------ dataset-level tables
    def _table_build(self, name: str, df: pd.DataFrame, provenance: Mapping | None) -> Callable[[str, str], dict]:
        if not isinstance(df, pd.DataFrame):
            raise StoreError(f"{name} must be a DataFrame, got {type(df).__name__}", field=name)
        prov = check_provenance(provenance)
        df = df.reset_index(drop=True)

        def build(prefix: str, version: str) -> dict:
            key = f"{prefix}{name}.parquet"
            raw = table_to_parquet(df)
            self._write_bytes(key, raw)
            return {
                "schema_version": MANIFEST_SCHEMA_VERSION,
                "kind": name,
                "version": version,
                "n_rows": int(len(df)),
                "n_plates": int(df["plate_id"].nunique()) if "plate_id" in df else None,
                "columns": [str(c) for c in df.columns],
                "created": now_iso(),
                "table_path": key,
                "table_sha256": hashlib.sha256(raw).hexdigest(),
                "provenance": prov,
            }

        return build

    def write_dataset_table(self, name: str, df: pd.DataFrame, provenance: Mapping | None = None) -> dict:
        """Store a dataset-level table (catalog, splits, ...) as a new version; return its manifest.

        The table lands at ``<name>/<version>/<name>.parquet`` and ``<name>/manifest.json`` is
        moved to it by a conditional write (a version created later that is already current
        stays current).  For a table computed from the store, use :meth:`update_dataset_table`.
        """
        parent = version_parent("tables", name)
        return self._versioned_write(parent, self._table_build(name, df, provenance))

    def update_dataset_table(
        self,
        name: str,
        build: Callable[[], tuple[pd.DataFrame, Mapping | None]],
        max_attempts: int = 100,
    ) -> dict:
        """Rebuild a dataset table from the store and make it current, retrying on conflict.

        ``build()`` returns ``(table, provenance)`` from what the store holds *now*.  The
        pointer's generation is read before each build, and the pointer moves only if it is
        unchanged; otherwise the unpublished version is removed and the table rebuilt.  So the
        last update to succeed was built after every earlier one was published, and N
        concurrent updates (each after writing its own plate) end with a table that holds
        every plate.

        Returns the manifest of the version made current.
        """
        parent = version_parent("tables", name)
        key = parent + MANIFEST_NAME
        for attempt in range(max_attempts):
            raw, generation = self._read_stamped(key)
            head = self._parse_json(raw, key)
            df, prov = build()
            manifest = self._write_version(parent, self._table_build(name, df, prov))
            newer = head is not None and str(head.get("version", "")) > manifest["version"]
            if not newer and self._write_if(key, json_bytes(manifest), generation):
                return manifest
            self._discard(parent, manifest["version"])
            backoff(attempt)
        raise StoreError(f"gave up updating the {name} table after {max_attempts} conflicts",
                         path=self._where(key))

    def read_dataset_manifest(self, name: str, version: str | None = None) -> dict:
        """The manifest of a dataset-level table: the current one, or ``version``."""
        return self.version_manifest("tables", name, version)

    def read_dataset_table(self, name: str, version: str | None = None) -> pd.DataFrame:
        """A dataset-level table stored with :meth:`write_dataset_table`: current, or ``version``."""
        return self.version_table("tables", name, version)

    def read_dataset(self, name: str, version: str | None = None) -> tuple[pd.DataFrame, dict]:
        """The dataset-level table and the manifest it was read through (one version of both).

        Raises :class:`TableNotWritten` when none has been written, :class:`StoreError` when the
        table is missing or its checksum differs from the manifest.
        """
        man = self.read_dataset_manifest(name, version)
        return self._table_from_manifest(man), man
