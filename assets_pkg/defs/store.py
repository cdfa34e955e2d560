"""Store assets: nuclei and nucleus-centred frames per plate (TensorStore), the DVC pin of the
dataset, the catalog over the pinned plates and the splits.

Lineage by version id: each asset returns a JSON handle (:mod:`.io`) naming the store versions
it wrote and read, and the next asset reads exactly those versions -- plate_frames the masks
nuclei_masks wrote, dataset_version the plate versions it pinned, frame_catalog those plate
versions, dataset_splits that catalog version -- never "the current one".
"""

import itertools
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
from ..core.store.dvc import covers, dataset_pin, pin_plates, push_pins
from ..core.store.ingest import (
    FieldNuclei,
    iter_plate_frames,
    iter_plate_nuclei,
    plate_digest,
    plate_pixel_size,
)
from ..core.store.lineage import catalog_of, content_key
from ..core.store.splits import (
    SPLITS,
    check_disjoint,
    make_splits,
    split_summary,
    split_version,
)
from .config import dagster_config
from .imaging import PLATE_GROUP, plates_partitions
from .io import HANDLE_IO_MANAGER
from .metadata import figure_metadata, table_metadata
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
    io_manager_key=HANDLE_IO_MANAGER,
)
def nuclei_masks(context: dg.AssetExecutionContext, config: NucleiMasksConfig, cellscape: CellscapeResource):
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
    store = cellscape.store()
    digest = plate_digest(plate)
    nuclei = iter_plate_nuclei(plate, params, progress=_progress(context, "nuclei"), segment_fn=segment_fn,
                               exclude=excluded)
    head = next(nuclei, None)
    if head is None:
        raise dg.Failure(f"plate {pk}: no field to segment")
    counts: list[int] = []
    first = head  # the field with the most nuclei (the first such), for the figure

    def labelled():  # one field's labels in memory at a time, written as they come
        nonlocal first
        for n in itertools.chain([head], nuclei):
            counts.append(len(n.centres))
            if len(n.centres) > len(first.centres):
                first = n
            yield n.labels, {"well": n.well, "field_id": n.field_id}

    manifest = store.write_masks_stream(
        pk,
        labelled(),
        head.labels.shape,
        {"detector": detector, "params": params.model_dump(), "content_sha256": digest,
         "excluded_fields": [{"well": w, "field_id": f} for w, f in excluded], "qc": qc.model_dump()},
    )
    seconds = time.perf_counter() - t0
    md = {
        "fields": len(counts),
        "nuclei": int(sum(counts)),
        "nuclei_per_field_mean": float(np.mean(counts)) if counts else 0.0,
        "nuclei_per_field_min": int(min(counts, default=0)),
        "seconds": round(seconds, 2),
        "detector": detector,
        "store_version": manifest["version"],
        "content_sha256": digest,
        "excluded_fields": ", ".join(f"{w} f{f:02d}" for w, f in excluded) or "none",
        "excluded_count": len(excluded),
    }
    if defects:
        md["excluded_defects"] = table_metadata(pd.DataFrame(
            [{"field": f"{d.well} f{d.field_id:02d}", "file": d.file_name, "defect": d.kind, "detail": d.detail}
             for d in defects]))
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
        md.update(figure_metadata("field_figure", png, "nuclei"))
    handle = {"plate_id": pk, "masks_version": manifest["version"], "content_sha256": digest,
              "detector": detector, "run_id": context.run.run_id}
    return dg.MaterializeResult(value=handle, metadata=md, data_version=dg.DataVersion(manifest["version"]))


@dg.asset(
    partitions_def=plates_partitions,
    group_name=PLATE_GROUP,
    kinds={"tensorstore"},
    io_manager_key=HANDLE_IO_MANAGER,
)
def plate_frames(context: dg.AssetExecutionContext, config: PlateFramesConfig, nuclei_masks: dict,
                 cellscape: CellscapeResource):
    """Nucleus-centred 100x100 frames (protein, nucleus, distance) of one plate in TensorStore."""
    pk = context.partition_key
    qc = cellscape.qc_config()
    plate = read_plate(cellscape.plate_dir(pk), qc.metadata_limits(), qc.image_limits())
    digest = plate_digest(plate)
    if digest != nuclei_masks["content_sha256"]:
        raise dg.Failure(f"plate {pk} changed on disk since nuclei_masks ran (content {digest[:12]} vs "
                         f"{nuclei_masks['content_sha256'][:12]}); materialize nuclei_masks again")
    store = cellscape.store()
    mask_table, masks = store.iter_masks(pk, version=nuclei_masks["masks_version"])
    nuclei = (FieldNuclei(str(r.well), int(r.field_id), m, nucleus_centres(m))
              for r, m in zip(mask_table.itertuples(index=False), masks, strict=True))
    t0 = time.perf_counter()
    params = config.to_library()
    progress = _progress(context, "frames")

    def batches():  # one field's masks and frames in memory at a time
        for i, batch in enumerate(iter_plate_frames(plate, nuclei, params)):
            yield batch
            progress(i + 1, len(mask_table))

    crop = params.crop_size
    manifest = store.write_plate_stream(
        pk,
        batches(),
        (crop, crop, 3),
        {
            "content_sha256": digest,
            "masks_version": nuclei_masks["masks_version"],
            "ingest_params": params.model_dump(),
            "downsample": params.factor(plate_pixel_size(plate)),
        },
    )
    seconds = time.perf_counter() - t0
    table = store.read_table(pk, version=manifest["version"])
    if len(table) == 0:
        context.log.warning(
            f"{pk}: no frame fits inside the fields (nuclei too close to the border for "
            f"{params.crop_size}px crops at this downsampling?)"
        )
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(table), size=min(24, len(table)), replace=False)) if len(table) else []
    captions = [f"{table.gene.iloc[i]}\n{table.localization.iloc[i].replace(';', ', ')}" for i in pick]
    frames = (store.read_frames(pk, pick, version=manifest["version"]) if len(pick)
              else np.zeros((0, crop, crop, 3), np.float32))
    fig = plots.plot_frame_grid(frames, captions, title=f"{pk}: random frames")
    png = plots.save_png(fig, cellscape.figures_dir(pk) / "frames_grid.png")
    handle = {"plate_id": pk, "plate_version": manifest["version"], "masks_version": nuclei_masks["masks_version"],
              "content_sha256": digest, "n_frames": int(len(table)), "run_id": context.run.run_id}
    return dg.MaterializeResult(
        value=handle,
        metadata={
            "frames": len(table),
            "proteins": int(table["ensg_id"].nunique()) if len(table) else 0,
            "frames_per_field": float(len(table) / max(1, len(mask_table))),
            "shape": str(tuple(int(n) for n in manifest["shape"])),
            "seconds": round(seconds, 2),
            "store_version": manifest["version"],
            "masks_version": nuclei_masks["masks_version"],
            "content_sha256": digest,
            **figure_metadata("frames_figure", png, "frames"),
        },
        data_version=dg.DataVersion(manifest["version"]),
    )


class DatasetVersionConfig(dg.Config):
    """Whether to re-pin and push the plates with DVC (needs a DVC repository at the root); with
    pin=false the plates' md5 is recorded only when data/ already matches its pin, else as unpinned."""

    pin: bool = True
    push: bool = True


@dg.asset(
    group_name=DATASET_GROUP,
    pool="dvc",
    kinds={"dvc"},
    io_manager_key=HANDLE_IO_MANAGER,
    automation_condition=dg.AutomationCondition.eager(),
)
def dataset_version(context: dg.AssetExecutionContext, config: DatasetVersionConfig, plate_frames: dict,
                    cellscape: CellscapeResource):
    """The DVC md5 of the dataset pin (data.dvc, indexing one .dvc per plate; re-pinned after every ingest) and the plate versions it holds."""
    if not plate_frames:
        raise dg.Failure("no plate has been ingested yet; ingest a plate first")
    dvc_file = cellscape.path(cellscape.dvc_file)
    plate_dirs = [cellscape.plate_dir(pid) for pid in sorted(plate_frames)]
    md5, why = dataset_pin(plate_dirs, dvc_file)
    earlier = dvc_file.is_file() and covers(dvc_file, cellscape.plates_path())  # one pin of all data/
    if config.pin and (md5 is None or earlier):
        context.log.info(f"re-pinning: {why}")
        res = pin_plates(plate_dirs, push=config.push, index_dvc=dvc_file)
        if res.converted:
            context.log.info(f"{cellscape.dvc_file} pinned the whole data folder; now one pin per plate")
        md5, why = dataset_pin(plate_dirs, dvc_file)
    elif config.pin and config.push:
        push_pins(plate_dirs, dvc_file)
    if md5 is None:
        if config.pin:
            raise dg.Failure(f"the plates are not pinned: {why}")
        context.log.warning(f"the plates are recorded unpinned (pin=false): {why}")
    # the pin holds the files on disk now: each ingested plate must still be what was ingested
    changed = []
    for pid, h in sorted(plate_frames.items()):
        now = plate_digest(read_plate(cellscape.plate_dir(pid)))
        if now != h["content_sha256"]:
            changed.append(pid)
    if changed:
        raise dg.Failure(f"plates {changed} changed on disk since they were ingested; ingest them again "
                         "so the pinned md5 holds the frames' source")
    plates = {pid: {"plate_version": h["plate_version"], "content_sha256": h["content_sha256"]}
              for pid, h in sorted(plate_frames.items())}
    key = content_key({p: v["content_sha256"] for p, v in plates.items()})
    handle = {"dataset_md5": md5, "dvc_file": str(dvc_file), "plates": plates, "content_key": key,
              "run_id": context.run.run_id}
    table = pd.DataFrame([{"plate_id": p, **v} for p, v in plates.items()])
    return dg.MaterializeResult(
        value=handle,
        metadata={"dataset_md5": md5 or "unpinned", "dvc_file": dg.MetadataValue.path(str(dvc_file)),
                  "plates": table_metadata(table), "content_key": key},
        data_version=dg.DataVersion(f"{md5 or 'unpinned'}:{key[:16]}"),
    )


@dg.asset(
    group_name=DATASET_GROUP,
    kinds={"parquet"},
    io_manager_key=HANDLE_IO_MANAGER,
    automation_condition=dg.AutomationCondition.eager(),
)
def frame_catalog(context: dg.AssetExecutionContext, dataset_version: dict, cellscape: CellscapeResource):
    """Every frame of the pinned plate versions, one row each, with a dense protein id."""
    store = cellscape.store()
    versions = {p: v["plate_version"] for p, v in dataset_version["plates"].items()}
    catalog = catalog_of(store, versions)
    if len(catalog) == 0:
        raise dg.Failure("the ingested plates hold no frames")
    proteins = sorted(catalog["ensg_id"].astype(str).unique())
    catalog["protein_id"] = catalog["ensg_id"].astype(str).map({p: i for i, p in enumerate(proteins)}).astype("int64")
    md5 = dataset_version["dataset_md5"]
    manifest = store.write_catalog(catalog, {"dataset_md5": md5, "plates": versions,
                                             "content_key": dataset_version["content_key"]})
    per_plate = catalog.groupby("plate_id").agg(frames=("frame_id", "size"), proteins=("ensg_id", "nunique"))
    handle = {"catalog_version": manifest["version"], "dataset_md5": md5, "plates": versions,
              "content_key": dataset_version["content_key"], "run_id": context.run.run_id}
    return dg.MaterializeResult(
        value=handle,
        metadata={
            "frames": len(catalog),
            "plates": int(catalog["plate_id"].nunique()),
            "proteins": len(proteins),
            "per_plate": table_metadata(per_plate, index=True),
            "dataset_md5": md5 or "unpinned",
            "catalog_version": manifest["version"],
        },
        data_version=dg.DataVersion(manifest["version"]),
    )


SplitsConfig = dagster_config(SplitConfig, "SplitsConfig")


@dg.asset(
    group_name=DATASET_GROUP,
    kinds={"parquet"},
    io_manager_key=HANDLE_IO_MANAGER,
    check_specs=[dg.AssetCheckSpec("splits_disjoint", asset="dataset_splits", blocking=True)],
)
def dataset_splits(context: dg.AssetExecutionContext, config: SplitsConfig, frame_catalog: dict,
                   cellscape: CellscapeResource):
    """Train/valid/test assignment of frames, exclusive by field of view or by protein; its blocking check
    fails on a straddling field or protein, an empty split the config asks for, or a frame without keys."""
    store = cellscape.store()
    catalog = store.read_dataset_table("catalog", version=frame_catalog["catalog_version"])
    sc = config.to_library()
    splits = make_splits(catalog, sc)
    version = split_version(splits, sc)
    problems = check_disjoint(splits, sc)
    manifest = store.write_dataset_table(
        "splits",
        splits,
        {"split_version": version, "config": sc.model_dump(), "catalog_version": frame_catalog["catalog_version"],
         "dataset_md5": frame_catalog["dataset_md5"], "plates": frame_catalog["plates"]},
    )
    summary = split_summary(splits)
    handle = {"splits_version": manifest["version"], "split_version": version,
              "catalog_version": frame_catalog["catalog_version"], "dataset_md5": frame_catalog["dataset_md5"],
              "plates": frame_catalog["plates"], "content_key": frame_catalog["content_key"],
              "disjoint": not problems, "problems": problems, "run_id": context.run.run_id}
    fractions = dict(zip(SPLITS, (sc.train, sc.valid, sc.test), strict=True))
    empty = [name for name in SPLITS if fractions[name] > 0 and summary[name]["frames"] == 0]
    yield dg.MaterializeResult(
        value=handle,
        metadata={
            "split_version": version,
            "summary": table_metadata(pd.DataFrame(summary).T.rename_axis("split"), index=True),
            "frames": len(splits),
            "proteins": int(splits["label"].nunique()),
            "store_version": manifest["version"],
            "catalog_version": frame_catalog["catalog_version"],
            "dataset_md5": frame_catalog["dataset_md5"] or "unpinned",
        },
        data_version=dg.DataVersion(version),
        check_results=[
            dg.AssetCheckResult(
                check_name="splits_disjoint",
                passed=not problems,
                severity=dg.AssetCheckSeverity.ERROR,
                description=("; ".join(problems) if problems else
                             f"no {sc.exclusive_by} straddles two splits; every split asked for holds frames"),
                metadata={
                    "problems": "; ".join(problems) or "none",
                    "exclusive_by": sc.exclusive_by,
                    "fractions": f"{sc.train:g}/{sc.valid:g}/{sc.test:g}",
                    "frames_per_split": dg.MetadataValue.json({k: v["frames"] for k, v in summary.items()}),
                    "empty_splits": ", ".join(empty) or "none",
                },
            )
        ],
    )
