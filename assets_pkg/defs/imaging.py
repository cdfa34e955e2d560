"""Imaging assets: the raw plate folders, one dynamic partition per plate, and how new ones are found."""

import time
from pathlib import Path

import dagster as dg
import pandas as pd

from ..core.imaging.plates import list_plates, read_plate
from ..core.store.ingest import (
    plate_digest,
)
from .resources import CellscapeResource

plates_partitions = dg.DynamicPartitionsDefinition(name="plates")

PLATE_GROUP = "plates"


@dg.asset(
    partitions_def=plates_partitions,
    group_name=PLATE_GROUP,
    kinds={"tiff"},
)
def plate_images(context: dg.AssetExecutionContext, cellscape: CellscapeResource) -> dg.MaterializeResult:
    """Raw plate folder: one TIFF per field and channel, versioned by the files' checksums."""
    qc = cellscape.qc_config()
    plate = read_plate(cellscape.plate_dir(context.partition_key), qc.metadata_limits(), qc.image_limits())
    meta = plate.metadata
    digest = plate_digest(plate, from_files=True)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(plate.path)),
            "images": len(meta),
            "fields": int(plate.fields().shape[0]),
            "wells": len(plate.wells),
            "bytes": int(pd.to_numeric(meta.get("file_bytes"), errors="coerce").sum()),
            "content_sha256": digest,
            "matches_metadata_checksums": digest == plate_digest(plate),
            "dataset_md5": cellscape.dataset_md5() or "unpinned",
        },
        data_version=dg.DataVersion(digest[:32]),
    )



def new_plates(plates_dir: Path, known: set[str], settle_seconds: float = 5.0) -> list[str]:
    """Complete plate folders under ``plates_dir`` not yet known, untouched for ``settle_seconds``."""
    out = []
    now = time.time()
    for p in list_plates(plates_dir, complete_only=True):
        if p.name in known:
            continue
        newest = max((f.stat().st_mtime for f in p.iterdir()), default=now)
        if now - newest >= settle_seconds:
            out.append(p.name)
    return out
