"""Validating a plate folder: the entry point of the QC room.

:func:`validate_plate` reads a plate (:mod:`assets_pkg.core.imaging.plates`), builds the
tables (:mod:`assets_pkg.core.qc.tables`), runs the requested suites of rules
(:mod:`assets_pkg.core.qc.rules`, :mod:`assets_pkg.core.qc.suites`) and returns a
:class:`~assets_pkg.core.qc.report.ValidationReport` naming every offending file and field.
Validation only reads the folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from ..errors import PlateFormatError
from ..imaging import plates
from .instruments import load_instrument_registry, normalize_registry
from .report import Failure, SuiteResult, ValidationReport
from .rules import RowContext
from .suites import SUITES, column_failures, failures_from_result, gx_state, run_suite
from .tables import cell_text, files_frame, inspect_files, rows_frame

__all__ = ["validate_plate"]


def validate_plate(
    plate_dir: str | Path,
    registry: Mapping | None = None,
    now: datetime | None = None,
    suites: Iterable[str] = SUITES,
) -> ValidationReport:
    """Validate one plate folder with the metadata and provenance suites.

    The folder is only read, never written.  Problems are reported, not raised: an
    unreadable plate.json or metadata.csv (missing, not UTF-8, empty, header only) gives a
    report whose ``errors`` name the file and whose suites all fail.

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
        Which of :data:`~assets_pkg.core.qc.suites.SUITES` to run.  Hashing happens only for ``checksums`` and TIFF
        decoding only for ``geometry``.

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

    try:
        plate = plates.read_plate(plate_dir)
    except (PlateFormatError, OSError) as e:
        return _unreadable_report(plate_dir, e, requested)

    names = [cell_text(v) for v in plate.metadata["file_name"]] if "file_name" in plate.metadata else [
        None
    ] * len(plate.metadata)
    facts = inspect_files(plate_dir, names, "checksums" in requested, "geometry" in requested)
    W, R = rows_frame(plate, registry, facts)
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
    return ValidationReport(str(plate_dir), plate.plate_id, results, [])


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
