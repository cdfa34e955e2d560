"""Quality-control assets: plate metadata and provenance, checked by Great Expectations suites that
block everything downstream."""

import json

import dagster as dg
import pandas as pd

from ..core.imaging.plates import read_plate
from ..core.qc.suites import SUITES
from ..core.qc.validate import validate_plate
from .imaging import PLATE_GROUP, plate_images, plates_partitions
from .metadata import table_metadata
from .resources import CellscapeResource


@dg.asset(
    partitions_def=plates_partitions,
    group_name=PLATE_GROUP,
    deps=[plate_images],
    kinds={"csv"},
)
def plate_metadata(context: dg.AssetExecutionContext, cellscape: CellscapeResource) -> dg.MaterializeResult:
    """Per-image metadata and provenance of a plate (metadata.csv), checked by the GX suites."""
    plate = read_plate(cellscape.plate_dir(context.partition_key))
    meta = plate.metadata

    def uniq(col):
        return sorted(map(str, meta[col].dropna().unique())) if col in meta.columns else []

    return dg.MaterializeResult(
        metadata={
            "rows": len(meta),
            "columns": len(meta.columns),
            "instruments": ", ".join(uniq("instrument")),
            "operators": ", ".join(uniq("operator")),
            "acquired": f"{min(uniq('acquisition_time'), default='?')} .. {max(uniq('acquisition_time'), default='?')}",
            "genes": len(uniq("gene")),
            "preview": table_metadata(meta.drop(columns=["sha256"], errors="ignore"), max_rows=20),
        }
    )


_SUITE_DESCRIPTIONS = {
    "schema": "Columns, types, unique files and complete channels of metadata.csv.",
    "provenance": "Provenance fields present; instrument known; pixel size, optics and time in bounds.",
    "checksums": "Every file exists with the size and SHA-256 metadata.csv records; no unlisted images.",
    "geometry": "Every TIFF decodes to a 2-D image of the recorded shape and bit depth.",
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name=f"{s}_suite", asset=plate_metadata, blocking=True, description=_SUITE_DESCRIPTIONS[s])
        for s in SUITES
    ],
)
def plate_metadata_suites(context: dg.AssetCheckExecutionContext, cellscape: CellscapeResource):
    """Run the Great Expectations suites on the plate; a failure blocks its frames."""
    pk = context.partition_key if context.has_partition_key else None
    if pk is None:
        raise dg.Failure("plate_metadata_suites needs a plate partition")
    report = validate_plate(cellscape.plate_dir(pk), registry=cellscape.registry())
    for suite in report.suites:
        rows = [
            {
                "expectation": f.expectation,
                "column": f.column or "",
                "files": ", ".join(f.files[:5]),
                "message": f.message,
                "examples": json.dumps(f.examples[:3], default=str),
            }
            for f in suite.failures
        ]
        failures = pd.DataFrame(rows, columns=["expectation", "column", "files", "message", "examples"])
        errors = {"errors": dg.MetadataValue.md("\n".join(f"- {e}" for e in report.errors))} if report.errors else {}
        yield dg.AssetCheckResult(
            asset_key=plate_metadata.key,
            check_name=f"{suite.name}_suite",
            passed=suite.success,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"plate {pk}: {suite.name} suite "
                        + ("passed" if suite.success else f"failed {len(suite.failures)} expectation(s)"),
            metadata={
                "plate": pk,
                "evaluated_expectations": suite.evaluated,
                "failed_expectations": len(suite.failures),
                "failures": table_metadata(failures),
                **errors,
            },
        )

