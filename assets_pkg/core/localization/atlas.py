"""From a trained model to the localization atlas: per-frame codebook histograms, protein
feature spectra, code clusters, UMAP and the scores, with exports a user can take elsewhere.

Each step is one function (one per Dagster asset); :func:`build_report` chains them for the
``cellscape report`` command.  Every export carries its provenance (checkpoint, dataset md5).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CellscapeError
from ..store.frame_store import FrameStore
from . import analysis
from .loader import FrameLoader
from .models import ModelConfig


@dataclass
class Embeddings:
    """Per-frame model outputs for a set of frames.

    Attributes
    ----------
    rows : pandas.DataFrame
        One row per frame (frame_id, plate_id, frame_index, gene, ensg_id, localization, split).
    histograms : ndarray, shape (N, K), float32
        Codebook-usage histogram of the local 25x25 map, normalised to sum 1 per frame.
    histograms_global : ndarray, shape (N, K_global), float32, or None
        Same for the global level of two-level models.
    pooled : ndarray, shape (N, D), float32
        Spatially pooled continuous encoder output.
    frames_per_second : float
    """

    rows: pd.DataFrame
    histograms: np.ndarray
    histograms_global: np.ndarray | None
    pooled: np.ndarray
    frames_per_second: float


def _hist(indices: np.ndarray, k: int) -> np.ndarray:
    flat = indices.reshape(len(indices), -1).astype(np.int64)
    offs = flat + (np.arange(len(flat))[:, None] * k)
    h = np.bincount(offs.ravel(), minlength=len(flat) * k).reshape(len(flat), k).astype(np.float32)
    return h / h.sum(axis=1, keepdims=True)


def frame_embeddings(params, model_cfg: ModelConfig, store: FrameStore, rows: pd.DataFrame,
                     batch_size: int = 256) -> Embeddings:
    """Histograms and pooled embeddings of ``rows`` (needs ``plate_id``, ``frame_index``).

    Frames are read with the training loader (sorted batched reads, prefetch) and the model
    runs jitted in evaluation mode, batch by batch.
    """
    import jax

    from .training import _predict_fn

    if len(rows) == 0:
        raise CellscapeError("no frames to embed", field="split")
    rows = rows.reset_index(drop=True)
    loader = FrameLoader(store, rows.assign(label=0), batch_size, shuffle=False, drop_remainder=False,
                         cache=False, prefetch=2)
    fields = ("indices", "embedding") + (("indices_global",) if model_cfg.two_level else ())
    run = _predict_fn(model_cfg, fields)
    hs, hg, pooled = [], [], []
    t0 = time.perf_counter()
    for b in loader.epoch(0):
        out = jax.device_get(run(params, b.frames))
        hs.append(_hist(np.asarray(out["indices"]), model_cfg.num_embeddings))
        pooled.append(np.asarray(out["embedding"], np.float32))
        if model_cfg.two_level:
            hg.append(_hist(np.asarray(out["indices_global"]), model_cfg.global_num_embeddings))
    fps = len(rows) / (time.perf_counter() - t0)
    return Embeddings(rows, np.concatenate(hs), np.concatenate(hg) if hg else None, np.concatenate(pooled), fps)


def annotations_from_rows(rows: pd.DataFrame) -> pd.Series:
    """Protein -> set of annotated classes, from the frame table's ``localization`` column
    (empty for unannotated proteins, which are left out)."""
    per = rows.groupby("gene")["localization"].first().fillna("").astype(str)
    per = per[per.str.len() > 0]
    return per.map(lambda s: frozenset(x for x in s.split(";") if x))


@dataclass
class ModelAtlas:
    """Everything the report shows for one model (``clusters`` covers ``used_codes`` only)."""

    name: str
    spectra: pd.DataFrame
    counts: pd.Series
    clusters: analysis.CodeClusters
    coords: np.ndarray
    scores: dict
    knn_table: pd.DataFrame
    predictions: pd.DataFrame
    used_codes: np.ndarray


def code_clusters(name: str, emb: Embeddings, n_clusters: int):
    """Protein spectra, frame counts, the used codes and their clusters.

    Codes no protein uses have no correlation with anything: they would all merge at
    distance 1 and swallow ``maxclust``, so only used codes are clustered; ``clusters``
    indexes into ``used``.

    Returns
    -------
    (spectra DataFrame (P, K), counts Series, used ndarray of code ids, CodeClusters)
    """
    spectra, counts = analysis.protein_spectra(emb.histograms, emb.rows["gene"].astype(str).to_numpy())
    values = spectra.to_numpy()
    used = np.flatnonzero(values.max(axis=0) > values.min(axis=0))
    if len(used) < 2:
        raise CellscapeError(f"{name}: fewer than 2 codes vary across proteins (codebook collapse?)", field="histograms")
    return spectra, counts, used, analysis.cluster_codes(values[:, used], min(n_clusters, len(used)))


def cluster_figures(name: str, spectra: pd.DataFrame, used: np.ndarray, clusters, rows: pd.DataFrame) -> dict:
    """The code-correlation heatmap (dendrogram, cluster bar) and mean spectra per class."""
    single = analysis.single_localization(annotations_from_rows(rows))
    prot_class = single[single.index.isin(spectra.index)]
    return {
        "code_correlation": analysis.plot_code_correlation(clusters, title=f"{name}: code-code correlation"),
        "spectra_by_class": analysis.plot_spectra_by_class(spectra.iloc[:, used], prot_class, clusters,
                                                           title=f"{name}: mean feature spectrum per class"),
    }


def model_atlas(name: str, emb: Embeddings, n_clusters: int, seed: int, k: int = 5,
                coords: np.ndarray | None = None) -> ModelAtlas:
    """Spectra, code clusters, UMAP (unless ``coords`` given) and scores of one model."""
    spectra, counts, used, clusters = code_clusters(name, emb, n_clusters)
    if coords is None:
        coords = analysis.umap_projection(emb.histograms, seed=seed)
    ann = annotations_from_rows(emb.rows)
    single = analysis.single_localization(ann)
    frame_single = emb.rows["gene"].map(single)
    mask = frame_single.notna().to_numpy()
    score = (analysis.clustering_score(coords[mask], frame_single[mask].astype(str).to_numpy())[0]
             if frame_single[mask].nunique() >= 2 else float("nan"))
    annotated = spectra.loc[spectra.index.isin(ann.index)]
    if len(annotated) >= 2:
        acc, knn_table = analysis.knn_localization_accuracy(annotated, ann, k=min(k, len(annotated) - 1))
    else:
        acc, knn_table = float("nan"), pd.DataFrame()
    single_prot = single[single.index.isin(spectra.index)]
    if len(single_prot) >= 3 and single_prot.nunique() >= 2:  # ARI needs something to partition
        pc = analysis.protein_clusters(spectra.loc[single_prot.index], n_clusters=single_prot.nunique())
        ari = analysis.adjusted_rand_index(pc.to_numpy(), single_prot.loc[pc.index].to_numpy())
    else:
        ari = float("nan")
    unannotated = [p for p in spectra.index if p not in ann.index]
    preds = (analysis.predict_localization(spectra, ann, unannotated, k=k) if unannotated
             else pd.DataFrame(columns=["protein", "predicted", "confidence", "neighbours"]))
    scores = {
        "clustering_score": float(score),
        "knn_accuracy": float(acc),
        "ari_protein_clusters": float(ari),
        "frames": int(len(emb.rows)),
        "proteins": int(len(spectra)),
        "single_localization_frames": int(mask.sum()),
        "perplexity_of_mean_usage": float(np.exp(-np.sum(_safe_plogp(emb.histograms.mean(0))))),
    }
    scores["used_codes"] = int(len(used))
    return ModelAtlas(name, spectra, counts, clusters, coords, scores, knn_table, preds, used)


def _safe_plogp(p: np.ndarray) -> np.ndarray:
    p = p[p > 0]
    return p * np.log(p)


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def export_atlas(out_dir: str | Path, atlases: list[ModelAtlas], emb: dict[str, Embeddings], provenance: dict,
                 seed: int) -> dict[str, Path]:
    """Write tables (parquet), matrices (.npz), figures (PNG) and scores (JSON) into ``out_dir``.

    Returns the written paths by name.  Every file is written to a temporary name first.
    """
    import io

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    prov_json = json.dumps(provenance, default=str)
    for a in atlases:
        e = emb[a.name]
        tab = e.rows[["frame_id", "plate_id", "frame_index", "gene", "ensg_id", "localization", "split"]].copy()
        tab["umap_x"], tab["umap_y"] = a.coords[:, 0], a.coords[:, 1]
        buf = io.BytesIO()
        tab.to_parquet(buf, index=False)
        _atomic_bytes(out / f"{a.name}_frames.parquet", buf.getvalue())
        buf = io.BytesIO()
        np.savez_compressed(buf, histograms=e.histograms, pooled=e.pooled, used_codes=a.used_codes, corr=a.clusters.corr,
                            linkage=a.clusters.linkage, code_cluster=a.clusters.labels,
                            leaf_order=a.clusters.leaf_order, provenance=np.array(prov_json))
        _atomic_bytes(out / f"{a.name}_matrices.npz", buf.getvalue())
        sp = a.spectra.copy()
        sp.columns = [f"code_{c}" for c in range(sp.shape[1])]
        sp.insert(0, "frames", a.counts.reindex(sp.index).to_numpy())
        buf = io.BytesIO()
        sp.reset_index(names="protein").to_parquet(buf, index=False)
        _atomic_bytes(out / f"{a.name}_spectra.parquet", buf.getvalue())
        for name, table in (("knn", a.knn_table), ("predictions", a.predictions)):
            buf = io.BytesIO()
            table.astype({c: str for c in table.columns if table[c].dtype == object}).to_parquet(buf, index=False)
            _atomic_bytes(out / f"{a.name}_{name}.parquet", buf.getvalue())
        figs = _figures(a, e)
        for fname, fig in figs.items():
            from .. import plots

            paths[f"{a.name}_{fname}"] = plots.save_png(fig, out / "figures" / f"{a.name}_{fname}.png")
    if len(atlases) > 1:
        from .. import plots

        labels = emb[atlases[0].name].rows["gene"].map(
            analysis.single_localization(annotations_from_rows(emb[atlases[0].name].rows))).fillna("others").to_numpy()
        fig = analysis.plot_aligned_umaps([a.coords for a in atlases], labels, [a.name for a in atlases],
                                          single_mask=labels != "others")
        paths["aligned_umaps"] = plots.save_png(fig, out / "figures" / "aligned_umaps.png")
    scores = {a.name: a.scores for a in atlases}
    _atomic_bytes(out / "scores.json", (json.dumps({"scores": scores, "provenance": provenance, "seed": seed},
                                                   indent=2, default=str) + "\n").encode())
    paths["scores"] = out / "scores.json"
    return paths


def _figures(a: ModelAtlas, e: Embeddings) -> dict:
    labels = e.rows["gene"].map(analysis.single_localization(annotations_from_rows(e.rows))).fillna("others").to_numpy()
    figs = cluster_figures(a.name, a.spectra, a.used_codes, a.clusters, e.rows)
    figs["umap"] = analysis.plot_umap(a.coords, labels, labels != "others", title=f"{a.name}: UMAP of codebook histograms")
    return figs


def scores_table(atlases: list[ModelAtlas]) -> pd.DataFrame:
    """Scores of several models side by side (rows: score, columns: model)."""
    return pd.DataFrame({a.name: a.scores for a in atlases})


def build_report(checkpoints: dict[str, str | Path], store: FrameStore, splits: pd.DataFrame, out_dir: str | Path,
                 split: str = "all", n_clusters: int = 16, seed: int = 0, batch_size: int = 256,
                 provenance: dict | None = None, log=print) -> tuple[pd.DataFrame, dict[str, Path]]:
    """The whole atlas for one or more models (first = the one to report; others side by side).

    Parameters
    ----------
    checkpoints : dict name -> model folder (as written by training.fit)
    splits : DataFrame with ``split``; ``split="all"`` uses every frame.
    """
    from .training import load_checkpoint

    rows = splits if split == "all" else splits[splits["split"] == split]
    if len(rows) == 0:
        raise CellscapeError(f"the {split!r} split holds no frames", field="split")
    emb, atlases, coords = {}, [], None
    ckpt_prov = {}
    for name, ckpt in checkpoints.items():
        params, model_cfg, meta = load_checkpoint(ckpt)
        ckpt_prov[name] = {"checkpoint": str(ckpt), "step": meta.get("step"),
                           "dataset_md5": meta.get("provenance", {}).get("dataset_md5")}
        emb[name] = frame_embeddings(params, model_cfg, store, rows, batch_size=batch_size)
        log(f"{name}: embedded {len(rows)} frames at {emb[name].frames_per_second:.0f} frames/s")
    names = list(checkpoints)
    if len(names) > 1:
        coords = analysis.aligned_umap([emb[n].histograms for n in names], seed=seed)
    for i, name in enumerate(names):
        atlases.append(model_atlas(name, emb[name], n_clusters, seed, coords=None if coords is None else coords[i]))
        log(f"{name}: {atlases[-1].scores}")
    prov = {"models": ckpt_prov, "split": split, "n_clusters": n_clusters, **(provenance or {})}
    paths = export_atlas(out_dir, atlases, emb, prov, seed)
    return scores_table(atlases), paths


def save_embeddings(emb: Embeddings, out_dir: str | Path, name: str) -> Path:
    """Write embeddings as ``<name>_embeddings.npz`` + ``<name>_rows.parquet`` (no pickle)."""
    import io

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    arrays = {"histograms": emb.histograms, "pooled": emb.pooled, "frames_per_second": np.float64(emb.frames_per_second)}
    if emb.histograms_global is not None:
        arrays["histograms_global"] = emb.histograms_global
    np.savez(buf, **arrays)
    _atomic_bytes(out / f"{name}_embeddings.npz", buf.getvalue())
    buf = io.BytesIO()
    emb.rows.to_parquet(buf, index=False)
    _atomic_bytes(out / f"{name}_rows.parquet", buf.getvalue())
    return out


def load_embeddings(out_dir: str | Path, name: str) -> Embeddings:
    """Inverse of :func:`save_embeddings`."""
    out = Path(out_dir)
    with np.load(out / f"{name}_embeddings.npz", allow_pickle=False) as z:
        hg = z["histograms_global"] if "histograms_global" in z.files else None
        return Embeddings(pd.read_parquet(out / f"{name}_rows.parquet"), z["histograms"], hg, z["pooled"],
                          float(z["frames_per_second"]))
