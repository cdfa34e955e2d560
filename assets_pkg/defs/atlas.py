"""The localization atlas: embeddings, spectra, code clusters, UMAP and the report, computed
from the models' latest materializations (the model is an input, never "newest on disk")."""

import json
from pathlib import Path
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd

from ..core.localization import atlas
from ..core.localization.projection import aligned_umap
from ..core.localization.training import load_checkpoint
from ..core.plots.atlas import plot_aligned_umaps
from ..core.plots.figures import png_markdown, save_png
from .dataset import dataset_splits
from .model import localization_model, localization_model_ablation
from .resources import CellscapeResource

ATLAS_GROUP = "atlas"
MODELS = (localization_model, localization_model_ablation)


def _latest(context, asset) -> dict | None:
    ev = context.instance.get_latest_materialization_event(asset.key)
    return None if ev is None else ev.asset_materialization.metadata


def _path(md: dict, key: str) -> Path:
    return Path(md[key].value)


def _embedding_dir(context, cellscape: CellscapeResource) -> tuple[Path, list[str]]:
    md = _latest(context, frame_embeddings)
    if md is None:
        raise dg.Failure("frame_embeddings has not been materialized")
    return _path(md, "path"), json.loads(md["models"].value)


def _model_checkpoints(context) -> dict[str, Path]:
    """Checkpoint folders to embed with: the model, its ablation, and the model's previous
    materialization (``localization_model_previous``) so "is the new model better?" has an
    answer; each taken from the asset's own materialization records."""
    out = {}
    for asset in MODELS:
        records = context.instance.fetch_materializations(asset.key, limit=2).records
        name = asset.key.to_user_string()
        if not records:
            context.log.info(f"{name} not materialized: left out")
            continue
        for suffix, rec in zip(("", "_previous"), records, strict=False):
            if suffix and asset is not localization_model:
                continue
            md = rec.asset_materialization.metadata
            ckpt = _path(md, "checkpoint_dir")
            if ckpt.is_dir():
                out[name + suffix] = ckpt
            else:
                context.log.warning(f"{name + suffix}: checkpoint {ckpt} is gone; left out")
    return out


class EmbeddingsConfig(dg.Config):
    """Which split to embed and the batch size."""

    split: Literal["all", "train", "valid", "test"] = "all"
    batch_size: int = 256


@dg.asset(group_name=ATLAS_GROUP, deps=[localization_model, localization_model_ablation, dataset_splits],
          kinds={"numpy"})
def frame_embeddings(context: dg.AssetExecutionContext, config: EmbeddingsConfig, cellscape: CellscapeResource):
    """Per-frame codebook-usage histograms (and pooled encoder outputs) of each trained model."""
    store = cellscape.store()
    splits = store.read_dataset_table("splits")
    rows = splits if config.split == "all" else splits[splits["split"] == config.split]
    out = cellscape.path(cellscape.artifacts_dir) / "atlas" / context.run.run_id[:8]
    models, md = [], {}
    for name, ckpt in _model_checkpoints(context).items():
        params, model_cfg, _ = load_checkpoint(ckpt)
        emb = atlas.frame_embeddings(params, model_cfg, store, rows, batch_size=config.batch_size)
        atlas.save_embeddings(emb, out, name)
        models.append(name)
        md[f"{name}_checkpoint"] = dg.MetadataValue.path(str(ckpt))
        md[f"{name}_frames_per_second"] = round(emb.frames_per_second, 1)
        context.log.info(f"{name}: {len(rows)} frames at {emb.frames_per_second:.0f} frames/s")
    if not models:
        raise dg.Failure("no trained model to embed with; materialize localization_model first")
    md.update({"path": dg.MetadataValue.path(str(out)), "models": json.dumps(models), "frames": len(rows),
               "split": config.split, "dataset_md5": cellscape.dataset_md5() or "unpinned"})
    return dg.MaterializeResult(metadata=md)


@dg.asset(group_name=ATLAS_GROUP, deps=[frame_embeddings], kinds={"parquet"})
def protein_spectra(context: dg.AssetExecutionContext, cellscape: CellscapeResource):
    """Per protein, the mean codebook histogram of its frames (its feature spectrum) and frame count."""
    path, models = _embedding_dir(context, cellscape)
    md = {"path": dg.MetadataValue.path(str(path))}
    for name in models:
        emb = atlas.load_embeddings(path, name)
        spectra, counts = atlas.embedding_spectra(emb)
        atlas.save_spectra(spectra, counts, path / f"{name}_spectra.parquet")
        md[f"{name}_proteins"] = len(spectra)
        md[f"{name}_frames_per_protein_min"] = int(counts.min())
    return dg.MaterializeResult(metadata=md)


class ClustersConfig(dg.Config):
    """Number of code clusters (fcluster maxclust)."""

    n_clusters: int = 16


@dg.asset(group_name=ATLAS_GROUP, deps=[protein_spectra], kinds={"numpy"})
def feature_spectrum_clusters(context: dg.AssetExecutionContext, config: ClustersConfig, cellscape: CellscapeResource):
    """Codebook entries clustered by the Pearson correlation of their use across proteins; leaf order exported."""
    path, models = _embedding_dir(context, cellscape)
    md = {}
    for name in models:
        emb = atlas.load_embeddings(path, name)
        spectra, _ = atlas.embedding_spectra(emb)
        used, clusters = atlas.cluster_used_codes(name, spectra, config.n_clusters)
        np.savez(path / f"{name}_code_clusters.npz", used_codes=used, corr=clusters.corr,
                 linkage=clusters.linkage, labels=clusters.labels, leaf_order=clusters.leaf_order)
        for fname, fig in atlas.cluster_figures(name, spectra, used, clusters, emb.rows).items():
            png = save_png(fig, path / "figures" / f"{name}_{fname}.png")
            md[f"{name}_{fname}"] = dg.MetadataValue.md(png_markdown(png, fname))
        md[f"{name}_used_codes"] = int(len(used))
        md[f"{name}_cluster_sizes"] = str(np.bincount(clusters.labels)[1:].tolist())
    return dg.MaterializeResult(metadata=md)


class UmapConfig(dg.Config):
    """UMAP seed and neighbourhood."""

    seed: int = 0
    n_neighbors: int = 15


@dg.asset(group_name=ATLAS_GROUP, deps=[frame_embeddings], kinds={"umap"})
def umap_projection(context: dg.AssetExecutionContext, config: UmapConfig, cellscape: CellscapeResource):
    """2-D UMAP of the frame histograms; aligned across models when there are two, seed recorded."""
    path, models = _embedding_dir(context, cellscape)
    embs = {n: atlas.load_embeddings(path, n) for n in models}
    coords = aligned_umap([embs[n].histograms for n in models], seed=config.seed, n_neighbors=config.n_neighbors)
    md = {"seed": config.seed, "aligned": len(models) > 1}
    for name, c in zip(models, coords, strict=True):
        pd.DataFrame({"frame_id": embs[name].rows["frame_id"], "umap_x": c[:, 0], "umap_y": c[:, 1]}).to_parquet(
            path / f"{name}_umap.parquet", index=False)
    rows = embs[models[0]].rows
    labels = atlas.frame_classes(rows)
    fig = plot_aligned_umaps(coords, labels, models, single_mask=labels != "others")
    png = save_png(fig, path / "figures" / "umaps.png")
    md["umaps"] = dg.MetadataValue.md(png_markdown(png, "umap"))
    return dg.MaterializeResult(metadata=md)


class ReportConfig(dg.Config):
    """Code clusters and neighbours used for the scores."""

    n_clusters: int = 16
    k: int = 5


@dg.asset(group_name=ATLAS_GROUP, deps=[umap_projection, feature_spectrum_clusters], kinds={"parquet"})
def localization_report(context: dg.AssetExecutionContext, config: ReportConfig, cellscape: CellscapeResource):
    """Clustering score, kNN localization accuracy, ARI and predictions, per model side by side."""
    path, models = _embedding_dir(context, cellscape)
    emb, atlases = {}, []
    for name in models:
        emb[name] = atlas.load_embeddings(path, name)
        spectra, counts = atlas.embedding_spectra(emb[name])
        used, clusters = atlas.cluster_used_codes(name, spectra, config.n_clusters)
        coords = atlas.load_projection(path / f"{name}_umap.parquet", emb[name].rows)
        atlases.append(atlas.model_atlas(name, emb[name], spectra, counts, used, clusters, coords, k=config.k))
    prov = {"embeddings": str(path), "dataset_md5": cellscape.dataset_md5(),
            "checkpoints": {n: load_checkpoint_dir(context, n) for n in models}}
    paths = atlas.export_atlas(path / "report", atlases, emb, prov, seed=0)
    table = atlas.scores_table(atlases)
    md = {"scores": dg.MetadataValue.md(table.round(4).reset_index(names="score").to_markdown(index=False)),
          "path": dg.MetadataValue.path(str(path / "report"))}
    for a in atlases:
        for k in ("clustering_score", "knn_accuracy", "ari_protein_clusters"):
            md[f"{a.name}_{k}"] = float(a.scores[k])
        if len(a.predictions):
            md[f"{a.name}_predictions"] = dg.MetadataValue.md(a.predictions.head(20).to_markdown(index=False))
    if "aligned_umaps" in paths:
        md["aligned_umaps"] = dg.MetadataValue.md(png_markdown(paths["aligned_umaps"], "aligned umaps"))
    return dg.MaterializeResult(metadata=md)


def load_checkpoint_dir(context, name: str) -> str:
    md = _latest(context, frame_embeddings)
    return str(md[f"{name}_checkpoint"].value) if md and f"{name}_checkpoint" in md else ""


atlas_job = dg.define_asset_job(
    "atlas_job",
    selection=dg.AssetSelection.assets(frame_embeddings, protein_spectra, feature_spectrum_clusters,
                                       umap_projection, localization_report),
    description="Embed frames with the trained models and build the localization atlas and report.",
)
