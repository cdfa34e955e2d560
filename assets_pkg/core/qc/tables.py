"""The tables the suites validate, built from a plate folder.

Great Expectations checks columns of pandas frames, so a plate becomes three tables:

- the *columns* table: metadata.csv as read (for the column-set check);
- the *rows* table (:func:`rows_frame`): one row per metadata row with the values parsed and
  derived columns beside them (does the field have every channel, is the well in plate.json,
  is the value within the instrument's bounds, what size, hash and shape the file really has),
  so that each rule is one expectation on one column and every failure names its rows;
- the *files* table (:func:`files_frame`): the TIFF files in the folder, listed or not.

The files are read once each (:func:`inspect_files`): size, SHA-256, a header inspection
(:func:`assets_pkg.core.imaging.io.inspect_image`) and, when the header is within the limits
and agrees with the metadata's (height, width), a full decode whose pixels are summarised for
the bit depth rule and the per-field image checks (:func:`assets_pkg.core.qc.fields.image_stats`).
Only regular files are opened, never through a symbolic link, and never blocking (a FIFO is
refused at once).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ImageFormatError, PlateFormatError
from ..imaging import plates
from ..imaging.io import (
    TIFF_SUFFIXES,
    ImageLimits,
    image_format,
    inspect_image,
    open_regular,
    read_array,
)
from .config import PlateQCConfig
from .fields import ImageStats, image_stats
from .instruments import BOUNDED_FIELDS

__all__ = [
    "NUMERIC_COLUMNS",
    "INTEGER_COLUMNS",
    "WELL_RE",
    "FileFacts",
    "inspect_files",
    "expected_geometry",
    "cell_text",
    "rows_frame",
    "files_frame",
    "dtype_for_bits",
]

#: Metadata columns holding numbers, and those holding integers.
NUMERIC_COLUMNS = tuple(c for c, t in plates.METADATA_COLUMNS.items() if t in ("Int64", "Float64"))
INTEGER_COLUMNS = tuple(c for c, t in plates.METADATA_COLUMNS.items() if t == "Int64")

#: A 384-well plate position, A01..P24.
WELL_RE = r"^[A-P](0[1-9]|1[0-9]|2[0-4])$"

_ISO_UTC_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|\+00:00)$")


@dataclass
class FileFacts:
    """What reading one listed image file found (None where not looked at or not reached).

    Attributes
    ----------
    error : str or None
        File-level problem: unsafe name, missing, unreadable.
    size : int or None
        Bytes in the file.
    sha256 : str or None
        Hex SHA-256 of the bytes (when hashing was asked for).
    tiff_error : str or None
        Why the file is not a complete, decodable TIFF (when images were inspected).
    ndim, dtype, shape
        The image's :class:`~assets_pkg.core.imaging.io.ImageInfo` facts (from the header).
    max_value : float or None
        The largest pixel value (when the pixels were decoded).
    stats : ImageStats or None
        The image-quality measures of the pixels (when decoded, 2-D).
    """

    error: str | None = None
    size: int | None = None
    sha256: str | None = None
    tiff_error: str | None = None
    ndim: int | None = None
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    max_value: float | None = None
    stats: ImageStats | None = None


def _full_scale(bit_depth: float | None, dtype: np.dtype) -> float | None:
    """``2**bit_depth - 1`` when ``bit_depth`` is a usable integer for ``dtype``, else None (dtype max)."""
    if bit_depth is None or not np.issubdtype(dtype, np.integer) or math.isnan(bit_depth):
        return None
    if bit_depth != int(bit_depth) or not 1 <= bit_depth <= np.dtype(dtype).itemsize * 8:
        return None
    return float(2 ** int(bit_depth) - 1)


def _inspect_file(
    plate_dir: Path,
    name: str | None,
    want_hash: bool,
    want_image: bool,
    bit_depth: float | None = None,
    expect_shape: tuple[int, int] | None = None,
    qc: PlateQCConfig | None = None,
) -> FileFacts:
    """Read one listed file once: size, SHA-256, header, and a decode summarised, as asked."""
    facts = FileFacts()
    if name is None:
        return facts
    if not plates.is_plain_name(name):
        facts.error = facts.tiff_error = f"unsafe file name {name!r}: not read (path separator, '..' or hidden)"
        return facts
    path = plate_dir / name
    try:
        with open_regular(path, follow_symlinks=False, what="file", error=PlateFormatError) as fh:
            data = fh.read()
    except PlateFormatError as e:
        facts.error = facts.tiff_error = e.reason
        return facts
    except OSError as e:
        facts.error = facts.tiff_error = f"cannot read file ({e.strerror or type(e).__name__})"
        return facts
    facts.size = len(data)
    if want_hash:
        facts.sha256 = hashlib.sha256(data).hexdigest()
    if not want_image:
        return facts
    qc = PlateQCConfig() if qc is None else qc
    limits: ImageLimits = qc.image_limits()
    try:
        fmt = image_format(path, data[:8])
        if fmt != "tiff":  # refused before decoding it
            facts.tiff_error = f"not a TIFF file ({fmt.upper()} data)"
            return facts
        info = inspect_image(path, data=data)
        facts.shape, facts.ndim, facts.dtype = info.shape, info.ndim, info.dtype
        if info.ndim != 2 or (expect_shape is not None and tuple(info.shape) != tuple(expect_shape)):
            return facts  # not decoded: the geometry rules report the header's shape
        img = read_array(path, data=data, limits=limits)
    except ImageFormatError as e:
        facts.tiff_error = e.reason
        return facts
    if img.ndim == 2 and img.size and (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        facts.max_value = float(img.max())
        facts.stats = image_stats(img, _full_scale(bit_depth, img.dtype), qc.debris_contrast)
    return facts


def expected_geometry(plate: plates.Plate) -> tuple[list[float | None], list[tuple[int, int] | None]]:
    """Per metadata row, the ``bit_depth`` and (``height``, ``width``) it declares (None where unusable)."""
    meta = plate.metadata.reset_index(drop=True)

    def values(col: str) -> list[float | None]:
        if col not in meta.columns:
            return [None] * len(meta)
        out = []
        for v in meta[col]:
            x, ok = _parse_number(cell_text(v), integer=True)
            out.append(x if ok and x > 0 else None)
        return out

    bits, heights, widths = values("bit_depth"), values("height"), values("width")
    shapes = [(int(h), int(w)) if h is not None and w is not None else None for h, w in zip(heights, widths, strict=True)]
    return bits, shapes


def inspect_files(
    plate_dir: Path,
    names: Iterable[str | None],
    want_hash: bool,
    want_image: bool,
    bit_depths: Iterable[float | None] | None = None,
    shapes: Iterable[tuple[int, int] | None] | None = None,
    qc: PlateQCConfig | None = None,
) -> list[FileFacts]:
    """Read the listed files of a plate, in parallel threads, each once.

    Parameters
    ----------
    plate_dir : Path
        The plate folder.
    names : iterable of str or None
        The ``file_name`` of each metadata row (None where empty); names with a path
        separator, ``..`` or a leading dot are not read.
    want_hash : bool
        Compute each file's SHA-256.
    want_image : bool
        Inspect each file as a TIFF and, when its header is within ``qc``'s limits and agrees
        with ``shapes``, decode all its pixels and measure them
        (:func:`~assets_pkg.core.qc.fields.image_stats`).
    bit_depths : iterable of float or None, optional
        Per name, the declared ``bit_depth`` (its ``2**bit_depth - 1`` is the saturation value).
    shapes : iterable of (int, int) or None, optional
        Per name, the declared (height, width); a file whose header says otherwise is not decoded.
    qc : PlateQCConfig, optional
        Image size limit and debris contrast; default :class:`PlateQCConfig()`.

    Returns
    -------
    list of FileFacts
        One per name, in order; empty facts when neither is wanted.
    """
    names = list(names)
    bit_depths = list(bit_depths) if bit_depths is not None else [None] * len(names)
    shapes = list(shapes) if shapes is not None else [None] * len(names)
    if not (want_hash or want_image):
        return [FileFacts() for _ in names]
    workers = max(1, min(8, os.cpu_count() or 1, len(names)))
    tifffile_log = logging.getLogger("tifffile")
    level = tifffile_log.level
    tifffile_log.setLevel(logging.ERROR)  # corrupt files are reported as failures, not log noise
    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            return list(pool.map(
                lambda args: _inspect_file(plate_dir, args[0], want_hash, want_image, args[1], args[2], qc),
                zip(names, bit_depths, shapes, strict=True),
            ))
    finally:
        tifffile_log.setLevel(level)


def cell_text(v: Any) -> str | None:
    """A metadata cell's raw text, None when missing (None, NaN or pandas' NA)."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


def _blank_to_none(v: str | None) -> str | None:
    return None if v is None or not v.strip() else v


def _parse_number(text: str | None, integer: bool) -> tuple[float, bool | None]:
    """(value or NaN, parses?) with the semantics of :func:`~assets_pkg.core.imaging.plates.cast_metadata`."""
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


def rows_frame(
    plate: plates.Plate, registry: dict, facts: list[FileFacts] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The table the row suites validate, and the raw text it came from.

    Parameters
    ----------
    plate : Plate
        The plate read by :func:`~assets_pkg.core.imaging.plates.read_plate`.
    registry : dict
        Instrument registry (:func:`~assets_pkg.core.qc.instruments.load_instrument_registry`).
    facts : list of FileFacts, optional
        One per metadata row (:func:`inspect_files`); None when the files were not read.

    Returns
    -------
    W : pandas.DataFrame
        One row per metadata row: ``_row`` (0-based row number), every column of
        :data:`~assets_pkg.core.imaging.plates.METADATA_COLUMNS` (numbers as float, NaN where
        empty or unparsable; text as str, None where blank), and derived columns whose names
        start with ``_`` (parse flags, well-map values, per-instrument bound flags, measured
        file sizes, hashes and image shapes).
    R : pandas.DataFrame
        The raw text of each metadata cell (None where missing), aligned with ``W``, for
        messages that quote what the file says.
    """
    meta = plate.metadata.reset_index(drop=True)
    n = len(meta)
    R = pd.DataFrame(index=range(n))
    for col in dict.fromkeys([*plates.METADATA_COLUMNS, *meta.columns]):
        R[col] = _obj(cell_text(v) for v in meta[col]) if col in meta.columns else _obj([None] * n)
    W = pd.DataFrame({"_row": np.arange(n)})
    for col in plates.METADATA_COLUMNS:
        if col in NUMERIC_COLUMNS:
            parsed = [_parse_number(t, col in INTEGER_COLUMNS) for t in R[col]]
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
        if present(w, f, ch) and re.match(WELL_RE, w) and ch in plates.CHANNELS and f == int(f)
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
    W["_type_errors"] = _failing_columns(W, "_type_ok", NUMERIC_COLUMNS)
    W["_instrument_errors"] = _failing_columns(
        W, "_in_bounds", (*BOUNDED_FIELDS, "exposure_ms", "bit_depth", "objective")
    )
    times = [_parse_time(t) for t in W["acquisition_time"]]
    W["_acq_time_ok"] = _obj(t[1] for t in times)
    W["_acq_epoch"] = np.array([t[0] for t in times], dtype=float)

    # checksums and geometry derived columns, from the files
    facts = facts if facts is not None else [FileFacts() for _ in range(n)]
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
    W["_image.max"] = np.array([math.nan if f.max_value is None else f.max_value for f in facts], dtype=float)
    W["_image.max_fits"] = _obj(
        (m < 2.0 ** b) if present(m, b) and b == int(b) and 1 <= b <= 64 else None
        for m, b in zip(W["_image.max"], W["bit_depth"], strict=True)
    )
    W["_image.dtype_ok"] = _obj(
        (dt == dtype_for_bits(b)) if dt in ("uint8", "uint16") and present(b) else None
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


def files_frame(plate_dir: Path, listed: Iterable[str | None]) -> pd.DataFrame:
    """The TIFF files in a plate folder, each flagged as listed in metadata.csv or not.

    Returns
    -------
    pandas.DataFrame
        Columns ``_row``, ``file_name`` and ``_listed`` (bool), sorted by name; hidden files
        are skipped.
    """
    listed = {n for n in listed if n is not None}
    names = sorted(
        p.name
        for p in plate_dir.iterdir()
        if p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    return pd.DataFrame(
        {"_row": np.arange(len(names)), "file_name": _obj(names), "_listed": _obj(n in listed for n in names)}
    )


def dtype_for_bits(bits: Any) -> str:
    """The pixel type a ``bit_depth`` calls for: ``"uint8"`` up to 8 bits, ``"uint16"`` up to 16."""
    if bits is None or (isinstance(bits, float) and math.isnan(bits)):
        return "?"
    return "uint8" if bits <= 8 else "uint16" if bits <= 16 else "nothing (bit_depth > 16)"
