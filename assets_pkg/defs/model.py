"""The localization model: a cytoself-style VQ-VAE trained on demand (pool ``gpu``), its
ablation without the classification head, a blocking health check and nightly retraining."""

import hashlib
from typing import Literal

import dagster as dg
import numpy as np

from ..core import plots
from ..core.localization.training import fit, save_training_figures, train_config_from_preset
from .dataset import dataset_splits, frame_catalog
from .plates import plate_frames
from .resources import CellscapeResource

MODEL_GROUP = "model"


class ModelTrainingConfig(dg.Config):
    """Preset (tiny: laptop CPU in minutes; full: the book's settings; cytoself: two-level,
    2048 codes) and optional overrides; unset fields keep the preset's values."""

    preset: Literal["tiny", "full", "cytoself"] = "tiny"
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    classification_weight: float = 1.0
    input_channels: list[int] | None = None
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    seed: int = 0


def perplexity_floor(num_embeddings: int) -> float:
    """Below this codebook perplexity the model counts as collapsed: 1 % of the codes, at least 2."""
    return max(2.0, num_embeddings / 100.0)


def _train(context, config: ModelTrainingConfig, cellscape: CellscapeResource, classification_weight: float, name: str):
    store = cellscape.store()
    splits = store.read_dataset_table("splits")
    split_manifest = store.read_dataset_manifest("splits")
    model_overrides = {"input_channels": tuple(config.input_channels)} if config.input_channels else {}
    cfg = train_config_from_preset(
        config.preset, epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
        classification_weight=classification_weight, compute_dtype=config.compute_dtype, seed=config.seed,
        model=model_overrides,
    )
    out_dir = cellscape.path(cellscape.artifacts_dir) / "models" / name / context.run.run_id[:8]
    provenance = {
        "dataset_md5": cellscape.dataset_md5(),
        "split_version": split_manifest.get("provenance", {}).get("split_version"),
        "splits_store_version": split_manifest.get("version"),
        "dagster_run_id": context.run.run_id,
        "asset": name,
    }
    context.log.info(f"training {name}: preset {config.preset}, classification_weight {classification_weight}, out {out_dir}")
    res = fit(store, splits, cfg, out_dir, provenance=provenance, log=context.log.info)
    fm = res.final_metrics
    figs = save_training_figures(res, store, splits, name, seed=config.seed)
    version = hashlib.sha256(f"{out_dir}:{res.step}".encode()).hexdigest()[:16]
    md = {
        "checkpoint_dir": dg.MetadataValue.path(str(out_dir)),
        "step": res.step,
        "preset": config.preset,
        "classification_weight": classification_weight,
        "num_classes": res.model_config.num_classes,
        "num_embeddings": res.model_config.num_embeddings,
        "dataset_md5": provenance["dataset_md5"] or "unpinned",
        "split_version": str(provenance["split_version"]),
        "frames_per_second": float(fm.get("frames_per_second", float("nan"))),
        "stopped_early": res.stopped_early,
        "history": dg.MetadataValue.md(res.history.round(4).to_markdown(index=False)),
        "reconstructions": dg.MetadataValue.md(plots.png_markdown(figs["reconstructions"], "reconstructions")),
        "curves": dg.MetadataValue.md(plots.png_markdown(figs["curves"], "curves")),
    }
    for k in ("valid_total", "valid_reconstruction", "valid_perplexity", "valid_accuracy", "train_total"):
        if k in fm:
            md[k] = float(fm[k])
    return res, md, version


def _health(res, classification_weight: float) -> dg.AssetCheckResult:
    fm = res.final_metrics
    split = "valid" if "valid_total" in fm else "train"
    losses = {k: v for k, v in fm.items() if k.endswith(("_total", "_reconstruction", "_codebook", "_commitment", "_classification"))}
    finite = all(np.isfinite(v) for v in losses.values())
    floor = perplexity_floor(res.model_config.num_embeddings)
    perplexity = float(fm.get(f"{split}_perplexity", 0.0))
    chance = 1.0 / res.model_config.num_classes
    accuracy = float(fm.get(f"{split}_accuracy", 0.0))
    problems = []
    if not finite:
        problems.append(f"non-finite losses: {losses}")
    if perplexity <= floor:
        problems.append(f"codebook collapse: {split} perplexity {perplexity:.2f} <= floor {floor:.2f}")
    if classification_weight > 0 and accuracy <= chance:
        problems.append(f"{split} accuracy {accuracy:.3f} not above chance {chance:.3f}")
    return dg.AssetCheckResult(
        check_name="model_health",
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "problems": "; ".join(problems) or "none",
            "perplexity": perplexity,
            "perplexity_floor": floor,
            "accuracy": accuracy,
            "chance": chance,
        },
    )


def _model_asset(name: str, ablation: bool):
    @dg.asset(
        name=name,
        group_name=MODEL_GROUP,
        deps=[dataset_splits],
        pool="gpu",
        kinds={"jax"},
        check_specs=[dg.AssetCheckSpec("model_health", asset=name, blocking=True,
                                       description="Finite losses, no codebook collapse, accuracy above chance.")],
        description=(
            "The VQ-VAE trained without the classification head (classification_weight 0, same seed)."
            if ablation else
            "The cytoself-style VQ-VAE with its protein-ID head, trained on the train split (Orbax checkpoint)."
        ),
    )
    def _asset(context: dg.AssetExecutionContext, config: ModelTrainingConfig, cellscape: CellscapeResource):
        weight = 0.0 if ablation else config.classification_weight
        res, md, version = _train(context, config, cellscape, weight, name)
        yield dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(version), check_results=[_health(res, weight)])

    return _asset


localization_model = _model_asset("localization_model", ablation=False)
localization_model_ablation = _model_asset("localization_model_ablation", ablation=True)

train_job = dg.define_asset_job(
    "train_job",
    selection=dg.AssetSelection.assets(frame_catalog, dataset_splits, localization_model),
    description="Rebuild the catalog and splits, then train the localization model.",
)


ablation_job = dg.define_asset_job(
    "ablation_job",
    selection=dg.AssetSelection.assets(localization_model_ablation),
    description="Train the ablation (no classification head, same seed) for side-by-side scores.",
)


def plates_newer_than_model(instance: dg.DagsterInstance) -> tuple[bool, str, str]:
    """Whether any plate partition materialized after the last localization_model.

    Returns (retrain?, why, key of the newest plate materialization).
    """
    def newest(key: dg.AssetKey):
        records = instance.fetch_materializations(key, limit=1).records
        return records[0] if records else None

    last_plate = newest(plate_frames.key)
    if last_plate is None:
        return False, "no plate has been ingested yet", ""
    key = str(last_plate.storage_id)
    last_model = newest(localization_model.key)
    if last_model is None:
        return True, "no model yet", key
    if last_plate.storage_id > last_model.storage_id:
        return True, f"plate {last_plate.partition_key or ''} ingested after the last model", key
    return False, "no plate ingested since the last model", key


@dg.schedule(job=train_job, cron_schedule="0 2 * * *", default_status=dg.DefaultScheduleStatus.RUNNING)
def retrain_schedule(context: dg.ScheduleEvaluationContext):
    """Nightly: retrain the localization model only when plates landed since the last model."""
    newer, why, key = plates_newer_than_model(context.instance)
    if not newer:
        return dg.SkipReason(why)
    # one request per newest plate materialization: a failed night is not retried in a loop
    return dg.RunRequest(run_key=f"retrain-after-{key}", tags={"reason": why})
