"""``cellscape gc``, ``cellscape verify`` and ``cellscape pin``: retention and integrity of a
frame store, and the DVC pins of the raw plates.

Kept apart from :mod:`assets_pkg.cli`, which adds these subcommands with
:func:`add_store_commands` and opens stores with :func:`open_store`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

_HELP = argparse.ArgumentDefaultsHelpFormatter
STORE_HELP = "store root: a path, file:// or memory:// URL, or a kvstore JSON spec"


def open_store(spec: str):
    """A :class:`~assets_pkg.core.store.frame_store.FrameStore` from a path, URL or JSON spec text."""
    from .core.store.frame_store import FrameStore

    return FrameStore(json.loads(spec) if spec.lstrip().startswith("{") else spec)


def _add_gc(sub) -> None:
    from .core.store.retention import DEFAULT_GRACE_SECONDS

    p = sub.add_parser("gc", formatter_class=_HELP,
                       help="remove store versions that are not current, pinned, newer or young")
    p.add_argument("store", help=STORE_HELP)
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument("--grace-hours", type=float, default=DEFAULT_GRACE_SECONDS / 3600,
                   help="keep versions younger than this (writes in flight)")
    p.add_argument("--verbose", action="store_true", help="also list the versions kept and why")
    p.set_defaults(func=cmd_gc)


def cmd_gc(a) -> int:
    from .core.store.retention import describe_entry

    store = open_store(a.store)
    res = store.collect_garbage(grace_seconds=a.grace_hours * 3600, dry_run=a.dry_run)
    verb = "would remove" if a.dry_run else "removed"
    for e in res["removed"]:
        print(f"{verb} {describe_entry(e)}")
    if a.verbose:
        for e in res["kept"]:
            print(f"kept {describe_entry(e)}")
    print(f"{verb} {len(res['removed'])} version(s), kept {len(res['kept'])}")
    return 0


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", formatter_class=_HELP,
                       help="read every stored version in full; exit 1 naming each damaged chunk or table")
    p.add_argument("store", help=STORE_HELP)
    p.set_defaults(func=cmd_verify)


def cmd_verify(a) -> int:
    store = open_store(a.store)
    report = store.verify()
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    print(report.summary(), file=sys.stderr if report.problems else sys.stdout)
    return 0 if report.ok else 1


def _add_pin(sub) -> None:
    from pathlib import Path

    p = sub.add_parser("pin", formatter_class=_HELP,
                       help="pin plate folders with DVC, one .dvc file per plate, and re-pin the dataset index (data.dvc)")
    p.add_argument("plates", nargs="+", type=Path, help="plate folders, in one plates folder of a DVC repository")
    p.add_argument("--push", action="store_true", help="also dvc push them and the index to the default remote")
    p.add_argument("--index", default=None, help="the dataset pin, relative to the repository root (default: data.dvc)")
    p.set_defaults(func=cmd_pin)


def cmd_pin(a) -> int:
    from .core.store.dvc import pin_plates

    res = pin_plates(a.plates, push=a.push, index_dvc=a.index)
    if res.converted:
        print(f"{res.dvc_files[-1].name} pinned the whole data folder: replaced by one pin per plate "
              f"and the index {res.index.name}")
    for plate, md5 in res.plates.items():
        print(f"{plate}: {md5}")
    print(f"dataset: {res.dataset_md5} ({res.dvc_files[-1].name} -> {res.index.name})"
          + ("; pushed" if res.pushed else ""))
    print("commit: git add " + " ".join(os.path.relpath(f) for f in res.dvc_files))
    return 0


def add_store_commands(sub) -> None:
    """Add ``gc``, ``verify`` and ``pin`` to the ``cellscape`` subparsers."""
    _add_gc(sub)
    _add_verify(sub)
    _add_pin(sub)
