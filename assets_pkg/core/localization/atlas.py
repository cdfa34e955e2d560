"""From a trained model to the localization atlas: per-frame codebook histograms, protein
feature spectra, code clusters, UMAP and the scores, with exports a user can take elsewhere.

Each step is one function and one Dagster asset of ``assets_pkg.defs.localization.atlas``, and each stored
result has a save/load pair, so an asset hands its result to the next one:

* ``frame_embeddings``: :func:`embed_checkpoint`; :func:`save_embeddings` / :func:`load_embeddings`;
* ``protein_spectra``: :func:`embedding_spectra`; :func:`save_spectra` / :func:`load_spectra`;
* ``feature_spectrum_clusters``: :func:`cluster_used_codes`; :func:`save_code_clusters` /
  :func:`load_code_clusters`;
* ``umap_projection``: :func:`~.projection.aligned_umap`; :func:`save_projection` /
  :func:`load_projection`;
* ``localization_report``: :func:`model_atlas` from the above (and the classical baseline,
  :func:`report_baselines`), then :func:`export_atlas`.

:func:`build_report` chains the same functions for the ``cellscape report`` command, so the
command line and Dagster share one implementation.  Every export carries its provenance
(checkpoints, dataset md5, split, cluster count, seed).

The scores are each model's own (:func:`~.evaluation.score_embedding`): its own UMAP and its
own embeddings of the ``ScoreConfig.score_split`` frames (default ``test``), over several
seeds; the aligned UMAP of the compared models is a picture, never scored.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CellscapeError
from ..plots.figures import save_png
from ..store.frame_store import FrameStore
from .annotations import annotations_from_rows, single_localization
from .classical import report_baselines
from .config import AtlasConfig, ScoreConfig
from .evaluation import SEEDED_SCORES, EmbeddingScores, score_embedding, scores_table
from .figures import (
    plot_aligned_umaps,
    plot_code_correlation,
    plot_spectra_by_class,
    plot_umap,
)
from .loader import FrameLoader
from .models import ModelConfig
from .moments import scored_matrix
from .projection import aligned_umap
from .scores import predict_localization
from .spectra import CodeClusters, cluster_codes, protein_spectra


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
    moments : ndarray, shape (N, 2 D + D (D + 1) / 2), float32, or None
        The latent moments (:func:`~.moments.moments_fn`); None when not embedded.
    """

    rows: pd.DataFrame
    histograms: np.ndarray
    histograms_global: np.ndarray | None
    pooled: np.ndarray
    frames_per_second: float
    moments: np.ndarray | None = None


def _hist(indices: np.ndarray, k: int) -> np.ndarray:
    flat = indices.reshape(len(indices), -1).astype(np.int64)
    offs = flat + (np.arange(len(flat))[:, None] * k)
    h = np.bincount(offs.ravel(), minlength=len(flat) * k).reshape(len(flat), k).astype(np.float32)
    return h / h.sum(axis=1, keepdims=True)


def frame_embeddings(params, model_cfg: ModelConfig, store: FrameStore, rows: pd.DataFrame,
                     batch_size: int = 256, moments: bool = False) -> Embeddings:
    """Histograms and pooled embeddings of ``rows`` (needs ``plate_id``, ``frame_index``),
    and with ``moments`` the latent moments (:func:`~.moments.moments_fn`, 8 encoder passes a frame).

    Frames are read with the training loader (sorted batched reads, prefetch) and the model
    runs jitted in evaluation mode, batch by batch.
    """
    import jax

    from .moments import moments_fn
    from .training import predict_fn

    if len(rows) == 0:
        raise CellscapeError("no frames to embed", field="split")
    rows = rows.reset_index(drop=True)
    loader = FrameLoader(store, rows.assign(label=0), batch_size, shuffle=False, drop_remainder=False,
                         cache=False, prefetch=2)
    fields = ("indices", "embedding") + (("indices_global",) if model_cfg.two_level else ())
    run = predict_fn(model_cfg, fields)
    run_moments = moments_fn(model_cfg) if moments else None
    hs, hg, pooled, mom = [], [], [], []
    t0 = time.perf_counter()
    for b in loader.epoch(0):
        out = jax.device_get(run(params, b.frames))
        if run_moments is not None:
            mom.append(np.asarray(jax.device_get(run_moments(params, b.frames)), np.float32))
        hs.append(_hist(np.asarray(out["indices"]), model_cfg.num_embeddings))
        pooled.append(np.asarray(out["embedding"], np.float32))
        if model_cfg.two_level:
            hg.append(_hist(np.asarray(out["indices_global"]), model_cfg.global_num_embeddings))
    fps = len(rows) / (time.perf_counter() - t0)
    return Embeddings(rows, np.concatenate(hs), np.concatenate(hg) if hg else None, np.concatenate(pooled), fps,
                      np.concatenate(mom) if mom else None)


def embed_checkpoint(checkpoint: str | Path, store: FrameStore, rows: pd.DataFrame,
                     batch_size: int = 256, moments: bool = False) -> tuple[Embeddings, dict]:
    """Embed ``rows`` with the model saved in ``checkpoint`` and say which model that was.

    Parameters
    ----------
    checkpoint : str or Path
        A model folder as written by ``training.fit``.
    store : FrameStore
    rows : pandas.DataFrame
        Frames to embed (see :func:`frame_embeddings`).
    batch_size, moments : int, bool
        As :func:`frame_embeddings`.

    Returns
    -------
    embeddings : Embeddings
    model : dict
        JSON-ready provenance of the model: ``checkpoint`` (the folder), ``step`` and the
        ``dataset_md5`` it was trained on (None where the checkpoint does not record them).
    """
    from .training import load_checkpoint

    params, model_cfg, meta = load_checkpoint(checkpoint)
    emb = frame_embeddings(params, model_cfg, store, rows, batch_size=batch_size, moments=moments)
    return emb, {"checkpoint": str(checkpoint), "step": meta.get("step"),
                 "dataset_md5": meta.get("provenance", {}).get("dataset_md5")}


def embedding_spectra(emb: Embeddings) -> tuple[pd.DataFrame, pd.Series]:
    """Feature spectrum and frame count of every protein (``gene``) of ``emb``.

    Returns
    -------
    spectra : pandas.DataFrame, shape (P, K), float64
    counts : pandas.Series of int64, shape (P,)
        As :func:`~.spectra.protein_spectra` of ``emb.histograms`` grouped by ``emb.rows["gene"]``.
    """
    return protein_spectra(emb.histograms, emb.rows["gene"].astype(str).to_numpy())


def cluster_used_codes(name: str, spectra: pd.DataFrame, n_clusters: int) -> tuple[np.ndarray, CodeClusters]:
    """The codes some protein uses, clustered by the correlation of their use across proteins.

    Codes no protein uses have no correlation with anything: they would all merge at
    distance 1 and swallow ``maxclust``, so only used codes are clustered.

    Parameters
    ----------
    name : str
        The model's name, for the error message.
    spectra : pandas.DataFrame, shape (P, K)
        From :func:`embedding_spectra`.
    n_clusters : int
        Requested clusters, lowered to the number of used codes.

    Returns
    -------
    used : ndarray of int64, shape (U,)
        Code ids whose spectrum value varies across proteins.
    clusters : CodeClusters
        Over ``spectra.iloc[:, used]``: its code axis indexes into ``used``.
    """
    values = spectra.to_numpy()
    used = np.flatnonzero(values.max(axis=0) > values.min(axis=0))
    if len(used) < 2:
        raise CellscapeError(f"{name}: fewer than 2 codes vary across proteins (codebook collapse?)", field="histograms")
    return used, cluster_codes(values[:, used], min(n_clusters, len(used)))


@dataclass
class ModelAtlas:
    """Everything the report shows for one model (``clusters`` covers ``used_codes`` only).

    ``coords`` is the (aligned) UMAP picture of all embedded frames; ``evaluation`` holds the
    model's own scores (:class:`~.evaluation.EmbeddingScores`), of which ``scores`` is the
    summary plus the codebook's perplexity and used codes, and ``knn_table`` the protein kNN.
    """

    name: str
    spectra: pd.DataFrame
    counts: pd.Series
    clusters: CodeClusters
    coords: np.ndarray
    scores: dict
    knn_table: pd.DataFrame
    predictions: pd.DataFrame
    used_codes: np.ndarray
    evaluation: EmbeddingScores | None = None


def frame_classes(rows: pd.DataFrame) -> np.ndarray:
    """Single localization of each frame's protein, ``"others"`` where it has none or several.

    Returns
    -------
    ndarray of str, shape (N,)
        The colours of the UMAP figures.
    """
    return rows["gene"].map(single_localization(annotations_from_rows(rows))).fillna("others").to_numpy()


def cluster_figures(name: str, spectra: pd.DataFrame, used: np.ndarray, clusters: CodeClusters,
                    rows: pd.DataFrame) -> dict:
    """The code-correlation heatmap (dendrogram, cluster bar) and mean spectra per class."""
    single = single_localization(annotations_from_rows(rows))
    prot_class = single[single.index.isin(spectra.index)]
    return {
        "code_correlation": plot_code_correlation(clusters, title=f"{name}: code-code correlation"),
        "spectra_by_class": plot_spectra_by_class(spectra.iloc[:, used], prot_class, clusters,
                                                  title=f"{name}: mean feature spectrum per class"),
    }


def model_atlas(name: str, emb: Embeddings, spectra: pd.DataFrame, counts: pd.Series, used: np.ndarray,
                clusters: CodeClusters, coords: np.ndarray, k: int = 5,
                config: ScoreConfig | None = None) -> ModelAtlas:
    """Scores and predictions of one model from its embeddings, spectra, code clusters and UMAP picture.

    Parameters
    ----------
    name : str
    emb : Embeddings
        The frames (their ``rows`` give the annotations and splits), histograms and pooled outputs.
    spectra, counts
        From :func:`embedding_spectra` (or :func:`load_spectra`): the predictions for
        unannotated proteins and the figures use them.
    used, clusters
        From :func:`cluster_used_codes` (or :func:`load_code_clusters`).
    coords : ndarray, shape (N, 2)
        The UMAP picture of ``emb`` (aligned across models or not): exported and drawn, never scored.
    k : int
        Neighbours of the scores and predictions when ``config`` is not given.
    config : ScoreConfig, optional
        How the model is scored (default ``ScoreConfig(k=k)``): split, seeds, embedding, kNN.

    Returns
    -------
    ModelAtlas
        ``scores``: the summary of :func:`~.evaluation.score_embedding` over ``emb``'s
        ``config.embedding`` (own UMAP, ``config.score_split`` frames, mean/std/min/max over
        seeds, protein kNN with its bootstrap interval), plus ``perplexity_of_mean_usage`` and
        ``used_codes`` of the codebook over all embedded frames.
    """
    config = config if config is not None else ScoreConfig(k=k)
    ev = score_embedding(name, emb.rows, scored_matrix(name, emb, config.embedding), config)
    ann = annotations_from_rows(emb.rows)
    unannotated = [p for p in spectra.index if p not in ann.index]
    preds = (predict_localization(spectra, ann, unannotated, k=config.k) if unannotated
             else pd.DataFrame(columns=["protein", "predicted", "confidence", "neighbours"]))
    scores = {**ev.scores, "perplexity_of_mean_usage": float(np.exp(-np.sum(_safe_plogp(emb.histograms.mean(0))))),
              "used_codes": int(len(used))}
    return ModelAtlas(name, spectra, counts, clusters, coords, scores, ev.knn_table, preds, used, ev)


def _safe_plogp(p: np.ndarray) -> np.ndarray:
    p = p[p > 0]
    return p * np.log(p)


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


def save_spectra(spectra: pd.DataFrame, counts: pd.Series, path: str | Path) -> Path:
    """Write spectra and frame counts as one parquet table (``<name>_spectra.parquet``).

    Columns ``protein``, ``frames`` (int64), ``code_0 .. code_{K-1}`` (float64); one row per
    protein.  Written to a temporary name first.  Inverse: :func:`load_spectra`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = spectra.copy()
    table.columns = [f"code_{c}" for c in range(table.shape[1])]
    table.insert(0, "frames", counts.reindex(table.index).to_numpy())
    _atomic_bytes(path, _parquet_bytes(table.reset_index(names="protein")))
    return path


def load_spectra(path: str | Path) -> tuple[pd.DataFrame, pd.Series]:
    """Read a table written by :func:`save_spectra`.

    Returns
    -------
    spectra : pandas.DataFrame, shape (P, K), float64
        Indexed by protein (index name ``"protein"``), columns the code indices ``0 .. K-1``,
        exactly as :func:`~.spectra.protein_spectra` returned them.
    counts : pandas.Series of int64, named ``"n_frames"``
    """
    path = Path(path)
    table = pd.read_parquet(path)
    codes = [c for c in table.columns if c.startswith("code_")]
    if "protein" not in table.columns or "frames" not in table.columns or not codes:
        raise CellscapeError(f"not a spectra table: columns {list(table.columns)[:6]}", path=path, field="columns")
    if codes != [f"code_{i}" for i in range(len(codes))]:
        raise CellscapeError("code columns are not code_0 .. code_{K-1} in order", path=path, field="columns")
    index = pd.Index(table["protein"].astype(str).to_numpy(), name="protein")
    spectra = pd.DataFrame(table[codes].to_numpy(np.float64), index=index, columns=pd.RangeIndex(len(codes)))
    counts = pd.Series(table["frames"].to_numpy(np.int64), index=index, name="n_frames")
    return spectra, counts


def save_code_clusters(used: np.ndarray, clusters: CodeClusters, path: str | Path) -> Path:
    """Write used codes and their clusters as ``.npz`` (no pickle); inverse :func:`load_code_clusters`.

    Arrays ``used_codes``, ``corr``, ``linkage``, ``labels``, ``leaf_order`` (as
    :class:`~.spectra.CodeClusters`), ``method`` and ``n_clusters`` (0-d).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, used_codes=used, corr=clusters.corr, linkage=clusters.linkage, labels=clusters.labels,
             leaf_order=clusters.leaf_order, method=np.array(clusters.method), n_clusters=np.int64(clusters.n_clusters))
    _atomic_bytes(path, buf.getvalue())
    return path


def load_code_clusters(path: str | Path) -> tuple[np.ndarray, CodeClusters]:
    """Read what :func:`save_code_clusters` wrote: ``(used codes, CodeClusters)``."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        missing = {"used_codes", "corr", "linkage", "labels", "leaf_order", "method", "n_clusters"} - set(z.files)
        if missing:
            raise CellscapeError(f"not a code-clusters file: missing {sorted(missing)}", path=path, field="arrays")
        clusters = CodeClusters(corr=z["corr"], linkage=z["linkage"], labels=z["labels"], leaf_order=z["leaf_order"],
                                method=str(z["method"]), n_clusters=int(z["n_clusters"]))
        return z["used_codes"], clusters


def save_projection(rows: pd.DataFrame, coords: np.ndarray, path: str | Path) -> Path:
    """Write 2-D coordinates of frames as parquet: ``frame_id``, ``umap_x``, ``umap_y`` (float32)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"frame_id": rows["frame_id"], "umap_x": coords[:, 0], "umap_y": coords[:, 1]})
    _atomic_bytes(path, _parquet_bytes(table))
    return path


def load_projection(path: str | Path, rows: pd.DataFrame) -> np.ndarray:
    """Coordinates saved by :func:`save_projection`, checked to be those of ``rows`` in order.

    Returns
    -------
    ndarray, shape (N, 2), float32
    """
    path = Path(path)
    table = pd.read_parquet(path)
    if not np.array_equal(table["frame_id"].to_numpy(), rows["frame_id"].to_numpy()):
        raise CellscapeError(f"holds {len(table)} frames that are not the embeddings' {len(rows)} frames",
                             path=path, field="frame_id")
    return table[["umap_x", "umap_y"]].to_numpy(np.float32)


def export_atlas(out_dir: str | Path, atlases: list[ModelAtlas], emb: dict[str, Embeddings], provenance: dict,
                 seed: int, baselines: list[EmbeddingScores] | tuple = ()) -> dict[str, Path]:
    """Write tables (parquet), matrices (.npz), figures (PNG) and scores (JSON) into ``out_dir``.

    Per model ``<name>_frames.parquet`` (frames and UMAP picture), ``_matrices.npz``,
    ``_spectra.parquet``, ``_knn.parquet`` (the protein kNN on the scored frames),
    ``_predictions.parquet`` and figures (``figures/<name>_own_umap.png``: the UMAP the first
    seed's clustering score is computed in); per baseline its ``_knn.parquet``, its own tables
    (``<name>_<table>.parquet``) and own-UMAP figure.  ``scores.json`` holds ``scores`` (the
    summary per model and baseline), ``per_seed`` (one record per seed and name), ``models``,
    ``baselines``, ``score_config``, ``provenance`` and the picture's UMAP ``seed``;
    ``scores.md`` the table of :func:`scores_table`.

    Returns the written paths by name.  Every file is written to a temporary name first.
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    prov_json = json.dumps(provenance, default=str)
    for a in atlases:
        e = emb[a.name]
        tab = e.rows[["frame_id", "plate_id", "frame_index", "gene", "ensg_id", "localization", "split"]].copy()
        tab["umap_x"], tab["umap_y"] = a.coords[:, 0], a.coords[:, 1]
        _atomic_bytes(out / f"{a.name}_frames.parquet", _parquet_bytes(tab))
        buf = io.BytesIO()
        np.savez_compressed(buf, histograms=e.histograms, pooled=e.pooled, used_codes=a.used_codes, corr=a.clusters.corr,
                            linkage=a.clusters.linkage, code_cluster=a.clusters.labels, leaf_order=a.clusters.leaf_order,
                            provenance=np.array(prov_json), **({} if e.moments is None else {"moments": e.moments}))
        _atomic_bytes(out / f"{a.name}_matrices.npz", buf.getvalue())
        save_spectra(a.spectra, a.counts, out / f"{a.name}_spectra.parquet")
        for name, table in (("knn", a.knn_table), ("predictions", a.predictions)):
            _atomic_bytes(out / f"{a.name}_{name}.parquet", _parquet_bytes(_str_objects(table)))
        for fname, fig in _figures(a, e).items():
            paths[f"{a.name}_{fname}"] = save_png(fig, out / "figures" / f"{a.name}_{fname}.png")
    for b in baselines:
        _atomic_bytes(out / f"{b.name}_knn.parquet", _parquet_bytes(_str_objects(b.knn_table)))
        for tname, table in b.tables.items():
            _atomic_bytes(out / f"{b.name}_{tname}.parquet", _parquet_bytes(_str_objects(table)))
        paths[f"{b.name}_own_umap"] = save_png(_own_umap_figure(b), out / "figures" / f"{b.name}_own_umap.png")
    if len(atlases) > 1:
        labels = frame_classes(emb[atlases[0].name].rows)
        fig = plot_aligned_umaps([a.coords for a in atlases], labels, [a.name for a in atlases],
                                 single_mask=labels != "others")
        paths["aligned_umaps"] = save_png(fig, out / "figures" / "aligned_umaps.png")
    evaluations = [a.evaluation for a in atlases if a.evaluation is not None] + list(baselines)
    doc = {"scores": {a.name: a.scores for a in atlases} | {b.name: b.scores for b in baselines},
           "per_seed": {ev.name: ev.per_seed.to_dict(orient="records") for ev in evaluations},
           "models": [a.name for a in atlases], "baselines": [b.name for b in baselines],
           "score_config": evaluations[0].config.model_dump(mode="json") if evaluations else None,
           "provenance": provenance, "seed": seed}
    _atomic_bytes(out / "scores.json", (json.dumps(doc, indent=2, default=str) + "\n").encode())
    paths["scores"] = out / "scores.json"
    table = scores_table(list(atlases) + list(baselines))
    _atomic_bytes(out / "scores.md", (table.reset_index(names="score").to_markdown(index=False) + "\n").encode())
    paths["scores_table"] = out / "scores.md"
    return paths


def _str_objects(table: pd.DataFrame) -> pd.DataFrame:
    return table.astype({c: str for c in table.columns if table[c].dtype == object})


def _own_umap_figure(ev: EmbeddingScores):
    labels = frame_classes(ev.coord_rows)
    cs = ev.per_seed["clustering_score"].iloc[0]
    return plot_umap(ev.coords, labels, labels != "others",
                     title=f"{ev.name}: own UMAP of the {ev.config.score_split} frames "
                           f"(seed {ev.config.seeds[0]}, clustering score {cs:.3g})")


def _figures(a: ModelAtlas, e: Embeddings) -> dict:
    labels = frame_classes(e.rows)
    figs = cluster_figures(a.name, a.spectra, a.used_codes, a.clusters, e.rows)
    figs["umap"] = plot_umap(a.coords, labels, labels != "others", title=f"{a.name}: UMAP of codebook histograms")
    if a.evaluation is not None:
        figs["own_umap"] = _own_umap_figure(a.evaluation)
    return figs


def report_provenance(models: dict[str, dict], split: str, n_clusters: int, **extra) -> dict:
    """The provenance every report export carries (``scores.json``, ``*_matrices.npz``).

    Parameters
    ----------
    models : dict of name -> dict
        Per model what :func:`embed_checkpoint` returned (checkpoint, step, dataset md5).
    split : str
        The frames embedded.
    n_clusters : int
        The requested number of code clusters.
    **extra
        More JSON-ready keys (the dataset md5 of the frames, the embeddings folder, ...).
    """
    return {"models": models, "split": split, "n_clusters": n_clusters, **extra}


def build_report(checkpoints: dict[str, str | Path], store: FrameStore, splits: pd.DataFrame, out_dir: str | Path,
                 config: AtlasConfig = AtlasConfig(), provenance: dict | None = None,
                 log=print) -> tuple[pd.DataFrame, dict[str, Path]]:
    """The whole atlas for one or more models (first = the one to report; others side by side).

    The same steps as the Dagster atlas assets, in one call: :func:`embed_checkpoint` of the
    ``config.split`` frames, then :func:`report_from_embeddings`.

    Parameters
    ----------
    checkpoints : dict name -> model folder (as written by training.fit)
    splits : DataFrame with ``split``; ``config.split="all"`` embeds every frame.
    config : AtlasConfig
        Split and batch size of the embedding, code clusters, UMAP picture's seed and
        neighbours, and the :class:`ScoreConfig` fields (scored split, seeds, kNN, baseline).

    Returns
    -------
    table : pandas.DataFrame of str
        :func:`scores_table` of the models and baselines.
    paths : dict of str -> Path
        What :func:`export_atlas` wrote.
    """
    split = config.split
    rows = splits if split == "all" else splits[splits["split"] == split]
    if len(rows) == 0:
        raise CellscapeError(f"the {split!r} split holds no frames", field="split")
    emb, models = {}, {}
    for name, ckpt in checkpoints.items():
        emb[name], models[name] = embed_checkpoint(ckpt, store, rows, batch_size=config.batch_size,
                                                   moments=config.moments or config.embedding == "moments")
        log(f"{name}: embedded {len(rows)} frames at {emb[name].frames_per_second:.0f} frames/s")
    return report_from_embeddings(emb, models, store, splits, out_dir, config, provenance, log)


def report_from_embeddings(emb: dict[str, Embeddings], models: dict[str, dict], store: FrameStore | None,
                           splits: pd.DataFrame, out_dir: str | Path, config: AtlasConfig = AtlasConfig(),
                           provenance: dict | None = None, log=print) -> tuple[pd.DataFrame, dict[str, Path]]:
    """The atlas of models already embedded: :func:`embedding_spectra`, :func:`cluster_used_codes`,
    :func:`~.projection.aligned_umap` (a picture; a single model gets a plain UMAP),
    :func:`model_atlas` (each model scored on its own), :func:`report_baselines` and :func:`export_atlas`.

    Parameters
    ----------
    emb : dict name -> Embeddings
        The models' embeddings of the same frames, in the same order.
    models : dict name -> dict
        Their provenance (as :func:`embed_checkpoint` returns it).
    store : FrameStore or None
        The frames, for the classical baseline (None only with ``config.baseline`` off).
    splits : pandas.DataFrame
        The splits table: its train frames standardise the baseline's features.
    out_dir, config, provenance, log
        As :func:`build_report`.
    """
    names = list(emb)
    coords = aligned_umap([emb[n].histograms for n in names], seed=config.seed, n_neighbors=config.n_neighbors)
    score_cfg = ScoreConfig(**{f: getattr(config, f) for f in ScoreConfig.model_fields})
    atlases = []
    for name, xy in zip(names, coords, strict=True):
        spectra, counts = embedding_spectra(emb[name])
        used, clusters = cluster_used_codes(name, spectra, config.n_clusters)
        atlases.append(model_atlas(name, emb[name], spectra, counts, used, clusters, xy, config=score_cfg))
        log(f"{name}: " + ", ".join(f"{k}={atlases[-1].scores[k]:.3f}" for k in SEEDED_SCORES + ("protein_knn_accuracy",)))
    if config.baseline and store is None:
        raise CellscapeError("the classical baseline needs the frame store", field="store")
    baselines = report_baselines(store, emb[names[0]].rows, score_cfg, fit_rows=splits[splits["split"] == "train"],
                                 batch_size=config.batch_size, log=log)
    prov = report_provenance(models, config.split, config.n_clusters, score_split=config.score_split,
                             **(provenance or {}))
    paths = export_atlas(out_dir, atlases, emb, prov, config.seed, baselines=baselines)
    return scores_table(atlases + baselines), paths


def save_embeddings(emb: Embeddings, out_dir: str | Path, name: str) -> Path:
    """Write embeddings as ``<name>_embeddings.npz`` + ``<name>_rows.parquet`` (no pickle)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    arrays = {"histograms": emb.histograms, "pooled": emb.pooled, "frames_per_second": np.float64(emb.frames_per_second),
              "histograms_global": emb.histograms_global, "moments": emb.moments}
    np.savez(buf, **{k: v for k, v in arrays.items() if v is not None})
    _atomic_bytes(out / f"{name}_embeddings.npz", buf.getvalue())
    _atomic_bytes(out / f"{name}_rows.parquet", _parquet_bytes(emb.rows))
    return out


def load_embedding_rows(out_dir: str | Path, name: str) -> pd.DataFrame:
    """The frame table of saved embeddings (see :func:`save_embeddings`), without the arrays."""
    return pd.read_parquet(Path(out_dir) / f"{name}_rows.parquet")


def load_embeddings(out_dir: str | Path, name: str) -> Embeddings:
    """Inverse of :func:`save_embeddings`."""
    out = Path(out_dir)
    with np.load(out / f"{name}_embeddings.npz", allow_pickle=False) as z:
        opt = {k: z[k] if k in z.files else None for k in ("histograms_global", "moments")}
        return Embeddings(load_embedding_rows(out, name), z["histograms"], opt["histograms_global"], z["pooled"],
                          float(z["frames_per_second"]), opt["moments"])
