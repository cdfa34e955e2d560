"""Where a cross-validated U-Net loses F1 on its held-out BBBC039 fold: the missed true objects
and the false predictions by kind and by size, and the F1 the fold would have if objects below a
size did not count.

Run from the repository root on a folder written by ``cv_segmentation_bbbc039.py``::

    python benchmarks/segmentation_errors_bbbc039.py --cv /tmp/cv_seg --fold 2

The fold's model segments its held-out fields exactly as the CV scored them (``model.segment``:
tuned thresholds, flip averaging).  With ``I(p, t)`` the pixels shared by prediction ``p`` and
true object ``t``, an unmatched true object (no prediction at IoU >= 0.5) is

- **missed** when no prediction covers a quarter of it (dropped as too small, or absorbed into a
  neighbour's outline),
- **merged** when the prediction sharing most of its pixels also covers >= half of another true
  object,
- **mis-outlined** otherwise (found, but IoU < 0.5);

an unmatched prediction is **spurious** when it lies mostly (>= half) on background, a **split**
piece when >= half of it lies in a true object that another prediction also lies in, and
**mis-outlined** otherwise.  Areas are in pixels at BBBC039's scale (median nucleus about 28 px
across, 600 px of area).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.segmentation.datasets import load_mask, read_bbbc039  # noqa: E402
from assets_pkg.core.segmentation.metrics import match_instances, overlap_table  # noqa: E402
from assets_pkg.core.segmentation.models import load_model  # noqa: E402

SIZE_BINS = (0, 30, 60, 120, np.inf)


def classify(pred: np.ndarray, truth: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Unmatched true objects and predictions of one field (kind, area), and the field's
    :func:`match_instances` at IoU 0.5 (the CV's own matching, so TP, FP and FN add up to its F1)."""
    t = overlap_table(pred, truth)
    match = match_instances(pred, truth, 0.5)
    inter = t["intersection"]
    n_p, n_t = inter.shape
    matched_p = np.isin(t["pred_ids"], match["pairs"][:, 0])
    matched_t = np.isin(t["true_ids"], match["pairs"][:, 1])
    covers = (inter >= 0.5 * t["true_area"][None, :]) & (inter > 0)  # p covers t
    lies_in = (inter >= 0.5 * t["pred_area"][:, None]) & (inter > 0)  # p lies in t
    rows_t = []
    for j in np.flatnonzero(~matched_t):
        col = inter[:, j] if n_p else np.zeros(0)
        if col.size == 0 or col.max() < 0.25 * t["true_area"][j]:
            kind = "missed"
        else:
            p = int(col.argmax())
            kind = "merged" if covers[p].sum() - covers[p, j] >= 1 else "mis-outlined"
        rows_t.append((kind, int(t["true_area"][j])))
    rows_p = []
    for i in np.flatnonzero(~matched_p):
        row = inter[i] if n_t else np.zeros(0)
        if row.size == 0 or row.sum() < 0.5 * t["pred_area"][i]:
            kind = "spurious"
        else:
            j = int(row.argmax())
            kind = "split" if lies_in[i, j] and lies_in[:, j].sum() >= 2 else "mis-outlined"
        rows_p.append((kind, int(t["pred_area"][i])))
    cols = ["kind", "area"]
    return pd.DataFrame(rows_t, columns=cols), pd.DataFrame(rows_p, columns=cols), match


def small_share_by_fold(folds: pd.DataFrame, data: Path, below: int = 30) -> pd.DataFrame:
    """Per fold: true objects, how many are smaller than ``below`` px, and their share (from the
    masks alone, so a fold that is harder because it holds more fragments shows as such)."""
    masks = read_bbbc039(data).subset(list(folds["name"]))
    rows = []
    for fold, path in zip(folds["fold"], masks.table["mask_path"], strict=True):
        areas = np.bincount(load_mask(path, masks.mask_kind).ravel())[1:]
        areas = areas[areas > 0]
        rows.append((fold, areas.size, int((areas < below).sum())))
    out = pd.DataFrame(rows, columns=["fold", "objects", f"below_{below}px"]).groupby("fold").sum()
    out["share"] = (out[f"below_{below}px"] / out["objects"]).round(4)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=Path, required=True, help="output folder of cv_segmentation_bbbc039.py")
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/bbbc039"))
    args = ap.parse_args(argv)
    folds = pd.read_csv(args.cv / "fold_assignment.csv")
    names = list(folds.loc[folds["fold"] == args.fold, "name"])
    model = load_model(args.cv / f"fold_{args.fold}" / "model", kind="segmentation")
    ds = read_bbbc039(args.data).subset(names)
    fn_rows, fp_rows, tp, n_true = [], [], 0, 0
    for name, image, truth in ds:
        fn_, fp_, match = classify(model.segment(image), truth)
        fn_rows.append(fn_.assign(field=name))
        fp_rows.append(fp_.assign(field=name))
        tp += match["tp"]
        n_true += match["n_true"]
    fn, fp = pd.concat(fn_rows, ignore_index=True), pd.concat(fp_rows, ignore_index=True)
    f1 = 2 * tp / (2 * tp + len(fp) + len(fn))
    print(f"fold {args.fold}: {len(names)} fields, {n_true} true objects; F1@0.5 {f1:.4f} "
          f"(TP {tp}, FP {len(fp)}, FN {len(fn)})")
    labels = [f"{lo}-{hi}" if np.isfinite(hi) else f">={lo}" for lo, hi in zip(SIZE_BINS[:-1], SIZE_BINS[1:], strict=True)]
    for what, table in (("missed true objects (FN)", fn), ("false predictions (FP)", fp)):
        size = pd.cut(table["area"], SIZE_BINS, right=False, labels=labels)
        print(f"\n{what} by kind and area (px):")
        print(pd.crosstab(table["kind"], size, margins=True).to_string())
    print("\nF1@0.5 if unmatched objects below an area (truth and prediction) did not count:")
    for a in (30, 60):
        fn_a, fp_a = int((fn["area"] >= a).sum()), int((fp["area"] >= a).sum())
        print(f"  >= {a} px: {2 * tp / (2 * tp + fp_a + fn_a):.4f} (FP {fp_a}, FN {fn_a})")
    worst = fn.groupby("field").size().sort_values(ascending=False).head(5)
    print("\nfields with the most misses:", ", ".join(f"{n.split('_w')[0]} {c}" for n, c in worst.items()))
    print("\nannotated objects below 30 px in each fold's held-out fields (masks only):")
    print(small_share_by_fold(folds, args.data).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
