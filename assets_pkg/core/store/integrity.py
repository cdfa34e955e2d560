"""Integrity: read every stored version of a store in full and report what is damaged.

:func:`verify_store` (``FrameStore.verify``, ``cellscape verify``) walks every complete
version of every plate, nucleus-mask set and dataset table (the current ones and every older
one still stored): it parses the manifest, checks each Parquet table against the sha256 in
its manifest, and reads each array in full, in batches of about ``batch_bytes``; a batch that
fails is narrowed down to the damaged chunks (:func:`~.layout.damaged_chunks`: crc32c
mismatch, undecodable or missing).  Incomplete versions (a write in flight or crashed: no
manifest) are counted and skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import StoreError
from .layout import damaged_chunks
from .naming import describe_object
from .versioned import VersionedStore

#: Axis-0 words per kind, for messages.
_AXIS = {"plates": "frames", "masks": "fields"}


@dataclass(frozen=True)
class Problem:
    """One damaged thing: which object and version, where in it, and what is wrong."""

    kind: str
    name: str
    version: str | None
    where: str
    message: str

    def __str__(self) -> str:
        return f"{describe_object(self.kind, self.name)} version {self.version or '?'}: {self.where}: {self.message}"


@dataclass
class VerifyReport:
    """What :func:`verify_store` found: ``problems`` and counts of what it read."""

    problems: list[Problem] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=lambda: {"plates": 0, "masks": 0, "tables": 0})
    rows: dict[str, int] = field(default_factory=lambda: {"plates": 0, "masks": 0})
    incomplete: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        v, r = self.versions, self.rows
        return (
            f"{len(self.problems)} problem(s) in {v['plates']} plate version(s) ({r['plates']} frames), "
            f"{v['masks']} mask version(s) ({r['masks']} fields), {v['tables']} table version(s); "
            f"{self.incomplete} incomplete version(s) skipped"
        )


def _check_array(store: VersionedStore, kind: str, name: str, man: dict, batch_bytes: int,
                 report: VerifyReport) -> None:
    version = man["version"]
    try:
        _, arr = store.version_array(kind, name, version)
    except StoreError as e:
        report.problems.append(Problem(kind, name, version, "array", e.reason))
        return
    if list(arr.shape) != list(man.get("shape", arr.shape)):
        report.problems.append(Problem(kind, name, version, "array",
                                       f"shape {list(arr.shape)} differs from the manifest's {man['shape']}"))
        return
    n = int(arr.shape[0])
    row_bytes = int(np.prod(arr.shape[1:])) * arr.dtype.numpy_dtype.itemsize
    outer = int(arr.chunk_layout.write_chunk.shape[0])
    step = max(outer, (max(1, batch_bytes // max(1, row_bytes)) // outer) * outer)
    for s in range(0, n, step):
        e = min(n, s + step)
        try:
            arr[s:e].read().result()
        except ValueError as err:
            damage = damaged_chunks(arr, man["array_path"], np.arange(s, e))
            if not damage:
                report.problems.append(Problem(kind, name, version, f"{_AXIS[kind]} {s}..{e - 1}", str(err)))
            report.problems.extend(Problem(kind, name, version, d.where(_AXIS[kind]), d.detail)
                                   for d in damage)
    report.rows[kind] += n


def verify_store(
    store: VersionedStore,
    batch_bytes: int = 64 << 20,
    progress: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Check every complete stored version of every plate, mask set and table (module notes).

    Parameters
    ----------
    store : VersionedStore
        The store (a :class:`~.frame_store.FrameStore`).
    batch_bytes : int
        About how many bytes of an array to read at once (whole shards).
    progress : callable, optional
        Called with ``"<kind>/<name>/<version>"`` before each version.

    Returns
    -------
    VerifyReport
        ``problems`` (one per damaged chunk, table or manifest) and what was read.
    """
    report = VerifyReport()
    for kind, objects in store.inventory().items():
        for name in objects:
            try:
                listed = store.versions(name, kind)
            except StoreError as e:  # e.g. a pointer that is not JSON
                report.problems.append(Problem(kind, name, None, "manifest", str(e)))
                continue
            for info in listed:
                version = info["version"]
                if not info["complete"]:
                    report.incomplete += 1
                    continue
                if progress:
                    progress(f"{kind}/{name}/{version}")
                report.versions[kind] += 1
                try:
                    man = store.version_manifest(kind, name, version)
                except StoreError as e:
                    report.problems.append(Problem(kind, name, version, "manifest", str(e)))
                    continue
                try:
                    store.version_table(kind, name, version)
                except (ValueError, KeyError) as e:  # StoreError, or Parquet that does not parse
                    report.problems.append(Problem(kind, name, version, man.get("table_path", "table"), str(e)))
                if kind in _AXIS:
                    _check_array(store, kind, name, man, batch_bytes, report)
    return report
