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
    qc = cellscape.qc_config()
    plate = read_plate(cellscape.plate_dir(context.partition_key), qc.metadata_limits(), qc.image_limits())
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
    "geometry": "Every TIFF decodes to a 2-D image of the recorded shape, with values within its bit depth.",
    "images": "Per field: no blank, saturated, out-of-focus or debris image set to block; the fields set to "
              "exclude are listed (nuclei_masks leaves them out).",
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
    qc = cellscape.qc_config()
    report = validate_plate(cellscape.plate_dir(pk), registry=cellscape.registry(), qc=qc)
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
        description = f"plate {pk}: {suite.name} suite " + (
            "passed" if suite.success else f"failed {len(suite.failures)} expectation(s)")
        metadata = {
            "plate": pk,
            "evaluated_expectations": suite.evaluated,
            "failed_expectations": len(suite.failures),
            "failures": table_metadata(failures),
            **errors,
        }
        if suite.name == "images":
            description += _images_summary(report)
            metadata.update(_images_metadata(report))
            for line in report.to_text().splitlines():
                if "WARNING" in line:
                    context.log.warning(line)
        yield dg.AssetCheckResult(
            asset_key=plate_metadata.key,
            check_name=f"{suite.name}_suite",
            passed=suite.success,
            severity=dg.AssetCheckSeverity.ERROR,
            description=description,
            metadata=metadata,
        )


def _field_names(fields) -> str:
    return ", ".join(f"{w} f{f:02d}" for w, f in fields)


def _images_summary(report) -> str:
    blocked = sorted({(d.well, d.field_id) for d in report.defects if d.action == "block"})
    parts = []
    if blocked:
        parts.append(f"blocked by field(s) {_field_names(blocked)}")
    if report.excluded_fields:
        parts.append(f"{len(report.excluded_fields)} field(s) excluded from ingest: {_field_names(report.excluded_fields)}")
    if parts:
        return "; " + "; ".join(parts)
    return "" if report.errors else "; no image defect"


def _images_metadata(report) -> dict:
    rows = [{"field": f"{d.well} f{d.field_id:02d}", "file": d.file_name, "defect": d.kind, "action": d.action,
             "measure": f"{d.measure} = {d.value:.3g}", "detail": d.detail}
            for d in report.defects]
    return {
        "excluded_fields": _field_names(report.excluded_fields) or "none",
        "blocked_fields": _field_names(sorted({(d.well, d.field_id) for d in report.defects
                                                if d.action == "block"})) or "none",
        "defects": table_metadata(pd.DataFrame(rows, columns=["field", "file", "defect", "action", "measure", "detail"])),
    }

