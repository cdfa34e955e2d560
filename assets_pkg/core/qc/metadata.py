"""Metadata and provenance validation of a plate folder with Great Expectations suites.

A plate (see :mod:`assets_pkg.core.imaging.plates`) is checked by four suites, one Dagster asset
check each:

``schema``
    metadata.csv has exactly the columns of :data:`~assets_pkg.core.imaging.plates.METADATA_COLUMNS`,
    numbers parse, wells and channels are valid, file names and (well, field_id, channel) are
    unique, every field has every channel, ``plate_id`` is safe and equals the folder's, and
    each well's gene and Ensembl id agree with plate.json's well map.
``provenance``
    every provenance field is filled in, the instrument is in the registry
    (:func:`load_instrument_registry`) and the optics, bit depth and wavelengths are within its
    bounds, the exposure is positive, and ``acquisition_time`` is an ISO 8601 UTC time between
    2000-01-01 and now.
``checksums``
    every listed file exists with the recorded size and SHA-256, and no image in the folder is
    missing from metadata.csv.
``geometry``
    every TIFF decodes completely (corrupt or truncated files fail), is 2-D, uint8 or uint16 as
    ``bit_depth`` says, has the recorded (height, width), and all fields share one shape.

The rules run as Great Expectations 1.x expectations on pandas frames: metadata.csv plus
derived columns (measured file sizes, hashes, image shapes, per-instrument bound checks) so
that every failure names the rows, hence the files, that broke it.  The GX context and suites
are built once per process and reused.  Validation only reads the folder.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import math
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import CellscapeError, ImageFormatError, PlateFormatError
from ..imaging import plates
from ..imaging.io import TIFF_SUFFIXES, inspect_image

__all__ = [
    "SUITES",
    "REGISTRY_PATH",
    "Failure",
    "SuiteResult",
    "ValidationReport",
    "load_instrument_registry",
    "validate_plate",
]

#: Names of the suites, in the order they are reported.
SUITES: tuple[str, ...] = ("schema", "provenance", "checksums", "geometry")

#: The instrument registry shipped with the package.
REGISTRY_PATH = Path(str(resources.files("assets_pkg.core") / "data" / "instruments.yaml"))

#: Provenance columns that must be filled in on every row.
PROVENANCE_FIELDS: tuple[str, ...] = (
    "gene",
    "ensg_id",
    "cell_line",
    "instrument",
    "objective",
    "numerical_aperture",
    "pixel_size_um",
    "exposure_ms",
    "excitation_nm",
    "emission_nm",
    "acquisition_time",
    "operator",
    "fixation",
    "stain",
    "site",
)

#: Per-instrument [low, high] bounds checked against the column of the same name.
BOUNDED_FIELDS: tuple[str, ...] = ("pixel_size_um", "numerical_aperture", "excitation_nm", "emission_nm")

MAX_EXAMPLES = 5
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_ISO_UTC_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|\+00:00)$")
_ENSG_RE = r"^ENSG\d{11}$"
_WELL_RE = r"^[A-P](0[1-9]|1[0-9]|2[0-4])$"
_NUMERIC = tuple(c for c, t in plates.METADATA_COLUMNS.items() if t in ("Int64", "Float64"))
_INTEGER = tuple(c for c, t in plates.METADATA_COLUMNS.items() if t == "Int64")
_TEXT = tuple(c for c in plates.METADATA_COLUMNS if c not in _NUMERIC)


# --------------------------------------------------------------------------------------------
# Report types


@dataclass
class Failure:
    """One failed expectation.

    Attributes
    ----------
    suite : str
        Suite name, one of :data:`SUITES`.
    expectation : str
        The Great Expectations expectation type that failed (for example
        ``expect_column_values_to_be_in_set``), or ``plate_readable`` when plate.json or
        metadata.csv could not be read.
    column : str or None
        The metadata column concerned, None for table-level failures.
    message : str
        What is wrong, in words.
    files : list of str
        The offending file names inside the plate folder (image files, or ``metadata.csv`` /
        ``plate.json``); ``metadata.csv line N`` for rows without a file name.
    examples : list of dict
        Up to :data:`MAX_EXAMPLES` offending rows: ``file_name``, the column's value, other
        values compared with it, and ``detail``, a one-line explanation of that row.
    """

    suite: str
    expectation: str
    column: str | None
    message: str
    files: list[str] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)


@dataclass
class SuiteResult:
    """Outcome of one suite on one plate.

    Attributes
    ----------
    name : str
        Suite name.
    success : bool
        True when every expectation of the suite held.
    evaluated : int
        Number of expectations evaluated (0 when the plate could not be read).
    failures : list of Failure
    """

    name: str
    success: bool
    evaluated: int
    failures: list[Failure] = field(default_factory=list)


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_plate`.

    Attributes
    ----------
    plate_dir : str
        The plate folder validated.
    plate_id : str or None
        From plate.json; None when plate.json could not be read.
    suites : list of SuiteResult
        One per requested suite, in the order of :data:`SUITES`.
    errors : list of str
        Problems that stopped validation (unreadable plate.json or metadata.csv), each naming
        the file; when non-empty every suite has failed.
    """

    plate_dir: str
    plate_id: str | None
    suites: list[SuiteResult]
    errors: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        """True when there is no error and every suite passed."""
        return not self.errors and all(s.success for s in self.suites)

    @property
    def failures(self) -> list[Failure]:
        """The failures of all suites, in suite order."""
        return [f for s in self.suites for f in s.failures]

    def suite(self, name: str) -> SuiteResult:
        """The result of the suite called ``name``.

        Raises
        ------
        KeyError
            When that suite was not run.
        """
        for s in self.suites:
            if s.name == name:
                return s
        raise KeyError(f"suite {name!r} was not run; ran {[s.name for s in self.suites]}")

    @property
    def label(self) -> str:
        """The plate id, or the folder name when plate.json could not be read."""
        return self.plate_id or Path(self.plate_dir).name

    def to_text(self) -> str:
        """A human-readable report: a summary line, then one line per problem.

        Each problem line names the plate and file, the suite and the field, for example
        ``plate01/A01_f00_protein.tif: [provenance] field 'pixel_size_um': 2.5 outside
        dragonfly-63x bounds [0.05, 0.3]``.  Failures touching many files list up to
        :data:`MAX_EXAMPLES` of them with details and count the rest.
        """
        label = self.label
        states = ", ".join(
            f"{s.name} {'ok' if s.success else f'FAILED ({len(s.failures)})'}" for s in self.suites
        )
        lines = [f"plate {label} ({self.plate_dir}): {'passed' if self.success else 'FAILED'}; {states}"]
        lines += [f"{label}: error: {e}" for e in self.errors]
        for f in self.failures:
            lines += _failure_lines(label, f)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The report as plain JSON-serialisable types."""
        return _json_safe(
            {
                "plate_dir": self.plate_dir,
                "plate_id": self.plate_id,
                "success": self.success,
                "errors": list(self.errors),
                "suites": [asdict(s) | {"failures": [asdict(f) for f in s.failures]} for s in self.suites],
            }
        )


def _failure_lines(label: str, f: Failure) -> list[str]:
    field_part = f"field '{f.column}': " if f.column else ""
    if f.examples:
        lines = []
        names = [ex.get("file_name") for ex in f.examples]
        for ex in f.examples:
            where = ex.get("file_name") or f"metadata.csv line {ex.get('line')}"
            if ex.get("file_name") and names.count(ex["file_name"]) > 1 and "line" in ex:
                where += f" (metadata.csv line {ex['line']})"
            lines.append(f"{label}/{where}: [{f.suite}] {field_part}{ex.get('detail') or f.message}")
        rest = f.files[len(f.examples) :]
        if rest:
            shown = ", ".join(rest[:20]) + (", ..." if len(rest) > 20 else "")
            lines.append(f"{label}: [{f.suite}] {field_part}same problem in {len(rest)} more file(s): {shown}")
        return lines
    if f.files:
        return [f"{label}/{name}: [{f.suite}] {field_part}{f.message}" for name in f.files]
    return [f"{label}: [{f.suite}] {field_part}{f.message}"]


def _json_safe(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, bool | int | float | str):
        return x
    if x is pd.NA or x is pd.NaT:
        return None
    return str(x)


# --------------------------------------------------------------------------------------------
# Instrument registry


def load_instrument_registry(path: str | Path | None = None) -> dict:
    """Read and check the instrument registry.

    Parameters
    ----------
    path : path-like, optional
        A YAML file with an ``instruments`` mapping; default :data:`REGISTRY_PATH`.

    Returns
    -------
    dict
        Instrument name to its spec: ``pixel_size_um``, ``numerical_aperture``,
        ``excitation_nm`` and ``emission_nm`` as ``[low, high]`` floats, ``bit_depths`` (list
        of int), ``objectives`` (list of str), ``max_exposure_ms`` (float or None) and
        ``description``.

    Raises
    ------
    CellscapeError
        Naming the file and the entry when the registry is missing or malformed.
    """
    import yaml

    p = Path(path) if path is not None else REGISTRY_PATH
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise CellscapeError(f"cannot read instrument registry ({e.strerror})", path=p) from e
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise CellscapeError(f"not a readable YAML file: {e}", path=p) from e
    return _normalize_registry(data, p)


def _normalize_registry(data: Any, path: str | Path | None = None) -> dict:
    if isinstance(data, Mapping) and "instruments" in data:
        data = data["instruments"]
    if not isinstance(data, Mapping) or not data:
        raise CellscapeError("must map instrument names to specs", path=path, field="instruments")
    out = {}
    for name, spec in data.items():
        where = f"instruments.{name}"
        if not isinstance(spec, Mapping):
            raise CellscapeError("must be a mapping", path=path, field=where)
        entry: dict[str, Any] = {"description": str(spec.get("description", ""))}
        for key in BOUNDED_FIELDS:
            pair = spec.get(key)
            try:
                lo, hi = (float(v) for v in pair)
            except (TypeError, ValueError) as e:
                raise CellscapeError(
                    f"expected [low, high] numbers, got {pair!r}", path=path, field=f"{where}.{key}"
                ) from e
            if not lo <= hi:
                raise CellscapeError(f"low {lo} > high {hi}", path=path, field=f"{where}.{key}")
            entry[key] = [lo, hi]
        try:
            entry["bit_depths"] = [int(b) for b in spec["bit_depths"]]
            entry["objectives"] = [str(o) for o in spec["objectives"]]
            mx = spec.get("max_exposure_ms")
            entry["max_exposure_ms"] = None if mx is None else float(mx)
        except (KeyError, TypeError, ValueError) as e:
            raise CellscapeError(
                f"needs bit_depths, objectives (lists) and numeric max_exposure_ms: {e!r}",
                path=path,
                field=where,
            ) from e
        out[str(name)] = entry
    return out


# --------------------------------------------------------------------------------------------
# Checks: one GX expectation each, plus how to explain a failing row


@dataclass
class _Ctx:
    """What the row explanations need."""

    W: pd.DataFrame  # the frame validated (normalised values + derived columns)
    R: pd.DataFrame  # raw text of metadata.csv, aligned with W
    registry: dict
    now: datetime
    csv_columns: frozenset[str]  # columns metadata.csv actually has

    def raw(self, i: int, col: str) -> Any:
        return self.R.at[i, col] if col in self.R.columns else None

    def val(self, i: int, col: str) -> Any:
        return self.W.at[i, col]


@dataclass(frozen=True)
class _Check:
    key: str
    suite: str
    frame: str  # "rows" (metadata + derived), "columns" (raw metadata), "files" (folder listing)
    column: str | None  # metadata column named in failures
    gx_class: str  # class name in great_expectations.expectations
    kwargs: Mapping[str, Any]
    summary: str
    detail: Callable[[_Ctx, int], str] | None = None
    compare: tuple[str, ...] = ()  # derived columns shown in examples next to ``column``
    # For checks on a derived column listing failing metadata columns per row ("a,b"): the
    # failure is reported per listed column, with that column's (summary, detail).
    split: Mapping[str, tuple[str, Callable[[_Ctx, int], str]]] | None = None


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "empty"
    if isinstance(v, float):
        return f"{v:g}"
    return repr(v) if isinstance(v, str) else str(v)


def _bounds_detail(col: str) -> Callable[[_Ctx, int], str]:
    def detail(c: _Ctx, i: int) -> str:
        inst = c.val(i, "instrument")
        lo, hi = c.registry[inst][col]
        return f"{_fmt(c.val(i, col))} outside {inst} bounds [{lo:g}, {hi:g}]"

    return detail


def _in_set(col: str) -> dict:
    return {"column": col, "value_set": [True]}


def _checks() -> list[_Check]:
    C = _Check
    out: list[_Check] = [
        # ---------------------------------------------------------------- schema
        C("schema.columns", "schema", "columns", None, "ExpectTableColumnsToMatchSet",
          {"column_set": list(plates.METADATA_COLUMNS), "exact_match": True},
          "metadata.csv columns differ from the plate format"),
        C("schema.rows", "schema", "rows", None, "ExpectTableRowCountToBeBetween",
          {"min_value": 1}, "metadata.csv lists no image"),
    ]
    for col in ("plate_id", "well", "field_id", "channel", "file_name"):
        out.append(C(f"schema.not_null.{col}", "schema", "rows", col, "ExpectColumnValuesToNotBeNull",
                     {"column": col}, "value is empty", lambda c, i: "value is empty"))
    types = {}
    for col in _NUMERIC:
        kind = "an integer" if col in _INTEGER else "a number"
        types[col] = (f"{col} is not {kind}", lambda c, i, col=col, kind=kind: f"{_fmt(c.raw(i, col))} is not {kind}")
    out.append(C("schema.types", "schema", "rows", None, "ExpectColumnValuesToBeNull",
                 {"column": "_type_errors"}, "value does not parse", split=types))
    out += [
        C("schema.channel", "schema", "rows", "channel", "ExpectColumnValuesToBeInSet",
          {"column": "channel", "value_set": list(plates.CHANNELS)},
          f"channel is not one of {', '.join(plates.CHANNELS)}",
          lambda c, i: f"{_fmt(c.raw(i, 'channel'))} is not one of {', '.join(plates.CHANNELS)}"),
        C("schema.well", "schema", "rows", "well", "ExpectColumnValuesToMatchRegex",
          {"column": "well", "regex": _WELL_RE}, "well is not A01..P24",
          lambda c, i: f"{_fmt(c.raw(i, 'well'))} is not a well name A01..P24"),
        C("schema.field_id", "schema", "rows", "field_id", "ExpectColumnValuesToBeBetween",
          {"column": "field_id", "min_value": 0}, "field_id is negative",
          lambda c, i: f"{_fmt(c.val(i, 'field_id'))} is negative"),
        C("schema.file_name_unique", "schema", "rows", "file_name", "ExpectColumnValuesToBeUnique",
          {"column": "file_name"}, "file_name is listed more than once",
          lambda c, i: f"{_fmt(c.raw(i, 'file_name'))} is listed more than once"),
        C("schema.field_unique", "schema", "rows", "field_id", "ExpectCompoundColumnsToBeUnique",
          {"column_list": ["well", "field_id", "channel"], "ignore_row_if": "any_value_is_missing"},
          "duplicate field rows: (well, field_id, channel) is listed more than once",
          lambda c, i: (f"duplicate field row: ({c.raw(i, 'well')}, {c.raw(i, 'field_id')}, "
                        f"{c.raw(i, 'channel')}) is listed more than once")),
        C("schema.channels_complete", "schema", "rows", "channel", "ExpectColumnValuesToBeNull",
          {"column": "_missing_channels"}, "a field lacks the row of a channel",
          lambda c, i: (f"field {c.raw(i, 'well')} f{int(c.val(i, 'field_id')):02d} has no row for "
                        f"channel(s) {c.val(i, '_missing_channels')}")),
        C("schema.file_name_matches", "schema", "rows", "file_name", "ExpectColumnPairValuesToBeEqual",
          {"column_A": "file_name", "column_B": "_expected_file_name",
           "ignore_row_if": "either_value_is_missing"},
          "file_name does not follow <well>_f<field_id:02d>_<channel>.tif",
          lambda c, i: (f"{_fmt(c.raw(i, 'file_name'))} should be "
                        f"{c.val(i, '_expected_file_name')!r} for its well, field_id and channel"),
          ("_expected_file_name",)),
        C("schema.plate_id_safe", "schema", "rows", "plate_id", "ExpectColumnValuesToBeInSet",
          _in_set("_plate_id_safe"), "plate_id is not a safe id",
          lambda c, i: (f"{_fmt(c.raw(i, 'plate_id'))} is not a safe plate id (1-64 letters, digits, "
                        "'_', '-', '.', no path separator or '..')")),
        C("schema.plate_id_folder", "schema", "rows", "plate_id", "ExpectColumnPairValuesToBeEqual",
          {"column_A": "plate_id", "column_B": "_folder_plate_id",
           "ignore_row_if": "either_value_is_missing"},
          "plate_id differs from the plate folder's",
          lambda c, i: (f"{_fmt(c.raw(i, 'plate_id'))} differs from the plate's id "
                        f"{c.val(i, '_folder_plate_id')!r}"),
          ("_folder_plate_id",)),
        C("schema.well_in_map", "schema", "rows", "well", "ExpectColumnValuesToBeInSet",
          _in_set("_well_in_map"), "well is not in plate.json's well map",
          lambda c, i: f"{_fmt(c.raw(i, 'well'))} is not in plate.json's well map"),
    ]
    for col in ("gene", "ensg_id"):
        out.append(C(f"schema.well_map.{col}", "schema", "rows", col, "ExpectColumnPairValuesToBeEqual",
                     {"column_A": col, "column_B": f"_map.{col}", "ignore_row_if": "either_value_is_missing"},
                     f"{col} differs from plate.json's well map",
                     lambda c, i, col=col: (f"{_fmt(c.raw(i, col))} differs from plate.json's "
                                            f"{c.val(i, f'_map.{col}')!r} for well {c.raw(i, 'well')}"),
                     (f"_map.{col}",)))
    # ------------------------------------------------------------------------ provenance
    for col in PROVENANCE_FIELDS:
        numeric = col in _NUMERIC
        what = "empty or not a number" if numeric else "empty"
        out.append(C(f"provenance.not_null.{col}", "provenance", "rows", col,
                     "ExpectColumnValuesToNotBeNull", {"column": col}, f"provenance is {what}",
                     lambda c, i, col=col, what=what: (
                         f"{_fmt(c.raw(i, col))} is not a number" if c.raw(i, col) and c.raw(i, col).strip()
                         else f"provenance is {what}")))
    out += [
        C("provenance.ensg_id", "provenance", "rows", "ensg_id", "ExpectColumnValuesToMatchRegex",
          {"column": "ensg_id", "regex": _ENSG_RE}, "ensg_id is not an Ensembl gene id",
          lambda c, i: f"{_fmt(c.raw(i, 'ensg_id'))} is not an Ensembl gene id (ENSG + 11 digits)"),
        C("provenance.instrument", "provenance", "rows", "instrument", "ExpectColumnValuesToBeInSet",
          {"column": "instrument", "value_set": {"$PARAMETER": "instruments"}},
          "instrument is not in the instrument registry",
          lambda c, i: (f"unknown instrument {c.raw(i, 'instrument')!r} (registry: "
                        f"{', '.join(sorted(c.registry))})")),
        C("provenance.exposure_positive", "provenance", "rows", "exposure_ms", "ExpectColumnValuesToBeBetween",
          {"column": "exposure_ms", "min_value": 0, "strict_min": True}, "exposure_ms is not > 0",
          lambda c, i: f"{_fmt(c.val(i, 'exposure_ms'))} is not > 0"),
    ]
    bounds = {col: (f"{col} outside the instrument's bounds", _bounds_detail(col)) for col in BOUNDED_FIELDS}
    bounds["exposure_ms"] = (
        "exposure_ms above the instrument's maximum",
        lambda c, i: (f"{_fmt(c.val(i, 'exposure_ms'))} above {c.val(i, 'instrument')} maximum "
                      f"{c.registry[c.val(i, 'instrument')]['max_exposure_ms']:g}"))
    bounds["bit_depth"] = (
        "bit_depth not produced by the instrument",
        lambda c, i: (f"{_fmt(c.val(i, 'bit_depth'))} not among {c.val(i, 'instrument')} bit depths "
                      f"{c.registry[c.val(i, 'instrument')]['bit_depths']}"))
    bounds["objective"] = (
        "objective not mounted on the instrument",
        lambda c, i: (f"{_fmt(c.raw(i, 'objective'))} not among {c.val(i, 'instrument')} objectives "
                      f"{c.registry[c.val(i, 'instrument')]['objectives']}"))
    out += [
        C("provenance.instrument_bounds", "provenance", "rows", None, "ExpectColumnValuesToBeNull",
          {"column": "_instrument_errors"}, "value outside the instrument's capabilities", split=bounds),
        C("provenance.acquisition_time_format", "provenance", "rows", "acquisition_time",
          "ExpectColumnValuesToBeInSet", _in_set("_acq_time_ok"),
          "acquisition_time is not ISO 8601 with a UTC offset ('Z' or '+00:00')",
          lambda c, i: (f"{_fmt(c.raw(i, 'acquisition_time'))} is not an ISO 8601 time with a UTC "
                        "offset ('Z' or '+00:00'), e.g. 2026-01-15T09:30:00Z")),
        C("provenance.acquisition_time_range", "provenance", "rows", "acquisition_time",
          "ExpectColumnValuesToBeBetween",
          {"column": "_acq_epoch", "min_value": _EARLIEST.timestamp(), "max_value": {"$PARAMETER": "now_epoch"}},
          "acquisition_time is in the future or before 2000",
          lambda c, i: (f"{c.raw(i, 'acquisition_time')} is before 2000"
                        if c.val(i, "_acq_epoch") < _EARLIEST.timestamp()
                        else f"{c.raw(i, 'acquisition_time')} is in the future (now "
                             f"{c.now.isoformat(timespec='seconds')})")),
        # -------------------------------------------------------------------- checksums
        C("checksums.file", "checksums", "rows", "file_name", "ExpectColumnValuesToBeNull",
          {"column": "_file_error"}, "listed file cannot be read",
          lambda c, i: str(c.val(i, "_file_error"))),
    ]
    for col in ("file_bytes", "sha256"):
        out.append(C(f"checksums.not_null.{col}", "checksums", "rows", col, "ExpectColumnValuesToNotBeNull",
                     {"column": col}, f"{col} is empty or not a number" if col in _NUMERIC else f"{col} is empty",
                     lambda c, i, col=col: _invalid_detail(c.raw(i, col), col)))
    out += [
        C("checksums.file_bytes", "checksums", "rows", "file_bytes", "ExpectColumnPairValuesToBeEqual",
          {"column_A": "file_bytes", "column_B": "_actual.file_bytes", "ignore_row_if": "either_value_is_missing"},
          "file size differs from file_bytes",
          lambda c, i: (f"recorded {_fmt(c.val(i, 'file_bytes'))} bytes, the file has "
                        f"{_fmt(c.val(i, '_actual.file_bytes'))}"),
          ("_actual.file_bytes",)),
        C("checksums.sha256", "checksums", "rows", "sha256", "ExpectColumnPairValuesToBeEqual",
          {"column_A": "_recorded.sha256", "column_B": "_actual.sha256",
           "ignore_row_if": "either_value_is_missing"},
          "file SHA-256 differs from sha256",
          lambda c, i: (f"checksum mismatch: recorded {c.raw(i, 'sha256')}, file has "
                        f"{c.val(i, '_actual.sha256')}"),
          ("_actual.sha256",)),
        C("checksums.unlisted", "checksums", "files", "file_name", "ExpectColumnValuesToBeInSet",
          _in_set("_listed"), "image file in the folder is not listed in metadata.csv",
          lambda c, i: "image file in the folder is not listed in metadata.csv"),
        # -------------------------------------------------------------------- geometry
        C("geometry.readable", "geometry", "rows", "file_name", "ExpectColumnValuesToBeNull",
          {"column": "_tiff_error"}, "image cannot be read completely",
          lambda c, i: str(c.val(i, "_tiff_error"))),
    ]
    for col in ("width", "height", "bit_depth"):
        out.append(C(f"geometry.not_null.{col}", "geometry", "rows", col, "ExpectColumnValuesToNotBeNull",
                     {"column": col}, f"{col} is empty or not an integer",
                     lambda c, i, col=col: _invalid_detail(c.raw(i, col), col)))
    out += [
        C("geometry.ndim", "geometry", "rows", "file_name", "ExpectColumnValuesToBeInSet",
          {"column": "_image.ndim", "value_set": [2]}, "image is not 2-D",
          lambda c, i: f"image is not 2-D: shape {c.val(i, '_image.shape')}"),
        C("geometry.dtype", "geometry", "rows", "bit_depth", "ExpectColumnValuesToBeInSet",
          {"column": "_image.dtype", "value_set": list(plates.PIXEL_DTYPES)}, "pixels are not uint8 or uint16",
          lambda c, i: f"pixels are {c.val(i, '_image.dtype')}, expected uint8 or uint16"),
        C("geometry.dtype_bit_depth", "geometry", "rows", "bit_depth", "ExpectColumnValuesToBeInSet",
          _in_set("_image.dtype_ok"), "pixel type inconsistent with bit_depth",
          lambda c, i: (f"{c.val(i, '_image.dtype')} pixels but bit_depth {_fmt(c.val(i, 'bit_depth'))} "
                        f"(expected {_dtype_for_bits(c.val(i, 'bit_depth'))})")),
    ]
    for col in ("height", "width"):
        out.append(C(f"geometry.{col}", "geometry", "rows", col, "ExpectColumnPairValuesToBeEqual",
                     {"column_A": col, "column_B": f"_image.{col}", "ignore_row_if": "either_value_is_missing"},
                     f"image {col} differs from metadata",
                     lambda c, i, col=col: (f"image shape {c.val(i, '_image.shape')} but metadata {col} "
                                            f"{_fmt(c.val(i, col))}"),
                     (f"_image.{col}",)))
    out.append(C("geometry.same_shape", "geometry", "rows", "file_name", "ExpectColumnValuesToBeInSet",
                 _in_set("_image.common_shape"), "image shape differs from the plate's other fields",
                 lambda c, i: (f"shape {c.val(i, '_image.shape')} differs from the plate's common shape "
                               f"{c.val(i, '_image.plate_shape')}")))
    keys = [c.key for c in out]
    assert len(keys) == len(set(keys)), "duplicate check keys"
    return out


def _invalid_detail(raw: str | None, col: str) -> str:
    return f"{col} is empty" if raw is None or not raw.strip() else f"{raw!r} is not a valid {col}"


def _dtype_for_bits(bits: Any) -> str:
    if bits is None or (isinstance(bits, float) and math.isnan(bits)):
        return "?"
    return "uint8" if bits <= 8 else "uint16" if bits <= 16 else "nothing (bit_depth > 16)"


# --------------------------------------------------------------------------------------------
# The GX side: one ephemeral context, one pandas dataframe asset, static suites


@dataclass
class _GxState:
    context: Any
    batch_definition: Any
    suites: dict[tuple[str, str], Any]  # (suite, frame) -> ExpectationSuite
    columns: dict[tuple[str, str], list[str]]  # (suite, frame) -> columns its expectations read
    checks: dict[str, _Check]
    lock: threading.Lock


_STATE: _GxState | None = None
_STATE_LOCK = threading.Lock()


def _gx() -> _GxState:
    """The process-wide GX context and suites, built on first use (importing GX takes seconds)."""
    global _STATE
    with _STATE_LOCK:
        if _STATE is None:
            _STATE = _build_gx()
    return _STATE


def _build_gx() -> _GxState:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas("cellscape").add_dataframe_asset("plate_frame")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole_frame")
    checks = _checks()
    grouped: dict[tuple[str, str], list] = {}
    for c in checks:
        expectation = getattr(gxe, c.gx_class)(**dict(c.kwargs), meta={"check": c.key})
        grouped.setdefault((c.suite, c.frame), []).append(expectation)
    suites = {}
    for (suite, frame), expectations in grouped.items():
        s = gx.ExpectationSuite(name=f"cellscape.{suite}.{frame}", expectations=expectations)
        suites[(suite, frame)] = context.suites.add(s)
        assert len(suites[(suite, frame)].expectations) == len(expectations), "GX merged expectations"
    columns = {
        key: _columns_used(c for c in checks if (c.suite, c.frame) == key) for key in suites
    }
    return _GxState(
        context, batch_definition, suites, columns, {c.key: c for c in checks}, threading.Lock()
    )


def _columns_used(checks: Iterable[_Check]) -> list[str]:
    cols: list[str] = ["_row"]
    for c in checks:
        kw = c.kwargs
        cols += [kw[k] for k in ("column", "column_A", "column_B") if k in kw]
        cols += list(kw.get("column_list", []))
    return list(dict.fromkeys(cols))


def _run_suite(state: _GxState, suite: str, frame: str, df: pd.DataFrame, params: dict) -> list:
    """Validate ``df`` with the expectations of ``suite`` on that frame; the GX results.

    Row frames are cut to the columns the suite reads: GX copies the domain frame per metric,
    so a narrow frame is much faster.
    """
    if (suite, frame) not in state.suites:
        return []
    result_format: dict[str, Any] = {
        "result_format": "COMPLETE",
        "include_unexpected_rows": False,
        "return_unexpected_index_query": False,
    }
    if frame != "columns":
        df = df[state.columns[(suite, frame)]]
        result_format["unexpected_index_column_names"] = ["_row"]
    with state.lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = state.batch_definition.get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(
            state.suites[(suite, frame)], result_format=result_format, expectation_parameters=params
        )
    return list(result.results)


# --------------------------------------------------------------------------------------------
# Frames


@dataclass
class _FileFacts:
    error: str | None = None  # file-level: missing, unsafe name, unreadable
    size: int | None = None
    sha256: str | None = None
    tiff_error: str | None = None
    ndim: int | None = None
    dtype: str | None = None
    shape: tuple[int, ...] | None = None


def _safe_name(name: str) -> bool:
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
        and not name.startswith(".")
    )


def _inspect_file(plate_dir: Path, name: str | None, want_hash: bool, want_tiff: bool) -> _FileFacts:
    """Read one listed file once: size, SHA-256 and a full TIFF decode, as asked."""
    facts = _FileFacts()
    if name is None:
        return facts
    if not _safe_name(name):
        facts.error = facts.tiff_error = f"unsafe file name {name!r}: not read (path separator, '..' or hidden)"
        return facts
    path = plate_dir / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        facts.error = facts.tiff_error = "file is missing"
        return facts
    except OSError as e:
        facts.error = facts.tiff_error = f"cannot read file ({e.strerror or e})"
        return facts
    facts.size = len(data)
    if want_hash:
        facts.sha256 = hashlib.sha256(data).hexdigest()
    if want_tiff:
        try:
            info = inspect_image(path, data=data, verify=True)
        except ImageFormatError as e:
            facts.tiff_error = e.reason
            return facts
        if info.format != "tiff":
            facts.tiff_error = f"not a TIFF file ({info.format.upper()} data)"
            return facts
        facts.shape, facts.ndim, facts.dtype = info.shape, info.ndim, info.dtype
    return facts


def _inspect_files(
    plate_dir: Path, names: Iterable[str | None], want_hash: bool, want_tiff: bool
) -> list[_FileFacts]:
    names = list(names)
    if not (want_hash or want_tiff):
        return [_FileFacts() for _ in names]
    workers = max(1, min(8, os.cpu_count() or 1, len(names)))
    tifffile_log = logging.getLogger("tifffile")
    level = tifffile_log.level
    tifffile_log.setLevel(logging.ERROR)  # corrupt files are reported as failures, not log noise
    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda n: _inspect_file(plate_dir, n, want_hash, want_tiff), names))
    finally:
        tifffile_log.setLevel(level)


def _text(v: Any) -> str | None:
    """Raw cell text, None when missing."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


def _blank_to_none(v: str | None) -> str | None:
    return None if v is None or not v.strip() else v


def _parse_number(text: str | None, integer: bool) -> tuple[float, bool | None]:
    """(value or NaN, parses?) with the semantics of :func:`plates.cast_metadata`."""
    if text is None or not text.strip():
        return math.nan, None
    try:
        v = float(text)
    except ValueError:
        return math.nan, False
    if not math.isfinite(v) or (integer and v % 1 != 0):
        return math.nan, False
    return v, True


def _parse_time(text: str | None) -> tuple[float, bool | None]:
    """(POSIX seconds or NaN, ISO 8601 UTC?)."""
    if text is None or not text.strip():
        return math.nan, None
    if not _ISO_UTC_RE.match(text):
        return math.nan, False
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return math.nan, False
    return t.timestamp(), True


def _obj(values: Iterable) -> pd.Series:
    return pd.Series(list(values), dtype=object)


def _rows_frame(
    plate: plates.Plate, registry: dict, facts: list[_FileFacts] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(W, R): the frame the row suites validate and the raw text it came from."""
    meta = plate.metadata.reset_index(drop=True)
    n = len(meta)
    R = pd.DataFrame(index=range(n))
    for col in dict.fromkeys([*plates.METADATA_COLUMNS, *meta.columns]):
        R[col] = _obj(_text(v) for v in meta[col]) if col in meta.columns else _obj([None] * n)
    W = pd.DataFrame({"_row": np.arange(n)})
    for col in plates.METADATA_COLUMNS:
        if col in _NUMERIC:
            parsed = [_parse_number(t, col in _INTEGER) for t in R[col]]
            W[col] = np.array([p[0] for p in parsed], dtype=float)
            W[f"_type_ok.{col}"] = _obj(p[1] for p in parsed)
        else:
            W[col] = _obj(_blank_to_none(t) for t in R[col])

    def rows(*cols: str) -> Iterable[tuple]:
        return zip(*(W[c].tolist() for c in cols), strict=True)

    def present(*vals: Any) -> bool:
        return all(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in vals)

    # schema derived columns
    field_channels: dict[tuple, set] = {}
    for well, fid, ch in rows("well", "field_id", "channel"):
        if present(well, fid):
            field_channels.setdefault((well, fid), set()).add(ch)
    missing = []
    for well, fid in rows("well", "field_id"):
        lack = [c for c in plates.CHANNELS if c not in field_channels.get((well, fid), plates.CHANNELS)]
        missing.append(", ".join(lack) if present(well, fid) and lack else None)
    W["_missing_channels"] = _obj(missing)
    W["_expected_file_name"] = _obj(
        plates.image_file_name(w, int(f), ch)
        if present(w, f, ch) and re.match(_WELL_RE, w) and ch in plates.CHANNELS and f == int(f)
        else None
        for w, f, ch in rows("well", "field_id", "channel")
    )
    W["_plate_id_safe"] = _obj(None if p is None else _is_safe_plate_id(p) for p in W["plate_id"])
    W["_folder_plate_id"] = _obj([plate.plate_id] * n)
    W["_well_in_map"] = _obj(None if w is None else w in plate.wells for w in W["well"])
    W["_map.gene"] = _obj(plate.wells[w].gene if w in plate.wells else None for w in W["well"])
    W["_map.ensg_id"] = _obj(plate.wells[w].ensg_id if w in plate.wells else None for w in W["well"])

    # provenance derived columns: per-instrument bounds (None where unknown/empty: not checked)
    def spec(inst: Any) -> dict | None:
        return registry.get(inst) if isinstance(inst, str) else None

    for col in BOUNDED_FIELDS:
        W[f"_in_bounds.{col}"] = _obj(
            (spec(inst)[col][0] <= v <= spec(inst)[col][1]) if spec(inst) and present(v) else None
            for inst, v in rows("instrument", col)
        )
    W["_in_bounds.exposure_ms"] = _obj(
        (v <= spec(inst)["max_exposure_ms"])
        if spec(inst) and spec(inst)["max_exposure_ms"] is not None and present(v)
        else None
        for inst, v in rows("instrument", "exposure_ms")
    )
    W["_in_bounds.bit_depth"] = _obj(
        (int(v) in spec(inst)["bit_depths"]) if spec(inst) and present(v) else None
        for inst, v in rows("instrument", "bit_depth")
    )
    W["_in_bounds.objective"] = _obj(
        (v in spec(inst)["objectives"]) if spec(inst) and present(v) else None
        for inst, v in rows("instrument", "objective")
    )
    W["_type_errors"] = _failing_columns(W, "_type_ok", _NUMERIC)
    W["_instrument_errors"] = _failing_columns(
        W, "_in_bounds", (*BOUNDED_FIELDS, "exposure_ms", "bit_depth", "objective")
    )
    times = [_parse_time(t) for t in W["acquisition_time"]]
    W["_acq_time_ok"] = _obj(t[1] for t in times)
    W["_acq_epoch"] = np.array([t[0] for t in times], dtype=float)

    # checksums and geometry derived columns, from the files
    facts = facts if facts is not None else [_FileFacts() for _ in range(n)]
    W["_file_error"] = _obj(f.error for f in facts)
    W["_actual.file_bytes"] = np.array([math.nan if f.size is None else f.size for f in facts], dtype=float)
    W["_actual.sha256"] = _obj(f.sha256 for f in facts)
    W["_recorded.sha256"] = _obj(None if s is None else s.strip().lower() for s in W["sha256"])
    W["_tiff_error"] = _obj(f.tiff_error for f in facts)
    ok = [f.tiff_error is None and f.shape is not None for f in facts]
    W["_image.ndim"] = _obj(f.ndim if good else None for f, good in zip(facts, ok, strict=True))
    W["_image.dtype"] = _obj(f.dtype if good else None for f, good in zip(facts, ok, strict=True))
    W["_image.shape"] = _obj(
        "x".join(map(str, f.shape)) if good else None for f, good in zip(facts, ok, strict=True)
    )
    two_d = [good and f.ndim == 2 for f, good in zip(facts, ok, strict=True)]
    W["_image.height"] = np.array([f.shape[0] if t else math.nan for f, t in zip(facts, two_d, strict=True)])
    W["_image.width"] = np.array([f.shape[1] if t else math.nan for f, t in zip(facts, two_d, strict=True)])
    W["_image.dtype_ok"] = _obj(
        (dt == _dtype_for_bits(b)) if dt in ("uint8", "uint16") and present(b) else None
        for dt, b in zip(W["_image.dtype"], W["bit_depth"], strict=True)
    )
    shapes = pd.Series([s for s, t in zip(W["_image.shape"], two_d, strict=True) if t], dtype=object)
    common = shapes.value_counts().index[0] if len(shapes) else None
    W["_image.plate_shape"] = _obj([common] * n)
    W["_image.common_shape"] = _obj(
        (s == common) if t else None for s, t in zip(W["_image.shape"], two_d, strict=True)
    )
    return W, R


def _failing_columns(W: pd.DataFrame, prefix: str, cols: Iterable[str]) -> pd.Series:
    """Per row, the columns whose ``<prefix>.<col>`` flag is False, joined by ','; else None."""
    cols = list(cols)
    flags = [W[f"{prefix}.{c}"].tolist() for c in cols]
    return _obj(",".join(c for c, f in zip(cols, row, strict=True) if f is False) or None for row in zip(*flags, strict=True))


def _is_safe_plate_id(plate_id: str) -> bool:
    try:
        plates.check_plate_id(plate_id)
    except PlateFormatError:
        return False
    return True


def _files_frame(plate_dir: Path, listed: Iterable[str | None]) -> pd.DataFrame:
    listed = {n for n in listed if n is not None}
    names = sorted(
        p.name
        for p in plate_dir.iterdir()
        if p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    return pd.DataFrame(
        {"_row": np.arange(len(names)), "file_name": _obj(names), "_listed": _obj(n in listed for n in names)}
    )


# --------------------------------------------------------------------------------------------
# Results


def _failures_from_result(r: Any, check: _Check, ctx: _Ctx | None, frame: pd.DataFrame) -> list[Failure]:
    gx_type = r.expectation_config.type
    exc = r.exception_info or {}
    if exc.get("raised_exception"):
        msg = f"{check.summary}: expectation raised {exc.get('exception_message')}"
        return [Failure(check.suite, gx_type, check.column, msg, [], [])]
    res = r.result or {}
    idx = res.get("unexpected_index_list")
    if not idx:
        observed = res.get("observed_value")
        msg = check.summary + (f" (observed {observed})" if observed is not None else "")
        return [Failure(check.suite, gx_type, check.column, msg, [plates.METADATA_CSV], [])]
    rows = sorted({int(d["_row"]) for d in idx})
    total = res.get("element_count", len(frame))
    if not check.split:
        return [_row_failure(check, gx_type, check.column, check.summary, check.detail, rows, total, ctx, frame)]
    out = []
    by_column: dict[str, list[int]] = {}
    for i in rows:
        for col in str(frame.at[i, check.kwargs["column"]]).split(","):
            by_column.setdefault(col, []).append(i)
    for col, (summary, detail) in check.split.items():
        if col in by_column:
            out.append(_row_failure(check, gx_type, col, summary, detail, by_column[col], total, ctx, frame))
    return out


def _row_failure(
    check: _Check,
    gx_type: str,
    column: str | None,
    summary: str,
    detail: Callable[[_Ctx, int], str] | None,
    rows: list[int],
    total: int,
    ctx: _Ctx | None,
    frame: pd.DataFrame,
) -> Failure:
    if column and ctx is not None and column not in ctx.csv_columns:
        # one failure for the whole column, not one per row (schema names the column too)
        msg = f"{summary}: column '{column}' is missing from metadata.csv"
        return Failure(check.suite, gx_type, column, msg, [plates.METADATA_CSV], [])
    files, examples = [], []
    for i in rows:
        name = _text(frame.at[i, "file_name"]) if "file_name" in frame.columns else None
        files.append(name if name is not None else f"metadata.csv line {i + 2}")
        if len(examples) < MAX_EXAMPLES:
            ex: dict[str, Any] = {"file_name": name}
            if ctx is not None:
                ex["line"] = i + 2  # line of metadata.csv (header is line 1)
            if column and column != "file_name" and ctx is not None:
                v = ctx.val(i, column)
                ex[column] = v if isinstance(v, float) and not math.isnan(v) else ctx.raw(i, column)
            for col in check.compare:
                ex[col.lstrip("_")] = frame.at[i, col]
            ex["detail"] = detail(ctx, i) if (detail and ctx is not None) else summary
            examples.append(ex)
    msg = f"{summary} in {len(rows)} of {total} row(s)"
    return Failure(check.suite, gx_type, column, msg, files, _json_safe(examples))


def _column_failures(r: Any, check: _Check) -> list[Failure]:
    mismatched = ((r.result or {}).get("details") or {}).get("mismatched") or {}
    out = []
    for col in mismatched.get("missing", []):
        out.append(Failure(check.suite, r.expectation_config.type, col,
                           "column is missing from metadata.csv", [plates.METADATA_CSV], []))
    for col in mismatched.get("unexpected", []):
        out.append(Failure(check.suite, r.expectation_config.type, col,
                           "unexpected column in metadata.csv (not in the plate format)",
                           [plates.METADATA_CSV], []))
    if not out:
        out.append(Failure(check.suite, r.expectation_config.type, None,
                           f"{check.summary}: {r.result}", [plates.METADATA_CSV], []))
    return out


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


# --------------------------------------------------------------------------------------------
# Entry point


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
        Instrument registry as returned by :func:`load_instrument_registry` (a mapping with an
        ``instruments`` key is accepted too); default the package's registry.
    now : datetime, optional
        The time ``acquisition_time`` may not exceed; default the current UTC time.  A naive
        datetime is taken as UTC.
    suites : iterable of str
        Which of :data:`SUITES` to run.  Hashing happens only for ``checksums`` and TIFF
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
    registry = load_instrument_registry() if registry is None else _normalize_registry(registry)
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)

    try:
        plate = plates.read_plate(plate_dir)
    except (PlateFormatError, OSError) as e:
        return _unreadable_report(plate_dir, e, requested)

    names = [_text(v) for v in plate.metadata["file_name"]] if "file_name" in plate.metadata else [
        None
    ] * len(plate.metadata)
    facts = _inspect_files(plate_dir, names, "checksums" in requested, "geometry" in requested)
    W, R = _rows_frame(plate, registry, facts)
    ctx = _Ctx(W, R, registry, now, frozenset(plate.metadata.columns))
    raw = plate.metadata.reset_index(drop=True)
    frames = {"columns": raw, "rows": W}
    if "checksums" in requested:
        frames["files"] = _files_frame(plate_dir, W["file_name"])
    params = {"instruments": sorted(registry), "now_epoch": now.timestamp()}

    state = _gx()
    order = {key: k for k, key in enumerate(state.checks)}
    outcomes: dict[str, list] = {s: [] for s in requested}
    for frame_name, df in frames.items():
        for suite in requested:
            outcomes[suite] += [(frame_name, r) for r in _run_suite(state, suite, frame_name, df, params)]
    results = []
    for suite in requested:
        failures: list[Failure] = []
        ranked = sorted(outcomes[suite], key=lambda fr: order[fr[1].expectation_config.meta["check"]])
        for frame_name, r in ranked:
            if r.success:
                continue
            check = state.checks[r.expectation_config.meta["check"]]
            if check.frame == "columns" and not (r.exception_info or {}).get("raised_exception"):
                failures += _column_failures(r, check)
            else:
                failures += _failures_from_result(
                    r, check, ctx if frame_name == "rows" else None, frames[frame_name]
                )
        results.append(SuiteResult(suite, not failures, len(ranked), failures))
    return ValidationReport(str(plate_dir), plate.plate_id, results, [])
