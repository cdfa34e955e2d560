"""Validating a plate folder: the entry point of the QC room.

:func:`validate_plate` reads a plate (:mod:`assets_pkg.core.imaging.plates`), builds the
tables (:mod:`assets_pkg.core.qc.tables`), runs the requested suites of rules
(:mod:`assets_pkg.core.qc.rules`, :mod:`assets_pkg.core.qc.suites`) and returns a
:class:`~assets_pkg.core.qc.report.ValidationReport` naming every offending file and field.
The ``images`` suite also decides the per-field image defects
(:mod:`assets_pkg.core.qc.fields`), listed on the report with their configured action.
Validation only reads the folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PlateFormatError
from ..imaging import plates
from .config import DEFECT_KINDS, PlateQCConfig
from .fields import FieldDefect, assess_fields, defects_from_table
from .instruments import load_instrument_registry, normalize_registry
from .report import Failure, SuiteResult, ValidationReport
from .rules import RowContext
from .suites import SUITES, column_failures, failures_from_result, gx_state, run_suite
from .tables import FileFacts, cell_text, expected_geometry, files_frame, inspect_files, rows_frame

__all__ = ["validate_plate", "field_defects"]


def validate_plate(
    plate_dir: str | Path,
    registry: Mapping | None = None,
    now: datetime | None = None,
    suites: Iterable[str] = SUITES,
    qc: PlateQCConfig | None = None,
    *,
    plate: plates.Plate | None = None,
    file_facts: Callable[[plates.Plate, bool, bool, PlateQCConfig], list[FileFacts]] | None = None,
) -> ValidationReport:
    """Validate one plate folder with the metadata, provenance, file and image suites.

    The folder is only read, never written.  Problems are reported, not raised: an
    unreadable plate.json or metadata.csv (missing, not a regular file, above the size or row
    limit, not UTF-8, empty, header only) gives a report whose ``errors`` name the file and
    whose suites all fail.

    Parameters
    ----------
    plate_dir : path-like
        The plate folder (see :mod:`assets_pkg.core.imaging.plates`).
    registry : mapping, optional
        Instrument registry as returned by
        :func:`~assets_pkg.core.qc.instruments.load_instrument_registry` (a mapping with an
        ``instruments`` key is accepted too); default the package's registry.
    now : datetime, optional
        The time ``acquisition_time`` may not exceed; default the current UTC time.  A naive
        datetime is taken as UTC.
    suites : iterable of str
        Which of :data:`~assets_pkg.core.qc.suites.SUITES` to run.  Hashing happens only for
        ``checksums`` and TIFF decoding only for ``geometry`` and ``images``.
    qc : PlateQCConfig, optional
        Read limits, image-defect thresholds and what each defect does; default
        :class:`PlateQCConfig()` (every defect excludes its field).
    plate : Plate, optional
        The plate already read, from another source than a plate folder (an OME-Zarr plate,
        :func:`~assets_pkg.core.store.hcs_source.read_hcs_plate`); default
        ``read_plate(plate_dir)``.
    file_facts : callable, optional
        ``file_facts(plate, want_hash, want_image, qc) -> list[FileFacts]``, one per metadata
        row, in place of reading the TIFF files of the folder
        (:func:`~assets_pkg.core.store.hcs_source.hcs_file_facts`).

    Returns
    -------
    ValidationReport

    Raises
    ------
    ValueError
        When ``suites`` names an unknown suite.
    CellscapeError
        When ``registry`` is malformed.
    """
    requested = tuple(suites)
    unknown = [s for s in requested if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; choose from {SUITES}")
    requested = tuple(s for s in SUITES if s in requested)
    plate_dir = Path(plate_dir)
    registry = load_instrument_registry() if registry is None else normalize_registry(registry)
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)

    qc = PlateQCConfig() if qc is None else qc
    if plate is None:
        try:
            plate = plates.read_plate(plate_dir, qc.metadata_limits(), qc.image_limits())
        except (PlateFormatError, OSError) as e:
            return _unreadable_report(plate_dir, e, requested)

    want_image = "geometry" in requested or "images" in requested
    facts = (file_facts or _read_files)(plate, "checksums" in requested, want_image, qc)
    W, R = rows_frame(plate, registry, facts)
    defects: list[FieldDefect] = []
    if "images" in requested:
        defects = _add_image_checks(W, facts, qc)
    ctx = RowContext(W, R, registry, now, frozenset(plate.metadata.columns))
    raw = plate.metadata.reset_index(drop=True)
    frames = {"columns": raw, "rows": W}
    if "checksums" in requested:
        frames["files"] = files_frame(plate_dir, W["file_name"])
    params = {"instruments": sorted(registry), "now_epoch": now.timestamp()}

    state = gx_state()
    order = {key: k for k, key in enumerate(state.checks)}
    outcomes: dict[str, list] = {s: [] for s in requested}
    for frame_name, df in frames.items():
        for suite in requested:
            outcomes[suite] += [(frame_name, r) for r in run_suite(state, suite, frame_name, df, params)]
    results = []
    for suite in requested:
        failures: list[Failure] = []
        ranked = sorted(outcomes[suite], key=lambda fr: order[fr[1].expectation_config.meta["check"]])
        for frame_name, r in ranked:
            if r.success:
                continue
            check = state.checks[r.expectation_config.meta["check"]]
            if check.frame == "columns" and not (r.exception_info or {}).get("raised_exception"):
                failures += column_failures(r, check)
            else:
                failures += failures_from_result(
                    r, check, ctx if frame_name == "rows" else None, frames[frame_name]
                )
        results.append(SuiteResult(suite, not failures, len(ranked), failures))
    return ValidationReport(str(plate_dir), plate.plate_id, results, [], defects)


def _read_files(plate: plates.Plate, want_hash: bool, want_image: bool, qc: PlateQCConfig) -> list[FileFacts]:
    meta = plate.metadata
    names = [cell_text(v) for v in meta["file_name"]] if "file_name" in meta else [None] * len(meta)
    bits, shapes = expected_geometry(plate)
    return inspect_files(plate.path, names, want_hash, want_image, bits, shapes, qc)


def _qc_table(W: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"well": W["well"], "field_id": W["field_id"], "channel": W["channel"],
                         "file_name": W["file_name"], "pixel_size_um": W["pixel_size_um"]})


def _add_image_checks(W: pd.DataFrame, facts: list[FileFacts], qc: PlateQCConfig) -> list[FieldDefect]:
    """Add the measures and ``_block.<kind>`` columns of the images suite to ``W``; the defects."""
    table = _qc_table(W)
    rows = table["well"].notna() & table["field_id"].notna() & table["channel"].notna() & table["file_name"].notna()
    stats = [f.stats if ok else None for f, ok in zip(facts, rows, strict=True)]
    assessed = assess_fields(table, stats, qc)
    for col in assessed.columns:
        if not col.startswith(("defect.", "detail.")):
            W[col] = assessed[col].to_numpy(float)
    for kind in DEFECT_KINDS:
        block = assessed[f"defect.{kind}"].to_numpy(bool) & (qc.action(kind) == "block")
        W[f"_block.{kind}"] = pd.Series(np.where(block, assessed[f"detail.{kind}"], None), dtype=object)
    return defects_from_table(table, assessed, qc)


def field_defects(plate_dir: str | Path, qc: PlateQCConfig | None = None) -> list[FieldDefect]:
    """The per-field image defects of a plate, without the metadata suites.

    What the ``images`` suite of :func:`validate_plate` finds, for callers that need the
    excluded fields after validation (the Dagster nuclei asset).  Images that cannot be read
    are left out (the ``geometry`` suite reports them).

    Raises
    ------
    PlateFormatError
        When plate.json or metadata.csv cannot be read.
    """
    qc = PlateQCConfig() if qc is None else qc
    plate = plates.read_plate(plate_dir, qc.metadata_limits(), qc.image_limits())
    facts = _read_files(plate, False, True, qc)
    meta = plate.metadata.reset_index(drop=True)
    table = pd.DataFrame({c: meta[c] if c in meta else None for c in ("well", "field_id", "channel", "file_name")})
    table["pixel_size_um"] = pd.to_numeric(meta["pixel_size_um"], errors="coerce") if "pixel_size_um" in meta else np.nan
    ok = table[["well", "field_id", "channel", "file_name"]].notna().all(axis=1)
    return defects_from_table(table, assess_fields(table, [f.stats if k else None for f, k in zip(facts, ok, strict=True)], qc), qc)


def _unreadable_report(plate_dir: Path, error: PlateFormatError | OSError, suites: tuple[str, ...]) -> ValidationReport:
    if isinstance(error, PlateFormatError):
        message, where = str(error), error.path
    else:
        where = getattr(error, "filename", None) or plate_dir
        message = f"{where}: cannot read ({error.strerror or error})"
    try:
        plate_id = plates.read_plate_json(plate_dir)["plate_id"]
    except (PlateFormatError, OSError):
        plate_id = None
    name = Path(where).name if where is not None else plate_dir.name
    results = [
        SuiteResult(s, False, 0, [Failure(s, "plate_readable", getattr(error, "field", None),
                                          f"plate cannot be read: {message}", [name], [])])
        for s in suites
    ]
    return ValidationReport(str(plate_dir), plate_id, results, [message])
