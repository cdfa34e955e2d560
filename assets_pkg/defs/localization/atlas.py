"""The localization atlas: embeddings, spectra, code clusters, UMAP and the report.

The atlas assets pass their results along the graph's edges: each writes its files under
``artifacts/atlas/<run>/`` and returns a small JSON handle (paths and ids, stored by
:class:`~.io.HandleIOManager`); each downstream asset takes its parents' handles as arguments,
so the report scores exactly the spectra, code clusters and projection its parents made.
``frame_embeddings`` takes the promoted model (``current_model``) and the ablation as inputs
(never "newest on disk", never a model whose health check failed), embeds the frames of the
promoted model's own split version, and records in its handle which checkpoints it used.
"""

import json
from pathlib import Path

import dagster as dg
import numpy as np

from ...core.localization import atlas
from ...core.localization.config import (
    CodeClusterConfig,
    EmbeddingConfig,
    ProjectionConfig,
    ScoreConfig,
)
from ...core.localization.figures import plot_aligned_umaps
from ...core.localization.projection import aligned_umap
from ...core.plots.figures import save_png
from ...core.store.lineage import lineage_refs
from ..config import dagster_config
from ..io import HANDLE_IO_MANAGER
from ..metadata import figure_metadata, table_metadata
from ..resources import CellscapeResource
from .model import accepted

ATLAS_GROUP = "atlas"


def _models_to_embed(context, current_model: dict, ablation: dict | None) -> dict[str, dict]:
    """Model handles to embed with: the promoted model, the one it replaced
    (``localization_model_previous``, so "is the new model better?" has an answer) and the
    ablation when its health check passed.  A model that failed its check is never used."""
    out = {"localization_model": current_model["current"]}
    if current_model.get("previous"):
        out["localization_model_previous"] = current_model["previous"]
    if ablation is None:
        context.log.info("localization_model_ablation not materialized: left out")
    elif not accepted(ablation):
        context.log.warning(f"localization_model_ablation run {ablation['run_id'][:8]} failed model_health: left out")
    else:
        out["localization_model_ablation"] = ablation
    for name, h in list(out.items()):
        if not Path(h["checkpoint"]).is_dir():
            context.log.warning(f"{name}: checkpoint {h['checkpoint']} is gone; left out")
            del out[name]
    return out


def _out_dir(context: dg.AssetExecutionContext, cellscape: CellscapeResource) -> Path:
    """This run's atlas folder: one job run writes every atlas file side by side, and a later
    run of one asset writes beside it instead of over what an earlier handle points to."""
    return cellscape.path(cellscape.artifacts_dir) / "atlas" / context.run.run_id[:8]


def _load_embeddings(handle: dict) -> dict[str, atlas.Embeddings]:
    return {name: atlas.load_embeddings(handle["path"], name) for name in handle["models"]}


EmbeddingsConfig = dagster_config(EmbeddingConfig, "EmbeddingsConfig")


@dg.asset(group_name=ATLAS_GROUP, kinds={"numpy"}, io_manager_key=HANDLE_IO_MANAGER,
          ins={"current_model": dg.AssetIn(),
               "localization_model_ablation": dg.AssetIn(metadata={"optional": True})})
def frame_embeddings(context: dg.AssetExecutionContext, config: EmbeddingsConfig, current_model: dict,
                     localization_model_ablation: dict | None, cellscape: CellscapeResource):
    """Per-frame codebook-usage histograms (and pooled encoder outputs) of the promoted model, the one before it and the ablation."""
    store = cellscape.store()
    model = current_model["current"]
    # every model is embedded on the frames of the promoted model's own split version
    splits = store.read_dataset_table("splits", version=model["splits_store_version"])
    rows = splits if config.split == "all" else splits[splits["split"] == config.split]
    out = _out_dir(context, cellscape)
    store.pin(f"atlas-{context.run.run_id[:8]}",
              lineage_refs(model["plates"], {"splits": model["splits_store_version"]}), note=str(out))
    models, md = {}, {}
    for name, h in _models_to_embed(context, current_model, localization_model_ablation).items():
        ckpt = Path(h["checkpoint"])
        emb, models[name] = atlas.embed_checkpoint(ckpt, store, rows, batch_size=config.batch_size,
                                                         moments=config.moments)
        atlas.save_embeddings(emb, out, name)
        md[f"{name}_checkpoint"] = dg.MetadataValue.path(str(ckpt))
        md[f"{name}_frames_per_second"] = round(emb.frames_per_second, 1)
        context.log.info(f"{name}: {len(rows)} frames at {emb.frames_per_second:.0f} frames/s")
    if not models:
        raise dg.Failure("no trained model to embed with; materialize localization_model first")
    handle = {"run_id": context.run.run_id, "path": str(out), "models": models, "split": config.split,
              "frames": len(rows), "dataset_md5": model["dataset_md5"],
              "splits_store_version": model["splits_store_version"], "plates": model["plates"]}
    md.update({"path": dg.MetadataValue.path(str(out)), "models": json.dumps(list(models)), "frames": len(rows),
               "split": config.split, "dataset_md5": handle["dataset_md5"] or "unpinned"})
    return dg.MaterializeResult(value=handle, metadata=md)


@dg.asset(group_name=ATLAS_GROUP, kinds={"parquet"}, io_manager_key=HANDLE_IO_MANAGER)
def protein_spectra(context: dg.AssetExecutionContext, frame_embeddings: dict, cellscape: CellscapeResource):
    """Per protein, the mean codebook histogram of its frames (its feature spectrum) and frame count."""
    out = _out_dir(context, cellscape)
    files, md = {}, {"path": dg.MetadataValue.path(str(out))}
    for name, emb in _load_embeddings(frame_embeddings).items():
        spectra, counts = atlas.embedding_spectra(emb)
        files[name] = str(atlas.save_spectra(spectra, counts, out / f"{name}_spectra.parquet"))
        md[f"{name}_proteins"] = len(spectra)
        md[f"{name}_frames_per_protein_min"] = int(counts.min())
    handle = {"run_id": context.run.run_id, "path": str(out), "files": files, "embeddings": frame_embeddings}
    return dg.MaterializeResult(value=handle, metadata=md)


ClustersConfig = dagster_config(CodeClusterConfig, "ClustersConfig")


@dg.asset(group_name=ATLAS_GROUP, kinds={"numpy"}, io_manager_key=HANDLE_IO_MANAGER)
def feature_spectrum_clusters(context: dg.AssetExecutionContext, config: ClustersConfig, protein_spectra: dict,
                              cellscape: CellscapeResource):
    """Codebook entries clustered by the Pearson correlation of their use across proteins; leaf order exported."""
    out = _out_dir(context, cellscape)
    embeddings = protein_spectra["embeddings"]
    files, md, method = {}, {}, None
    for name, path in protein_spectra["files"].items():
        spectra, _ = atlas.load_spectra(path)
        used, clusters = atlas.cluster_used_codes(name, spectra, config.n_clusters)
        files[name] = str(atlas.save_code_clusters(used, clusters, out / f"{name}_code_clusters.npz"))
        method = clusters.method
        rows = atlas.load_embedding_rows(embeddings["path"], name)
        for fname, fig in atlas.cluster_figures(name, spectra, used, clusters, rows).items():
            png = save_png(fig, out / "figures" / f"{name}_{fname}.png")
            md.update(figure_metadata(f"{name}_{fname}", png, fname))
        md[f"{name}_used_codes"] = int(len(used))
        md[f"{name}_cluster_sizes"] = str(np.bincount(clusters.labels)[1:].tolist())
    handle = {"run_id": context.run.run_id, "path": str(out), "files": files, "n_clusters": config.n_clusters,
              "method": method, "spectra_run_id": protein_spectra["run_id"], "embeddings": embeddings}
    return dg.MaterializeResult(value=handle, metadata=md)


UmapConfig = dagster_config(ProjectionConfig, "UmapConfig")


@dg.asset(group_name=ATLAS_GROUP, kinds={"umap"}, io_manager_key=HANDLE_IO_MANAGER)
def umap_projection(context: dg.AssetExecutionContext, config: UmapConfig, frame_embeddings: dict,
                    cellscape: CellscapeResource):
    """2-D UMAP of the frame histograms; aligned across models when there are two, seed recorded."""
    out = _out_dir(context, cellscape)
    embs = _load_embeddings(frame_embeddings)
    models = list(embs)
    coords = aligned_umap([embs[n].histograms for n in models], seed=config.seed, n_neighbors=config.n_neighbors)
    files = {name: str(atlas.save_projection(embs[name].rows, c, out / f"{name}_umap.parquet"))
             for name, c in zip(models, coords, strict=True)}
    labels = atlas.frame_classes(embs[models[0]].rows)
    fig = plot_aligned_umaps(coords, labels, models, single_mask=labels != "others")
    png = save_png(fig, out / "figures" / "umaps.png")
    md = {"seed": config.seed, "aligned": len(models) > 1, **figure_metadata("umaps", png, "umap")}
    handle = {"run_id": context.run.run_id, "path": str(out), "files": files, "seed": config.seed,
              "n_neighbors": config.n_neighbors, "aligned": len(models) > 1, "embeddings": frame_embeddings}
    return dg.MaterializeResult(value=handle, metadata=md)


ReportConfig = dagster_config(ScoreConfig, "ReportConfig")


def _check_same_lineage(protein_spectra: dict, feature_spectrum_clusters: dict, umap_projection: dict) -> None:
    """The report's parents must describe one set of embeddings, and the clusters those spectra."""
    runs = {name: h["embeddings"]["run_id"] for name, h in (("protein_spectra", protein_spectra),
                                                            ("feature_spectrum_clusters", feature_spectrum_clusters),
                                                            ("umap_projection", umap_projection))}
    if len(set(runs.values())) > 1:
        raise dg.Failure(f"the report's inputs come from different frame_embeddings runs {runs}; "
                         "materialize the atlas assets downstream of frame_embeddings together")
    if feature_spectrum_clusters["spectra_run_id"] != protein_spectra["run_id"]:
        raise dg.Failure(f"feature_spectrum_clusters was computed from protein_spectra run "
                         f"{feature_spectrum_clusters['spectra_run_id']}, not the current {protein_spectra['run_id']}; "
                         "materialize feature_spectrum_clusters again")


@dg.asset(group_name=ATLAS_GROUP, kinds={"parquet"}, io_manager_key=HANDLE_IO_MANAGER)
def localization_report(context: dg.AssetExecutionContext, config: ReportConfig, protein_spectra: dict,
                        feature_spectrum_clusters: dict, umap_projection: dict, cellscape: CellscapeResource):
    """Each model's own scores (test frames, own UMAP, seeds) beside the classical baseline, and predictions."""
    _check_same_lineage(protein_spectra, feature_spectrum_clusters, umap_projection)
    embeddings = protein_spectra["embeddings"]
    embs = _load_embeddings(embeddings)
    score_config = config.to_library()
    atlases = []
    for name, emb in embs.items():
        spectra, counts = atlas.load_spectra(protein_spectra["files"][name])
        used, clusters = atlas.load_code_clusters(feature_spectrum_clusters["files"][name])
        coords = atlas.load_projection(umap_projection["files"][name], emb.rows)
        atlases.append(atlas.model_atlas(name, emb, spectra, counts, used, clusters, coords, config=score_config))
    baselines = atlas.report_baselines(cellscape.store(), next(iter(embs.values())).rows, score_config,
                                       log=context.log.info)
    runs = {"frame_embeddings": embeddings["run_id"], "protein_spectra": protein_spectra["run_id"],
            "feature_spectrum_clusters": feature_spectrum_clusters["run_id"],
            "umap_projection": umap_projection["run_id"]}
    prov = atlas.report_provenance(embeddings["models"], embeddings["split"], feature_spectrum_clusters["n_clusters"],
                                   dataset_md5=embeddings["dataset_md5"], embeddings=embeddings["path"], runs=runs,
                                   k=config.k)
    out = _out_dir(context, cellscape) / "report"
    paths = atlas.export_atlas(out, atlases, embs, prov, seed=umap_projection["seed"], baselines=baselines)
    table = atlas.scores_table(atlases + baselines)
    md = {"scores": table_metadata(table.rename_axis("score"), index=True),
          "path": dg.MetadataValue.path(str(out))}
    for b in baselines:  # the classical baseline, scored as the models are
        for k in ("clustering_score", "frame_knn_accuracy", "knn_accuracy", "ari_protein_clusters"):
            md[f"{b.name}_{k}"] = float(b.scores[k])
    for a in atlases:
        for k in ("clustering_score", "frame_knn_accuracy", "knn_accuracy", "ari_protein_clusters"):
            md[f"{a.name}_{k}"] = float(a.scores[k])
        if len(a.predictions):
            md[f"{a.name}_predictions"] = table_metadata(a.predictions, max_rows=20)
    if "aligned_umaps" in paths:
        md.update(figure_metadata("aligned_umaps", paths["aligned_umaps"], "aligned umaps"))
    handle = {"run_id": context.run.run_id, "path": str(out), "scores": str(paths["scores"]), "k": config.k,
              "n_clusters": feature_spectrum_clusters["n_clusters"], "seed": umap_projection["seed"], "runs": runs,
              "embeddings": embeddings}
    return dg.MaterializeResult(value=handle, metadata=md)


atlas_job = dg.define_asset_job(
    "atlas_job",
    selection=dg.AssetSelection.assets(frame_embeddings, protein_spectra, feature_spectrum_clusters,
                                       umap_projection, localization_report),
    description="Embed frames with the trained models and build the localization atlas and report.",
)
