"""Versioned objects in one TensorStore key-value store, each made current by a manifest.

:class:`VersionedStore` is the storage half of :class:`~.frame_store.FrameStore`: it opens a
kvstore from a folder, URL or JSON spec (:func:`kvstore_spec`), reads and writes raw keys,
JSON and Parquet tables, opens zarr3 arrays, and writes versions.  A version is written under
``<parent>/<version>/`` (a fresh, time-ordered id), then ``<parent>/manifest.json`` is
replaced with one single-key write (atomic in every kvstore driver), then older versions are
deleted.  Until the manifest is replaced readers see the previous version, whole; if anything
fails before, the partial new version is removed (or, if even that fails, ignored and swept by
the next successful write).  Dataset-level tables (catalog, splits, ...) are versioned the
same way (:meth:`VersionedStore.write_dataset_table`).

Arrays are opened with ``fill_missing_data_reads=False`` and written with
``store_data_equal_to_fill_value=True``: a missing chunk is an error, never silent zeros.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorstore as ts

from ..errors import StoreError, TableNotWritten
from ..imaging.plates import check_plate_id

MANIFEST_SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


def kvstore_spec(root: str | os.PathLike | Mapping) -> Any:
    """TensorStore kvstore spec (JSON dict or URL) for a store root."""
    if isinstance(root, Mapping):
        spec = dict(root)
        if "driver" not in spec:
            raise StoreError("kvstore spec needs a 'driver'", field="root")
        path = spec.get("path", "")
        if path and not path.endswith("/"):
            spec["path"] = path + "/"
        return spec
    root = os.fspath(root)
    if "://" in root:
        return root if root.endswith("/") else root + "/"
    return {"driver": "file", "path": str(Path(root).expanduser().resolve()) + "/"}


def prefix_range(prefix: str) -> ts.KvStore.KeyRange:
    """Key range of all keys starting with ``prefix`` (which ends with '/'; '' = all keys)."""
    if not prefix:
        return ts.KvStore.KeyRange()
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return ts.KvStore.KeyRange(inclusive_min=prefix, exclusive_max=end)


def new_version() -> str:
    """A fresh, time-ordered version id like ``v20250102T030405123456Z-1a2b3c4d``."""
    now = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"v{now}-{uuid.uuid4().hex[:8]}"


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (manifests' ``created``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def table_to_parquet(table: pd.DataFrame) -> bytes:
    """Parquet bytes of ``table`` (pyarrow engine, index not stored)."""
    buf = io.BytesIO()
    table.to_parquet(buf, index=False, engine="pyarrow")
    return buf.getvalue()


def json_bytes(obj: Mapping) -> bytes:
    """UTF-8 JSON of ``obj``, indented, keys sorted, with a final newline (manifests)."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def check_provenance(provenance: Mapping | None) -> dict:
    """A copy of ``provenance`` as a dict (``None`` gives ``{}``); StoreError unless JSON-serialisable."""
    prov = dict(provenance or {})
    try:
        json.dumps(prov)
    except (TypeError, ValueError) as e:
        raise StoreError(f"provenance must be JSON-serialisable: {e}", field="provenance") from e
    return prov


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
    """

    def __init__(self, root: str | os.PathLike | Mapping, context: ts.Context | None = None):
        self.context = context if context is not None else ts.Context()
        self._spec = kvstore_spec(root)
        try:
            self._kv = ts.KvStore.open(self._spec, context=self.context).result()
        except ValueError as e:
            raise StoreError(f"cannot open kvstore {self._spec!r}: {e}", field="root") from e

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @property
    def url(self) -> str:
        """The root as a kvstore URL (or JSON spec text where the driver has no URL form)."""
        try:
            return self._kv.url
        except (ValueError, AttributeError):
            return json.dumps(self._kv.spec().to_json())

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

    def _write_bytes(self, key: str, data: bytes) -> None:
        self._kv.write(key, data).result()

    def _delete_prefix(self, prefix: str) -> None:
        self._kv.delete_range(prefix_range(prefix)).result()

    def _list(self, prefix: str) -> list[str]:
        keys = self._kv.list(prefix_range(prefix), strip_prefix_length=len(prefix)).result()
        return [k.decode("utf-8") for k in keys]

    def _read_json(self, key: str) -> dict | None:
        raw = self._read_bytes(key)
        if raw is None:
            return None
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(f"not valid JSON: {e}", path=self._where(key)) from e
        if not isinstance(obj, dict):
            raise StoreError("must hold a JSON object", path=self._where(key))
        return obj

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

    def _versioned_write(self, parent: str, build) -> dict:
        """Write a new version under ``parent``, swap the manifest, delete older versions.

        ``build(prefix, version)`` writes the version's data under ``prefix`` and returns its
        manifest.  Until the manifest write (one key, atomic) the previous version stays
        current; on any failure before it, the partial version is removed (best effort).
        """
        version = new_version()
        prefix = parent + version + "/"
        try:
            manifest = build(prefix, version)
            self._write_bytes(parent + MANIFEST_NAME, json_bytes(manifest))  # the swap
        except BaseException:
            try:
                self._delete_prefix(prefix)
            except Exception:  # noqa: BLE001 - best effort; the next write sweeps orphans
                pass
            raise
        self._delete_other_versions(parent, keep=version)
        return manifest

    def _delete_other_versions(self, parent: str, keep: str) -> None:
        """Delete versions older than ``keep``, sparing whatever the manifest names now.

        Version ids sort by creation time, so a concurrent writer's newer version (still
        being written, or already current) is never removed by an older writer's cleanup.
        """
        current = (self._read_json(parent + MANIFEST_NAME) or {}).get("version")
        versions = {k.split("/", 1)[0] for k in self._list(parent) if "/" in k}
        for v in sorted(versions):
            if v < keep and v != current:
                self._delete_prefix(parent + v + "/")

    def _table_from_manifest(self, man: dict, raw: bytes | None = None) -> pd.DataFrame:
        key = man["table_path"]
        if raw is None:
            raw = self._read_bytes(key)
        if raw is None:
            raise StoreError("frame table is missing", path=self._where(key))
        if hashlib.sha256(raw).hexdigest() != man.get("table_sha256"):
            raise StoreError("frame table checksum differs from the manifest", path=self._where(key))
        return pd.read_parquet(io.BytesIO(raw), engine="pyarrow")

    # ------------------------------------------------------------------ dataset-level tables
    def write_dataset_table(self, name: str, df: pd.DataFrame, provenance: Mapping | None = None) -> dict:
        """Store a dataset-level table (catalog, splits, ...) versioned like a plate.

        The table lands at ``<name>/<version>/<name>.parquet`` and ``<name>/manifest.json``
        points at it; the previous version stays current until the manifest swap.
        """
        if not isinstance(df, pd.DataFrame):
            raise StoreError(f"{name} must be a DataFrame, got {type(df).__name__}", field=name)
        check_plate_id(name)
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

        return self._versioned_write(f"{name}/", build)

    def read_dataset_manifest(self, name: str) -> dict:
        """The current manifest of a dataset-level table.

        Raises
        ------
        TableNotWritten
            When no ``name`` table has ever been written (a :class:`StoreError`).
        StoreError
            When the manifest is not valid JSON.
        """
        key = f"{name}/{MANIFEST_NAME}"
        man = self._read_json(key)
        if man is None:
            raise TableNotWritten(f"no {name} table has been written", path=self._where(key))
        return man

    def read_dataset_table(self, name: str) -> pd.DataFrame:
        """The dataset-level table last stored with :meth:`write_dataset_table`."""
        return self._table_from_manifest(self.read_dataset_manifest(name))

    def read_dataset(self, name: str) -> tuple[pd.DataFrame, dict]:
        """The dataset-level table and the manifest it was read through (one version of both).

        Raises :class:`TableNotWritten` when none has been written, :class:`StoreError` when the
        table is missing or its checksum differs from the manifest.
        """
        man = self.read_dataset_manifest(name)
        return self._table_from_manifest(man), man
