"""Plate ingest assets: one dynamic partition per plate, GX checks that block what follows."""


import json
import time
from pathlib import Path
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from ..core import plots
from ..core.imaging.io import read_image
from ..core.imaging.plates import list_plates, read_plate
from ..core.qc.suites import SUITES
from ..core.qc.validate import validate_plate
from ..core.segmentation.nuclei import nucleus_centres
from ..core.store.config import FrameConfig, NucleusConfig
from ..core.store.ingest import (
    FieldNuclei,
    crop_plate_frames,
    detect_plate_nuclei,
    plate_digest,
    plate_pixel_size,
)
from .config import dagster_config
from .resources import CellscapeResource

plates_partitions = dg.DynamicPartitionsDefinition(name="plates")

PLATE_GROUP = "plates"


NucleiMasksConfig = dagster_config(
    NucleusConfig,
    "NucleiMasksConfig",
    extra={
        "nucleus_segmenter": (Literal["classical", "unet"], Field(
            "classical", description="classical: the watershed detector; unet: a trained U-Net (images are "
                                     "rescaled to the U-Net's nucleus size).")),
        "segmentation_model": (str, Field(
            "", description="U-Net model folder for nucleus_segmenter=unet (empty: the latest "
                            "segmentation_model materialization); must stay empty for classical.")),
    },
    doc="Nucleus detection settings (see ``NucleusConfig``) and which segmenter finds the nuclei.",
)

PlateFramesConfig = dagster_config(FrameConfig, "PlateFramesConfig",
                                   doc="Frame geometry: crop size and downsampling (see ``FrameConfig``).")


def _progress(context, what: str, every: int = 10):
    def cb(i: int, n: int):
        if i == n or i % every == 0:
            context.log.info(f"{context.partition_key}: {what} {i}/{n}")

    return cb


def _md_table(df: pd.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    return dg.MetadataValue.md(df.head(max_rows).to_markdown(index=False))


@dg.asset(
    partitions_def=plates_partitions,
    group_name=PLATE_GROUP,
    kinds={"tiff"},
)
def plate_images(context: dg.AssetExecutionContext, cellscape: CellscapeResource) -> dg.MaterializeResult:
    """Raw plate folder: one TIFF per field and channel, versioned by the files' checksums."""
    plate = read_plate(cellscape.plate_dir(context.partition_key))
    meta = plate.metadata
    digest = plate_digest(plate, from_files=True)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(plate.path)),
            "images": len(meta),
            "fields": int(plate.fields().shape[0]),
            "wells": len(plate.wells),
            "bytes": int(pd.to_numeric(meta.get("file_bytes"), errors="coerce").sum()),
            "content_sha256": digest,
            "matches_metadata_checksums": digest == plate_digest(plate),
            "dataset_md5": cellscape.dataset_md5() or "unpinned",
        },
        data_version=dg.DataVersion(digest[:32]),
    )


@dg.asset(
    partitions_def=plates_partitions,
    group_name=PLATE_GROUP,
    deps=[plate_images],
    kinds={"csv"},
)
def plate_metadata(context: dg.AssetExecutionContext, cellscape: CellscapeResource) -> dg.MaterializeResult:
    """Per-image metadata and provenance of a plate (metadata.csv), checked by the GX suites."""
    plate = read_plate(cellscape.plate_dir(context.partition_key))
    meta = plate.metadata

    def uniq(col):
        return sorted(map(str, meta[col].dropna().unique())) if col in meta.columns else []

    return dg.MaterializeResult(
        metadata={
            "rows": len(meta),
            "columns": len(meta.columns),
            "instruments": ", ".join(uniq("instrument")),
            "operators": ", ".join(uniq("operator")),
            "acquired": f"{min(uniq('acquisition_time'), default='?')} .. {max(uniq('acquisition_time'), default='?')}",
            "genes": len(uniq("gene")),
            "preview": _md_table(meta.drop(columns=["sha256"], errors="ignore")),
        }
    )


_SUITE_DESCRIPTIONS = {
    "schema": "Columns, types, unique files and complete channels of metadata.csv.",
    "provenance": "Provenance fields present; instrument known; pixel size, optics and time in bounds.",
    "checksums": "Every file exists with the size and SHA-256 metadata.csv records; no unlisted images.",
    "geometry": "Every TIFF decodes to a 2-D image of the recorded shape and bit depth.",
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name=f"{s}_suite", asset=plate_metadata, blocking=True, description=_SUITE_DESCRIPTIONS[s])
        for s in SUITES
    ],
)
def plate_metadata_suites(context: dg.AssetCheckExecutionContext, cellscape: CellscapeResource):
    """Run the Great Expectations suites on the plate; a failure blocks its frames."""
    pk = context.partition_key if context.has_partition_key else None
    if pk is None:
        raise dg.Failure("plate_metadata_suites needs a plate partition")
    report = validate_plate(cellscape.plate_dir(pk), registry=cellscape.registry())
    for suite in report.suites:
        rows = [
            {
                "expectation": f.expectation,
                "column": f.column or "",
                "files": ", ".join(f.files[:5]),
                "message": f.message,
                "examples": json.dumps(f.examples[:3], default=str),
            }
            for f in suite.failures
        ]
        md = pd.DataFrame(rows).to_markdown(index=False) if rows else "all expectations met"
        if report.errors:
            md = "\n".join(f"- {e}" for e in report.errors) + "\n\n" + md
        yield dg.AssetCheckResult(
            asset_key=plate_metadata.key,
            check_name=f"{suite.name}_suite",
            passed=suite.success,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "evaluated_expectations": suite.evaluated,
                "failed_expectations": len(suite.failures),
                "failures": dg.MetadataValue.md(md),
            },
        )


@dg.asset(
    partitions_def=plates_partitions,
    group_name=PLATE_GROUP,
    deps=[plate_metadata],
    kinds={"tensorstore"},
)
def nuclei_masks(
    context: dg.AssetExecutionContext, config: NucleiMasksConfig, cellscape: CellscapeResource
) -> dg.MaterializeResult:
    """Nucleus label images of every field, found on the Hoechst channel (classical watershed)."""
    pk = context.partition_key
    plate = read_plate(cellscape.plate_dir(pk))
    t0 = time.perf_counter()
    params = config.to_library()
    segment_fn, detector = None, "classical"
    if config.nucleus_segmenter == "classical" and config.segmentation_model:
        raise dg.Failure("segmentation_model is set but nucleus_segmenter is 'classical': set nucleus_segmenter "
                         "to 'unet' or leave segmentation_model empty")
    if config.nucleus_segmenter == "unet":
        from ..core.segmentation.training import load_model
        from .segmentation import latest_checkpoint, segmentation_model

        ckpt = cellscape.path(config.segmentation_model) if config.segmentation_model else (
            latest_checkpoint(context, segmentation_model))
        if ckpt is None:
            raise dg.Failure("nucleus_segmenter='unet' needs segmentation_model materialized or a model folder")
        segment_fn, detector = load_model(ckpt, kind="segmentation").segment, f"unet:{ckpt}"
        context.log.info(f"{pk}: nuclei by the U-Net in {ckpt}")
    nuclei = detect_plate_nuclei(plate, params, progress=_progress(context, "nuclei"), segment_fn=segment_fn)
    seconds = time.perf_counter() - t0
    store = cellscape.store()
    manifest = store.write_masks(
        pk,
        np.stack([n.labels for n in nuclei]).astype(np.int32),
        pd.DataFrame({"well": [n.well for n in nuclei], "field_id": [n.field_id for n in nuclei]}),
        {"detector": detector, "params": params.model_dump(), "content_sha256": plate_digest(plate)},
    )
    counts = [len(n.centres) for n in nuclei]
    first = nuclei[int(np.argmax(counts))] if nuclei else None
    md = {
        "fields": len(nuclei),
        "nuclei": int(sum(counts)),
        "nuclei_per_field_mean": float(np.mean(counts)) if counts else 0.0,
        "nuclei_per_field_min": int(min(counts, default=0)),
        "seconds": round(seconds, 2),
        "detector": detector,
        "store_version": manifest.get("version", ""),
    }
    if first is not None:
        fields = plate.fields().set_index(["well", "field_id"])
        paths = fields.loc[(first.well, first.field_id)]
        nuc = read_image(plate.image_path(paths["nucleus"]))
        prot = read_image(plate.image_path(paths["protein"]))
        # crop boxes are plate_frames' business (its own config): here the detected centres only
        c = first.centres[["centre_y", "centre_x"]].to_numpy()
        fig = plots.plot_field_nuclei(
            nuc, first.labels, c, None, prot,
            title=f"{pk} {first.well} f{first.field_id:02d}",
        )
        png = plots.save_png(fig, cellscape.figures_dir(pk) / "nuclei_field.png")
        md["field_figure"] = dg.MetadataValue.md(plots.png_markdown(png, "nuclei"))
        md["field_figure_path"] = dg.MetadataValue.path(str(png))
    return dg.MaterializeResult(metadata=md)


@dg.asset(
    partitions_def=plates_partitions,
    group_name=PLATE_GROUP,
    deps=[nuclei_masks],
    kinds={"tensorstore"},
)
def plate_frames(
    context: dg.AssetExecutionContext, config: PlateFramesConfig, cellscape: CellscapeResource
) -> dg.MaterializeResult:
    """Nucleus-centred 100x100 frames (protein, nucleus, distance) of one plate in TensorStore."""
    pk = context.partition_key
    plate = read_plate(cellscape.plate_dir(pk))
    store = cellscape.store()
    masks, mask_table = store.read_masks(pk)
    nuclei = [
        FieldNuclei(str(r.well), int(r.field_id), masks[i], nucleus_centres(masks[i]))
        for i, r in enumerate(mask_table.itertuples(index=False))
    ]
    t0 = time.perf_counter()
    params = config.to_library()
    frames, table = crop_plate_frames(plate, nuclei, params, progress=_progress(context, "frames"))
    manifest = store.write_plate(
        pk,
        frames,
        table,
        {
            "content_sha256": plate_digest(plate),
            "dataset_md5": cellscape.dataset_md5(),
            "ingest_params": params.model_dump(),
            "downsample": params.factor(plate_pixel_size(plate)),
        },
    )
    seconds = time.perf_counter() - t0
    if len(table) == 0:
        context.log.warning(
            f"{pk}: no frame fits inside the fields (nuclei too close to the border for "
            f"{params.crop_size}px crops at this downsampling?)"
        )
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(table), size=min(24, len(table)), replace=False)) if len(table) else []
    captions = [f"{table.gene.iloc[i]}\n{table.localization.iloc[i].replace(';', ', ')}" for i in pick]
    fig = plots.plot_frame_grid(frames[pick] if len(pick) else frames[:0], captions, title=f"{pk}: random frames")
    png = plots.save_png(fig, cellscape.figures_dir(pk) / "frames_grid.png")
    return dg.MaterializeResult(
        metadata={
            "frames": len(table),
            "proteins": int(table["ensg_id"].nunique()) if len(table) else 0,
            "frames_per_field": float(len(table) / max(1, len(nuclei))),
            "shape": str(tuple(frames.shape)),
            "seconds": round(seconds, 2),
            "store_version": manifest.get("version", ""),
            "dataset_md5": cellscape.dataset_md5() or "unpinned",
            "frames_figure": dg.MetadataValue.md(plots.png_markdown(png, "frames")),
            "frames_figure_path": dg.MetadataValue.path(str(png)),
        },
        data_version=dg.DataVersion(str(manifest.get("version", ""))),
    )


def new_plates(plates_dir: Path, known: set[str], settle_seconds: float = 5.0) -> list[str]:
    """Complete plate folders under ``plates_dir`` not yet known, untouched for ``settle_seconds``."""
    out = []
    now = time.time()
    for p in list_plates(plates_dir, complete_only=True):
        if p.name in known:
            continue
        newest = max((f.stat().st_mtime for f in p.iterdir()), default=now)
        if now - newest >= settle_seconds:
            out.append(p.name)
    return out
