"""The localization model: a cytoself-style VQ-VAE trained on demand (pool ``gpu``), its
ablation without the classification head, a blocking health check, the promotion that makes
"the current model" explicit, and nightly retraining.

Gates: a model reads only a splits handle whose ``splits_disjoint`` check passed; a model whose
``model_health`` failed is never promoted, never embedded by the atlas and never counts as the
last model for the schedule.  The schedule retrains when the plates' raw content changed since
the current model (re-ingesting identical files changes nothing), with the current model's own
training config, and retries a failed night once.
"""

import hashlib
import json
from pathlib import Path

import dagster as dg
import numpy as np

from ...core.localization.config import TrainConfig
from ...core.localization.training import fit, save_training_figures
from ...core.store.lineage import content_key, lineage_refs
from ..config import dagster_config
from ..deploy import GPU_OP_TAGS
from ..io import HANDLE_IO_MANAGER
from ..metadata import figure_metadata, table_metadata
from ..resources import CellscapeResource
from ..store import dataset_splits

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


def _train(context, cfg: TrainConfig, cellscape: CellscapeResource, name: str, splits_handle: dict):
    if not splits_handle.get("disjoint", False):
        raise dg.Failure(f"dataset_splits {splits_handle['splits_version']} failed splits_disjoint "
                         f"({'; '.join(splits_handle.get('problems', [])) or 'no check recorded'}); fix the split first")
    store = cellscape.store()
    splits = store.read_dataset_table("splits", version=splits_handle["splits_version"])
    out_dir = cellscape.path(cellscape.artifacts_dir) / "models" / name / context.run.run_id[:8]
    provenance = {
        "dataset_md5": splits_handle["dataset_md5"],
        "split_version": splits_handle["split_version"],
        "splits_store_version": splits_handle["splits_version"],
        "catalog_version": splits_handle["catalog_version"],
        "plates": splits_handle["plates"],
        "content_key": splits_handle["content_key"],
        "dagster_run_id": context.run.run_id,
        "asset": name,
    }
    # the versions this model read stay in the store as long as the pin does (cellscape gc)
    store.pin(f"model-{name}-{context.run.run_id[:8]}",
              lineage_refs(splits_handle["plates"], {"splits": splits_handle["splits_version"],
                                                     "catalog": splits_handle["catalog_version"]}),
              note=str(out_dir))
    context.log.info(f"training {name}: preset {cfg.preset}, classification_weight {cfg.classification_weight}, "
                     f"splits {splits_handle['splits_version']}, out {out_dir}")
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
        "splits_store_version": splits_handle["splits_version"],
        "frames_per_second": float(fm.get("frames_per_second", float("nan"))),
        "stopped_early": res.stopped_early,
        "history": table_metadata(res.history),
        **figure_metadata("reconstructions", figs["reconstructions"]),
        **figure_metadata("curves", figs["curves"]),
    }
    for k in ("valid_total", "valid_reconstruction", "valid_perplexity", "valid_accuracy", "train_total"):
        if k in fm:
            md[k] = float(fm[k])
    handle = {"name": name, "checkpoint": str(out_dir), "step": int(res.step), "run_id": context.run.run_id,
              "config": json.loads(cfg.model_dump_json()), **{k: provenance[k] for k in (
                  "dataset_md5", "split_version", "splits_store_version", "catalog_version", "plates", "content_key")}}
    return res, md, version, handle


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
        pool="gpu", op_tags=GPU_OP_TAGS,
        kinds={"jax"},
        io_manager_key=HANDLE_IO_MANAGER,
        check_specs=[dg.AssetCheckSpec("model_health", asset=name, blocking=True,
                                       description="Finite losses, no codebook collapse, accuracy above chance.")],
        description=(
            "The VQ-VAE trained without the classification head (classification_weight 0, same seed)."
            if ablation else
            "The cytoself-style VQ-VAE with its protein-ID head, trained on the train split (Orbax checkpoint)."
        ),
    )
    def _asset(context: dg.AssetExecutionContext, config: config_class, dataset_splits: dict,
               cellscape: CellscapeResource):
        cfg = config.to_library(classification_weight=0.0) if ablation else config.to_library()
        res, md, version, handle = _train(context, cfg, cellscape, name, dataset_splits)
        health = _health(res, cfg.classification_weight)
        problems = health.metadata["problems"]
        handle["health"] = {"passed": bool(health.passed), "problems": getattr(problems, "value", problems)}
        yield dg.Output(handle, metadata=md, data_version=dg.DataVersion(version))
        yield health

    return _asset


localization_model = _model_asset("localization_model", ablation=False)
localization_model_ablation = _model_asset("localization_model_ablation", ablation=True)


def accepted(handle: dict | None) -> bool:
    """Whether a model handle may be used: it exists and its blocking model_health passed."""
    return bool(handle) and bool(handle.get("health", {}).get("passed"))


def latest_handle(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict | None:
    """The JSON handle stored by the latest materialization of ``key`` (None if never or gone)."""
    records = instance.fetch_materializations(key, limit=1).records
    if not records:
        return None
    md = records[0].asset_materialization.metadata
    path = md.get("handle")
    if path is None or not Path(path.value).is_file():
        return None
    return json.loads(Path(path.value).read_text())


@dg.asset(group_name=MODEL_GROUP, kinds={"json"}, io_manager_key=HANDLE_IO_MANAGER)
def current_model(context: dg.AssetExecutionContext, localization_model: dict):
    """The promoted localization model: the newest one whose blocking health check passed, and the one it replaced."""
    before = latest_handle(context.instance, context.asset_key)
    if not accepted(localization_model):
        kept = (before or {}).get("current", {}).get("checkpoint", "none")
        raise dg.Failure(f"localization_model run {localization_model['run_id'][:8]} failed model_health "
                         f"({localization_model.get('health', {}).get('problems', 'no check recorded')}); "
                         f"not promoted, the current model stays {kept}")
    previous = (before or {}).get("current")
    if previous is not None and previous["checkpoint"] == localization_model["checkpoint"]:
        previous = before.get("previous")
    handle = {"current": localization_model, "previous": previous, "promoted_by": context.run.run_id}
    return dg.Output(handle, metadata={
        "checkpoint_dir": dg.MetadataValue.path(localization_model["checkpoint"]),
        "previous": (previous or {}).get("checkpoint", "none"),
        "dataset_md5": localization_model["dataset_md5"] or "unpinned",
        "splits_store_version": localization_model["splits_store_version"],
        "preset": str(localization_model["config"].get("preset")),
    })


train_job = dg.define_asset_job(
    "train_job",
    selection=dg.AssetSelection.assets(dataset_splits, localization_model, current_model),
    description="Rebuild the splits from the current catalog, train the localization model, promote it if healthy.",
)


ablation_job = dg.define_asset_job(
    "ablation_job",
    selection=dg.AssetSelection.assets(localization_model_ablation),
    description="Train the ablation (no classification head, same seed) for side-by-side scores.",
)

RETRAIN_TAG = "cellscape/retrain_key"
ATTEMPTS = 2  # a failed night is retried once


def plate_content(cellscape: CellscapeResource) -> dict[str, str]:
    """``plate_id -> raw content digest`` of the plates in the frame store now (assets record
    ``content_sha256``, ``cellscape ingest`` ``source_digest``)."""
    store = cellscape.store()
    out = {}
    for pid in store.plate_ids():
        prov = store.read_manifest(pid).get("provenance", {})
        digest = prov.get("content_sha256") or prov.get("source_digest")
        if digest:
            out[pid] = str(digest)
    return out


def retrain_request(instance: dg.DagsterInstance, cellscape: CellscapeResource) -> dg.RunRequest | dg.SkipReason:
    """What the nightly schedule does: a run request when the plates' content differs from what
    the current (promoted) model was trained on, with that model's training config; retried once
    when a night's run for the same content failed."""
    content = plate_content(cellscape)
    if not content:
        return dg.SkipReason("no plate has been ingested yet")
    key = content_key(content)
    promoted = latest_handle(instance, current_model.key)
    current = (promoted or {}).get("current")
    if current is not None and current.get("content_key") == key:
        return dg.SkipReason(f"plate content unchanged since the current model ({current['checkpoint']})")
    runs = instance.get_runs(filters=dg.RunsFilter(tags={RETRAIN_TAG: key}))
    if any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs):
        return dg.SkipReason(f"content {key[:12]} was retrained already (its model was not promoted)")
    if any(not r.is_finished for r in runs):
        return dg.SkipReason(f"a retraining of content {key[:12]} is running")
    if len(runs) >= ATTEMPTS:
        return dg.SkipReason(f"retraining content {key[:12]} failed {len(runs)} times; see those runs")
    cfg = {k: v for k, v in (current or {}).get("config", {"preset": "tiny"}).items()
           if k in ModelTrainingConfig.model_fields and v is not None}
    why = "no model yet" if current is None else "plate content changed since the current model"
    return dg.RunRequest(
        run_key=f"retrain-{key[:16]}-{len(runs) + 1}",
        run_config={"ops": {"localization_model": {"config": cfg}}},
        tags={RETRAIN_TAG: key, "reason": why, "attempt": str(len(runs) + 1)},
    )


@dg.schedule(job=train_job, cron_schedule="0 2 * * *", default_status=dg.DefaultScheduleStatus.RUNNING)
def retrain_schedule(context: dg.ScheduleEvaluationContext, cellscape: CellscapeResource):
    """Nightly: retrain when the plates' content changed since the current model (its config; one retry)."""
    return retrain_request(context.instance, cellscape)
