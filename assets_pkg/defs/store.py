"""Store assets: nuclei and nucleus-centred frames per plate (TensorStore), the catalog over all
plates, the DVC pin of the dataset and the splits."""

import time
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from ..core import plots
from ..core.imaging.plates import read_plate
from ..core.qc.validate import field_defects
from ..core.segmentation.nuclei import nucleus_centres
from ..core.store.config import FrameConfig, NucleusConfig, SplitConfig
from ..core.store.dvc import run_dvc
from ..core.store.ingest import (
    FieldNuclei,
    crop_plate_frames,
    detect_plate_nuclei,
    plate_digest,
    plate_pixel_size,
)
from ..core.store.splits import (
    check_disjoint,
    make_splits,
    split_summary,
    split_version,
)
from .config import dagster_config
from .imaging import PLATE_GROUP, plate_images, plates_partitions
from .qc import plate_metadata
from .resources import CellscapeResource

DATASET_GROUP = "dataset"


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


@dg.asset(
    partitions_def=plates_partitions,
    group_name=PLATE_GROUP,
    deps=[plate_metadata],
    kinds={"tensorstore"},
)
def nuclei_masks(
    context: dg.AssetExecutionContext, config: NucleiMasksConfig, cellscape: CellscapeResource
) -> dg.MaterializeResult:
    """Nucleus label images of every good field (image defects set to exclude are left out), found on the Hoechst channel."""
    pk = context.partition_key
    qc = cellscape.qc_config()
    plate = read_plate(cellscape.plate_dir(pk), qc.metadata_limits(), qc.image_limits())
    defects = [d for d in field_defects(plate.path, qc) if d.action == "exclude"]
    excluded = sorted({(d.well, d.field_id) for d in defects})
    if excluded:
        context.log.warning(f"{pk}: {len(excluded)} field(s) excluded for image defects: "
                            + "; ".join(f"{d.well} f{d.field_id:02d} {d.file_name}: {d.detail}" for d in defects))
        if len(excluded) == len(plate.fields()):
            raise dg.Failure(f"plate {pk}: every field has an image defect set to exclude; nothing to segment")
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
    nuclei = detect_plate_nuclei(plate, params, progress=_progress(context, "nuclei"), segment_fn=segment_fn,
                                 exclude=excluded)
    seconds = time.perf_counter() - t0
    store = cellscape.store()
    manifest = store.write_masks(
        pk,
        np.stack([n.labels for n in nuclei]).astype(np.int32),
        pd.DataFrame({"well": [n.well for n in nuclei], "field_id": [n.field_id for n in nuclei]}),
        {"detector": detector, "params": params.model_dump(), "content_sha256": plate_digest(plate),
         "excluded_fields": [{"well": w, "field_id": f} for w, f in excluded], "qc": qc.model_dump()},
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
        "excluded_fields": ", ".join(f"{w} f{f:02d}" for w, f in excluded) or "none",
        "excluded_count": len(excluded),
    }
    if defects:
        md["excluded_defects"] = dg.MetadataValue.md(pd.DataFrame(
            [{"field": f"{d.well} f{d.field_id:02d}", "file": d.file_name, "defect": d.kind, "detail": d.detail}
             for d in defects]).to_markdown(index=False))
    if first is not None:
        fields = plate.fields().set_index(["well", "field_id"])
        paths = fields.loc[(first.well, first.field_id)]
        nuc = plate.read_field(paths["nucleus"])
        prot = plate.read_field(paths["protein"], expect_shape=nuc.shape)
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
    qc = cellscape.qc_config()
    plate = read_plate(cellscape.plate_dir(pk), qc.metadata_limits(), qc.image_limits())
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


class DatasetVersionConfig(dg.Config):
    """Whether to re-pin and push the plates with DVC (needs a DVC repository at the root)."""

    pin: bool = True
    push: bool = True


@dg.asset(
    group_name=DATASET_GROUP,
    deps=[plate_images],
    pool="dvc",
    kinds={"dvc"},
)
def dataset_version(
    context: dg.AssetExecutionContext, config: DatasetVersionConfig, cellscape: CellscapeResource
) -> dg.MaterializeResult:
    """The DVC md5 that pins data/ (re-pinned and pushed when plates changed)."""
    root = cellscape.root_path()
    if config.pin:
        target = cellscape.path(cellscape.dvc_file).with_suffix("")
        status = run_dvc(["status", "--json", str(cellscape.path(cellscape.dvc_file).relative_to(root))], root)
        changed = status.stdout.strip() not in ("", "{}")
        if changed:
            context.log.info(f"data changed since {cellscape.dvc_file}; re-pinning {target.name}/")
            run_dvc(["add", str(target.relative_to(root))], root)
        if config.push:
            run_dvc(["push"], root)
    md5 = cellscape.dataset_md5()
    if md5 is None:
        raise dg.Failure(f"no {cellscape.dvc_file} at {root}: the dataset is not pinned")
    return dg.MaterializeResult(
        metadata={"dataset_md5": md5, "dvc_file": dg.MetadataValue.path(str(cellscape.path(cellscape.dvc_file)))},
        data_version=dg.DataVersion(md5),
    )


@dg.asset(
    group_name=DATASET_GROUP,
    deps=[plate_frames, dataset_version],
    kinds={"parquet"},
    automation_condition=dg.AutomationCondition.eager(),
)
def frame_catalog(context: dg.AssetExecutionContext, cellscape: CellscapeResource) -> dg.MaterializeResult:
    """Every frame of every ingested plate, one row each, with a dense protein id."""
    store = cellscape.store()
    catalog = store.catalog()
    if len(catalog) == 0:
        raise dg.Failure("the frame store holds no plates yet; ingest a plate first")
    proteins = sorted(catalog["ensg_id"].astype(str).unique())
    catalog["protein_id"] = catalog["ensg_id"].astype(str).map({p: i for i, p in enumerate(proteins)}).astype("int64")
    md5 = cellscape.dataset_md5()
    manifest = store.write_catalog(catalog, {"dataset_md5": md5, "plates": store.plate_ids()})
    per_plate = catalog.groupby("plate_id").agg(frames=("frame_id", "size"), proteins=("ensg_id", "nunique"))
    return dg.MaterializeResult(
        metadata={
            "frames": len(catalog),
            "plates": int(catalog["plate_id"].nunique()),
            "proteins": len(proteins),
            "per_plate": dg.MetadataValue.md(per_plate.reset_index().to_markdown(index=False)),
            "dataset_md5": md5 or "unpinned",
            "catalog_version": manifest.get("version", ""),
        },
        data_version=dg.DataVersion(str(manifest.get("version", ""))),
    )


SplitsConfig = dagster_config(SplitConfig, "SplitsConfig")


@dg.asset(
    group_name=DATASET_GROUP,
    deps=[frame_catalog],
    kinds={"parquet"},
    check_specs=[dg.AssetCheckSpec("splits_disjoint", asset="dataset_splits", blocking=True)],
)
def dataset_splits(
    context: dg.AssetExecutionContext, config: SplitsConfig, cellscape: CellscapeResource
):
    """Train/valid/test assignment of frames, exclusive by field of view or by protein."""
    store = cellscape.store()
    catalog = store.read_catalog()
    sc = config.to_library()
    splits = make_splits(catalog, sc)
    version = split_version(splits, sc)
    problems = check_disjoint(splits, sc.exclusive_by)
    manifest = store.write_dataset_table(
        "splits",
        splits,
        {"split_version": version, "config": sc.model_dump(), "catalog_version": store.read_catalog_manifest().get("version")},
    )
    summary = split_summary(splits)
    yield dg.MaterializeResult(
        metadata={
            "split_version": version,
            "summary": dg.MetadataValue.md(pd.DataFrame(summary).T.reset_index(names="split").to_markdown(index=False)),
            "frames": len(splits),
            "proteins": int(splits["label"].nunique()),
            "store_version": manifest.get("version", ""),
        },
        data_version=dg.DataVersion(version),
        check_results=[
            dg.AssetCheckResult(
                check_name="splits_disjoint",
                passed=not problems,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"problems": "; ".join(problems) or "none"},
            )
        ],
    )
