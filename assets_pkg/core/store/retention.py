"""Retention: which stored versions garbage collection keeps, and the collector.

Writes never delete (:mod:`.versioned`); old versions go only through
:func:`collect_garbage` (``FrameStore.collect_garbage``, ``cellscape gc``).  The policy is the
same for plate frames, nucleus masks and dataset tables (catalog, splits, ...).  A version is
**kept** when it is

1. the current one (its pointer names it);
2. named by a pin (``pins/<name>.json``, :meth:`~.versioned.VersionedStore.pin`): models and
   reports pin the versions they read, so their lineage stays readable by id;
3. created after the current one (a write in flight, which will become current); or
4. younger than the grace period (default :data:`DEFAULT_GRACE_SECONDS`, one hour, counted
   from the creation time in the version id): writes in flight before any version is
   current, and readers that resolved a version just before it was replaced.

Everything else is garbage: versions older than the current one and than the grace period,
and incomplete versions (a crashed write: no manifest) once the grace period is over.

Why this is safe with concurrent writers and readers: the pointer only moves forward in
creation order (a write whose version is older than the current one leaves the pointer), so
a version older than the current one never becomes current again; the collector re-reads the
pins and the pointer just before removing each version, and removes the version's manifest
first (readers by id then get a StoreError naming the version, never partial data).  Two
limits, stated rather than hidden: a write that takes longer than the grace period may lose
its version to a collector running meanwhile (keep the grace above the longest write), and a
pin made at the very moment the collector removes that version comes too late (pin the
versions a job reads when it starts reading them, not hours later: :meth:`pin` then raises
StoreError if one is already gone).
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..errors import StoreError
from .naming import describe_object, version_time
from .versioned import VersionedStore

#: Default grace period: versions younger than this are kept (writes in flight).
DEFAULT_GRACE_SECONDS = 3600.0


def _pinned_by(pins: dict[str, dict], kind: str, name: str, version: str) -> list[str]:
    return sorted(p for p, rec in pins.items() if rec.get("refs", {}).get(kind, {}).get(name) == version)


def _keep_reason(version: str, current: str | None, pinned: list[str], age_s: float, grace_s: float) -> str | None:
    if version == current:
        return "current"
    if pinned:
        return "pinned by " + ", ".join(pinned)
    if current is not None and version > current:
        return "newer than the current version (write in flight)"
    if age_s < grace_s:
        return f"younger than the grace period ({age_s / 60:.0f} of {grace_s / 60:.0f} min)"
    return None


def collect_garbage(
    store: VersionedStore,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    dry_run: bool = False,
    now: datetime | None = None,
) -> dict:
    """Remove every stored version the retention policy (module notes) does not keep.

    Parameters
    ----------
    store : VersionedStore
        The store (a :class:`~.frame_store.FrameStore`).
    grace_seconds : float
        Versions younger than this are kept.
    dry_run : bool
        Only report what would be removed.
    now : datetime, optional
        The time ages are measured at (UTC; tests), default now.

    Returns
    -------
    dict
        ``removed`` and ``kept``: lists of ``{"kind", "name", "version", "reason"}`` (kind
        ``plates``, ``masks`` or ``tables``), and ``dry_run``.
    """
    if grace_seconds < 0:
        raise StoreError(f"grace_seconds must be >= 0, got {grace_seconds}", field="grace_seconds")
    now = now or datetime.now(UTC)
    pins = store.pins()
    kept, removed = [], []
    for kind, objects in store.inventory().items():
        for name, versions in objects.items():
            current = store.current_version(kind, name)
            for v in versions:
                age = (now - version_time(v)).total_seconds()
                entry = {"kind": kind, "name": name, "version": v}
                reason = _keep_reason(v, current, _pinned_by(pins, kind, name, v), age, grace_seconds)
                if reason is None and not dry_run:
                    # Re-check just before removing: a pin or a pointer move may have come since.
                    fresh = store.pins()
                    reason = _keep_reason(v, store.current_version(kind, name),
                                          _pinned_by(fresh, kind, name, v), age, grace_seconds)
                    if reason is None:
                        try:
                            store.remove_version(kind, name, v)
                        except StoreError as e:  # became current meanwhile
                            reason = str(e)
                if reason is not None:
                    kept.append({**entry, "reason": reason})
                else:
                    removed.append({**entry, "reason": f"not current ({current or 'none'}), not pinned, "
                                                      f"{age / 3600:.1f} h old"})
    return {"removed": removed, "kept": kept, "dry_run": bool(dry_run)}


def describe_entry(entry: dict) -> str:
    """One line for a :func:`collect_garbage` entry: ``plate 'P1' v2025...: reason``."""
    return f"{describe_object(entry['kind'], entry['name'])} {entry['version']}: {entry['reason']}"
