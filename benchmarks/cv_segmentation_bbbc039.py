"""5-fold cross-validation of the default `cellscape train-segmentation` on BBBC039, beside the
classical baseline on the same folds.

Run from the repository root::

    python benchmarks/cv_segmentation_bbbc039.py --out /tmp/cv_seg            # all 5 folds
    python benchmarks/cv_segmentation_bbbc039.py --out /tmp/cv_seg --folds 0 2  # some of them
    python benchmarks/cv_segmentation_bbbc039.py --out /tmp/cv_cw --train-args "--contact-weight 10"  # a variant
    python benchmarks/cv_segmentation_bbbc039.py --out /tmp/cv_re --models-from /tmp/cv_seg  # re-tune, no training

Folds: :func:`~assets_pkg.core.segmentation.datasets.group_folds` over the 150 fields of
``../shared/data/bbbc039`` with the well as the group (the two fields of a well are never on both
sides), seed 0.  For each fold the training fields are copied to ``OUT/fold_<k>/train`` and the
command a user runs is started as a subprocess with no option but the folders::

    cellscape train-segmentation --images .../images --masks .../masks --out OUT/fold_<k>/model

so everything it decides (its own validation split, early stopping, thresholds, flips at
inference) is what the defaults decide.  The held-out fold is then scored with F1 at IoU 0.5
(pooled over objects), the mean TP/(TP+FP+FN) over IoU 0.50..0.95 per image, and the mean absolute
count error per field; the classical baseline (:func:`classical_segment` at the training
fields' median nucleus diameter: nothing is tuned on the held-out fold) is scored with the same
code.  Results are appended per fold to ``OUT/folds.csv`` (a fold already there is skipped, so an
interrupted run continues) and summarised (mean, sd, min over folds) at the end.

``--models-from DIR`` re-scores the models another run trained (``DIR/fold_<k>/model``) instead of
training: their post-processing is tuned again with this code on the held-out training fields each
model recorded, which is what the default command gives now when only the post-processing has
changed since those models were trained (the training does not depend on it).  For a model tuned
by F1 alone the run checks that the grid's best F1 is the one it recorded (the same maps).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.segmentation.classical import classical_segment, score_folder  # noqa: E402
from assets_pkg.core.segmentation.datasets import bbbc039_well, group_folds, read_bbbc039  # noqa: E402
from assets_pkg.core.segmentation.metrics import summarise_scores  # noqa: E402
from assets_pkg.core.segmentation.models import load_model  # noqa: E402
from assets_pkg.core.segmentation.training import median_diameter, tune_postprocessing  # noqa: E402

METHODS = ("U-Net (defaults)", "classical")


def copy_fields(src: Path, names: list[str], dest: Path) -> None:
    """Copy the named fields' images and masks (regular files: the reader refuses links)."""
    for sub, suffix in (("images", ".tif"), ("masks", ".png")):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for n in names:
            shutil.copyfile(src / sub / f"{n}{suffix}", dest / sub / f"{n}{suffix}")


def retune(model, ds, f1_tolerance: float | None) -> dict:
    """Tune ``model``'s post-processing again on the held-out training fields it recorded."""
    held = ds.subset(model.info["data"]["held_out"])
    images, labels = [im for _, im, _ in held], [lab for _, _, lab in held]
    recorded = {k: model.info["tuning"][k] for k in ("threshold", "marker_threshold", "min_area")}
    kw = {} if f1_tolerance is None else {"f1_tolerance": f1_tolerance}
    tuned = tune_postprocessing(model, images, labels, **kw)
    print(f"  re-tuned on the {len(images)} held-out fields: {tuned} (recorded: {recorded})", flush=True)
    if "best_f1" not in model.info["tuning"] and tuned["best_f1"] != model.info["tuning"]["f1"]:
        # Trained when the tuning was by F1 alone: its best F1 must come out the same.
        raise SystemExit(f"the re-tuning's best F1 {tuned['best_f1']} is not the recorded "
                         f"{model.info['tuning']['f1']}: the maps differ")
    return {**tuned, "images": len(images), "on": "held-out training", "retuned_from": recorded}


def run_fold(k: int, ds, folds: np.ndarray, data: Path, out: Path, train_args: list[str],
             models_from: Path | None = None, f1_tolerance: float | None = None) -> pd.DataFrame:
    names = np.asarray(ds.names)
    train_names, test_names = list(names[folds != k]), list(names[folds == k])
    fold_dir = out / f"fold_{k}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if models_from is None:
        copy_fields(data, train_names, fold_dir / "train")
        model_dir = fold_dir / "model"
        cmd = [sys.executable, "-m", "assets_pkg.cli", "train-segmentation", "--images",
               str(fold_dir / "train/images"), "--masks", str(fold_dir / "train/masks"), "--out", str(model_dir),
               *train_args]
        print(f"fold {k}: {len(train_names)} train / {len(test_names)} held-out fields; {' '.join(cmd[2:])}",
              flush=True)
        subprocess.run(cmd, check=True)
        model = load_model(model_dir, kind="segmentation")
    else:
        model_dir = models_from / f"fold_{k}" / "model"
        print(f"fold {k}: re-tuning {model_dir}", flush=True)
        model = load_model(model_dir, kind="segmentation")
        if sorted(model.info["data"]["names"]) != sorted(train_names):
            raise SystemExit(f"{model_dir} was not trained on fold {k}'s training fields")
        model.info["tuning"] = retune(model, ds, f1_tolerance)
    train_wall = time.perf_counter() - t0
    test = ds.subset(test_names)
    train_labels = [lab for _, _, lab in ds.subset(train_names)]
    diameter = median_diameter(train_labels)
    rows = []
    unet = METHODS[0] if not train_args else f"U-Net ({' '.join(train_args)})"
    for method, fn in ((unet, model.segment),
                       (METHODS[1], lambda im: classical_segment(im, nucleus_diameter_px=diameter))):
        rows.append(score_folder(test, None, fn, extra={"method": method}))
    scores = pd.concat(rows, ignore_index=True)
    scores["count_error"] = (scores["n_pred"] - scores["n_true"]).abs()
    summary = summarise_scores(scores).set_index("method")
    summary["count_mae"] = scores.groupby("method", sort=False)["count_error"].mean()
    summary["fold"] = k
    summary["train_wall_s"] = train_wall
    summary["steps"] = model.info.get("steps_done")
    summary["selected_step"] = (model.info.get("selection") or {}).get("step")
    summary["stopped_by"] = model.info.get("stopped_by")
    summary["tuning"] = str(model.info.get("tuning"))
    scores["fold"] = k
    scores.to_csv(fold_dir / "scores.csv", index=False)
    print(summary[["images", "f1_iou50", "mean_ap_50_95", "count_mae", "images_per_s"]].round(4).to_string(), flush=True)
    print(f"fold {k}: {'re-tuning' if models_from else 'training'} {train_wall / 60:.1f} min wall, "
          f"{model.info.get('steps_done')} steps "
          f"({model.info.get('stopped_by')}), selected step {summary['selected_step'].iloc[0]}", flush=True)
    return summary.reset_index()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/bbbc039"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--folds", type=int, nargs="*", default=None, help="folds to run (default: all)")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-args", default="",
                    help="options added to every train-segmentation command, e.g. '--steps 800' (default: none)")
    ap.add_argument("--models-from", type=Path, default=None,
                    help="re-tune and score the models of this earlier run's folds instead of training")
    ap.add_argument("--f1-tolerance", type=float, default=None,
                    help="with --models-from: the tuning's F1 tie tolerance (default: the library's)")
    args = ap.parse_args(argv)
    if args.f1_tolerance is not None and args.models_from is None:
        ap.error("--f1-tolerance applies to --models-from only (a training run takes --train-args '--tune-f1-tolerance X')")
    ds = read_bbbc039(args.data)
    folds = group_folds([bbbc039_well(n) for n in ds.names], args.k, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"name": ds.names, "fold": folds}).to_csv(args.out / "fold_assignment.csv", index=False)
    table = args.out / "folds.csv"
    done = pd.read_csv(table) if table.is_file() else pd.DataFrame()
    for k in args.folds if args.folds is not None else range(args.k):
        if len(done) and k in set(done["fold"]):
            print(f"fold {k}: already in {table}")
            continue
        done = pd.concat([done, run_fold(k, ds, folds, args.data, args.out, shlex.split(args.train_args),
                                         args.models_from, args.f1_tolerance)], ignore_index=True)
        done.to_csv(table, index=False)
    cols = ["f1_iou50", "mean_ap_50_95", "count_mae"]
    print(f"\n{args.k}-fold CV on {len(ds.names)} BBBC039 fields (folds by well, seed {args.seed}); folds done: "
          f"{sorted(set(done['fold']))}")
    print(done.pivot_table(index="fold", columns="method", values=cols).round(4).to_string())
    agg = done.groupby("method")[cols].agg(["mean", "std", "min", "max"]).round(4)
    print(agg.to_string())
    agg.to_csv(args.out / "summary.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
