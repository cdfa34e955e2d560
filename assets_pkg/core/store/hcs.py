"""A plate as OME-Zarr HCS (NGFF 0.5, Zarr v3), with the store's nucleus masks as labels.

:func:`export_hcs` writes a plate folder (:mod:`assets_pkg.core.imaging.plates`) and the
current nucleus masks the frame store holds for it (:meth:`.FrameStore.write_masks`) as::

    <out>/zarr.json                       group; attributes.ome: version "0.5", plate (rows, columns, wells, field_count)
    <out>/<row>/zarr.json                 group (row "A")
    <out>/<row>/<col>/zarr.json           group; attributes.ome.well: images (one per field)
    <out>/<row>/<col>/<i>/zarr.json       group; attributes.ome: multiscales (axes c, y, x; scale [1, px, px] um), omero channels
    <out>/<row>/<col>/<i>/0/              array (channel, y, x) of the plate's dtype, channels :data:`CHANNELS`
    <out>/<row>/<col>/<i>/labels/zarr.json          group; attributes.ome.labels ["nuclei"]
    <out>/<row>/<col>/<i>/labels/nuclei/zarr.json   group; attributes.ome: multiscales, image-label (source ../../)
    <out>/<row>/<col>/<i>/labels/nuclei/0/          array (1, y, x) int32, the field's nucleus labels

Column names are the well's column number without leading zero (well ``A01`` is ``A/1``);
field ``i`` is the well's i-th field by ``field_id``, whose value stays in the image group's
``attributes.cellscape`` with, per channel, the source file's name, its SHA-256 as recorded
(``sha256``) and as measured with its byte count (``source_sha256``, ``file_bytes``), and the
exported pixels' SHA-256 (``pixel_sha256``).  The root group's ``attributes.cellscape`` holds
plate.json (``plate``) and the metadata.csv rows (``metadata``: columns and text cells), so the
plate's identity and provenance travel with the pixels and the export ingests like the folder
(:mod:`.hcs_source`).

Arrays are written with TensorStore's ``zarr3`` driver and the JSON metadata by this module.
Each array is one shard (``sharding_indexed``; inner chunks of at most 256 x 256 pixels,
zstd-compressed, crc32c-checked), so a field is a handful of files: the plate holds about
seven files per field whatever the image size, never one per chunk.  The export is written
into a hidden temporary sibling folder and renamed into place; an existing ``out`` is never
overwritten, and the plate's files are only read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tensorstore as ts

from ..errors import PlateFormatError, StoreError
from ..imaging.io import read_image
from ..imaging.plates import CHANNELS, PIXEL_DTYPES, Plate, read_plate, sha256_file
from .frame_store import FrameStore
from .hcs_source import CELLSCAPE_KEY, metadata_records, pixel_sha256
from .ingest import plate_digest, plate_pixel_size

__all__ = ["NGFF_VERSION", "LABEL_NAME", "CHANNEL_COLORS", "export_hcs", "well_path"]

NGFF_VERSION = "0.5"
#: Name of the nucleus label image of every field.
LABEL_NAME = "nuclei"
#: Display colour (RRGGBB) of each channel in the omero metadata.
CHANNEL_COLORS = {"nucleus": "0000FF", "protein": "00FF00"}
_INNER = 256  # inner chunk edge, pixels
_WELL_RE = re.compile(r"^([A-P])(\d{2})$")


def well_path(well: str) -> tuple[str, str]:
    """(row, column) names of a well in the HCS layout: ``"A01"`` -> ``("A", "1")``."""
    m = _WELL_RE.match(str(well))
    if not m:
        raise PlateFormatError(f"invalid well {well!r}: expected A01..P24", field="well")
    return m.group(1), str(int(m.group(2)))


def _group(path: Path, ome: dict | None = None, *, compact: bool = False, **extra) -> None:
    path.mkdir(parents=True, exist_ok=True)
    attributes = dict(extra)
    if ome is not None:
        attributes["ome"] = {"version": NGFF_VERSION, **ome}
    doc = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    text = json.dumps(doc, separators=(",", ":")) if compact else json.dumps(doc, indent=2)
    (path / "zarr.json").write_text(text + "\n", encoding="utf-8")


def _array_metadata(shape: Sequence[int], dtype: str, dimension_names: Sequence[str]) -> dict:
    """Zarr v3 metadata of one array stored as a single shard of (1, <=256, <=256) inner chunks.

    A shard must hold whole inner chunks, so its shape is the array's rounded up to a multiple
    of them (a 320 px field is one 512 x 512 shard of four chunks; the part outside the array
    is never written)."""
    shape = [int(s) for s in shape]
    inner = [1, *(min(_INNER, s) for s in shape[1:])]
    shard = [shape[0], *(-(-s // i) * i for s, i in zip(shape[1:], inner[1:], strict=True))]
    return {
        "shape": shape,
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": shard}},
        "chunk_key_encoding": {"name": "default"},
        "fill_value": 0,
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": inner,
                    "codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "zstd", "configuration": {"level": 3, "checksum": False}},
                        {"name": "crc32c"},
                    ],
                    "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                    "index_location": "end",
                },
            }
        ],
        "dimension_names": list(dimension_names),
    }


def _write_array(path: Path, data: np.ndarray, dimension_names: Sequence[str]) -> None:
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(path) + "/"},
        "metadata": _array_metadata(data.shape, data.dtype.name, dimension_names),
        "create": True,
    }
    arr = ts.open(spec).result()
    arr.write(data).result()


def _multiscales(pixel_size_um: float, name: str) -> list[dict]:
    return [
        {
            "name": name,
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, pixel_size_um, pixel_size_um]}]}
            ],
        }
    ]


def _omero(pixels: np.ndarray) -> dict:
    top = float(np.iinfo(pixels.dtype).max)
    channels = []
    for k, name in enumerate(CHANNELS):
        channels.append(
            {
                "label": name,
                "color": CHANNEL_COLORS[name],
                "active": True,
                "window": {"min": 0.0, "max": top, "start": float(pixels[k].min()), "end": float(pixels[k].max())},
            }
        )
    return {"channels": channels, "rdefs": {"model": "color"}}


def _label_colors(labels: np.ndarray) -> list[dict]:
    """One display colour per nucleus label present (0, the background, excluded), fixed by the label value."""
    values = np.unique(labels)
    values = values[values > 0]
    hue = (values * 0.618033988749895) % 1.0  # golden-ratio hues: neighbouring labels differ
    rgb = np.clip(np.abs(((hue[:, None] * 6 + np.array([0, 4, 2])) % 6) - 3) - 1, 0, 1)
    rgba = np.concatenate([np.round(rgb * 255), np.full((len(values), 1), 255)], axis=1).astype(int)
    return [{"label-value": int(v), "rgba": [int(x) for x in c]} for v, c in zip(values, rgba, strict=True)]


def _plate_masks(store: FrameStore, plate: Plate, version: str | None) -> dict[tuple[str, int], np.ndarray]:
    try:
        labels, table = store.read_masks(plate.plate_id, version)
    except StoreError as e:
        raise StoreError(
            f"no nucleus masks for plate {plate.plate_id!r} in the store ({e.reason}); run nuclei_masks first "
            "or export without labels",
            path=e.path,
            field="masks",
        ) from e
    return {(str(w), int(f)): labels[k] for k, (w, f) in enumerate(zip(table["well"], table["field_id"], strict=True))}


def export_hcs(
    plate_dir: str | Path,
    out: str | Path,
    store: FrameStore | None = None,
    masks_version: str | None = None,
    replace: bool = False,
) -> dict:
    """Write a plate folder, and its nucleus masks from the store, as one OME-Zarr HCS plate.

    Parameters
    ----------
    plate_dir : path-like
        The plate folder; only read.
    out : path-like
        The ``.ome.zarr`` folder to create; must not exist.
    store : FrameStore, optional
        Where the plate's nucleus masks are (:meth:`.FrameStore.read_masks`); None exports the
        images without labels.
    masks_version : str, optional
        The masks version to export; default the current one.  A field the masks leave out
        because their provenance lists it in ``excluded_fields`` (an image defect) is exported
        without labels.
    replace : bool
        Replace an existing ``out`` (a plate this function wrote): the new plate is written
        aside and swapped in by two renames, the old one deleted afterwards.

    Returns
    -------
    dict
        ``path``, ``plate_id``, ``wells``, ``fields``, ``files`` (count in the export),
        ``pixel_size_um``, ``labels`` (bool), ``labelled_fields``, ``masks_version`` and
        ``content_sha256`` (:func:`~.ingest.plate_digest` of the plate exported).

    Raises
    ------
    PlateFormatError
        When the plate is unreadable, lacks a channel of a field, has no single pixel size
        (field ``pixel_size_um``) or an image of another type than uint8/uint16, or when
        ``out`` exists.
    StoreError
        When the store holds no masks for the plate (field ``masks``), or none for a field, or
        masks of another shape than the field (field ``masks``).
    """
    plate = read_plate(plate_dir)
    out = Path(out)
    if out.exists() and not (replace and (out / "zarr.json").is_file()):
        raise PlateFormatError("output exists; refusing to overwrite", path=out)
    pixel_size = plate_pixel_size(plate)
    fields = plate.fields()
    for ch in CHANNELS:
        if ch not in fields.columns or fields[ch].isna().any():
            raise PlateFormatError(f"a field lacks its {ch} channel", path=plate.path / "metadata.csv", field="channel")
    masks = _plate_masks(store, plate, masks_version) if store is not None else None
    manifest = store.read_masks_manifest(plate.plate_id, masks_version) if store is not None else {}
    version = manifest.get("version")
    unmasked = {(str(x.get("well")), int(x.get("field_id", -1)))
                for x in manifest.get("provenance", {}).get("excluded_fields", []) if isinstance(x, dict)}
    meta = plate.metadata.set_index("file_name")
    digest = plate_digest(plate)
    labelled = 0

    fields = fields.assign(_row=[well_path(w)[0] for w in fields["well"]], _col=[well_path(w)[1] for w in fields["well"]])
    rows = sorted(set(fields["_row"]))
    cols = sorted(set(fields["_col"]), key=int)
    per_well = {w: g.sort_values("field_id") for w, g in fields.groupby("well", sort=True)}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        wells_meta = []
        for well, g in per_well.items():
            r, c = well_path(well)
            wells_meta.append({"path": f"{r}/{c}", "rowIndex": rows.index(r), "columnIndex": cols.index(c)})
            _group(tmp / r)
            _group(tmp / r / c, {"well": {"images": [{"path": str(i)} for i in range(len(g))]}})
            for i, rec in enumerate(g.itertuples(index=False)):
                files = {ch: str(getattr(rec, ch)) for ch in CHANNELS}
                planes = [read_image(plate.image_path(files[ch]), dtypes=PIXEL_DTYPES) for ch in CHANNELS]
                if len({p.dtype for p in planes}) != 1 or len({p.shape for p in planes}) != 1:
                    raise PlateFormatError(
                        f"channels of {well} field {rec.field_id} differ in dtype or shape",
                        path=plate.image_path(files[CHANNELS[1]]),
                        field="height/width",
                    )
                pixels = np.stack(planes)
                fdir = tmp / r / c / str(i)
                sums = {ch: _cell(meta, files[ch], "sha256") for ch in CHANNELS}
                sources = {ch: plate.image_path(files[ch]) for ch in CHANNELS}
                _group(
                    fdir,
                    {"multiscales": _multiscales(pixel_size, f"{plate.plate_id} {well} f{int(rec.field_id)}"),
                     "omero": _omero(pixels)},
                    cellscape={"plate_id": plate.plate_id, "well": well, "field_id": int(rec.field_id),
                               "files": files, "sha256": sums,
                               "file_bytes": {ch: sources[ch].stat().st_size for ch in CHANNELS},
                               "source_sha256": {ch: sha256_file(sources[ch], follow_symlinks=False)
                                                 for ch in CHANNELS},
                               "pixel_sha256": {ch: pixel_sha256(pixels[k]) for k, ch in enumerate(CHANNELS)}},
                )
                _write_array(fdir / "0", pixels, ["c", "y", "x"])
                if masks is not None:
                    lab = masks.get((well, int(rec.field_id)))
                    if lab is None and (well, int(rec.field_id)) in unmasked:
                        continue  # left out of the masks for an image defect: no labels
                    if lab is None:
                        raise StoreError(f"the masks hold no field ({well}, {int(rec.field_id)})", field="masks")
                    if lab.shape != pixels.shape[1:]:
                        raise StoreError(
                            f"masks of ({well}, {int(rec.field_id)}) are {lab.shape}, the field {pixels.shape[1:]}",
                            field="masks",
                        )
                    _group(fdir / "labels", {"labels": [LABEL_NAME]})
                    ldir = fdir / "labels" / LABEL_NAME
                    _group(
                        ldir,
                        {"multiscales": _multiscales(pixel_size, LABEL_NAME),
                         "image-label": {"source": {"image": "../../"}, "colors": _label_colors(lab)}},
                        cellscape={"masks_version": version},
                    )
                    _write_array(ldir / "0", np.ascontiguousarray(lab[None], dtype=np.int32), ["c", "y", "x"])
                    labelled += 1
        _group(
            tmp,
            {
                "plate": {
                    "name": plate.plate_id,
                    "rows": [{"name": r} for r in rows],
                    "columns": [{"name": c} for c in cols],
                    "wells": wells_meta,
                    "field_count": max(len(g) for g in per_well.values()),
                }
            },
            compact=True,  # one metadata row per image: no indentation
            # the plate's own records beside "ome": what ingest validates (read_hcs_plate)
            **{CELLSCAPE_KEY: {"plate": plate.info, "metadata": metadata_records(plate.metadata),
                               "content_sha256": digest, "masks_version": version}},
        )
        os.chmod(tmp, 0o755)
        _publish(tmp, out, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_files = sum(len(files) for _, _, files in os.walk(out))
    return {
        "path": str(out),
        "plate_id": plate.plate_id,
        "wells": len(per_well),
        "fields": int(len(fields)),
        "files": n_files,
        "pixel_size_um": pixel_size,
        "labels": masks is not None,
        "labelled_fields": labelled,
        "masks_version": version,
        "content_sha256": digest,
    }


def _publish(tmp: Path, out: Path, replace: bool) -> None:
    """Rename ``tmp`` to ``out``; with ``replace`` an existing ``out`` is renamed aside first and deleted after."""
    try:
        os.rename(tmp, out)
        return
    except OSError:
        if not (replace and out.exists()):
            raise
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / out.name)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old / out.name, out)  # put the previous plate back
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _cell(meta: pd.DataFrame, file_name: str, column: str) -> str | None:
    if column not in meta.columns or file_name not in meta.index:
        return None
    v = meta.loc[file_name, column]
    return None if pd.isna(v) else str(v)
