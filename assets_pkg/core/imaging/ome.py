"""Microscope files through ``bioio``: OME-TIFF and Zeiss CZI, with their metadata mapped to provenance.

The plate folders of :mod:`.plates` are plain TIFFs whose provenance sits in metadata.csv.  Files
straight from a microscope carry it inside: OME-TIFF in its OME-XML, a Zeiss CZI in its own XML.
This module reads both through ``bioio`` and its plugins (``bioio-ome-tiff``, ``bioio-czi``)
and maps what they say onto the provenance fields of :data:`.plates.METADATA_COLUMNS`
(:class:`ImageProvenance`):

============================  ======================================  =====================================
field                         OME-XML (OME-TIFF)                      CZI XML (``Metadata/Information/...``)
============================  ======================================  =====================================
``pixel_size_um``             ``Pixels@PhysicalSizeX/Y`` (+ units)    the reader's physical pixel sizes
                                                                      (``Scaling/Items/Distance``, metres)
``channel_names``             ``Channel@Name``                        ``Image/Dimensions/Channels/Channel@Name``
``well``, ``field_id``        ``Plate/Well@Row/@Column`` (0-based),   ``.../Scenes/Scene/Shape/RowIndex``,
                              the well sample's position in its well  ``ColumnIndex`` (0-based); no field
                              (1-based)
``acquisition_time``          ``Image/AcquisitionDate``               ``Image/AcquisitionDateAndTime``
``instrument``                ``Instrument/Microscope@Model``         ``Instrument/Microscopes/Microscope@Name``
``objective``,                ``Objective@Model``, ``@LensNA``        ``Instrument/Objectives/Objective@Name``,
``numerical_aperture``                                                ``LensNA``
``operator``                  ``Experimenter@UserName``               ``Document/UserName``
``excitation_nm``,            ``Channel@Excitation/EmissionWavelength``  ``Channel/Excitation/EmissionWavelength``
``emission_nm``               (+ units)
``exposure_ms``               the channel's first ``Plane@ExposureTime``  not mapped
                              (+ units)
============================  ======================================  =====================================

Nothing is guessed: a field the file does not state stays ``None``, and one it states in a form
that cannot be mapped (a naive acquisition time, pixels that are not square, an unknown unit)
stays ``None`` with the reason in :attr:`ImageProvenance.problems`.  :meth:`ImageProvenance.failures`
names every required field that is absent or unusable, and :meth:`ImageProvenance.require`
raises :class:`OmeMetadataError` naming the file and the first such field.  ``instrument`` is
the microscope's model as the file states it; whether the registry knows it is the QC suites'
question (:mod:`assets_pkg.core.qc`), once :meth:`ImageProvenance.metadata_rows` has turned it
into metadata.csv rows.

Pixels are read as (channel, y, x) of the first time point and z plane; raw files are only read.

Why one module: the table above is one mapping with two sources; keeping both mappings, the
record they fill and the failures it reports side by side is what keeps the formats agreeing.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageFormatError

__all__ = [
    "REQUIRED_FIELDS",
    "HCS_FIELDS",
    "OME_TIFF_SUFFIXES",
    "CZI_SUFFIXES",
    "ImageProvenance",
    "OmeMetadataError",
    "ome_format",
    "open_bioimage",
    "read_provenance",
    "read_ome_image",
    "provenance_from_ome",
    "provenance_from_czi",
    "well_name",
]

#: Provenance fields every microscope file must state (see :meth:`ImageProvenance.failures`).
REQUIRED_FIELDS: tuple[str, ...] = (
    "pixel_size_um",
    "channel_names",
    "acquisition_time",
    "instrument",
    "objective",
    "numerical_aperture",
    "operator",
)
#: Where a plate is concerned, the position of the image on it.
HCS_FIELDS: tuple[str, ...] = ("well", "field_id")

OME_TIFF_SUFFIXES: tuple[str, ...] = (".ome.tif", ".ome.tiff")
CZI_SUFFIXES: tuple[str, ...] = (".czi",)

# unit symbol (ome_types' enum value) -> factor to the target unit
_TO_UM = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "nm": 1e-3, "Å": 1e-4, "pm": 1e-6}
_TO_NM = {"m": 1e9, "mm": 1e6, "µm": 1e3, "nm": 1.0, "Å": 0.1, "pm": 1e-3}
_TO_MS = {"s": 1e3, "ms": 1.0, "µs": 1e-3, "ns": 1e-6, "min": 6e4, "h": 3.6e6}
_ROWS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class OmeMetadataError(ImageFormatError):
    """A microscope file lacks a provenance field, or states it in a form that cannot be mapped."""


@dataclass(frozen=True)
class ImageProvenance:
    """What a microscope file says about one image (a scene), in the units of metadata.csv.

    Attributes
    ----------
    path : str
        The file.
    format : {"ome-tiff", "czi"}
        The reader that read it.
    image_index : int
        The image (OME ``Image``, CZI scene) within the file.
    shape : tuple of int
        (channel, y, x) of the pixels the readers here return.
    dtype : str
        NumPy name of the pixel type.
    pixel_size_um : float or None
        Edge of a (square) pixel at the sample, micrometres.
    channel_names : tuple of str or None
        One per channel, in order; None when any channel is unnamed.
    well : str or None
        Well name, ``A01`` style (row letter, 1-based two-digit column).
    field_id : int or None
        The field within the well, 1-based.
    acquisition_time : str or None
        ISO 8601 UTC, ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``.
    instrument, objective, operator : str or None
        Microscope model, objective name and the experimenter's user name as the file states them.
    numerical_aperture : float or None
        The objective's lens NA.
    excitation_nm, emission_nm, exposure_ms : tuple of (float or None)
        Per channel, nanometres and milliseconds.
    plate_name : str or None
        The plate's name where the file has plate metadata.
    problems : dict of str to str
        Field -> why a value the file states could not be mapped (the field is then None).
    """

    path: str
    format: str
    image_index: int
    shape: tuple[int, ...]
    dtype: str
    pixel_size_um: float | None = None
    channel_names: tuple[str, ...] | None = None
    well: str | None = None
    field_id: int | None = None
    acquisition_time: str | None = None
    instrument: str | None = None
    objective: str | None = None
    numerical_aperture: float | None = None
    operator: str | None = None
    excitation_nm: tuple[float | None, ...] = ()
    emission_nm: tuple[float | None, ...] = ()
    exposure_ms: tuple[float | None, ...] = ()
    plate_name: str | None = None
    problems: dict[str, str] = field(default_factory=dict)

    def failures(self, required: Sequence[str] = REQUIRED_FIELDS) -> dict[str, str]:
        """Field -> reason, for every field of ``required`` that is absent or unusable, in order."""
        out = {}
        for name in required:
            if not hasattr(self, name):
                raise ValueError(f"unknown provenance field {name!r}")
            if name in self.problems:
                out[name] = self.problems[name]
            elif getattr(self, name) is None:
                out[name] = "not stated in the file"
        return out

    def require(self, required: Sequence[str] = REQUIRED_FIELDS) -> ImageProvenance:
        """Return self when every field of ``required`` is usable.

        Raises
        ------
        OmeMetadataError
            Naming the file and the first failing field; the message lists them all.
        """
        bad = self.failures(required)
        if bad:
            first = next(iter(bad))
            listed = "; ".join(f"{k}: {v}" for k, v in bad.items())
            raise OmeMetadataError(f"provenance incomplete ({listed})", path=self.path, field=first)
        return self

    def metadata_rows(self, channels: Mapping[str, str], **columns: Any) -> list[dict]:
        """Rows for metadata.csv (:data:`.plates.METADATA_COLUMNS`), one per mapped channel.

        Parameters
        ----------
        channels : mapping of str to str
            The file's channel name -> the plate channel (``"nucleus"``, ``"protein"``); channels
            not named here are left out.
        **columns
            Columns the file cannot state (``gene``, ``cell_line``, ``site``, ...).

        Returns
        -------
        list of dict
            With ``well``, ``field_id``, ``channel``, ``height``, ``width``, ``bit_depth`` and the
            provenance columns; a field the file does not state is None, for the suites to name.

        Raises
        ------
        OmeMetadataError
            When a channel named in ``channels`` is not in the file (field ``channel_names``).
        """
        names = list(self.channel_names or ())
        rows = []
        for name, plate_channel in channels.items():
            if name not in names:
                raise OmeMetadataError(
                    f"channel {name!r} is not in the file (channels: {names})", path=self.path, field="channel_names"
                )
            c = names.index(name)
            rows.append(
                {
                    **columns,
                    "well": self.well,
                    "field_id": self.field_id,
                    "channel": plate_channel,
                    "height": self.shape[1],
                    "width": self.shape[2],
                    "bit_depth": np.dtype(self.dtype).itemsize * 8,
                    "instrument": self.instrument,
                    "objective": self.objective,
                    "numerical_aperture": self.numerical_aperture,
                    "pixel_size_um": self.pixel_size_um,
                    "exposure_ms": _at(self.exposure_ms, c),
                    "excitation_nm": _at(self.excitation_nm, c),
                    "emission_nm": _at(self.emission_nm, c),
                    "acquisition_time": self.acquisition_time,
                    "operator": self.operator,
                }
            )
        return rows


def _at(values: Sequence, i: int):
    return values[i] if i < len(values) else None


def well_name(row: int, column: int) -> str:
    """``A01``-style name of a 0-based (row, column) well position."""
    if not (0 <= int(row) < len(_ROWS)) or int(column) < 0:
        raise ValueError(f"well position ({row}, {column}) is outside A..Z x 1..")
    return f"{_ROWS[int(row)]}{int(column) + 1:02d}"


def _iso_utc(value: datetime | str | None) -> tuple[str | None, str | None]:
    """(ISO 8601 UTC text, None) or (None, reason); (None, None) when absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None, f"not an ISO 8601 time: {text!r}"
    if value.tzinfo is None:
        return None, f"{value.isoformat()} has no time zone"
    value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds").replace("+00:00", "Z"), None


def _unit(value: Any) -> str:
    return str(getattr(value, "value", value))


def _convert(value: float | None, unit: Any, table: Mapping[str, float]) -> tuple[float | None, str | None]:
    if value is None:
        return None, None
    u = _unit(unit)
    if u not in table:
        return None, f"unit {u!r} is not one of {sorted(table)}"
    return float(value) * table[u], None


def _positive(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value > 0 else None


# ---------------------------------------------------------------------------------- OME-XML


def provenance_from_ome(
    ome, image_index: int = 0, path: str | Path = "", fmt: str = "ome-tiff", shape=(), dtype: str = ""
) -> ImageProvenance:
    """Map an OME metadata model (``ome_types.OME``) to :class:`ImageProvenance`.

    Parameters
    ----------
    ome : ome_types.OME
        The file's OME-XML as parsed by ``ome_types`` (``BioImage.ome_metadata``).
    image_index : int
        Which ``Image`` of the model.
    path : path-like
        The file, named in errors.
    fmt : str
        The format recorded.
    shape : tuple of int
        (channel, y, x) of the pixels; default from ``Pixels@SizeC/Y/X``.
    dtype : str
        Pixel type; default ``Pixels@Type``.

    Raises
    ------
    OmeMetadataError
        When the model has no image ``image_index`` (field ``images``).
    """
    if not 0 <= image_index < len(ome.images):
        raise OmeMetadataError(
            f"no image {image_index} (the file has {len(ome.images)})", path=path, field="images"
        )
    image = ome.images[image_index]
    px = image.pixels
    problems: dict[str, str] = {}

    sx, ex = _convert(px.physical_size_x, px.physical_size_x_unit, _TO_UM)
    sy, ey = _convert(px.physical_size_y, px.physical_size_y_unit, _TO_UM)
    pixel = None
    if ex or ey:
        problems["pixel_size_um"] = ex or ey
    elif sx is not None and sy is not None:
        if _positive(sx) is None or _positive(sy) is None:
            problems["pixel_size_um"] = f"not positive ({sx}, {sy})"
        elif not math.isclose(sx, sy, rel_tol=1e-6):
            problems["pixel_size_um"] = f"pixels are not square (x {sx} um, y {sy} um)"
        else:
            pixel = sx
    elif (sx is None) != (sy is None):
        problems["pixel_size_um"] = "only one of PhysicalSizeX/PhysicalSizeY is stated"

    names = [c.name for c in px.channels]
    channel_names = tuple(names) if names and all(n for n in names) else None
    if names and channel_names is None:
        problems["channel_names"] = f"channel(s) {[i for i, n in enumerate(names) if not n]} have no name"

    excitation, emission = [], []
    for c in px.channels:
        for values, v, u in (
            (excitation, c.excitation_wavelength, c.excitation_wavelength_unit),
            (emission, c.emission_wavelength, c.emission_wavelength_unit),
        ):
            nm, err = _convert(v, u, _TO_NM)
            values.append(nm)
            if err:
                problems.setdefault("excitation_nm" if values is excitation else "emission_nm", err)
    exposure = []
    for ci in range(len(px.channels)):
        plane = next((p for p in px.planes if (p.the_c or 0) == ci), None)
        ms, err = _convert(None if plane is None else plane.exposure_time,
                           None if plane is None else plane.exposure_time_unit, _TO_MS)
        exposure.append(ms)
        if err:
            problems.setdefault("exposure_ms", err)

    when, err = _iso_utc(image.acquisition_date)
    if err:
        problems["acquisition_time"] = err

    instrument = objective = na = None
    inst = _by_id(ome.instruments, image.instrument_ref)
    if inst is not None:
        instrument = (inst.microscope.model or None) if inst.microscope is not None else None
        obj = _by_id(inst.objectives, image.objective_settings)
        if obj is None and len(inst.objectives) == 1:  # one objective on the instrument: the one used
            obj = inst.objectives[0]
        if obj is not None:
            objective, na = obj.model or None, obj.lens_na

    operator = None
    exp = _by_id(ome.experimenters, image.experimenter_ref)
    if exp is not None:
        operator = exp.user_name or " ".join(x for x in (exp.first_name, exp.last_name) if x) or None

    well = field_id = plate_name = None
    for plate in ome.plates:
        for w in plate.wells:
            for k, ws in enumerate(w.well_samples):
                if ws.image_ref is not None and ws.image_ref.id == image.id:
                    try:
                        well = well_name(w.row, w.column)
                    except ValueError as e:
                        problems["well"] = str(e)
                    field_id, plate_name = k + 1, plate.name

    return ImageProvenance(
        path=str(path),
        format=fmt,
        image_index=image_index,
        shape=tuple(int(s) for s in shape) or (px.size_c, px.size_y, px.size_x),
        dtype=dtype or _unit(px.type),
        pixel_size_um=pixel,
        channel_names=channel_names,
        well=well,
        field_id=field_id,
        acquisition_time=when,
        instrument=instrument,
        objective=objective,
        numerical_aperture=na,
        operator=operator,
        excitation_nm=tuple(excitation),
        emission_nm=tuple(emission),
        exposure_ms=tuple(exposure),
        plate_name=plate_name,
        problems=problems,
    )


def _by_id(items, ref):
    if ref is None:
        return None
    return next((x for x in items if x.id == ref.id), None)


# ---------------------------------------------------------------------------------- CZI XML


def _text(node: ET.Element | None, path: str) -> str | None:
    if node is None:
        return None
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        return None
    return found.text.strip()


def _float(text: str | None, name: str, problems: dict) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        problems.setdefault(name, f"not a number: {text!r}")
        return None


def provenance_from_czi(
    metadata: ET.Element,
    pixel_size_xy_um: tuple[float | None, float | None],
    channel_names: Sequence[str] | None,
    shape: Sequence[int],
    dtype: str,
    scene_index: int = 0,
    path: str | Path = "",
) -> ImageProvenance:
    """Map a CZI file's XML metadata (``bioio_czi.Reader.metadata``) to :class:`ImageProvenance`.

    Parameters
    ----------
    metadata : xml.etree.ElementTree.Element
        The ``ImageDocument`` element.
    pixel_size_xy_um : (float or None, float or None)
        The reader's physical pixel size (x, y), micrometres (``physical_pixel_sizes``); zero
        (what a writer without scaling stores) counts as not stated.
    channel_names : sequence of str, optional
        The reader's channel names.
    shape : sequence of int
        (channel, y, x) of the scene's pixels.
    dtype : str
        Pixel type.
    scene_index : int
        The scene (``S`` index) whose well position is wanted.
    path : path-like
        The file, named in errors.
    """
    problems: dict[str, str] = {}
    info = metadata.find("Metadata/Information")
    image = None if info is None else info.find("Image")
    sx, sy = (_positive(None if v is None else float(v)) for v in pixel_size_xy_um)
    pixel = None
    if sx is not None and sy is not None:
        if math.isclose(sx, sy, rel_tol=1e-6):
            pixel = sx
        else:
            problems["pixel_size_um"] = f"pixels are not square (x {sx} um, y {sy} um)"
    names = tuple(str(n) for n in channel_names) if channel_names and all(channel_names) else None

    channels = [] if image is None else image.findall("Dimensions/Channels/Channel")
    excitation = tuple(_float(_text(c, "ExcitationWavelength"), "excitation_nm", problems) for c in channels)
    emission = tuple(_float(_text(c, "EmissionWavelength"), "emission_nm", problems) for c in channels)

    when, err = _iso_utc(_text(image, "AcquisitionDateAndTime"))
    if err:
        problems["acquisition_time"] = err

    microscope = None if info is None else info.find("Instrument/Microscopes/Microscope")
    instrument = None
    if microscope is not None:
        instrument = microscope.get("Name") or _text(microscope, "Manufacturer/Model")
    objective_el = None if info is None else info.find("Instrument/Objectives/Objective")
    objective = na = None
    if objective_el is not None:
        objective = objective_el.get("Name") or _text(objective_el, "Manufacturer/Model")
        na = _float(_text(objective_el, "LensNA"), "numerical_aperture", problems)
    operator = _text(info, "Document/UserName")

    well = None
    for scene in [] if image is None else image.findall("Dimensions/S/Scenes/Scene"):
        if scene.get("Index") is not None and int(scene.get("Index")) == scene_index:
            row, col = _text(scene, "Shape/RowIndex"), _text(scene, "Shape/ColumnIndex")
            if row is not None and col is not None:
                try:
                    well = well_name(int(row), int(col))
                except ValueError as e:
                    problems["well"] = f"row {row!r}, column {col!r}: {e}"

    return ImageProvenance(
        path=str(path),
        format="czi",
        image_index=scene_index,
        shape=tuple(int(s) for s in shape),
        dtype=str(dtype),
        pixel_size_um=pixel,
        channel_names=names,
        well=well,
        field_id=None,
        acquisition_time=when,
        instrument=instrument,
        objective=objective,
        numerical_aperture=na,
        operator=operator,
        excitation_nm=excitation,
        emission_nm=emission,
        exposure_ms=(),
        problems=problems,
    )


# ---------------------------------------------------------------------------------- reading


def ome_format(path: str | Path) -> str:
    """``"ome-tiff"`` or ``"czi"`` from the file name; else :class:`ImageFormatError` (field ``file_name``)."""
    name = Path(path).name.lower()
    if name.endswith(OME_TIFF_SUFFIXES):
        return "ome-tiff"
    if name.endswith(CZI_SUFFIXES):
        return "czi"
    raise ImageFormatError(
        f"not an OME-TIFF ({', '.join(OME_TIFF_SUFFIXES)}) or CZI ({', '.join(CZI_SUFFIXES)}) file",
        path=path,
        field="file_name",
    )


def open_bioimage(path: str | Path):
    """A ``bioio.BioImage`` over ``path`` with the plugin its format calls for (no plugin discovery)."""
    path = Path(path)
    fmt = ome_format(path)
    if not path.is_file():
        raise ImageFormatError("image file is missing", path=path, field="file_name")
    from bioio import BioImage

    if fmt == "ome-tiff":
        import bioio_ome_tiff

        reader = bioio_ome_tiff.Reader
    else:
        import bioio_czi

        reader = bioio_czi.Reader
    try:
        return BioImage(path, reader=reader)
    except Exception as e:  # plugins raise many types on bad files; re-raised naming the file
        raise ImageFormatError(f"cannot read {fmt} ({type(e).__name__}: {e})", path=path) from e


def read_provenance(path: str | Path, image_index: int = 0, img=None) -> ImageProvenance:
    """The provenance of one image (scene) of an OME-TIFF or CZI file, without reading pixels.

    Parameters
    ----------
    path : path-like
        The file.
    image_index : int
        The image (OME-TIFF) or scene (CZI).
    img : bioio.BioImage, optional
        Already opened by :func:`open_bioimage`.

    Raises
    ------
    ImageFormatError
        When the file is missing, not one of the two formats, or unreadable.
    OmeMetadataError
        When the file has no image ``image_index`` (field ``images``).
    """
    path = Path(path)
    img = img if img is not None else open_bioimage(path)
    fmt = ome_format(path)
    if not 0 <= image_index < len(img.scenes):
        raise OmeMetadataError(f"no image {image_index} (the file has {len(img.scenes)})", path=path, field="images")
    try:
        img.set_scene(image_index)
        dims = img.dims
        shape = (dims.C, dims.Y, dims.X)
        dtype = str(np.dtype(img.dtype))
        if fmt == "ome-tiff":
            return provenance_from_ome(img.ome_metadata, image_index, path, fmt, shape, dtype)
        sizes = img.physical_pixel_sizes
        return provenance_from_czi(
            img.metadata, (sizes.X, sizes.Y), list(img.channel_names), shape, dtype, image_index, path
        )
    except (ImageFormatError, OmeMetadataError):
        raise
    except Exception as e:  # metadata parsers raise many types on malformed XML
        raise ImageFormatError(f"cannot read {fmt} metadata ({type(e).__name__}: {e})", path=path) from e


def read_ome_image(
    path: str | Path, image_index: int = 0, required: Sequence[str] | None = REQUIRED_FIELDS
) -> tuple[np.ndarray, ImageProvenance]:
    """Pixels and provenance of one image (scene) of an OME-TIFF or CZI file.

    Parameters
    ----------
    path : path-like
        The file.
    image_index : int
        The image (OME-TIFF) or scene (CZI).
    required : sequence of str, optional
        Provenance fields that must be usable (:meth:`ImageProvenance.require`); None checks none.

    Returns
    -------
    pixels : numpy.ndarray, shape (channel, y, x)
        The file's dtype, first time point and z plane.
    provenance : ImageProvenance

    Raises
    ------
    ImageFormatError
        As :func:`read_provenance`, or when the pixels cannot be decoded.
    OmeMetadataError
        When a ``required`` field is missing, naming it.
    """
    path = Path(path)
    img = open_bioimage(path)
    prov = read_provenance(path, image_index, img)
    if required is not None:
        prov.require(required)
    try:
        pixels = np.asarray(img.get_image_data("CYX", T=0, Z=0))
    except Exception as e:  # decoders raise many types on corrupt data
        raise ImageFormatError(f"cannot decode pixels ({type(e).__name__}: {e})", path=path) from e
    if tuple(pixels.shape) != prov.shape:
        prov = replace(prov, shape=tuple(int(s) for s in pixels.shape))
    return pixels, prov
