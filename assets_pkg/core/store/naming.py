"""How the store names things: version ids, parent prefixes, kvstore specs, manifest bytes.

Small pure helpers shared by :mod:`.versioned` (the write protocol), :mod:`.retention` and
:mod:`.integrity`: a version id (:func:`new_version`) sorts by creation time and is checked
(:func:`check_version`) before it goes into a key; a versioned object of ``kind`` ``plates``,
``masks`` or ``tables`` lives under :func:`version_parent`.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import tensorstore as ts

from ..errors import CellscapeError, StoreError
from ..imaging.plates import check_plate_id

MANIFEST_SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
PLATES_PREFIX = "plates/"
MASKS_PREFIX = "masks/"
PINS_PREFIX = "pins/"
#: Kinds of versioned objects and the prefix their parents live under (``tables``: top level).
KINDS = {"plates": PLATES_PREFIX, "masks": MASKS_PREFIX, "tables": ""}
#: Top-level folders that are not dataset tables (``hcs``: the plates' OME-Zarr exports).
RESERVED_NAMES = frozenset({"plates", "masks", "pins", "hcs"})
#: Attempts of a conditional pointer update before giving up (each failure means another
#: writer succeeded, so this bounds only pathological contention).
MAX_ATTEMPTS = 1000

_VERSION_RE = re.compile(r"^v(\d{8}T\d{12})Z-[0-9a-f]{8}$")


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


def emulated_conditional_writes(spec: Any) -> bool:
    """Whether a kvstore spec asks TensorStore to emulate conditional writes (not atomic).

    True for an ``s3`` spec with ``"use_conditional_write": false``: TensorStore then checks
    the generation with a HEAD request and writes with an unconditional PUT, so two writers
    can both pass the check.  Every other driver (and ``s3`` by default) swaps atomically.
    """
    return isinstance(spec, Mapping) and spec.get("driver") == "s3" and spec.get("use_conditional_write") is False


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


def is_version(name: str) -> bool:
    """Whether ``name`` is a version id made by :func:`new_version`."""
    return bool(_VERSION_RE.match(name))


def version_time(version: str) -> datetime:
    """When a version was created (UTC), read from its id."""
    m = _VERSION_RE.match(version)
    if not m:
        raise StoreError(f"not a version id: {version!r}", field="version")
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)


def check_version(version: str, field: str = "version") -> str:
    """Return ``version`` if it is a version id (so it is safe inside a key), else raise StoreError."""
    if not isinstance(version, str) or not is_version(version):
        raise StoreError(f"not a version id: {version!r} (expected like v20250102T030405123456Z-1a2b3c4d)",
                         field=field)
    return version


def is_safe_name(name: str) -> bool:
    """Whether ``name`` may name a plate, table or pin (see :func:`~..imaging.plates.check_plate_id`)."""
    try:
        check_plate_id(name)
    except CellscapeError:
        return False
    return True


def version_parent(kind: str, name: str) -> str:
    """The parent prefix of a versioned object: ``plates/<id>/``, ``masks/<id>/`` or ``<table>/``."""
    if kind not in KINDS:
        raise StoreError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}", field="kind")
    check_plate_id(name)
    if kind == "tables" and name in RESERVED_NAMES:
        raise StoreError(f"{name!r} is reserved and cannot name a dataset table", field="name")
    return f"{KINDS[kind]}{name}/"


def describe_object(kind: str, name: str) -> str:
    """Words for a versioned object in messages: ``plate 'P1'``, ``masks of plate 'P1'``, ``catalog table``."""
    return {"plates": f"plate {name!r}", "masks": f"masks of plate {name!r}"}.get(kind, f"{name} table")


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


def backoff(attempt: int) -> None:
    """Sleep a little before retry ``attempt`` of a conditional write (1 ms doubling to 50 ms)."""
    time.sleep(min(0.05, 0.001 * 2 ** min(attempt, 6)))
