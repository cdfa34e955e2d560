"""Segmentation branch: cell image sets, the nucleus U-Net, the counting CNN (pool ``gpu``),
and their results scored beside the classical baseline."""

import json
import os
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from ..core import plots
from ..core.ml.loop import TrainRun
from ..core.segmentation.config import (
    CellSetsConfig,
    CountTrainConfig,
    SegTrainConfig,
)
from ..core.segmentation.metrics import count_metrics_by, summarise_scores
from ..core.segmentation.models import load_model, save_model
from ..core.segmentation.run import (
    cell_sets_table,
    evaluate_segmentation,
    write_label_stack,
)
from ..core.segmentation.training import (
    train_counting,
    train_segmentation,
)
from .config import dagster_config
from .deploy import GPU_OP_TAGS
from .metadata import figure_metadata, table_metadata
from .resources import CellscapeResource

SEG_GROUP = "segmentation"


CellImageSetsConfig = dagster_config(
    CellSetsConfig, "CellImageSetsConfig",
    doc="Folders of real images (relative to the project root or absolute); a folder not given means "
        "simulated SIMCEP-like fields instead (see ``CellSetsConfig``; preset tiny: 18 small fields).")


def _table_path(cellscape: CellscapeResource) -> Path:
    return cellscape.path(cellscape.artifacts_dir) / "cells" / "sets.parquet"


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


@dg.asset(group_name=SEG_GROUP, kinds={"parquet"})
def cell_image_sets(context: dg.AssetExecutionContext, config: CellImageSetsConfig,
                    cellscape: CellscapeResource) -> dg.MaterializeResult:
    """Segmentation (images + instance masks) and counting (images + true counts) sets with their splits."""
    cfg = config.to_library()
    opt = {k: (str(cellscape.path(v)) if v is not None else None) for k, v in (
        ("segmentation_images", cfg.segmentation_images), ("segmentation_masks", cfg.segmentation_masks),
        ("counting_images", cfg.counting_images))}
    sim_dir = cellscape.path(cellscape.artifacts_dir) / "cells" / (
        f"simulated-s{cfg.seed}-n{cfg.simulated_fields}-{cfg.simulated_size[0]}x{cfg.simulated_size[1]}")
    table = cell_sets_table(**opt, simulated_dir=sim_dir, simulated_fields=cfg.simulated_fields,
                            simulated_size=cfg.simulated_size, seed=cfg.seed, train_fraction=cfg.train_fraction)
    path = _table_path(cellscape)
    _atomic_parquet(table, path)
    summary = table.groupby(["set", "split", "source"]).size().rename("images").reset_index()
    context.log.info(f"cell image sets: {summary.to_dict('records')}")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)),
        "summary": table_metadata(summary),
        "segmentation_images": int((table.set == "segmentation").sum()),
        "counting_images": int((table.set == "counting").sum()),
        "sources": ", ".join(sorted(set(table.source))),
    }, data_version=dg.DataVersion(str(pd.util.hash_pandas_object(table).sum())))


def _sets(cellscape: CellscapeResource) -> pd.DataFrame:
    path = _table_path(cellscape)
    if not path.is_file():
        raise dg.Failure(f"cell_image_sets has not been materialized ({path} missing)")
    return pd.read_parquet(path)


def _train_split(cellscape: CellscapeResource, which: str) -> pd.DataFrame:
    """The train rows of the ``segmentation`` or ``counting`` set (a failure when empty)."""
    sets = _sets(cellscape)
    train = sets[(sets.set == which) & (sets.split == "train")]
    if train.empty:
        raise dg.Failure(f"the {which} set has no training image")
    return train


def _load(rows: pd.DataFrame):
    from ..core.imaging.io import read_image
    from ..core.segmentation.datasets import load_mask

    images = [read_image(p) for p in rows.image_path]
    masks = [load_mask(p) for p in rows.mask_path] if "mask_path" in rows and rows.mask_path.notna().all() else None
    return images, masks


def _provenance(context, cellscape: CellscapeResource, train: pd.DataFrame) -> dict:
    """What a model was trained on: the sets table, its content hash, sources, the run."""
    return {"sets": str(_table_path(cellscape)), "sources": sorted(set(train.source)),
            "train_table_sha": str(pd.util.hash_pandas_object(train, index=False).sum()),
            "dagster_run_id": context.run.run_id}


def _model_dir(cellscape: CellscapeResource, name: str, context) -> Path:
    return cellscape.path(cellscape.artifacts_dir) / "models" / name / context.run.run_id[:8]


SegmentationTrainingConfig = dagster_config(
    SegTrainConfig, "SegmentationTrainingConfig", exclude=("log_every",),
    doc="U-Net size and training length (see ``SegTrainConfig``); preset tiny trains in minutes on a CPU. "
        "The asset logs 20 times per run.")


@dg.asset(group_name=SEG_GROUP, deps=[cell_image_sets], pool="gpu", op_tags=GPU_OP_TAGS,
          kinds={"jax", "orbax"})
def segmentation_model(context: dg.AssetExecutionContext, config: SegmentationTrainingConfig,
                       cellscape: CellscapeResource) -> dg.MaterializeResult:
    """Nucleus U-Net trained on the segmentation set's train split, thresholds tuned, saved with Orbax."""
    train = _train_split(cellscape, "segmentation")
    images, masks = _load(train)
    cfg = config.to_library()
    cfg = cfg.model_copy(update={"log_every": max(1, cfg.steps // 20)})
    context.log.info(f"training the U-Net on {len(images)} images: {cfg}")
    work = _model_dir(cellscape, "segmentation_model", context)
    model = train_segmentation(images, masks, cfg, names=list(train.name),
                               run=TrainRun(work_dir=work, log=context.log.info))
    out = save_model(model, work, extra=_provenance(context, cellscape, train))
    curve = plots.save_png(plots.plot_loss_history(model.info["history"], ("loss", "bce", "distance_mse"),
                                                   "U-Net training loss"), out.parent / f"{out.name}_loss.png")
    t = model.info["tuning"]
    return dg.MaterializeResult(metadata={
        "checkpoint_dir": dg.MetadataValue.path(str(out)),
        "steps": model.info["steps_done"],
        "train_seconds": round(model.info["train_seconds"], 1),
        "train_images": len(images),
        "final_loss": float(model.info["history"][-1]["loss"]),
        "threshold": t["threshold"], "marker_threshold": t["marker_threshold"], "min_area": t["min_area"],
        "tuning_f1": t["f1"], "tuning_count_error": t["count_error"],
        "object_diameter_px": float(model.object_diameter_px or 0.0),
        "platform": model.info["platform"],
        **figure_metadata("loss_curve", curve, "loss"),
    })


CountingTrainingConfig = dagster_config(
    CountTrainConfig, "CountingTrainingConfig", exclude=("log_every",),
    doc="Counting CNN input size and training length (see ``CountTrainConfig``); preset tiny trains in minutes "
        "on a CPU.  The asset logs 20 times per run.")


@dg.asset(group_name=SEG_GROUP, deps=[cell_image_sets], pool="gpu", op_tags=GPU_OP_TAGS,
          kinds={"jax", "orbax"})
def counting_model(context: dg.AssetExecutionContext, config: CountingTrainingConfig,
                   cellscape: CellscapeResource) -> dg.MaterializeResult:
    """Counting regression CNN trained on the counting set's train split (L2 on true counts), saved with Orbax."""
    train = _train_split(cellscape, "counting")
    images, _ = _load(train.drop(columns="mask_path"))
    cfg = config.to_library()
    cfg = cfg.model_copy(update={"log_every": max(1, cfg.steps // 20)})
    context.log.info(f"training the counting CNN on {len(images)} images: {cfg}")
    work = _model_dir(cellscape, "counting_model", context)
    model = train_counting(images, train["count"].to_numpy(), cfg, names=list(train.name),
                           run=TrainRun(work_dir=work, log=context.log.info))
    out = save_model(model, work, extra=_provenance(context, cellscape, train))
    curve = plots.save_png(plots.plot_loss_history(model.info["history"], ("loss",), "count MSE (cells²)"),
                           out.parent / f"{out.name}_loss.png")
    return dg.MaterializeResult(metadata={
        "checkpoint_dir": dg.MetadataValue.path(str(out)),
        "steps": model.info["steps_done"],
        "train_seconds": round(model.info["train_seconds"], 1),
        "train_images": len(images),
        "train_mae": model.info["train_mae"],
        "platform": model.info["platform"],
        **figure_metadata("loss_curve", curve, "loss"),
    })


def latest_checkpoint(context, asset) -> Path | None:
    """Model folder recorded by the latest materialization of ``asset`` (None if never)."""
    ev = context.instance.get_latest_materialization_event(asset.key)
    if ev is None:
        return None
    return Path(ev.asset_materialization.metadata["checkpoint_dir"].value)


class SegmentationResultsConfig(dg.Config):
    """Classical preset for the baseline (None: its defaults), overlay rows to draw, and the nucleus
    diameter of the counting images when it differs from the U-Net's training images."""

    classical_preset: str | None = None
    overlay_images: int = 3
    counting_nucleus_diameter_px: float | None = None


@dg.asset(group_name=SEG_GROUP, deps=[cell_image_sets, segmentation_model, counting_model],
          kinds={"tensorstore", "parquet"})
def segmentation_results(context: dg.AssetExecutionContext, config: SegmentationResultsConfig,
                         cellscape: CellscapeResource) -> dg.MaterializeResult:
    """Test-split labels (TensorStore), per-image scores and counts for the U-Net, counting CNN and classical baseline."""
    from ..core.segmentation.classical import classical_count, classical_segment

    sets = _sets(cellscape)
    seg_ckpt = latest_checkpoint(context, segmentation_model)
    if seg_ckpt is None:
        raise dg.Failure("segmentation_model has not been materialized")
    seg_model = load_model(seg_ckpt, kind="segmentation")
    cnt_ckpt = latest_checkpoint(context, counting_model)
    cnt_model = load_model(cnt_ckpt, kind="counting") if cnt_ckpt is not None else None
    out = cellscape.path(cellscape.artifacts_dir) / "cells" / "results" / context.run.run_id[:8]
    out.mkdir(parents=True, exist_ok=True)
    md: dict = {"path": dg.MetadataValue.path(str(out)),
                "segmentation_checkpoint": dg.MetadataValue.path(str(seg_ckpt)),
                "counting_checkpoint": dg.MetadataValue.path(str(cnt_ckpt) if cnt_ckpt else "none")}

    # --- segmentation: U-Net vs classical on the test split
    test = sets[(sets.set == "segmentation") & (sets.split == "test")].reset_index(drop=True)
    methods = {"unet": seg_model.segment,
               "classical": lambda im: classical_segment(im, preset=config.classical_preset)}
    scores, labels = evaluate_segmentation(test, methods)
    context.log.info(f"segmented {len(test)} test images with {list(methods)}")
    for m, labs in labels.items():
        shape = write_label_stack(out / f"labels_{m}.zarr", labs)
        md[f"labels_{m}"] = dg.MetadataValue.path(str(out / f"labels_{m}.zarr"))
        context.log.info(f"labels_{m}: TensorStore array {shape}")
    _atomic_parquet(scores, out / "segmentation_scores.parquet")
    summary = summarise_scores(scores)
    md["segmentation_metrics"] = table_metadata(summary)
    for r in summary.itertuples(index=False):
        md[f"{r.method}_f1"] = float(r.f1_iou50)
        md[f"{r.method}_mean_ap"] = float(r.mean_ap_50_95)
    k = min(config.overlay_images, len(test))
    if k:
        from ..core.imaging.io import read_image
        from ..core.segmentation.datasets import load_mask

        pick = np.linspace(0, len(test) - 1, k).round().astype(int)
        f1 = {m: [float(scores[(scores.method == m)].f1.iloc[i]) for i in pick] for m in methods}
        fig = plots.plot_segmentation_overlays(
            [read_image(test.image_path[i]) for i in pick], [load_mask(test.mask_path[i]) for i in pick],
            {m: [labels[m][i] for i in pick] for m in methods}, [test.name[i] for i in pick], f1)
        png = plots.save_png(fig, out / "overlays.png")
        md.update(figure_metadata("overlays", png))

    # --- counting: CNN, U-Net instances and classical instances on the test split
    ctest = sets[(sets.set == "counting") & (sets.split == "test")].reset_index(drop=True)
    if len(ctest):
        from ..core.imaging.io import read_image

        rows = []
        for r in ctest.itertuples(index=False):
            im = read_image(r.image_path)
            row = {"name": r.name, "count": r.count, "blur": r.blur, "stain": r.stain,
                   "classical_instances": classical_count(im, preset=f"bbbc005_w{int(r.stain)}")}
            if cnt_model is not None:
                row["counting_cnn"] = cnt_model.count(im)
            # the U-Net segments nuclei: its instances count the nucleus stain (1) only
            row["unet_instances"] = (float(seg_model.segment(im, config.counting_nucleus_diameter_px).max())
                                     if int(r.stain) == 1 else np.nan)
            rows.append(row)
        counts = pd.DataFrame(rows)
        _atomic_parquet(counts, out / "counts.parquet")
        cols = [c for c in ("counting_cnn", "unet_instances", "classical_instances") if c in counts]
        table = pd.concat([count_metrics_by(counts[counts[c].notna()], pred_col=c).assign(method=c)
                           for c in cols if counts[c].notna().any()], ignore_index=True)
        md["count_metrics"] = table_metadata(table, digits=3)
        for c in cols:
            md[f"{c}_mae"] = float(np.nanmean(np.abs(counts[c] - counts["count"])))
        groups = [f"F{b} w{s}" for b, s in zip(counts.blur, counts.stain, strict=True)]
        png = plots.save_png(plots.plot_counts(counts["count"], {c: counts[c] for c in cols}, groups,
                                               "counts on the test split"), out / "counts.png")
        md.update(figure_metadata("counts_figure", png, "counts"))
    (out / "summary.json").write_text(json.dumps({"segmentation": summary.to_dict("records")}, indent=2,
                                                 default=float) + "\n")
    return dg.MaterializeResult(metadata=md)


segmentation_job = dg.define_asset_job(
    "segmentation_job",
    selection=dg.AssetSelection.assets(cell_image_sets, segmentation_model, counting_model, segmentation_results),
    description="Build the cell image sets, train the U-Net and the counting CNN, score both against the baseline.",
)
