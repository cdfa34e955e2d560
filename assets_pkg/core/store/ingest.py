"""Plate ingest: validate, find nuclei, crop frames, write them to the frame store.

One implementation behind both ``cellscape ingest`` and the Dagster assets: the assets call
the step functions one per asset (:func:`iter_plate_nuclei`, :func:`iter_plate_frames`: one
field at a time, streamed into the store like the CLI's frames),
the CLI calls :func:`ingest_plate`, which does both per field (:func:`field_frames`) and
gives the same frames and table.

Throughput (a 96-well x 18-field plate of 1024 px fields on 2 cores, ``benchmarks/bench_full_plate.py``):

- nuclei are found at the frame scale (``NucleusConfig.detect_um_per_px``, 0.4 µm: the block
  mean the frames use anyway, 4x fewer pixels) with the sizes scaled, and the centres mapped
  back to full-resolution coordinates; the labels stay at that scale inside ingest (one
  distance transform per field, for the distance channel) and are brought back to full
  resolution only where a caller wants them (:func:`detect_plate_nuclei`);
- each field's two images are read once, in a worker process: :func:`ingest_plate` runs
  fields over a pool of ``workers`` processes, results in field order, so the output does not
  depend on the worker count;
- frames stream into the store (:meth:`~.frame_store.FrameStore.write_plate_stream`) a shard
  at a time: a full plate's frames (~150k, ~18 GB of float32) are never all in memory.

Why one module: the per-asset steps and :func:`ingest_plate` must cut the same frames from the
same fields, so they share the private field listing, frame-table and worker helpers; split,
each half would import the other's private names.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
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
from .frames import (
    FRAME_TABLE_COLUMNS,
    cut_frames,
    default_downsample,
    downsample_image,
    extract_frames,
    frame_to_full_coords,
    full_to_frame_coords,
    upsample_labels,
)

#: Fields per worker below which :func:`ingest_plate` does not start a process pool (starting a
#: worker costs a second or two of imports).
MIN_FIELDS_PER_WORKER = 8


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


def _reader(plate: Plate) -> Plate:
    """The plate without its metadata table: what :meth:`Plate.read_field` needs, small to send to workers."""
    return dataclasses.replace(plate, metadata=plate.metadata.iloc[:0])


def detection_factor(params: NucleusConfig, pixel_size_um: float) -> float:
    """Factor by which a field is downsampled before nucleus detection (1.0: full resolution).

    :func:`~.frames.default_downsample` of ``params.detect_um_per_px`` (rounded as for frames,
    never below 1), so that at the default 0.4 µm detection runs on the frame pixels.
    """
    if params.detect_um_per_px is None:
        return 1.0
    return float(default_downsample(pixel_size_um, params.detect_um_per_px))


def detect_field_nuclei(
    nucleus: np.ndarray,
    pixel_size_um: float,
    params: NucleusConfig = NucleusConfig(),
    *,
    nucleus_small: np.ndarray | None = None,
    segment_fn: Callable[[np.ndarray, float], np.ndarray] | None = None,
) -> tuple[np.ndarray, pd.DataFrame, float]:
    """Nuclei of one field at the detection scale (see :func:`detection_factor`).

    Parameters
    ----------
    nucleus : ndarray, shape (height, width)
        Hoechst channel at full resolution.
    pixel_size_um : float
        Its pixel size, µm.
    params : NucleusConfig
        Expected nucleus diameter and detection pixel size.
    nucleus_small : ndarray, optional
        ``downsample_image(nucleus, factor)`` when the caller has it already.
    segment_fn : callable, optional
        ``segment_fn(image, nucleus_diameter_px) -> labels``, always run at full resolution;
        the classical :func:`~assets_pkg.core.segmentation.nuclei.detect_nuclei` when None.

    Returns
    -------
    labels : ndarray of int32, shape (h, w)
        Labels at the detection scale (the full shape when the factor is 1).
    centres : pandas.DataFrame
        :func:`~assets_pkg.core.segmentation.nuclei.nucleus_centres` of ``labels`` with the
        centres in full-resolution pixels and ``area_px`` in full-resolution pixels (float,
        the detection-scale area times ``factor**2``).
    factor : float
        The detection downsampling factor.
    """
    diameter_px = params.nucleus_diameter_um / pixel_size_um
    if segment_fn is not None:
        labels = np.asarray(segment_fn(nucleus, diameter_px), np.int32)
        return labels, nucleus_centres(labels), 1.0
    factor = detection_factor(params, pixel_size_um)
    if factor == 1.0:
        labels = detect_nuclei(nucleus, nucleus_diameter_px=diameter_px)
        return labels, nucleus_centres(labels), 1.0
    small = downsample_image(nucleus, factor) if nucleus_small is None else nucleus_small
    labels = detect_nuclei(small, nucleus_diameter_px=diameter_px / factor)
    centres = nucleus_centres(labels)
    centres["centre_y"] = frame_to_full_coords(centres["centre_y"].to_numpy(), factor)
    centres["centre_x"] = frame_to_full_coords(centres["centre_x"].to_numpy(), factor)
    centres["area_px"] = centres["area_px"].to_numpy(np.float64) * factor**2
    return labels, centres, factor


def _ordered_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``map(fn, items)`` over ``workers`` processes, results in input order.

    At most ``2 * workers`` items are in flight, so results never pile up in memory when the
    consumer is slower than the workers.  Workers are spawned (fresh interpreters: no forked
    TensorStore or JAX threads).
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    it = iter(items)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = deque(pool.submit(fn, x) for _, x in zip(range(2 * workers), it, strict=False))
        while pending:
            out = pending.popleft().result()
            for x in it:
                pending.append(pool.submit(fn, x))
                break
            yield out


def default_workers(n_fields: int) -> int:
    """Worker processes for ``n_fields`` fields: one per available core, at most one per
    :data:`MIN_FIELDS_PER_WORKER` fields (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, n_fields // MIN_FIELDS_PER_WORKER))


def _detect_job(job: tuple) -> FieldNuclei:
    reader, well, field_id, name, px, params = job
    nuc = reader.read_field(name)
    labels, centres, factor = detect_field_nuclei(nuc, px, params)
    if factor != 1.0:
        labels = upsample_labels(labels, factor, nuc.shape)
    return FieldNuclei(well, field_id, labels, centres)


def detect_plate_nuclei(
    plate: Plate,
    params: NucleusConfig = NucleusConfig(),
    progress: Callable[[int, int], None] | None = None,
    segment_fn: Callable[[np.ndarray, float], np.ndarray] | None = None,
    workers: int | None = 1,
    exclude: Iterable[tuple[str, int]] = (),
) -> list[FieldNuclei]:
    """Detect nuclei on every field's Hoechst channel.

    Parameters
    ----------
    plate, params, progress
        The plate, the detection settings (:class:`NucleusConfig`: nucleus diameter,
        detection pixel size, see :func:`detect_field_nuclei`) and a callback
        ``progress(done, total)``.
    segment_fn : callable, optional
        ``segment_fn(image, nucleus_diameter_px) -> labels`` (for example a trained U-Net's
        :meth:`~assets_pkg.core.segmentation.training.SegmentationModel.segment`), run at full
        resolution in this process; the classical
        :func:`~assets_pkg.core.segmentation.nuclei.detect_nuclei` when None.
    workers : int or None
        Worker processes for the classical detector (None: :func:`default_workers`); the
        result does not depend on it.
    exclude : iterable of (well, field_id)
        Fields left out (for example those with an image defect,
        :attr:`~assets_pkg.core.qc.report.ValidationReport.excluded_fields`).

    Returns one :class:`FieldNuclei` per field kept, in (well, field_id) order, labels at full
    resolution (nearest-neighbour from the detection scale, :func:`~.frames.upsample_labels`)
    and centres in full-resolution pixels.  :func:`iter_plate_nuclei` gives them one at a time.
    """
    return list(iter_plate_nuclei(plate, params, progress, segment_fn, workers, exclude))


def iter_plate_nuclei(
    plate: Plate,
    params: NucleusConfig = NucleusConfig(),
    progress: Callable[[int, int], None] | None = None,
    segment_fn: Callable[[np.ndarray, float], np.ndarray] | None = None,
    workers: int | None = 1,
    exclude: Iterable[tuple[str, int]] = (),
) -> Iterator[FieldNuclei]:
    """:func:`detect_plate_nuclei` one field at a time (same arguments, same fields in the same
    order), so that a plate's label images need never be in memory together."""
    px = plate_pixel_size(plate)
    fields = _field_paths(plate, frozenset((str(w), int(f)) for w, f in exclude))
    if segment_fn is not None:
        for i, row in enumerate(fields.itertuples(index=False)):
            nuc = plate.read_field(row.nucleus)
            labels, centres, _ = detect_field_nuclei(nuc, px, params, segment_fn=segment_fn)
            yield FieldNuclei(row.well, int(row.field_id), labels, centres)
            if progress:
                progress(i + 1, len(fields))
        return
    reader = _reader(plate)
    jobs = [(reader, row.well, int(row.field_id), row.nucleus, px, params) for row in fields.itertuples(index=False)]
    n_workers = default_workers(len(jobs)) if workers is None else int(workers)
    for i, fn in enumerate(_ordered_map(_detect_job, jobs, n_workers)):
        yield fn
        if progress:
            progress(i + 1, len(jobs))


def _localization_columns(plate: Plate, well: str) -> tuple[str, str]:
    info = plate.wells.get(well)
    if info is None:
        raise PlateFormatError(f"well {well} has images but no entry in plate.json", path=plate.path / "plate.json", field="wells")
    locs = sorted(info.localizations, key=lambda x: -x.grade)
    return ";".join(x.name for x in locs), ";".join(f"{x.name}:{x.grade}" for x in locs)


def field_frames(
    nucleus: np.ndarray,
    protein: np.ndarray | None,
    pixel_size_um: float,
    params: IngestParams = IngestParams(),
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Nuclei and frames of one field: :func:`detect_field_nuclei`, then the frames.

    When nuclei are detected at the frame scale (the default), the downsampled nucleus image
    is shared and the distance channel comes from the detection labels directly; otherwise
    the labels are brought to full resolution and :func:`~.frames.extract_frames` cuts the
    frames.  Either way the result equals ``extract_frames`` of :func:`detect_plate_nuclei`'s
    labels and centres (what :func:`crop_plate_frames` computes).

    Returns
    -------
    centres : pandas.DataFrame
        Every nucleus found (full-resolution pixels, see :func:`detect_field_nuclei`).
    frames : ndarray of float32, shape (N, crop_size, crop_size, 3)
    kept : pandas.DataFrame
        The rows of ``centres`` that gave a frame, in frame order, with ``frame_y0``, ``frame_x0``.
    """
    factor = params.factor(pixel_size_um)
    det = detection_factor(params, pixel_size_um)
    if det != factor:
        labels, centres, det = detect_field_nuclei(nucleus, pixel_size_um, params)
        if det != 1.0:
            labels = upsample_labels(labels, det, np.shape(nucleus))
        frames, kept = extract_frames(nucleus, protein, labels, factor, params.crop_size, centres=centres)
        return centres, frames, kept
    nuc_d = downsample_image(nucleus, factor)
    labels, centres, _ = detect_field_nuclei(nucleus, pixel_size_um, params, nucleus_small=nuc_d)
    if protein is not None and np.shape(protein) != np.shape(nucleus):
        raise ValueError(f"protein shape {np.shape(protein)} differs from nucleus shape {np.shape(nucleus)}")
    pro_d = None if protein is None else downsample_image(protein, factor)
    # the same full -> frame mapping as extract_frames, so both paths cut the same frames
    cy = full_to_frame_coords(centres["centre_y"].to_numpy(), factor)
    cx = full_to_frame_coords(centres["centre_x"].to_numpy(), factor)
    frames, keep, y0, x0 = cut_frames(nuc_d, pro_d, labels > 0, cy, cx, params.crop_size)
    kept = centres.loc[keep].reset_index(drop=True)
    kept["frame_y0"] = y0
    kept["frame_x0"] = x0
    return centres, frames, kept


def _frame_table(plate_id: str, well: str, field_id: int, well_info: tuple[str, str, str, str],
                 kept: pd.DataFrame) -> pd.DataFrame:
    """Frame-table rows (all columns but ``frame_index``) of one field's kept nuclei."""
    gene, ensg_id, loc, grades = well_info
    lab = kept["label"].to_numpy(np.int64)
    n = len(lab)
    return pd.DataFrame(
        {
            "frame_id": [f"{plate_id}/{well}/f{field_id:02d}/n{k:04d}" for k in lab.tolist()],
            "plate_id": [plate_id] * n,
            "well": [well] * n,
            "field_id": np.full(n, field_id, np.int64),
            "gene": [gene] * n,
            "ensg_id": [ensg_id] * n,
            "localization": [loc] * n,
            "localization_grades": [grades] * n,
            "centre_y": kept["centre_y"].to_numpy(np.float64),
            "centre_x": kept["centre_x"].to_numpy(np.float64),
            "nucleus_label": lab,
            "nucleus_area_px": kept["area_px"].to_numpy(np.float64),
        },
        columns=[c for c in FRAME_TABLE_COLUMNS if c != "frame_index"],
    )


def _well_info(plate: Plate, well: str) -> tuple[str, str, str, str]:
    loc, grades = _localization_columns(plate, well)
    info = plate.wells[well]
    return info.gene, info.ensg_id, loc, grades


def _finish_table(table: pd.DataFrame) -> pd.DataFrame:
    table = table.reset_index(drop=True)
    table.insert(0, "frame_index", np.arange(len(table), dtype=np.int64))
    return table.astype({"field_id": "int64", "nucleus_label": "int64"})


def crop_plate_frames(
    plate: Plate,
    nuclei: list[FieldNuclei],
    params: FrameConfig = FrameConfig(),
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Cut nucleus-centred frames from every field (``params``: crop size and downsampling).

    Frames are centred on each :class:`FieldNuclei`'s ``centres``.

    Returns
    -------
    frames : ndarray, shape (N, crop_size, crop_size, 3), float32
        Channels: protein, nucleus, signed distance to the nuclear boundary (crop pixels,
        positive inside).
    table : pandas.DataFrame
        One row per frame, columns :data:`FRAME_TABLE_COLUMNS`.
    """
    chunks, tables = [], []
    for i, (frames, table) in enumerate(iter_plate_frames(plate, nuclei, params)):
        chunks.append(frames)
        tables.append(table)
        if progress:
            progress(i + 1, len(nuclei))
    crop = params.crop_size
    frames = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, crop, crop, 3), np.float32)
    empty = _frame_table(plate.plate_id, "", 0, ("", "", "", ""), pd.DataFrame({"label": [], "centre_y": [],
                                                                              "centre_x": [], "area_px": []}))
    table = _finish_table(pd.concat(tables, ignore_index=True) if tables else empty)
    return frames.astype(np.float32, copy=False), table


def iter_plate_frames(
    plate: Plate,
    nuclei: Iterable[FieldNuclei],
    params: FrameConfig = FrameConfig(),
) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """:func:`crop_plate_frames` one field at a time, as the batches
    :meth:`~.frame_store.FrameStore.write_plate_stream` takes.

    Yields, per :class:`FieldNuclei` of ``nuclei`` (consumed lazily, so they may be read one
    at a time too), its frames (n, crop_size, crop_size, 3) float32 and their frame-table rows
    (all columns of :data:`FRAME_TABLE_COLUMNS` but ``frame_index``, which the store numbers).
    """
    factor = params.factor(plate_pixel_size(plate))
    fields = _field_paths(plate).set_index(["well", "field_id"])
    for fn in nuclei:
        paths = fields.loc[(fn.well, fn.field_id)]
        nuc = plate.read_field(paths["nucleus"])
        prot = plate.read_field(paths["protein"], expect_shape=nuc.shape)
        frames, kept = extract_frames(nuc, prot, fn.labels, downsample=factor, crop_size=params.crop_size,
                                      centres=fn.centres)
        yield (frames.astype(np.float32, copy=False),
               _frame_table(plate.plate_id, fn.well, fn.field_id, _well_info(plate, fn.well), kept))


def _ingest_job(job: tuple) -> tuple[int, np.ndarray, pd.DataFrame]:
    """One field of :func:`ingest_plate` (runs in a worker): nuclei count, frames, table rows."""
    reader, well, field_id, nuc_name, prot_name, px, params, info = job
    nuc = reader.read_field(nuc_name)
    prot = reader.read_field(prot_name, expect_shape=nuc.shape)
    centres, frames, kept = field_frames(nuc, prot, px, params)
    return len(centres), frames, _frame_table(reader.plate_id, well, field_id, info, kept)


def ingest_plate(
    plate_dir: str | Path,
    store: FrameStore,
    params: IngestParams = IngestParams(),
    provenance: dict | None = None,
    registry: dict | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    qc: PlateQCConfig | None = None,
    workers: int | None = None,
) -> IngestResult:
    """Validate a plate folder and, when it passes, write the frames of its good fields to the store.

    ``plate_dir`` may also be an OME-Zarr HCS plate (``.ome.zarr``, as ``cellscape export-hcs``
    writes it): its metadata and provenance come from the zarr attributes and its fields are
    read with TensorStore, a whole field per read (:mod:`.hcs_source`); frames, table and
    provenance (but ``source``) are those of the folder it was exported from.

    Fields with an image defect whose action is ``exclude`` (``qc``, default every kind) are
    left out and listed in ``IngestResult.excluded`` and in the store's provenance
    (``excluded_fields``).

    Each field is read once and processed on its own (:func:`field_frames`), over
    ``workers`` processes (None: :func:`default_workers`), and its frames stream into the
    store (:meth:`~.frame_store.FrameStore.write_plate_stream`).  Frames and table equal
    ``crop_plate_frames(plate, detect_plate_nuclei(plate, params), params)`` whatever the
    worker count.  ``progress("fields", done, total)`` after each field.

    Raises
    ------
    ValidationFailed
        When any suite fails (a defect set to ``block`` included), or every field is
        excluded; the store is not touched.  ``.report`` holds the
        :class:`~assets_pkg.core.qc.report.ValidationReport`.
    PlateFormatError
        When the folder is unreadable, or a required field of an OME-Zarr plate's metadata is
        missing (naming the ``zarr.json`` and the field).
    """
    from .hcs_source import validate_plate_source

    t0 = time.perf_counter()
    qc = PlateQCConfig() if qc is None else qc
    report, hcs = validate_plate_source(plate_dir, registry=registry, qc=qc)
    if not report.success:
        raise ValidationFailed(
            f"plate failed validation, not ingested:\n{report.to_text()}", path=plate_dir, report=report
        )
    plate = hcs if hcs is not None else read_plate(plate_dir, qc.metadata_limits(), qc.image_limits())
    excluded = report.excluded_table()
    if excluded and len(excluded) == len(plate.fields()):
        raise ValidationFailed(
            f"every field has an image defect, nothing to ingest:\n{report.to_text()}", path=plate_dir, report=report
        )
    px = plate_pixel_size(plate)
    fields = _field_paths(plate, frozenset((str(w), int(f)) for w, f in report.excluded_fields))
    reader = _reader(plate)
    jobs = [
        (reader, row.well, int(row.field_id), row.nucleus, row.protein, px, params, _well_info(plate, row.well))
        for row in fields.itertuples(index=False)
    ]
    n_workers = default_workers(len(jobs)) if workers is None else max(1, int(workers))
    counts = {"nuclei": 0, "frames": 0}

    def batches() -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        for i, (n_nuc, frames, table) in enumerate(_ordered_map(_ingest_job, jobs, n_workers)):
            counts["nuclei"] += n_nuc
            counts["frames"] += len(table)
            yield frames, table
            if progress:
                progress("fields", i + 1, len(jobs))

    prov = {
        "source": str(Path(plate_dir).resolve()),
        "source_digest": plate_digest(plate),
        "ingest_params": params.model_dump(),
        "downsample": params.factor(px),
        "excluded_fields": excluded,
        "qc": qc.model_dump(),
    }
    prov.update(provenance or {})
    crop = params.crop_size
    manifest = store.write_plate_stream(plate.plate_id, batches(), (crop, crop, 3), prov)
    return IngestResult(
        plate_id=plate.plate_id,
        n_fields=len(jobs),
        n_nuclei=counts["nuclei"],
        n_frames=counts["frames"],
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
    Nuclei and frames as in :func:`ingest_plate` (:func:`field_frames`).
    """
    from .sources import read_image_folder

    t0 = time.perf_counter()
    factor = params.factor(pixel_size_um)
    chunks, tables, n_nuclei = [], [], 0
    pairs = read_image_folder(folder)
    for field_id, (name, nuc, prot) in enumerate(pairs):
        centres, frames, kept = field_frames(nuc, prot, pixel_size_um, params)
        n_nuclei += len(centres)
        chunks.append(frames)
        tables.append(_frame_table(plate_id, name, field_id, (gene, ensg_id, "", ""), kept))
    crop = params.crop_size
    frames = np.concatenate(chunks) if chunks else np.zeros((0, crop, crop, 3), np.float32)
    empty = _frame_table(plate_id, "", 0, ("", "", "", ""), pd.DataFrame({"label": [], "centre_y": [],
                                                                        "centre_x": [], "area_px": []}))
    table = _finish_table(pd.concat(tables, ignore_index=True) if tables else empty)
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
