"""Atlas quality on a larger simulated world: models with and without the head vs the classical baseline.

Usage (from the repository root, in the venv)::

    python benchmarks/atlas_world.py --out artifacts/world                       # 12 plates x 17 wells
    python benchmarks/atlas_world.py --out artifacts/world-tiny --plates 3 --wells 4 \\
        --fields-per-well 4 --epochs 1                                           # a smoke run
    python benchmarks/atlas_world.py --out artifacts/world-gpu --preset full     # on a GPU

Stages, each skipped when a re-run with the same ``--out`` finds it finished:

1. ``panel.csv``: ``--plates`` x ``--wells`` distinct proteins.  The built-in panel when it is
   large enough, else :func:`~assets_pkg.core.imaging.proteins.balanced_panel` of ``--annotations``
   (OpenCell's 1,310 annotated proteins in ``../shared/data``), or exactly the proteins of
   ``--proteins``; every protein lands in exactly one well (checked after simulation).
2. ``plates/``: the simulated plates (one :func:`simulate_plates` call into a staging folder,
   renamed when complete, so a killed run leaves no half world).
3. ``store/``: every plate ingested with the library (:func:`ingest_plate`, ``--workers``
   processes); plates already in the store are skipped; then the catalog.
4. The field-of-view-exclusive split (80/10/10 of each protein's fields, seeded), written to
   the store as the ``splits`` table; the test split is held out of training and model choice.
5. ``models/with_head`` and ``models/without_head``: :func:`fit` of the same preset and seed,
   ``classification_weight`` 1 and 0; a finished model (``model.json``) is kept, an unfinished
   one resumes from its checkpoints.
6. ``report/``: :func:`build_report` of both models and the classical baseline, the same
   evaluation code for all three on the ``--score-split`` frames (default ``test``): frame kNN
   accuracy, protein kNN accuracy with its bootstrap CI, clustering score and ARI as mean ± sd
   over 3 seeds; figures under ``report/figures``.  Then each model's pooled encoder output
   (its spatially averaged continuous embedding, before quantization) and its latent moments
   (mean, standard deviation and second moments of that map over the 8 rotations and flips,
   standardised on the train frames: :mod:`assets_pkg.core.localization.moments`) are scored
   by the same code: rows ``<model>_pooled`` and ``<model>_moments``.  Always recomputed (minutes).
   Last, every row against the classical features on all the scored frames, with a paired
   protein-bootstrap interval of the difference (``baseline_differences`` in ``world.json``):
   the seeds' spread says how much the subsample and UMAP move a score, this interval how much
   the choice of proteins does.

``--out`` receives ``world.json`` (scores, split summary, stage times, settings), ``world.csv``
(one row per model or baseline) and ``stages.json`` (wall and CPU seconds per stage, CPU
including the ingest worker processes), and the table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assets_pkg.core.errors import CellscapeError  # noqa: E402
from assets_pkg.core.imaging.proteins import balanced_panel, load_panel, panel_to_frame  # noqa: E402

OPENCELL = ROOT.parent / "shared" / "data" / "opencell" / "annotations.csv"
MODELS = ("with_head", "without_head")
#: Default epochs of the tiny preset here: ~24k train frames of the default world at ~150 frames/s
#: (2 cores shared with other work, plus an evaluation per epoch) make about 25 minutes a model.
TINY_EPOCHS = 8
#: Summary rows of world.csv: (column, key in the scores of evaluation.score_embedding).
COLUMNS = (
    ("frame_knn", "frame_knn_accuracy"), ("frame_knn_sd", "frame_knn_accuracy_std"),
    ("protein_knn", "protein_knn_accuracy"), ("protein_knn_ci_low", "protein_knn_ci_low"),
    ("protein_knn_ci_high", "protein_knn_ci_high"),
    ("clustering_score", "clustering_score"), ("clustering_score_sd", "clustering_score_std"),
    ("ari", "ari_protein_clusters"), ("ari_sd", "ari_protein_clusters_std"),
    ("frames", "frames"), ("proteins", "proteins"), ("classes", "classes"),
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class Stages:
    """Wall and CPU seconds of each stage, kept in ``stages.json`` across re-runs."""

    def __init__(self, path: Path):
        self.path = path
        self.times = json.loads(path.read_text()) if path.is_file() else {}

    @contextmanager
    def __call__(self, name: str):
        w0, c0 = time.perf_counter(), _cpu_seconds()
        log(f"stage {name} ...")
        yield
        rec = {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(_cpu_seconds() - c0, 2)}
        self.times[name] = rec
        log(f"stage {name}: {rec['wall_s']:.1f} s wall, {rec['cpu_s']:.1f} s CPU")
        _atomic_text(self.path, json.dumps(self.times, indent=2) + "\n")

    def skipped(self, name: str, why: str) -> None:
        log(f"stage {name}: skipped ({why})")


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def world_panel(args, n: int) -> pd.DataFrame:
    """``n`` proteins: those of ``--proteins`` (exactly n), else the built-in panel's first n after
    a seeded shuffle when it has enough, else a balanced draw from ``--annotations``."""
    if args.proteins is not None:
        panel = load_panel(args.proteins)
        if len(panel) != n:
            raise CellscapeError(f"lists {len(panel)} proteins; the world has {n} wells (--plates x --wells), "
                                 "one protein each", path=args.proteins, field="ensg_id")
        return panel_to_frame(panel)
    builtin = load_panel()
    if len(builtin) >= n:
        return balanced_panel(panel_to_frame(builtin), n, seed=args.seed)
    if not args.annotations.is_file():
        raise CellscapeError(f"the built-in panel has {len(builtin)} proteins, fewer than the {n} wells, and the "
                             "annotation table is absent (--annotations or --proteins)", path=args.annotations)
    return balanced_panel(args.annotations, n, seed=args.seed)


def check_one_well_each(plate_dirs: list[Path], n: int) -> None:
    """Every protein in exactly one well of the world, and ``n`` of them."""
    seen: dict[str, str] = {}
    for d in plate_dirs:
        wells = json.loads((d / "plate.json").read_text())["wells"]
        for well, info in wells.items():
            where = f"{d.name}/{well}"
            if info["ensg_id"] in seen:
                raise CellscapeError(f"{info['ensg_id']} is in {seen[info['ensg_id']]} and {where}",
                                     path=d / "plate.json", field="wells")
            seen[info["ensg_id"]] = where
    if len(seen) != n:
        raise CellscapeError(f"the world holds {len(seen)} proteins, not {n}", field="wells")


def simulate_world(args, out: Path, panel_csv: Path) -> list[Path]:
    from assets_pkg.core.imaging.simulator import simulate_plates

    final = out / "plates"
    settings = {"plates": args.plates, "wells": args.wells, "seed": args.seed,
                "fields_per_well": args.fields_per_well, "field_size": args.field_size}
    if (final / "DONE").is_file():
        had = json.loads((final / "DONE").read_text())
        if had != settings:
            raise CellscapeError(f"holds a world simulated with {had}, not {settings}; use another --out",
                                 path=final / "DONE", field="settings")
        return sorted(p for p in final.iterdir() if p.is_dir())
    staging = out / ".plates.staging"
    if staging.exists():
        shutil.rmtree(staging)
    simulate_plates(staging, n_plates=args.plates, seed=args.seed, proteins=panel_csv, wells=args.wells,
                    fields_per_well=args.fields_per_well, field_size=args.field_size, plate_prefix="world",
                    progress=True)
    (staging / "DONE").write_text(json.dumps(settings) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return sorted(p for p in final.iterdir() if p.is_dir())


def ingest_world(args, plate_dirs: list[Path], store) -> dict:
    from tqdm import tqdm

    from assets_pkg.core.store.ingest import ingest_plate

    have = set(store.plate_ids())
    counts = {}
    for d in tqdm(plate_dirs, desc="ingesting plates", unit="plate"):
        if d.name in have:
            continue
        bar = tqdm(desc=f"{d.name} fields", unit="field", leave=False)

        def progress(step, i, n, bar=bar):
            bar.total = n
            bar.update(i - bar.n)

        res = ingest_plate(d, store, provenance={"dataset_md5": None, "benchmark": "atlas_world"},
                           progress=progress, workers=args.workers)
        bar.close()
        counts[d.name] = {"fields": res.n_fields, "nuclei": res.n_nuclei, "frames": res.n_frames,
                          "seconds": round(res.seconds, 1), "excluded_fields": len(res.excluded)}
        log(f"{d.name}: {res.n_fields} fields, {res.n_frames} frames in {res.seconds:.1f} s")
    return counts


def world_splits(args, store):
    """The store's splits table when it was made from the current catalog with this config, else a new one."""
    from assets_pkg.core.errors import TableNotWritten
    from assets_pkg.core.store.config import SplitConfig
    from assets_pkg.core.store.splits import check_disjoint, make_splits, split_version

    cfg = SplitConfig(exclusive_by="field", seed=args.seed)
    catalog, cat_man = store.read_dataset("catalog")
    try:
        splits, man = store.read_dataset("splits")
        prov = man.get("provenance", {})
        if prov.get("catalog_version") == cat_man["version"] and prov.get("config") == cfg.model_dump():
            splits.attrs["store_version"] = man["version"]
            return splits, man["version"], True
    except TableNotWritten:
        pass
    splits = make_splits(catalog, cfg)
    problems = check_disjoint(splits, cfg)
    if problems:
        raise CellscapeError(f"the split is unusable: {problems}", field="splits")
    man = store.write_dataset_table("splits", splits, {"split_version": split_version(splits, cfg),
                                                       "config": cfg.model_dump(), "catalog_version": cat_man["version"],
                                                       "dataset_md5": None})
    splits.attrs["store_version"] = man["version"]
    return splits, man["version"], False


def train_config(args, weight: float):
    from assets_pkg.core.localization.config import train_config_from_preset

    flags = dict(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                 model=json.loads(args.model_json))
    # --train-json wins over the flags above; the head's weight is what tells the two models apart.
    return train_config_from_preset(args.preset, **(flags | json.loads(args.train_json)), classification_weight=weight)


def train_models(args, out: Path, store, splits, stages: Stages) -> dict:
    from assets_pkg.core.localization.training import fit, save_training_figures
    from assets_pkg.core.ml.loop import ProgressBar
    from assets_pkg.core.ml.model_folder import read_record
    from assets_pkg.core.store.lineage import rows_lineage

    prov = {**rows_lineage(store, splits), "splits_store_version": splits.attrs.get("store_version")}
    done = {}
    for name, weight in zip(MODELS, (1.0, 0.0), strict=True):
        if name not in args.models:
            continue
        folder = out / "models" / name
        cfg = train_config(args, weight)
        if (folder / "model.json").is_file():
            record = read_record(folder)
            if record.get("config") != json.loads(json.dumps(cfg.model_dump())):
                raise CellscapeError(f"was trained with another config ({record.get('config')}); use another --out "
                                     "or remove the folder", path=folder / "model.json", field="config")
            stages.skipped(f"train_{name}", f"{folder}/model.json exists")
            done[name] = record.get("metrics", {})
            continue
        with stages(f"train_{name}"), ProgressBar(f"training {name}") as bar:
            res = fit(store, splits, cfg, folder, provenance=prov, resume=True, log=bar.write, progress=bar)
            save_training_figures(res, store, splits, name, n_frames=10, seed=args.seed)
        stages.times[f"train_{name}"].update(steps=int(res.step), epochs=cfg.epochs, batch_size=cfg.batch_size,
                                             preset=cfg.preset)
        done[name] = res.final_metrics
    return done


def exported_embeddings(report: Path, model: str):
    """A model's frames and embeddings as the report exported them (``<model>_frames.parquet`` and
    ``<model>_matrices.npz``, no pickle), as an ``atlas.Embeddings`` (histograms, pooled, moments)."""
    import numpy as np

    from assets_pkg.core.localization.atlas import Embeddings

    rows = pd.read_parquet(report / f"{model}_frames.parquet")
    with np.load(report / f"{model}_matrices.npz", allow_pickle=False) as z:
        return Embeddings(rows, z["histograms"], None, z["pooled"], float("nan"), z["moments"])


def readout_scores(embs: dict, config) -> dict:
    """Each model's scores on its pooled encoder output and its latent moments (the report scores
    codebook histograms), with the same code, split and seeds as the report, the moments
    standardised on the train frames (:func:`~assets_pkg.core.localization.moments.scored_matrix`);
    keyed ``<model>_pooled`` and ``<model>_moments``.  ``embs``: :func:`exported_embeddings` by model.
    """
    from assets_pkg.core.localization.evaluation import score_embedding
    from assets_pkg.core.localization.moments import scored_matrix

    out = {}
    for m, emb in embs.items():
        for kind in ("pooled", "moments"):
            cfg = config.model_copy(update={"embedding": kind})
            out[f"{m}_{kind}"] = score_embedding(f"{m}_{kind}", emb.rows, scored_matrix(m, emb, kind), cfg).scores
    return out


def baseline_differences(report: Path, embs: dict, config) -> dict:
    """Every model read-out against the classical features: frame kNN on all the scored frames and
    the paired protein-bootstrap interval of the difference
    (:func:`~assets_pkg.core.localization.evaluation.paired_knn_difference`), keyed
    ``<row> - classical`` with the rows of the summary table.

    ``embs``: :func:`exported_embeddings` by model; the classical features of the train and scored
    frames come from the report's ``classical_features.parquet``, standardised on the train frames.
    """
    from assets_pkg.core.localization.evaluation import paired_knn_difference
    from assets_pkg.core.localization.moments import scored_matrix, standardised_on_train

    feats = pd.read_parquet(report / "classical_features.parquet").set_index("frame_id").drop(columns="split")
    out = {}
    for m, emb in embs.items():
        keep = emb.rows["frame_id"].isin(feats.index).to_numpy()
        kept = emb.rows[keep].reset_index(drop=True)
        xc = standardised_on_train("classical", kept, feats.loc[kept["frame_id"]].to_numpy())
        for kind, row in (("histograms", m), ("pooled", f"{m}_pooled"), ("moments", f"{m}_moments")):
            out[f"{row} - classical"] = paired_knn_difference(kept, scored_matrix(m, emb, kind)[keep], xc, config)
    return out


def summary_table(scores: dict) -> pd.DataFrame:
    rows = {name: {col: s.get(key) for col, key in COLUMNS} for name, s in scores.items()}
    table = pd.DataFrame(rows).T.rename_axis("embedding")
    return table.astype({c: "float64" for c, _ in COLUMNS[:-3]} | {c: "int64" for c, _ in COLUMNS[-3:]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the world's folder (re-use it to resume)")
    ap.add_argument("--plates", type=int, default=12)
    ap.add_argument("--wells", type=int, default=17, help="wells per plate, one distinct protein each")
    ap.add_argument("--fields-per-well", type=int, default=10,
                    help="fields per protein (80/10/10 of them to train/valid/test: 10 gives every protein a test field)")
    ap.add_argument("--field-size", type=int, default=512, help="field side in pixels (0.2 um each)")
    ap.add_argument("--proteins", type=Path, default=None,
                    help="OpenCell-format CSV of exactly plates x wells proteins (default: drawn, see --annotations)")
    ap.add_argument("--annotations", type=Path, default=OPENCELL,
                    help="annotation table a balanced panel is drawn from when the built-in panel is too small")
    ap.add_argument("--seed", type=int, default=0, help="panel, simulation, split and training seed")
    ap.add_argument("--workers", type=int, default=None, help="ingest processes (default: one per core)")
    ap.add_argument("--preset", default="tiny", choices=["tiny", "full", "cytoself"],
                    help="model size and training settings (tiny: the largest that fits ~25 CPU minutes a model "
                         "on 2 cores at the default scale; full on a GPU)")
    ap.add_argument("--epochs", type=int, default=None,
                    help=f"default: {TINY_EPOCHS} for tiny (about 25 min a model on 2 busy cores at the default scale), "
                         "else the preset's")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--learning-rate", type=float, default=None)
    ap.add_argument("--model-json", default="{}", help="ModelConfig overrides as JSON")
    ap.add_argument("--train-json", default="{}",
                    help='TrainConfig overrides as JSON (both models), e.g. \'{"schedule": "cosine", "warmup_steps": 200}\'')
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS,
                    help="which of the two models to train and score (default both)")
    ap.add_argument("--score-split", default="test", choices=["test", "heldout", "valid", "all"])
    ap.add_argument("--until", default="score", choices=["simulate", "ingest", "train", "score"],
                    help="stop after this stage (e.g. prepare the world on a CPU box, train elsewhere)")
    ap.add_argument("--embed-split", default="all", choices=["all", "test", "valid", "train"],
                    help="frames embedded for the spectra, code clusters and UMAP picture (scores use --score-split)")
    args = ap.parse_args()
    if args.epochs is None and args.preset == "tiny":
        args.epochs = TINY_EPOCHS

    from assets_pkg.core.localization.atlas import build_report
    from assets_pkg.core.localization.config import AtlasConfig
    from assets_pkg.core.ml.devices import describe_devices
    from assets_pkg.core.store.frame_store import FrameStore
    from assets_pkg.core.store.splits import split_summary

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out / "stages.json")
    n = args.plates * args.wells
    log(f"world: {args.plates} plates x {args.wells} wells = {n} proteins, {args.fields_per_well} fields of "
        f"{args.field_size} px each; devices: {describe_devices()}")

    panel_csv = out / "panel.csv"
    if panel_csv.is_file():
        stages.skipped("panel", f"{panel_csv} exists")
    else:
        with stages("panel"):
            _atomic_text(panel_csv, world_panel(args, n).to_csv(index=False, lineterminator="\n"))
    if len(load_panel(panel_csv)) != n:
        raise CellscapeError(f"holds {len(load_panel(panel_csv))} proteins, not {n}: another world's --out?",
                             path=panel_csv, field="ensg_id")

    if (out / "plates" / "DONE").is_file():
        stages.skipped("simulate", "plates/DONE exists")
        plate_dirs = simulate_world(args, out, panel_csv)
    else:
        with stages("simulate"):
            plate_dirs = simulate_world(args, out, panel_csv)
    check_one_well_each(plate_dirs, n)
    if args.until == "simulate":
        return

    store = FrameStore(str(out / "store"))
    missing = sorted(set(d.name for d in plate_dirs) - set(store.plate_ids()))
    ingested = out / "ingested.json"
    if not missing and ingested.is_file():
        stages.skipped("ingest", "every plate is in the store")
    else:
        with stages("ingest"):
            counts = ingest_world(args, plate_dirs, store)
            man = store.update_catalog({"dataset_md5": None, "benchmark": "atlas_world"})
            log(f"catalog: {man['n_rows']} frames from {man['n_plates']} plates")
            _atomic_text(ingested, json.dumps(counts, indent=2) + "\n")

    if args.until == "ingest":
        return
    with stages("split"):
        splits, split_store_version, reused = world_splits(args, store)
    summary = split_summary(splits)
    log(f"split ({'stored' if reused else 'new'}, {split_store_version}): {json.dumps(summary)}")

    metrics = train_models(args, out, store, splits, stages)
    if args.until == "train":
        return

    config = AtlasConfig(split=args.embed_split, score_split=args.score_split, seed=args.seed, moments=True)
    with stages("score"):
        table, paths = build_report({m: out / "models" / m for m in args.models}, store, splits, out / "report", config,
                                    provenance={"splits_store_version": split_store_version, "benchmark": "atlas_world"},
                                    log=log)
        scores = json.loads((out / "report" / "scores.json").read_text())["scores"]
        embs = {m: exported_embeddings(out / "report", m) for m in args.models}
        scores |= readout_scores(embs, config)
    summary_df = summary_table(scores)
    print("\n" + table.to_string())
    print("\n" + summary_df.to_string(float_format=lambda v: f"{v:.3f}"))
    differences = baseline_differences(out / "report", embs, config)
    level = round(100 * config.confidence)
    for name, d in differences.items():
        print(f"frame kNN on all {args.score_split} frames: {name} = {d['difference']:+.3f} "
              f"(paired protein bootstrap {level} % CI [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}])")
    summary_df.to_csv(out / "world.csv")
    doc = {"settings": vars(args) | {"out": str(out), "proteins": str(args.proteins), "annotations": str(args.annotations)},
           "devices": describe_devices(), "split": summary, "split_store_version": split_store_version,
           "final_metrics": metrics, "scores": scores, "baseline_differences": differences, "stages": stages.times,
           "report": {k: str(v) for k, v in paths.items()}}
    _atomic_text(out / "world.json", json.dumps(doc, indent=2, default=str) + "\n")
    log(f"wrote {out / 'world.json'}, {out / 'world.csv'}, {out / 'report'} (scores.md, figures/)")


if __name__ == "__main__":
    main()
