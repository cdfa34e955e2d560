"""The plate folder format: layout, metadata columns, plate.json, reading and writing.

A plate is one folder ``<plate_id>/`` holding

- one single-page uint16 TIFF per field and channel, named
  ``<well>_f<field_id:02d>_<channel>.tif`` (channels ``nucleus`` = Hoechst and ``protein`` =
  the tagged protein), each a 2-D array of shape (height, width);
- ``metadata.csv``: one row per image file, columns :data:`METADATA_COLUMNS`;
- ``plate.json``: the plate's identity and its well map (gene, Ensembl id and localization
  annotation per well), see :func:`write_plate`.

Field images are read with :func:`assets_pkg.core.imaging.io.read_image` (pass
``dtypes=PIXEL_DTYPES``) and written with :func:`assets_pkg.core.imaging.io.write_tiff`.

Plates are written into a temporary sibling folder and renamed into place, so a reader never
sees a half-written plate from this writer.  Folders copied in by hand are recognised as
complete by :func:`plate_is_complete`.

Reading is defensive: every file of a plate folder is opened with
:func:`~assets_pkg.core.imaging.io.open_regular` without following symbolic links (a link, FIFO,
device or directory in place of a file is refused, naming it, and never blocks), and
metadata.csv is checked against :class:`MetadataLimits` (its size from ``fstat``, then its line
count) before it is parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PlateFormatError
from .io import ImageLimits, open_regular, read_image, write_tiff

#: Channels of a field, in the order they are stored in frames.
CHANNELS: tuple[str, ...] = ("nucleus", "protein")

#: Pixel types a field image may have (``bit_depth`` 8 or 16).
PIXEL_DTYPES: tuple[str, ...] = ("uint8", "uint16")

#: Localization vocabulary, OpenCell's annotation names.
LOCALIZATIONS: tuple[str, ...] = (
    "nucleoplasm",
    "nucleolus_gc",
    "nucleolus_fc_dfc",
    "chromatin",
    "nuclear_membrane",
    "nuclear_punctae",
    "cytoplasmic",
    "er",
    "golgi",
    "mitochondria",
    "vesicles",
    "membrane",
    "cytoskeleton",
    "centrosome",
    "big_aggregates",
    "cell_contact",
    "focal_adhesions",
)

#: Columns of metadata.csv, with the pandas dtype each is read as.
METADATA_COLUMNS: dict[str, str] = {
    "plate_id": "string",
    "well": "string",
    "field_id": "Int64",
    "channel": "string",
    "file_name": "string",
    "file_bytes": "Int64",
    "sha256": "string",
    "width": "Int64",
    "height": "Int64",
    "bit_depth": "Int64",
    "gene": "string",
    "ensg_id": "string",
    "cell_line": "string",
    "instrument": "string",
    "objective": "string",
    "numerical_aperture": "Float64",
    "pixel_size_um": "Float64",
    "exposure_ms": "Float64",
    "excitation_nm": "Float64",
    "emission_nm": "Float64",
    "acquisition_time": "string",
    "operator": "string",
    "fixation": "string",
    "stain": "string",
    "site": "string",
}

PLATE_JSON = "plate.json"
METADATA_CSV = "metadata.csv"
DEFECTS_CSV = "defects.csv"

#: Largest plate.json read (bytes); a well map of 1536 wells is about 300 KB.
MAX_PLATE_JSON_BYTES = 16 * 2**20


@dataclass(frozen=True)
class MetadataLimits:
    """How large a metadata.csv may be, checked before it is parsed.

    Attributes
    ----------
    max_bytes : int
        Most bytes (from ``fstat``, before reading); default 256 MiB.  A 1536-well plate with
        25 fields and 5 channels per well is about 190,000 rows, some 120 MB.
    max_rows : int
        Most data lines (counted in the bytes read, before parsing); default 1,000,000.
    """

    max_bytes: int = 256 * 2**20
    max_rows: int = 1_000_000

_PLATE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_WELL_RE = re.compile(r"^[A-P](0[1-9]|1[0-9]|2[0-4])$")


def check_plate_id(plate_id: str, path: str | Path | None = None) -> str:
    """Return ``plate_id`` if it is a safe folder and partition name, else raise.

    A plate id is 1-64 characters of letters, digits, ``_``, ``-`` and ``.``, starting with a
    letter or digit, and never ``..`` or anything with a path separator.

    Raises
    ------
    PlateFormatError
        Naming ``path`` and the field ``plate_id``.
    """
    if not isinstance(plate_id, str) or not _PLATE_ID_RE.match(plate_id) or ".." in plate_id:
        raise PlateFormatError(
            f"invalid plate id {plate_id!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit, no path separators or '..'",
            path=path,
            field="plate_id",
        )
    return plate_id


def check_well(well: str, path: str | Path | None = None) -> str:
    """Return ``well`` if it names a 384-well position (``A01`` .. ``P24``), else raise."""
    if not isinstance(well, str) or not _WELL_RE.match(well):
        raise PlateFormatError(f"invalid well {well!r}: expected A01..P24", path=path, field="well")
    return well


def image_file_name(well: str, field_id: int, channel: str) -> str:
    """File name of one field and channel inside a plate folder."""
    return f"{well}_f{int(field_id):02d}_{channel}.tif"


def well_names(n_wells: int) -> list[str]:
    """The first ``n_wells`` well names of a 384-well plate in row-major order."""
    if not 1 <= n_wells <= 384:
        raise ValueError(f"n_wells must be in 1..384, got {n_wells}")
    rows = "ABCDEFGHIJKLMNOP"
    return [f"{rows[i // 24]}{i % 24 + 1:02d}" for i in range(n_wells)]


def sha256_file(path: str | Path, chunk: int = 1 << 20, follow_symlinks: bool = True) -> str:
    """Hex SHA-256 of a file's bytes.

    Only a regular file is read (see :func:`~assets_pkg.core.imaging.io.open_regular`, which
    raises a :class:`PlateFormatError` for anything else, and for a symbolic link when
    ``follow_symlinks`` is False).
    """
    h = hashlib.sha256()
    with open_regular(path, follow_symlinks=follow_symlinks, what="file", error=PlateFormatError) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Localization:
    """One localization annotation: OpenCell class name and grade (3 prominent .. 1 weak)."""

    name: str
    grade: int


@dataclass(frozen=True)
class WellInfo:
    """What a well holds: one tagged protein."""

    gene: str
    ensg_id: str
    localizations: tuple[Localization, ...] = ()

    def to_json(self) -> dict:
        return {
            "gene": self.gene,
            "ensg_id": self.ensg_id,
            "localizations": [{"name": x.name, "grade": x.grade} for x in self.localizations],
        }

    @classmethod
    def from_json(cls, d: Mapping, path: str | Path | None = None) -> WellInfo:
        try:
            locs = tuple(Localization(str(x["name"]), int(x["grade"])) for x in d.get("localizations", []))
            return cls(gene=str(d["gene"]), ensg_id=str(d["ensg_id"]), localizations=locs)
        except (KeyError, TypeError, ValueError) as e:
            raise PlateFormatError(f"malformed well entry {dict(d)!r}: {e}", path=path, field="wells") from e


@dataclass
class Plate:
    """A plate folder as read from disk (nothing is loaded but the small files).

    Attributes
    ----------
    path : Path
        The plate folder.
    plate_id : str
        From plate.json; equals the folder name.
    metadata : pandas.DataFrame
        metadata.csv, one row per image file, dtypes of :data:`METADATA_COLUMNS`.
    wells : dict of str to WellInfo
        The well map from plate.json.
    info : dict
        The whole of plate.json.
    image_limits : ImageLimits or None
        Largest field image :meth:`read_field` decodes (None: the reader's defaults).
    """

    path: Path
    plate_id: str
    metadata: pd.DataFrame
    wells: dict[str, WellInfo]
    info: dict = field(default_factory=dict)
    image_limits: ImageLimits | None = None

    def fields(self) -> pd.DataFrame:
        """One row per (well, field_id) with the file name of each channel as columns."""
        wide = self.metadata.pivot_table(
            index=["well", "field_id"], columns="channel", values="file_name", aggfunc="first"
        )
        return wide.reset_index().sort_values(["well", "field_id"]).reset_index(drop=True)

    def image_path(self, file_name: str) -> Path:
        return self.path / file_name

    def read_field(self, file_name: str, expect_shape: tuple[int, int] | None = None) -> np.ndarray:
        """One field image of the plate, read the way plate files must be read.

        Parameters
        ----------
        file_name : str
            A ``file_name`` of metadata.csv: a plain name inside the plate folder.
        expect_shape : (int, int), optional
            (height, width) it must have, checked on the header before decoding.

        Returns
        -------
        numpy.ndarray, shape (height, width), uint8 or uint16

        Raises
        ------
        PlateFormatError
            (an :class:`~assets_pkg.core.errors.ImageFormatError`) when the name leaves the
            folder, the file is a symbolic link or not a regular file, declares more pixels than
            :attr:`image_limits` allow, or is not a 2-D uint8/uint16 image of ``expect_shape``.
        """
        name = str(file_name)
        if not is_plain_name(name):
            raise PlateFormatError(f"unsafe file name {name!r}: not read (path separator, '..' or hidden)",
                                   path=self.path / METADATA_CSV, field="file_name")
        return read_image(self.path / name, expect_shape=expect_shape, dtypes=PIXEL_DTYPES,
                          limits=self.image_limits, follow_symlinks=False)


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is a plain, visible file name (no path separator, no ``..``, no leading dot)."""
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
        and not name.startswith(".")
    )


def read_plate_json(plate_dir: str | Path) -> dict:
    """Read and check plate.json of a plate folder."""
    p = Path(plate_dir) / PLATE_JSON
    raw = _read_small(p, PLATE_JSON, MAX_PLATE_JSON_BYTES, "MAX_PLATE_JSON_BYTES")
    try:
        info = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise PlateFormatError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=p) from e
    except json.JSONDecodeError as e:
        raise PlateFormatError(f"not valid JSON: {e}", path=p) from e
    if not isinstance(info, dict):
        raise PlateFormatError("must hold a JSON object", path=p)
    for key in ("plate_id", "wells"):
        if key not in info:
            raise PlateFormatError("required key is missing", path=p, field=key)
    check_plate_id(info["plate_id"], path=p)
    if not isinstance(info["wells"], dict):
        raise PlateFormatError("must map well names to objects", path=p, field="wells")
    return info


def _read_small(path: Path, what: str, max_bytes: int, setting: str) -> bytes:
    """The bytes of a plate's small text file: a regular file (no link), at most ``max_bytes``."""
    with open_regular(path, follow_symlinks=False, what=what, error=PlateFormatError) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            raise PlateFormatError(
                f"{what} is {size:,} bytes, above the limit of {max_bytes:,} bytes ({setting}); not read",
                path=path,
            )
        return fh.read(max_bytes + 1)


def read_metadata_csv(path: str | Path, limits: MetadataLimits | None = None) -> pd.DataFrame:
    """Read metadata.csv as text, then cast to :data:`METADATA_COLUMNS` where it can.

    Column presence and value checks are the Great Expectations suites' job
    (:mod:`assets_pkg.core.qc`); this function only fails on what makes the file
    unreadable: missing, not a regular file, larger than ``limits``, not UTF-8, not CSV, or
    empty.  Columns that do not cast stay text so the suites can name the offending rows.

    Parameters
    ----------
    path : path-like
        The metadata.csv file.
    limits : MetadataLimits, optional
        Size (checked with ``fstat`` before reading) and line count (checked before parsing);
        default :class:`MetadataLimits()`.
    """
    path = Path(path)
    limits = MetadataLimits() if limits is None else limits
    raw = _read_small(path, METADATA_CSV, limits.max_bytes, "max_bytes")
    if len(raw) > limits.max_bytes:  # grew while being read
        raise PlateFormatError(f"metadata.csv is above the limit of {limits.max_bytes:,} bytes; not read", path=path)
    rows = raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1) - 1
    if rows > limits.max_rows:
        raise PlateFormatError(
            f"metadata.csv has {rows:,} lines of rows, above the limit of {limits.max_rows:,} (max_rows); not parsed",
            path=path,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PlateFormatError(
            f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})", path=path
        ) from e
    if not text.strip():
        raise PlateFormatError("metadata.csv is empty", path=path)
    import io

    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise PlateFormatError(f"not a readable CSV: {e}", path=path) from e
    return cast_metadata(df)


def cast_metadata(df: pd.DataFrame) -> pd.DataFrame:
    """Cast known columns to their dtypes; a column whose values do not parse stays text."""
    out = df.copy()
    for col, dtype in METADATA_COLUMNS.items():
        if col not in out.columns:
            continue
        if dtype in ("Int64", "Float64"):
            num = pd.to_numeric(out[col], errors="coerce")
            bad = num.isna() & out[col].notna()
            if bad.any():
                continue
            if dtype == "Int64" and not (num.dropna() % 1 == 0).all():
                continue
            out[col] = num.astype(dtype)
        else:
            out[col] = out[col].astype("string")
    return out


def read_plate(
    plate_dir: str | Path,
    metadata_limits: MetadataLimits | None = None,
    image_limits: ImageLimits | None = None,
) -> Plate:
    """Read a plate folder's plate.json and metadata.csv (not the images).

    Parameters
    ----------
    plate_dir : path-like
        The plate folder.
    metadata_limits : MetadataLimits, optional
        Limits of metadata.csv (default :class:`MetadataLimits()`).
    image_limits : ImageLimits, optional
        Kept on the plate for :meth:`Plate.read_field` (default the reader's).

    Raises
    ------
    PlateFormatError
        When the folder, plate.json or metadata.csv is missing, not a regular file, too large
        or unreadable, when the folder name differs from ``plate_id``, or when the plate lists
        no image.
    """
    plate_dir = Path(plate_dir)
    if not plate_dir.is_dir():
        raise PlateFormatError("plate folder does not exist", path=plate_dir)
    info = read_plate_json(plate_dir)
    plate_id = info["plate_id"]
    if plate_dir.name != plate_id:
        raise PlateFormatError(
            f"plate.json says {plate_id!r} but the folder is named {plate_dir.name!r}",
            path=plate_dir / PLATE_JSON,
            field="plate_id",
        )
    meta = read_metadata_csv(plate_dir / METADATA_CSV, metadata_limits)
    if len(meta) == 0:
        raise PlateFormatError("empty plate: metadata.csv lists no image", path=plate_dir / METADATA_CSV)
    wells = {
        check_well(w, path=plate_dir / PLATE_JSON): WellInfo.from_json(d, path=plate_dir / PLATE_JSON)
        for w, d in info["wells"].items()
    }
    return Plate(path=plate_dir, plate_id=plate_id, metadata=meta, wells=wells, info=info, image_limits=image_limits)


def write_plate(
    out_dir: str | Path,
    plate_id: str,
    images: Mapping[tuple[str, int, str], np.ndarray],
    rows: Iterable[Mapping],
    wells: Mapping[str, WellInfo],
    extra_info: Mapping | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a plate folder atomically (temporary sibling folder, then rename).

    Parameters
    ----------
    out_dir : path-like
        Parent folder; the plate lands in ``out_dir/plate_id``, which must not exist.
    plate_id : str
        Checked with :func:`check_plate_id`.
    images : mapping (well, field_id, channel) -> ndarray
        2-D uint16 arrays, one per field and channel.
    rows : iterable of mappings
        Per image, the provenance columns of :data:`METADATA_COLUMNS` except those derived
        here (plate_id, well, field_id, channel, file_name, file_bytes, sha256, width, height),
        keyed as ``rows`` items with keys ``well``, ``field_id``, ``channel`` to match images.
    wells : mapping well -> WellInfo
    extra_info : mapping, optional
        More keys for plate.json (simulator settings, instrument ...).
    extra_files : mapping name -> bytes, optional
        More files in the folder (for example the defects ground truth).

    Returns
    -------
    Path
        The plate folder.
    """
    check_plate_id(plate_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / plate_id
    if final.exists():
        raise PlateFormatError("plate folder already exists; refusing to overwrite", path=final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{plate_id}.tmp-", dir=out_dir))
    try:
        by_key = {(r["well"], int(r["field_id"]), r["channel"]): dict(r) for r in rows}
        records = []
        for (well, fid, ch) in sorted(images):
            img = images[(well, fid, ch)]
            name = image_file_name(well, fid, ch)
            write_tiff(tmp / name, img)
            row = by_key.get((well, fid, ch))
            if row is None:
                raise PlateFormatError(f"no metadata row for {name}", field="rows")
            row.update(
                plate_id=plate_id,
                well=well,
                field_id=fid,
                channel=ch,
                file_name=name,
                file_bytes=(tmp / name).stat().st_size,
                sha256=sha256_file(tmp / name),
                height=int(img.shape[0]),
                width=int(img.shape[1]),
            )
            row.setdefault("bit_depth", 16 if img.dtype == np.uint16 else 8)
            records.append(row)
        meta = pd.DataFrame.from_records(records)
        meta = meta[[c for c in METADATA_COLUMNS if c in meta.columns]]
        meta.to_csv(tmp / METADATA_CSV, index=False, lineterminator="\n")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        info = {"plate_id": plate_id, "schema_version": 1}
        info.update(extra_info or {})
        info["wells"] = {w: wells[w].to_json() for w in sorted(wells)}
        (tmp / PLATE_JSON).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def plate_is_complete(plate_dir: str | Path) -> bool:
    """Whether a folder looks like a fully copied plate.

    True when plate.json and metadata.csv parse and every image listed exists with the byte
    size recorded in ``file_bytes``.  Used by the sensor so a half-copied folder is not picked
    up; it does not validate content (the suites do).
    """
    plate_dir = Path(plate_dir)
    try:
        plate = read_plate(plate_dir)
    except PlateFormatError:
        return False
    meta = plate.metadata
    if "file_name" not in meta.columns or "file_bytes" not in meta.columns:
        return False
    for name, size in zip(meta["file_name"], meta["file_bytes"], strict=True):
        p = plate_dir / str(name)
        try:
            if pd.isna(size) or p.stat().st_size != int(size):
                return False
        except OSError:
            return False
    return True


def list_plates(root: str | Path, complete_only: bool = True) -> list[Path]:
    """Plate folders directly under ``root`` (those holding plate.json), sorted by name.

    Hidden folders (the writer's temporaries) are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if not p.is_dir() or p.name.startswith("."):
            continue
        if not (p / PLATE_JSON).exists():
            continue
        if complete_only and not plate_is_complete(p):
            continue
        out.append(p)
    return out
