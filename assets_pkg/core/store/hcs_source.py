"""An OME-Zarr HCS plate (as :func:`.hcs.export_hcs` writes it) as a plate source for ingest.

:func:`read_hcs_plate` reads the plate's JSON metadata -- plate -> wells -> fields (NGFF 0.5
``ome.plate``, ``ome.well``), each field's channel names (``omero.channels[].label``), axes and
pixel size (``multiscales[0]``: axes ``c, y, x``, the ``scale`` of ``coordinateTransformations``,
in micrometres) -- and the plate's own records that the export keeps beside ``ome`` in the
root group's attributes (``attributes.cellscape``: ``plate``, the plate.json object, and
``metadata``, the metadata.csv rows as text: identity, checksums, geometry and the
provenance the QC suites check).  It returns an :class:`HcsPlate`, a
:class:`~assets_pkg.core.imaging.plates.Plate` whose :meth:`HcsPlate.read_field` reads the
field arrays with TensorStore's ``zarr3`` driver, a whole field (c, y, x) per read, so
:func:`~.ingest.ingest_plate` takes the ``.ome.zarr`` where it takes a plate folder and writes
the same frames, table and provenance (but ``source``).

Validation (:func:`~assets_pkg.core.qc.validate.validate_plate` with ``plate=`` and
``file_facts=``:func:`hcs_file_facts`) runs the same suites: schema and provenance on the
metadata rows, geometry and the image checks on the pixels of the arrays, and checksums on
what the export recorded per channel: the source TIFF's byte count and SHA-256 (measured on
the file when exporting) stand for the file only while the pixels still hash to the
``pixel_sha256`` recorded beside them (the raw pixel bytes, little-endian, row-major); pixels
that differ are reported as an unreadable file, naming it.

A required metadata field that is missing or malformed raises
:class:`~assets_pkg.core.errors.PlateFormatError` naming the ``zarr.json`` and the field
(``attributes.ome.plate.wells`` ...).  The plate is only read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorstore as ts

from ..errors import PlateFormatError
from ..imaging.io import ImageLimits, open_regular
from ..imaging.plates import (
    CHANNELS,
    PIXEL_DTYPES,
    MetadataLimits,
    Plate,
    WellInfo,
    cast_metadata,
    check_plate_id,
    check_well,
)
from ..qc.config import PlateQCConfig
from ..qc.fields import image_stats
from ..qc.report import ValidationReport
from ..qc.tables import FileFacts, cell_text, expected_geometry

__all__ = ["HCS_SUFFIX", "CELLSCAPE_KEY", "HcsPlate", "is_hcs_plate", "read_hcs_plate", "hcs_file_facts",
           "validate_plate_source", "pixel_sha256", "metadata_records"]

#: How an OME-Zarr plate folder's name ends.
HCS_SUFFIX = ".ome.zarr"
#: The attributes key, beside ``ome``, holding Cellscape's own records.
CELLSCAPE_KEY = "cellscape"
_MAX_GROUP_JSON = 16 * 2**20  # a well's or field's zarr.json (bytes); the root's is bounded by MetadataLimits
_CS = f"attributes.{CELLSCAPE_KEY}"
_MS = "attributes.ome.multiscales.0"


def pixel_sha256(pixels: np.ndarray) -> str:
    """Hex SHA-256 of an image's raw pixel bytes, little-endian and row-major (C order)."""
    a = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))
    return hashlib.sha256(a.tobytes()).hexdigest()


def metadata_records(meta: pd.DataFrame) -> dict:
    """metadata.csv rows as JSON text cells: ``{"columns": [...], "rows": [[str | None, ...], ...]}``.

    Numbers are written so that :func:`~assets_pkg.core.imaging.plates.cast_metadata` reads
    them back to the same value (``repr`` of a float).
    """
    def text(v: Any) -> str | None:
        t = cell_text(v)
        if t is None:
            return None
        if isinstance(v, float | np.floating):
            return repr(float(v))
        if isinstance(v, np.integer):
            return str(int(v))
        return t

    cols = [str(c) for c in meta.columns]
    return {"columns": cols, "rows": [[text(v) for v in row] for row in meta.itertuples(index=False, name=None)]}


def is_hcs_plate(path: str | Path) -> bool:
    """Whether ``path`` names an OME-Zarr plate (its name ends in ``.ome.zarr`` or it holds a ``zarr.json``)."""
    p = Path(path)
    return p.name.endswith(HCS_SUFFIX) or (p / "zarr.json").is_file()


def _read_json(path: Path, max_bytes: int) -> dict:
    """A zarr.json: a regular file (no link), at most ``max_bytes``, holding a JSON object."""
    try:
        with open_regular(path, follow_symlinks=False, what="zarr.json", error=PlateFormatError) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise PlateFormatError(f"zarr.json is {size:,} bytes, above the limit of {max_bytes:,}; not read",
                                       path=path)
            raw = fh.read(max_bytes + 1)
    except OSError as e:
        raise PlateFormatError(f"cannot read ({e.strerror or type(e).__name__})", path=path) from e
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PlateFormatError(f"not valid JSON: {e}", path=path) from e
    if not isinstance(doc, dict):
        raise PlateFormatError("must hold a JSON object", path=path)
    return doc


def _get(doc: Any, dotted: str, path: Path, kind: type | tuple = object, at: str = "") -> Any:
    """``doc["a"]["b"]...`` for ``dotted`` = ``"a.b..."``; missing or not ``kind``: an error naming the
    field (``at.dotted``: ``at`` is where ``doc`` is in the file)."""
    cur = doc
    dotted_in_file = f"{at}.{dotted}" if at else dotted
    for key in dotted.split("."):
        if isinstance(cur, list) and key.isdigit() and int(key) < len(cur):
            cur = cur[int(key)]
        elif isinstance(cur, dict) and key in cur:
            cur = cur[key]
        else:
            raise PlateFormatError("required field is missing", path=path, field=dotted_in_file)
    if not isinstance(cur, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise PlateFormatError(f"must be a {names}, found {type(cur).__name__}", path=path, field=dotted_in_file)
    return cur


@dataclass(frozen=True)
class HcsField:
    """One field of an OME-Zarr plate: where its array is and what the export recorded of its sources."""

    well: str
    field_id: int
    array: str  # the (c, y, x) array folder
    channels: tuple[str, ...]  # label of each c index
    files: dict  # channel -> source file name
    file_bytes: dict  # channel -> bytes of the source file
    source_sha256: dict  # channel -> SHA-256 of the source file's bytes
    pixel_sha256: dict  # channel -> :func:`pixel_sha256` of the exported plane


@dataclass
class HcsPlate(Plate):
    """An OME-Zarr HCS plate read as a :class:`~assets_pkg.core.imaging.plates.Plate`.

    ``path`` is the ``.ome.zarr`` folder; ``metadata``, ``wells`` and ``info`` come from the
    root group's ``attributes.cellscape``; ``hcs_fields`` maps each source ``file_name`` to its
    field and channel.  :meth:`read_field` reads one whole field (c, y, x) per TensorStore read
    and keeps the last one, so a field's channels read one after the other cost one read.
    """

    hcs_fields: dict[str, tuple[HcsField, int]] = field(default_factory=dict)
    pixel_size_um: float = math.nan
    _last: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def image_path(self, file_name: str) -> Path:
        """The array folder holding ``file_name``'s pixels (the plate folder when none does)."""
        loc = self.hcs_fields.get(str(file_name))
        return Path(loc[0].array) if loc else self.path

    def read_pixels(self, f: HcsField) -> np.ndarray:
        """The whole field (c, y, x) in one read, its size checked on the array's metadata first."""
        if self._last.get("array") == f.array:
            return self._last["pixels"]
        pixels = _read_array(f, self.image_limits)
        self._last.clear()
        self._last.update(array=f.array, pixels=pixels)
        return pixels

    def read_field(self, file_name: str, expect_shape: tuple[int, int] | None = None) -> np.ndarray:
        """One channel of a field, ``file_name`` being its source file's name (metadata.csv).

        Returns
        -------
        numpy.ndarray, shape (height, width), uint8 or uint16

        Raises
        ------
        PlateFormatError
            When no field holds ``file_name``, or the array is not (c, y, x) of uint8/uint16
            within :attr:`image_limits`, or not of ``expect_shape``.
        """
        loc = self.hcs_fields.get(str(file_name))
        if loc is None:
            raise PlateFormatError(f"no field of the OME-Zarr plate holds {file_name!r}", path=self.path,
                                   field="attributes.cellscape.files")
        f, c = loc
        plane = self.read_pixels(f)[c]
        if expect_shape is not None and tuple(plane.shape) != tuple(expect_shape):
            raise PlateFormatError(f"shape {plane.shape} differs from {tuple(expect_shape)}",
                                   path=f.array, field="shape")
        return plane


def _open_array(f: HcsField) -> ts.TensorStore:
    try:
        return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": f.array + "/"}},
                       open=True, read=True).result()
    except ValueError as e:
        raise PlateFormatError(f"cannot open the field array: {e}", path=Path(f.array) / "zarr.json") from e


def _read_array(f: HcsField, limits: ImageLimits | None) -> np.ndarray:
    arr = _open_array(f)
    where = Path(f.array) / "zarr.json"
    if arr.rank != 3 or arr.shape[0] != len(f.channels):
        raise PlateFormatError(f"array of shape {tuple(arr.shape)}: expected (c, y, x) with {len(f.channels)} "
                               "channels", path=where, field="shape")
    if arr.dtype.name not in PIXEL_DTYPES:
        raise PlateFormatError(f"pixel type {arr.dtype.name}: expected one of {PIXEL_DTYPES}", path=where,
                               field="data_type")
    limits = ImageLimits() if limits is None else limits
    plane = int(arr.shape[1]) * int(arr.shape[2])
    if plane > limits.max_plane_pixels or plane * arr.shape[0] * arr.dtype.numpy_dtype.itemsize > limits.max_bytes:
        raise PlateFormatError(f"a field of {arr.shape[1]} x {arr.shape[2]} pixels is above the image limits; "
                               "not read", path=where, field="shape")
    try:
        return arr.read().result()
    except ValueError as e:  # a damaged shard (crc32c) or a missing chunk file
        raise PlateFormatError(f"cannot read the field array: {e}", path=where) from e


def _field(plate_root: Path, well_path: str, image_path: str) -> tuple[HcsField, float]:
    fdir = plate_root / well_path / image_path
    zj = fdir / "zarr.json"
    doc = _read_json(zj, _MAX_GROUP_JSON)
    ms = _get(doc, "attributes.ome.multiscales.0", zj, dict)
    axes = [a.get("name") if isinstance(a, dict) else None for a in _get(ms, "axes", zj, list, _MS)]
    if axes != ["c", "y", "x"]:
        raise PlateFormatError(f"axes {axes}: expected ['c', 'y', 'x']", path=zj,
                               field="attributes.ome.multiscales.0.axes")
    ds = _get(ms, "datasets.0", zj, dict, _MS)
    array = _get(ds, "path", zj, str, f"{_MS}.datasets.0")
    scale = None
    for t in _get(ds, "coordinateTransformations", zj, list, f"{_MS}.datasets.0"):
        if isinstance(t, dict) and t.get("type") == "scale":
            scale = t.get("scale")
    key = "attributes.ome.multiscales.0.datasets.0.coordinateTransformations"
    if not (isinstance(scale, list) and len(scale) == 3 and all(isinstance(s, int | float) for s in scale)):
        raise PlateFormatError("required field is missing: a scale of three numbers (c, y, x)", path=zj,
                               field=f"{key}.scale")
    if scale[1] != scale[2] or not scale[1] > 0:
        raise PlateFormatError(f"pixel size {scale[1:]} um: expected one positive size for y and x", path=zj,
                               field=f"{key}.scale")
    labels = [c.get("label") if isinstance(c, dict) else None
              for c in _get(doc, "attributes.ome.omero.channels", zj, list)]
    missing = [c for c in CHANNELS if c not in labels]
    if missing:
        raise PlateFormatError(f"channel(s) {missing} not named among {labels}", path=zj,
                               field="attributes.ome.omero.channels")
    cs = _get(doc, f"attributes.{CELLSCAPE_KEY}", zj, dict)
    records = {}
    for name in ("files", "file_bytes", "source_sha256", "pixel_sha256"):
        rec = _get(cs, name, zj, dict, _CS)
        for ch in CHANNELS:
            _get(rec, ch, zj, (str, int), f"{_CS}.{name}")
        records[name] = {ch: rec[ch] for ch in CHANNELS}
    f = HcsField(
        well=check_well(_get(cs, "well", zj, str, _CS), path=zj),
        field_id=int(_get(cs, "field_id", zj, int, _CS)),
        array=str(fdir / array),
        channels=tuple(str(x) for x in labels),
        **records,
    )
    return f, float(scale[1])


def read_hcs_plate(
    path: str | Path,
    metadata_limits: MetadataLimits | None = None,
    image_limits: ImageLimits | None = None,
) -> HcsPlate:
    """Read an OME-Zarr HCS plate's metadata (not the pixels) as a plate for ingest.

    Parameters
    ----------
    path : path-like
        The ``.ome.zarr`` folder, as :func:`~.hcs.export_hcs` writes it.
    metadata_limits : MetadataLimits, optional
        ``max_bytes`` bounds the root ``zarr.json`` (which holds the metadata rows) and
        ``max_rows`` its rows; default :class:`MetadataLimits()`.
    image_limits : ImageLimits, optional
        Largest field :meth:`HcsPlate.read_field` reads (checked on the array's shape).

    Returns
    -------
    HcsPlate
        ``fields()`` lists the (well, field_id) of the metadata; ``hcs_fields`` where each
        source file's pixels are; ``pixel_size_um`` the plate's pixel size (µm) from the
        fields' ``coordinateTransformations``.

    Raises
    ------
    PlateFormatError
        Naming the ``zarr.json`` and the field when a required field is missing or malformed
        (``attributes.ome.plate.wells``, ``attributes.cellscape.metadata`` ...), when the
        fields disagree on the pixel size or it differs from the metadata's ``pixel_size_um``,
        or when two fields claim one source file.
    """
    root = Path(path)
    if not root.is_dir():
        raise PlateFormatError("OME-Zarr plate folder does not exist", path=root)
    limits = MetadataLimits() if metadata_limits is None else metadata_limits
    zj = root / "zarr.json"
    doc = _read_json(zj, limits.max_bytes)
    version = _get(doc, "attributes.ome.version", zj, str)
    if version != "0.5":
        raise PlateFormatError(f"NGFF version {version!r}: expected '0.5'", path=zj, field="attributes.ome.version")
    wells = _get(doc, "attributes.ome.plate.wells", zj, list)
    cs = _get(doc, f"attributes.{CELLSCAPE_KEY}", zj, dict)
    info = _get(cs, "plate", zj, dict, _CS)
    plate_id = check_plate_id(_get(info, "plate_id", zj, str, f"{_CS}.plate"), path=zj)
    name = doc["attributes"]["ome"]["plate"].get("name")
    if name is not None and name != plate_id:
        raise PlateFormatError(f"plate name {name!r} differs from the plate id {plate_id!r}", path=zj,
                               field="attributes.ome.plate.name")
    well_map = {check_well(w, path=zj): WellInfo.from_json(d, path=zj)
                for w, d in _get(info, "wells", zj, dict, f"{_CS}.plate").items()}
    md = _get(cs, "metadata", zj, dict, _CS)
    cols = _get(md, "columns", zj, list, f"{_CS}.metadata")
    rows = _get(md, "rows", zj, list, f"{_CS}.metadata")
    if len(rows) > limits.max_rows:
        raise PlateFormatError(f"{len(rows):,} metadata rows, above the limit of {limits.max_rows:,} (max_rows)",
                               path=zj, field="attributes.cellscape.metadata.rows")
    if not rows or any(not isinstance(r, list) or len(r) != len(cols) for r in rows):
        raise PlateFormatError(f"expected a non-empty list of rows of {len(cols)} cells", path=zj,
                               field="attributes.cellscape.metadata.rows")
    meta = cast_metadata(pd.DataFrame(rows, columns=[str(c) for c in cols], dtype=object))

    located: dict[str, tuple[HcsField, int]] = {}
    sizes = set()
    for k in range(len(wells)):
        wpath = _get(wells, f"{k}.path", zj, str, "attributes.ome.plate.wells")
        wj = root / wpath / "zarr.json"
        images = _get(_read_json(wj, _MAX_GROUP_JSON), "attributes.ome.well.images", wj, list)
        for i in range(len(images)):
            ipath = _get(images, f"{i}.path", wj, str, "attributes.ome.well.images")
            f, px = _field(root, wpath, ipath)
            sizes.add(px)
            for ch in CHANNELS:
                fname = str(f.files[ch])
                if fname in located:
                    raise PlateFormatError(f"{fname!r} is claimed by two fields", path=Path(f.array).parent /
                                           "zarr.json", field="attributes.cellscape.files")
                located[fname] = (f, f.channels.index(ch))
    if len(sizes) != 1:
        raise PlateFormatError(f"expected one pixel size per plate, found {sorted(sizes)}", path=zj,
                               field="coordinateTransformations")
    px = sizes.pop()
    recorded = pd.to_numeric(meta["pixel_size_um"], errors="coerce").dropna().unique() if (
        "pixel_size_um" in meta.columns) else []
    if len(recorded) == 1 and not math.isclose(float(recorded[0]), px, rel_tol=1e-9):
        raise PlateFormatError(f"the fields' scale says {px} um per pixel, the metadata {float(recorded[0])}",
                               path=zj, field="pixel_size_um")
    return HcsPlate(path=root, plate_id=plate_id, metadata=meta, wells=well_map, info=info,
                    image_limits=image_limits, hcs_fields=located, pixel_size_um=px)


def _full_scale(bit_depth: float | None, dtype: np.dtype) -> float | None:
    """``2**bit_depth - 1`` when ``bit_depth`` is a usable integer for ``dtype`` (as the TIFF checks), else None."""
    if bit_depth is None or math.isnan(bit_depth) or bit_depth != int(bit_depth):
        return None
    return float(2 ** int(bit_depth) - 1) if 1 <= bit_depth <= np.dtype(dtype).itemsize * 8 else None


def hcs_file_facts(plate: HcsPlate, want_hash: bool, want_image: bool, qc: PlateQCConfig | None = None) -> list[FileFacts]:
    """What the file checks of validation find, per metadata row, from the plate's arrays.

    The ``file_facts`` of :func:`~assets_pkg.core.qc.validate.validate_plate` for an
    :class:`HcsPlate`: each field is read once (c, y, x), fields in parallel threads.  Per
    row: ``size`` and ``sha256`` are the source file's, recorded at export, when its plane
    still hashes to the recorded ``pixel_sha256`` (else ``error`` says the pixels changed);
    shape, dtype, largest value and the image-check measures come from the plane.  A row whose
    file no field holds, or whose field cannot be read, gets ``error`` (and ``tiff_error``).
    """
    qc = PlateQCConfig() if qc is None else qc
    meta = plate.metadata.reset_index(drop=True)
    names = [cell_text(v) for v in meta["file_name"]] if "file_name" in meta else [None] * len(meta)
    if not (want_hash or want_image):
        return [FileFacts() for _ in names]
    bits, shapes = expected_geometry(plate)
    by_array: dict[str, list[int]] = {}
    facts = [FileFacts() for _ in names]
    for k, name in enumerate(names):
        if name is None:
            continue
        if name not in plate.hcs_fields:
            facts[k].error = facts[k].tiff_error = "not in the OME-Zarr plate (no field's attributes.cellscape.files)"
            continue
        by_array.setdefault(plate.hcs_fields[name][0].array, []).append(k)

    def one_field(rows: list[int]) -> None:
        f = plate.hcs_fields[names[rows[0]]][0]
        try:
            pixels = _read_array(f, qc.image_limits())
        except PlateFormatError as e:
            for k in rows:
                facts[k].error = facts[k].tiff_error = str(e)
            return
        for k in rows:
            c = plate.hcs_fields[names[k]][1]
            ch, img, out = f.channels[c], pixels[c], facts[k]
            if want_hash:
                digest = pixel_sha256(img)
                if digest != f.pixel_sha256[ch]:
                    out.error = (f"pixels in {f.array} channel {ch} differ from those exported "
                                 f"(pixel SHA-256 {digest}, recorded {f.pixel_sha256[ch]})")
                    continue
                out.size, out.sha256 = int(f.file_bytes[ch]), str(f.source_sha256[ch])
            if not want_image:
                continue
            out.ndim, out.dtype, out.shape = 2, img.dtype.name, tuple(int(s) for s in img.shape)
            if shapes[k] is not None and out.shape != tuple(shapes[k]):
                continue  # not measured: the geometry rules report the shape (as for a TIFF)
            out.max_value = float(img.max())
            out.stats = image_stats(img, _full_scale(bits[k], img.dtype), qc.debris_contrast)

    groups = list(by_array.values())
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1, len(groups)))) as pool:
        list(pool.map(one_field, groups))
    return facts


def validate_plate_source(
    path: str | Path, registry: dict | None = None, qc: PlateQCConfig | None = None
) -> tuple[ValidationReport, HcsPlate | None]:
    """:func:`~assets_pkg.core.qc.validate.validate_plate` of a plate folder or an OME-Zarr plate.

    Returns the report and, for an OME-Zarr plate, the :class:`HcsPlate` it read (None for a
    folder).  An OME-Zarr plate whose metadata lacks a required field raises
    :class:`~assets_pkg.core.errors.PlateFormatError` (see :func:`read_hcs_plate`).
    """
    from ..qc.validate import validate_plate

    qc = PlateQCConfig() if qc is None else qc
    if not is_hcs_plate(path):
        return validate_plate(path, registry=registry, qc=qc), None
    plate = read_hcs_plate(path, qc.metadata_limits(), qc.image_limits())
    return validate_plate(path, registry=registry, qc=qc, plate=plate, file_facts=hcs_file_facts), plate
