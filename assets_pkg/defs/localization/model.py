"""The localization model: a cytoself-style VQ-VAE trained on demand (pool ``gpu``), its
ablation without the classification head, a blocking health check and nightly retraining."""

import hashlib

import dagster as dg
import numpy as np

from ...core import plots
from ...core.localization.config import TrainConfig
from ...core.localization.training import fit, save_training_figures
from ..config import dagster_config
from ..deploy import GPU_OP_TAGS
from ..resources import CellscapeResource
from ..store import dataset_splits, frame_catalog, plate_frames

MODEL_GROUP = "model"


ModelTrainingConfig = dagster_config(
    TrainConfig, "ModelTrainingConfig",
    doc="VQ-VAE training (see ``TrainConfig``): a preset (tiny: laptop CPU in minutes; full: the book's "
        "settings; cytoself: two-level, 2048 codes) and any field set on top of it.")

AblationTrainingConfig = dagster_config(
    TrainConfig, "AblationTrainingConfig", exclude=("classification_weight",),
    doc="Training of the ablation (see ``TrainConfig``): as the model's, classification_weight fixed at 0.")


def perplexity_floor(num_embeddings: int) -> float:
    """Below this codebook perplexity the model counts as collapsed: 1 % of the codes, at least 2."""
    return max(2.0, num_embeddings / 100.0)


def _train(context, cfg: TrainConfig, cellscape: CellscapeResource, name: str):
    store = cellscape.store()
    splits = store.read_dataset_table("splits")
    split_manifest = store.read_dataset_manifest("splits")
    out_dir = cellscape.path(cellscape.artifacts_dir) / "models" / name / context.run.run_id[:8]
    provenance = {
        "dataset_md5": cellscape.dataset_md5(),
        "split_version": split_manifest.get("provenance", {}).get("split_version"),
        "splits_store_version": split_manifest.get("version"),
        "dagster_run_id": context.run.run_id,
        "asset": name,
    }
    context.log.info(f"training {name}: preset {cfg.preset}, classification_weight {cfg.classification_weight}, out {out_dir}")
    res = fit(store, splits, cfg, out_dir, provenance=provenance, log=context.log.info)
    fm = res.final_metrics
    figs = save_training_figures(res, store, splits, name, seed=cfg.seed)
    version = hashlib.sha256(f"{out_dir}:{res.step}".encode()).hexdigest()[:16]
    md = {
        "checkpoint_dir": dg.MetadataValue.path(str(out_dir)),
        "step": res.step,
        "preset": cfg.preset,
        "classification_weight": cfg.classification_weight,
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
    config_class = AblationTrainingConfig if ablation else ModelTrainingConfig

    @dg.asset(
        name=name,
        group_name=MODEL_GROUP,
        deps=[dataset_splits],
        pool="gpu", op_tags=GPU_OP_TAGS,
        kinds={"jax"},
        check_specs=[dg.AssetCheckSpec("model_health", asset=name, blocking=True,
                                       description="Finite losses, no codebook collapse, accuracy above chance.")],
        description=(
            "The VQ-VAE trained without the classification head (classification_weight 0, same seed)."
            if ablation else
            "The cytoself-style VQ-VAE with its protein-ID head, trained on the train split (Orbax checkpoint)."
        ),
    )
    def _asset(context: dg.AssetExecutionContext, config: config_class, cellscape: CellscapeResource):
        cfg = config.to_library(classification_weight=0.0) if ablation else config.to_library()
        res, md, version = _train(context, cfg, cellscape, name)
        yield dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(version),
                                   check_results=[_health(res, cfg.classification_weight)])

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
