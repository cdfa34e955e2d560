"""Plate ingest: validate, find nuclei, crop frames, write them to the frame store.

One implementation behind both ``cellscape ingest`` and the Dagster assets: the assets call
the step functions (:func:`detect_plate_nuclei`, :func:`crop_plate_frames`) one per asset,
the CLI calls :func:`ingest_plate`, which chains them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PlateFormatError, ValidationFailed
from ..imaging.plates import Plate, read_plate
from ..qc.config import PlateQCConfig
from ..segmentation.nuclei import detect_nuclei, nucleus_centres
from .config import FrameConfig, IngestParams, NucleusConfig
from .frame_store import FrameStore
from .frames import FRAME_TABLE_COLUMNS, extract_frames


@dataclass
class FieldNuclei:
    """Nuclei of one field: label image and centre table."""

    well: str
    field_id: int
    labels: np.ndarray
    centres: pd.DataFrame


@dataclass
class IngestResult:
    """What :func:`ingest_plate` did.

    ``excluded`` lists the fields left out for an image defect configured to ``exclude``
    (:meth:`~assets_pkg.core.qc.report.ValidationReport.excluded_table`); ``n_fields`` counts
    the fields ingested.
    """

    plate_id: str
    n_fields: int
    n_nuclei: int
    n_frames: int
    seconds: float
    manifest: dict = field(default_factory=dict)
    excluded: list[dict] = field(default_factory=list)


def plate_pixel_size(plate: Plate) -> float:
    """The plate's pixel size in µm (metadata column ``pixel_size_um``, one value per plate)."""
    col = plate.metadata.get("pixel_size_um")
    vals = pd.to_numeric(col, errors="coerce").dropna().unique() if col is not None else []
    if len(vals) != 1:
        raise PlateFormatError(
            f"expected one pixel size per plate, found {list(vals)}",
            path=plate.path / "metadata.csv",
            field="pixel_size_um",
        )
    return float(vals[0])


def plate_digest(plate: Plate, from_files: bool = False) -> str:
    """SHA-256 over the plate's sorted (file name, sha256) pairs: its content version.

    With ``from_files`` the file checksums are computed from the bytes on disk (a missing
    file, a symbolic link or anything but a regular file counts as the empty string) instead of
    taken from metadata.csv.
    """
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    from ..imaging.plates import sha256_file

    names = plate.metadata["file_name"].astype(str).tolist()
    if from_files:

        def digest(name: str) -> str:
            try:  # only regular files, never through a link: anything else counts as missing
                return sha256_file(plate.image_path(name), follow_symlinks=False)
            except PlateFormatError:
                return ""

        with ThreadPoolExecutor(max_workers=4) as pool:
            sums = list(pool.map(digest, names))
    else:
        sums = plate.metadata["sha256"].astype(str).tolist()
    pairs = sorted(zip(names, sums, strict=True))
    return hashlib.sha256("\n".join(f"{a} {b}" for a, b in pairs).encode()).hexdigest()


def _field_paths(plate: Plate, exclude: frozenset[tuple[str, int]] = frozenset()) -> pd.DataFrame:
    fields = plate.fields()
    for ch in ("nucleus", "protein"):
        if ch not in fields.columns or fields[ch].isna().any():
            raise PlateFormatError(f"a field lacks its {ch} channel", path=plate.path / "metadata.csv", field="channel")
    if exclude:
        keep = [(str(w), int(f)) not in exclude for w, f in zip(fields["well"], fields["field_id"], strict=True)]
        fields = fields[keep].reset_index(drop=True)
    return fields


def detect_plate_nuclei(
    plate: Plate,
    params: NucleusConfig = NucleusConfig(),
    progress: Callable[[int, int], None] | None = None,
    segment_fn: Callable[[np.ndarray, float], np.ndarray] | None = None,
    exclude: Iterable[tuple[str, int]] = (),
) -> list[FieldNuclei]:
    """Detect nuclei on every field's Hoechst channel.

    Parameters
    ----------
    plate, params, progress
        The plate, the nucleus diameter (``params.nucleus_diameter_um``) and a callback
        ``progress(done, total)``.
    segment_fn : callable, optional
        ``segment_fn(image, nucleus_diameter_px) -> labels`` (for example a trained U-Net's
        :meth:`~assets_pkg.core.segmentation.training.SegmentationModel.segment`); the classical
        :func:`~assets_pkg.core.segmentation.nuclei.detect_nuclei` when None.
    exclude : iterable of (well, field_id)
        Fields left out (for example those with an image defect,
        :attr:`~assets_pkg.core.qc.report.ValidationReport.excluded_fields`).

    Returns one :class:`FieldNuclei` per field kept, in (well, field_id) order.
    """
    px = plate_pixel_size(plate)
    fields = _field_paths(plate, frozenset((str(w), int(f)) for w, f in exclude))
    out = []
    for i, row in enumerate(fields.itertuples(index=False)):
        nuc = plate.read_field(row.nucleus)
        if segment_fn is None:
            labels = detect_nuclei(nuc, pixel_size_um=px, nucleus_diameter_um=params.nucleus_diameter_um)
        else:
            labels = np.asarray(segment_fn(nuc, params.nucleus_diameter_um / px), np.int32)
        out.append(FieldNuclei(row.well, int(row.field_id), labels, nucleus_centres(labels)))
        if progress:
            progress(i + 1, len(fields))
    return out


def _localization_columns(plate: Plate, well: str) -> tuple[str, str]:
    info = plate.wells.get(well)
    if info is None:
        raise PlateFormatError(f"well {well} has images but no entry in plate.json", path=plate.path / "plate.json", field="wells")
    locs = sorted(info.localizations, key=lambda x: -x.grade)
    return ";".join(x.name for x in locs), ";".join(f"{x.name}:{x.grade}" for x in locs)


def crop_plate_frames(
    plate: Plate,
    nuclei: list[FieldNuclei],
    params: FrameConfig = FrameConfig(),
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Cut nucleus-centred frames from every field (``params``: crop size and downsampling).

    Returns
    -------
    frames : ndarray, shape (N, crop_size, crop_size, 3), float32
        Channels: protein, nucleus, signed distance to the nuclear boundary (crop pixels,
        positive inside).
    table : pandas.DataFrame
        One row per frame, columns :data:`FRAME_TABLE_COLUMNS`.
    """
    factor = params.factor(plate_pixel_size(plate))
    fields = _field_paths(plate).set_index(["well", "field_id"])
    chunks, rows = [], []
    for i, fn in enumerate(nuclei):
        paths = fields.loc[(fn.well, fn.field_id)]
        nuc = plate.read_field(paths["nucleus"])
        prot = plate.read_field(paths["protein"], expect_shape=nuc.shape)
        frames, centres = extract_frames(nuc, prot, fn.labels, downsample=factor, crop_size=params.crop_size)
        loc, grades = _localization_columns(plate, fn.well)
        info = plate.wells[fn.well]
        area = fn.centres.set_index("label")["area_px"] if len(fn.centres) else pd.Series(dtype=float)
        for c in centres.itertuples(index=False):
            lab = int(c.label)
            rows.append(
                {
                    "frame_id": f"{plate.plate_id}/{fn.well}/f{fn.field_id:02d}/n{lab:04d}",
                    "plate_id": plate.plate_id,
                    "well": fn.well,
                    "field_id": fn.field_id,
                    "gene": info.gene,
                    "ensg_id": info.ensg_id,
                    "localization": loc,
                    "localization_grades": grades,
                    "centre_y": float(c.centre_y),
                    "centre_x": float(c.centre_x),
                    "nucleus_label": lab,
                    "nucleus_area_px": float(area.get(lab, np.nan)),
                }
            )
        chunks.append(frames)
        if progress:
            progress(i + 1, len(nuclei))
    crop = params.crop_size
    frames = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, crop, crop, 3), np.float32)
    table = pd.DataFrame.from_records(rows, columns=[c for c in FRAME_TABLE_COLUMNS if c != "frame_index"])
    table.insert(0, "frame_index", np.arange(len(table), dtype=np.int64))
    table = table.astype({"field_id": "int64", "nucleus_label": "int64"})
    return frames.astype(np.float32, copy=False), table


def ingest_plate(
    plate_dir: str | Path,
    store: FrameStore,
    params: IngestParams = IngestParams(),
    provenance: dict | None = None,
    registry: dict | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    qc: PlateQCConfig | None = None,
) -> IngestResult:
    """Validate a plate folder and, when it passes, write the frames of its good fields to the store.

    Fields with an image defect whose action is ``exclude`` (``qc``, default every kind) are
    left out and listed in ``IngestResult.excluded`` and in the store's provenance
    (``excluded_fields``).

    Raises
    ------
    ValidationFailed
        When any suite fails (a defect set to ``block`` included), or every field is
        excluded; the store is not touched.  ``.report`` holds the
        :class:`~assets_pkg.core.qc.report.ValidationReport`.
    PlateFormatError
        When the folder is unreadable.
    """
    from ..qc.validate import validate_plate

    t0 = time.perf_counter()
    qc = PlateQCConfig() if qc is None else qc
    report = validate_plate(plate_dir, registry=registry, qc=qc)
    if not report.success:
        raise ValidationFailed(
            f"plate failed validation, not ingested:\n{report.to_text()}", path=plate_dir, report=report
        )
    plate = read_plate(plate_dir, qc.metadata_limits(), qc.image_limits())
    excluded = report.excluded_table()
    if excluded and len(excluded) == len(plate.fields()):
        raise ValidationFailed(
            f"every field has an image defect, nothing to ingest:\n{report.to_text()}", path=plate_dir, report=report
        )
    step = (lambda name: (lambda i, n: progress(name, i, n))) if progress else (lambda name: None)
    nuclei = detect_plate_nuclei(plate, params, progress=step("nuclei"), exclude=report.excluded_fields)
    frames, table = crop_plate_frames(plate, nuclei, params, progress=step("frames"))
    prov = {
        "source": str(Path(plate_dir).resolve()),
        "source_digest": plate_digest(plate),
        "ingest_params": params.model_dump(),
        "downsample": params.factor(plate_pixel_size(plate)),
        "excluded_fields": excluded,
        "qc": qc.model_dump(),
    }
    prov.update(provenance or {})
    manifest = store.write_plate(plate.plate_id, frames, table, prov)
    return IngestResult(
        plate_id=plate.plate_id,
        n_fields=len(nuclei),
        n_nuclei=int(sum(len(n.centres) for n in nuclei)),
        n_frames=int(len(table)),
        seconds=time.perf_counter() - t0,
        manifest=manifest,
        excluded=excluded,
    )


def ingest_image_folder(
    folder: str | Path,
    store: FrameStore,
    plate_id: str,
    pixel_size_um: float,
    params: IngestParams = IngestParams(),
    gene: str = "",
    ensg_id: str = "",
    provenance: dict | None = None,
) -> IngestResult:
    """Frames from a folder of nucleus/protein image pairs that has no plate metadata.

    Fields are paired by :func:`~assets_pkg.core.store.sources.read_image_folder`; every field is
    treated as one well of one protein (``gene``, ``ensg_id``), without localization labels.
    """
    from .sources import read_image_folder

    t0 = time.perf_counter()
    factor = params.factor(pixel_size_um)
    chunks, rows, n_nuclei = [], [], 0
    pairs = read_image_folder(folder)
    for field_id, (name, nuc, prot) in enumerate(pairs):
        labels = detect_nuclei(nuc, pixel_size_um=pixel_size_um, nucleus_diameter_um=params.nucleus_diameter_um)
        n_nuclei += int(labels.max())
        area = nucleus_centres(labels).set_index("label")["area_px"]
        frames, centres = extract_frames(nuc, prot, labels, downsample=factor, crop_size=params.crop_size)
        chunks.append(frames)
        for c in centres.itertuples(index=False):
            rows.append(
                {"frame_id": f"{plate_id}/{name}/f{field_id:02d}/n{int(c.label):04d}", "plate_id": plate_id,
                 "well": name, "field_id": field_id, "gene": gene, "ensg_id": ensg_id, "localization": "",
                 "localization_grades": "", "centre_y": float(c.centre_y), "centre_x": float(c.centre_x),
                 "nucleus_label": int(c.label), "nucleus_area_px": float(area.get(int(c.label), np.nan))}
            )
    crop = params.crop_size
    frames = np.concatenate(chunks) if chunks else np.zeros((0, crop, crop, 3), np.float32)
    table = pd.DataFrame.from_records(rows, columns=list(FRAME_TABLE_COLUMNS[1:]))
    table.insert(0, "frame_index", np.arange(len(table), dtype=np.int64))
    prov = {"source": str(Path(folder).resolve()), "kind": "image_folder", "pixel_size_um": pixel_size_um,
            "ingest_params": params.model_dump(), "downsample": factor}
    prov.update(provenance or {})
    manifest = store.write_plate(plate_id, frames, table, prov)
    return IngestResult(plate_id, len(pairs), n_nuclei, len(table), time.perf_counter() - t0, manifest)


def import_cytoself(folder: str | Path, store: FrameStore, plate_id: str, provenance: dict | None = None,
                    frames_per_pseudo_field: int | None = None) -> IngestResult:
    """Put released cytoself/OpenCell arrays (already cropped) into the frame store as one plate.

    Wells and fields follow :func:`~assets_pkg.core.store.sources.read_cytoself_arrays`: the
    gene is the well, a released ``FOV_id`` the field, and frames without one are grouped into
    pseudo-fields of ``frames_per_pseudo_field`` consecutive frames per protein (None: the
    reader's default).  The plate's provenance records the grouping (``field_grouping``).
    """
    from .sources import CYTOSELF_PSEUDO_FIELD_FRAMES, read_cytoself_arrays

    t0 = time.perf_counter()
    chunk = CYTOSELF_PSEUDO_FIELD_FRAMES if frames_per_pseudo_field is None else int(frames_per_pseudo_field)
    frames, table = read_cytoself_arrays(folder, plate_id=plate_id, frames_per_pseudo_field=chunk)
    pseudo = int((table["source_fov"] == "").sum())
    prov = {"source": str(Path(folder).resolve()), "kind": "cytoself_arrays",
            "field_grouping": {"well": "gene", "frames_with_fov_id": int(len(table)) - pseudo,
                               "frames_in_pseudo_fields": pseudo, "frames_per_pseudo_field": chunk}}
    prov.update(provenance or {})
    manifest = store.write_plate(plate_id, frames, table, prov)
    n_fields = int(table.groupby(["well", "field_id"]).ngroups)
    return IngestResult(plate_id, n_fields, len(table), len(table), time.perf_counter() - t0, manifest)
