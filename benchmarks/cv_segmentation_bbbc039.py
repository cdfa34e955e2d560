"""5-fold cross-validation of the default `cellscape train-segmentation` on BBBC039, beside the
classical baseline on the same folds.

Run from the repository root::

    python benchmarks/cv_segmentation_bbbc039.py --out /tmp/cv_seg            # all 5 folds
    python benchmarks/cv_segmentation_bbbc039.py --out /tmp/cv_seg --folds 0 2  # some of them
    python benchmarks/cv_segmentation_bbbc039.py --out /tmp/cv_cw --train-args "--contact-weight 10"  # a variant

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
from assets_pkg.core.segmentation.training import median_diameter  # noqa: E402

METHODS = ("U-Net (defaults)", "classical")


def copy_fields(src: Path, names: list[str], dest: Path) -> None:
    """Copy the named fields' images and masks (regular files: the reader refuses links)."""
    for sub, suffix in (("images", ".tif"), ("masks", ".png")):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for n in names:
            shutil.copyfile(src / sub / f"{n}{suffix}", dest / sub / f"{n}{suffix}")


def run_fold(k: int, ds, folds: np.ndarray, data: Path, out: Path, train_args: list[str]) -> pd.DataFrame:
    names = np.asarray(ds.names)
    train_names, test_names = list(names[folds != k]), list(names[folds == k])
    fold_dir = out / f"fold_{k}"
    copy_fields(data, train_names, fold_dir / "train")
    model_dir = fold_dir / "model"
    cmd = [sys.executable, "-m", "assets_pkg.cli", "train-segmentation", "--images", str(fold_dir / "train/images"),
           "--masks", str(fold_dir / "train/masks"), "--out", str(model_dir), *train_args]
    print(f"fold {k}: {len(train_names)} train / {len(test_names)} held-out fields; {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    train_wall = time.perf_counter() - t0
    model = load_model(model_dir, kind="segmentation")
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
    print(f"fold {k}: training {train_wall / 60:.1f} min wall, {model.info.get('steps_done')} steps "
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
    args = ap.parse_args(argv)
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
        done = pd.concat([done, run_fold(k, ds, folds, args.data, args.out, shlex.split(args.train_args))], ignore_index=True)
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
