"""Lineage by version id: which stored versions a step read, and the data they came from.

Every step downstream of the frame store records the exact versions it read (plate versions,
catalog version, splits version) and the DVC md5 of the pinned data that contains those plates,
and the next step reads exactly those versions, never "the current one".  This module holds the
library side of it:

- :func:`catalog_of` builds the catalog from named plate versions;
- :func:`content_key` is one digest over the plates' raw content (what "the data changed" means
  to the retraining schedule: a plate re-ingested from identical files does not change it);
- :func:`lineage_refs` is the pin record a model or report leaves in the store so its versions
  survive garbage collection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..errors import StoreError


def catalog_of(store, plate_versions: Mapping[str, str]) -> pd.DataFrame:
    """The frame tables of the given plate versions, concatenated (plates in sorted id order).

    Parameters
    ----------
    store : FrameStore
        The store holding the versions.
    plate_versions : mapping of str to str
        ``plate_id -> version id`` (as recorded by the step that wrote each plate).

    Returns
    -------
    pandas.DataFrame
        One row per frame: ``row_id`` (0..M-1), ``plate_index`` (position of the plate in the
        sorted ids), the plate's frame-table columns and ``plate_version``.

    Raises
    ------
    StoreError
        A version that the store no longer holds (named with its plate).
    """
    if not plate_versions:
        raise StoreError("no plate versions given: ingest a plate first", field="plates")
    parts = []
    for i, pid in enumerate(sorted(plate_versions)):
        version = str(plate_versions[pid])
        table = store.read_table(pid, version=version)
        table.insert(0, "plate_index", np.int64(i))
        table["plate_version"] = version
        parts.append(table)
    cat = pd.concat(parts, ignore_index=True)
    cat.insert(0, "row_id", np.arange(len(cat), dtype=np.int64))
    return cat


def content_key(plate_digests: Mapping[str, str]) -> str:
    """One SHA-256 over sorted ``(plate_id, content digest)`` pairs: the dataset's raw content.

    Two ingests of identical files give the same key whatever store versions they wrote.
    """
    text = "\n".join(f"{p} {plate_digests[p]}" for p in sorted(plate_digests))
    return hashlib.sha256(text.encode()).hexdigest()


def lineage_refs(plate_versions: Mapping[str, str], tables: Mapping[str, str] | None = None) -> dict:
    """The ``refs`` of a store pin: the plate versions and dataset-table versions a step read."""
    return {"plates": {str(k): str(v) for k, v in sorted(plate_versions.items())},
            "tables": {str(k): str(v) for k, v in sorted((tables or {}).items())}}


def plate_versions_of(rows: pd.DataFrame) -> dict[str, str]:
    """``plate_id -> plate_version`` of catalog or split rows (one version per plate).

    Raises
    ------
    StoreError
        Rows without a ``plate_version`` column, or naming two versions of one plate.
    """
    if "plate_version" not in rows.columns:
        raise StoreError("rows carry no plate_version: they were not read from a versioned catalog",
                         field="plate_version")
    per = rows.groupby(rows["plate_id"].astype(str))["plate_version"].unique()
    bad = {p: list(v) for p, v in per.items() if len(v) != 1}
    if bad:
        raise StoreError(f"rows name several versions of a plate: {bad}", field="plate_version")
    return {p: str(v[0]) for p, v in per.items()}


def rows_lineage(store, rows: pd.DataFrame) -> dict:
    """What a step that reads ``rows`` (catalog or split rows) records of them.

    Returns
    -------
    dict
        ``plates`` (``plate_id -> plate_version`` the rows name) and ``dataset_md5``: the DVC md5
        every one of those plate versions recorded at ingest when they agree, else None (plates
        pinned by different pins, or ingested outside a DVC repository).
    """
    plates = plate_versions_of(rows)
    md5s = {store.read_manifest(p, version=v).get("provenance", {}).get("dataset_md5") for p, v in plates.items()}
    return {"plates": plates, "dataset_md5": md5s.pop() if len(md5s) == 1 else None}
