"""The rules a plate must follow, one Great Expectations expectation each.

Four suites (see :data:`~assets_pkg.core.qc.suites.SUITES`):

``schema``
    metadata.csv has exactly the columns of :data:`~assets_pkg.core.imaging.plates.METADATA_COLUMNS`,
    numbers parse, wells and channels are valid, file names and (well, field_id, channel) are
    unique, every field has every channel, ``plate_id`` is safe and equals the folder's, and
    each well's gene and Ensembl id agree with plate.json's well map.
``provenance``
    every provenance field (:data:`PROVENANCE_FIELDS`) is filled in, the instrument is in the
    registry (:mod:`assets_pkg.core.qc.instruments`) and the optics, bit depth and
    wavelengths are within its bounds, the exposure is positive, and ``acquisition_time`` is
    an ISO 8601 UTC time between 2000-01-01 and now.
``checksums``
    every listed file exists with the recorded size and SHA-256, and no image in the folder is
    missing from metadata.csv.
``geometry``
    every TIFF decodes completely (corrupt or truncated files fail; a header declaring more
    pixels than the limit is refused before decoding), is 2-D, uint8 or uint16 as ``bit_depth``
    says, holds no value at or above ``2**bit_depth``, has the recorded (height, width), and all
    fields share one shape.
``images``
    no field has a per-field image defect (blank, saturated, out of focus, debris:
    :mod:`assets_pkg.core.qc.fields`) whose configured action is ``block``; defects set to
    ``exclude`` or ``warn`` are reported beside the suites, not as failures.

Each rule (:class:`Check`) is one expectation on one column of a table of
:mod:`assets_pkg.core.qc.tables`, with a one-line explanation per offending row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from ..imaging import plates
from .config import DEFECT_KINDS
from .fields import MEASURES
from .instruments import BOUNDED_FIELDS
from .tables import INTEGER_COLUMNS, NUMERIC_COLUMNS, WELL_RE, dtype_for_bits

__all__ = ["PROVENANCE_FIELDS", "EARLIEST", "ENSG_RE", "RowContext", "Check", "build_checks"]

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

#: The earliest ``acquisition_time`` accepted.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)

#: An Ensembl gene id.
ENSG_RE = r"^ENSG\d{11}$"


@dataclass
class RowContext:
    """What the row explanations (``Check.detail``) need: the rows table and its raw text.

    Attributes
    ----------
    W : pandas.DataFrame
        The rows table validated (:func:`~assets_pkg.core.qc.tables.rows_frame`).
    R : pandas.DataFrame
        The raw text of metadata.csv, aligned with ``W``.
    registry : dict
        The instrument registry in use.
    now : datetime
        The time ``acquisition_time`` may not exceed.
    csv_columns : frozenset of str
        The columns metadata.csv actually has.
    """

    W: pd.DataFrame  # the frame validated (normalised values + derived columns)
    R: pd.DataFrame  # raw text of metadata.csv, aligned with W
    registry: dict
    now: datetime
    csv_columns: frozenset[str]  # columns metadata.csv actually has

    def raw(self, i: int, col: str) -> Any:
        """The raw text of row ``i``'s ``col`` (None when missing or not a column)."""
        return self.R.at[i, col] if col in self.R.columns else None

    def val(self, i: int, col: str) -> Any:
        """The parsed value of row ``i``'s ``col`` (or a derived column's value)."""
        return self.W.at[i, col]


@dataclass(frozen=True)
class Check:
    """One rule: a Great Expectations expectation and how to explain a row that breaks it.

    Attributes
    ----------
    key : str
        Unique name, ``<suite>.<rule>``.
    suite : str
        The suite the rule belongs to (:data:`~assets_pkg.core.qc.suites.SUITES`).
    frame : {"rows", "columns", "files"}
        The table it checks (:mod:`assets_pkg.core.qc.tables`).
    column : str or None
        The metadata column named in failures.
    gx_class : str
        Class name in ``great_expectations.expectations``.
    kwargs : mapping
        The expectation's arguments.
    summary : str
        What is wrong, in words, for the failure as a whole.
    detail : callable, optional
        ``detail(ctx, i) -> str``: what is wrong with row ``i``.
    compare : tuple of str
        Derived columns shown in examples next to ``column``.
    split : mapping, optional
        For a rule on a derived column listing the failing metadata columns per row
        (``"a,b"``): per listed column, its ``(summary, detail)``; the failure is reported
        per column.
    """

    key: str
    suite: str
    frame: str  # "rows" (metadata + derived), "columns" (raw metadata), "files" (folder listing)
    column: str | None  # metadata column named in failures
    gx_class: str  # class name in great_expectations.expectations
    kwargs: Mapping[str, Any]
    summary: str
    detail: Callable[[RowContext, int], str] | None = None
    compare: tuple[str, ...] = ()  # derived columns shown in examples next to ``column``
    # For checks on a derived column listing failing metadata columns per row ("a,b"): the
    # failure is reported per listed column, with that column's (summary, detail).
    split: Mapping[str, tuple[str, Callable[[RowContext, int], str]]] | None = None


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "empty"
    if isinstance(v, float):
        return f"{v:g}"
    return repr(v) if isinstance(v, str) else str(v)


def _bounds_detail(col: str) -> Callable[[RowContext, int], str]:
    def detail(c: RowContext, i: int) -> str:
        inst = c.val(i, "instrument")
        lo, hi = c.registry[inst][col]
        return f"{_fmt(c.val(i, col))} outside {inst} bounds [{lo:g}, {hi:g}]"

    return detail


def _in_set(col: str) -> dict:
    return {"column": col, "value_set": [True]}


def build_checks() -> list[Check]:
    """Every rule of every suite, in the order failures are reported."""
    C = Check
    out: list[Check] = [
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
    for col in NUMERIC_COLUMNS:
        kind = "an integer" if col in INTEGER_COLUMNS else "a number"
        types[col] = (f"{col} is not {kind}", lambda c, i, col=col, kind=kind: f"{_fmt(c.raw(i, col))} is not {kind}")
    out.append(C("schema.types", "schema", "rows", None, "ExpectColumnValuesToBeNull",
                 {"column": "_type_errors"}, "value does not parse", split=types))
    out += [
        C("schema.channel", "schema", "rows", "channel", "ExpectColumnValuesToBeInSet",
          {"column": "channel", "value_set": list(plates.CHANNELS)},
          f"channel is not one of {', '.join(plates.CHANNELS)}",
          lambda c, i: f"{_fmt(c.raw(i, 'channel'))} is not one of {', '.join(plates.CHANNELS)}"),
        C("schema.well", "schema", "rows", "well", "ExpectColumnValuesToMatchRegex",
          {"column": "well", "regex": WELL_RE}, "well is not A01..P24",
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
        numeric = col in NUMERIC_COLUMNS
        what = "empty or not a number" if numeric else "empty"
        out.append(C(f"provenance.not_null.{col}", "provenance", "rows", col,
                     "ExpectColumnValuesToNotBeNull", {"column": col}, f"provenance is {what}",
                     lambda c, i, col=col, what=what: (
                         f"{_fmt(c.raw(i, col))} is not a number" if c.raw(i, col) and c.raw(i, col).strip()
                         else f"provenance is {what}")))
    out += [
        C("provenance.ensg_id", "provenance", "rows", "ensg_id", "ExpectColumnValuesToMatchRegex",
          {"column": "ensg_id", "regex": ENSG_RE}, "ensg_id is not an Ensembl gene id",
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
          {"column": "_acq_epoch", "min_value": EARLIEST.timestamp(), "max_value": {"$PARAMETER": "now_epoch"}},
          "acquisition_time is in the future or before 2000",
          lambda c, i: (f"{c.raw(i, 'acquisition_time')} is before 2000"
                        if c.val(i, "_acq_epoch") < EARLIEST.timestamp()
                        else f"{c.raw(i, 'acquisition_time')} is in the future (now "
                             f"{c.now.isoformat(timespec='seconds')})")),
        # -------------------------------------------------------------------- checksums
        C("checksums.file", "checksums", "rows", "file_name", "ExpectColumnValuesToBeNull",
          {"column": "_file_error"}, "listed file cannot be read",
          lambda c, i: str(c.val(i, "_file_error"))),
    ]
    for col in ("file_bytes", "sha256"):
        out.append(C(f"checksums.not_null.{col}", "checksums", "rows", col, "ExpectColumnValuesToNotBeNull",
                     {"column": col}, f"{col} is empty or not a number" if col in NUMERIC_COLUMNS else f"{col} is empty",
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
                        f"(expected {dtype_for_bits(c.val(i, 'bit_depth'))})")),
    ]
    out.append(C("geometry.bit_depth_range", "geometry", "rows", "bit_depth", "ExpectColumnValuesToBeInSet",
                 _in_set("_image.max_fits"), "pixel values do not fit bit_depth",
                 lambda c, i: (f"maximum pixel value {_fmt(c.val(i, '_image.max'))} does not fit bit_depth "
                               f"{_fmt(c.val(i, 'bit_depth'))} (values must be below "
                               f"{2 ** int(c.val(i, 'bit_depth'))})"),
                 ("_image.max",)))
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
    # ------------------------------------------------------------------------ images
    for kind in DEFECT_KINDS:
        out.append(C(f"images.{kind}", "images", "rows", MEASURES[kind], "ExpectColumnValuesToBeNull",
                     {"column": f"_block.{kind}"}, f"{kind.replace('_', '-')} field (configured to block the plate)",
                     lambda c, i, kind=kind: str(c.val(i, f"_block.{kind}"))))
    keys = [c.key for c in out]
    assert len(keys) == len(set(keys)), "duplicate check keys"
    return out


def _invalid_detail(raw: str | None, col: str) -> str:
    return f"{col} is empty" if raw is None or not raw.strip() else f"{raw!r} is not a valid {col}"
