"""``cellscape export-hcs``: a plate folder and its store masks as one OME-Zarr HCS plate.

Kept apart from :mod:`assets_pkg.cli`, which adds the subcommand with :func:`add_export_commands`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_store import STORE_HELP, open_store
from .core.errors import CellscapeError

_HELP = argparse.ArgumentDefaultsHelpFormatter


def _add_export_hcs(sub) -> None:
    p = sub.add_parser("export-hcs", formatter_class=_HELP,
                       help="write a plate and its nucleus masks as OME-Zarr HCS (NGFF 0.5, zarr v3, sharded)")
    p.add_argument("--plates", type=Path, required=True,
                   help="the plate folder, or a folder of plates with --plate naming one")
    p.add_argument("--plate", default=None, help="plate id under --plates (when --plates holds several)")
    p.add_argument("--out", type=Path, required=True, help="the .ome.zarr folder to create (must not exist)")
    p.add_argument("--store", default=None, help=STORE_HELP + "; the nucleus masks are read from it")
    p.add_argument("--masks-version", default=None, help="masks version to export (default: the current one)")
    p.add_argument("--no-labels", action="store_true", help="export the images only, without a store")
    p.set_defaults(func=cmd_export_hcs)


def cmd_export_hcs(a) -> int:
    from .core.store.hcs import export_hcs

    plate_dir = a.plates / a.plate if a.plate else a.plates
    if a.no_labels == (a.store is not None):
        raise CellscapeError("give --store (labels from its nucleus masks) or --no-labels", field="store")
    store = open_store(a.store) if a.store is not None else None
    info = export_hcs(plate_dir, a.out, store, masks_version=a.masks_version)
    labels = f"labels from masks {info['masks_version']}" if info["labels"] else "no labels"
    print(f"{info['plate_id']}: {info['wells']} wells, {info['fields']} fields, {labels}, "
          f"{info['files']} files, pixel {info['pixel_size_um']} um -> {info['path']}")
    return 0


def add_export_commands(sub) -> None:
    """Add ``export-hcs`` to the ``cellscape`` subparsers."""
    _add_export_hcs(sub)
