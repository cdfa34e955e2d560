"""The classical baseline on real data: BBBC039 segmentation and BBBC005 counting.

Usage::

    python benchmarks/bench_baseline.py [--data ../shared/data] [--tune] [--jobs 2]

Splits (deterministic, by sorted file name; :mod:`assets_pkg.core.segmentation.datasets`):

- BBBC039: the 150 fields of ``<data>/bbbc039``; first 100 = train, last 50 = test
  (:func:`~assets_pkg.core.segmentation.datasets.bbbc039_split`).
- BBBC005: the 180 files of ``<data>/bbbc005``; in each (blur, stain) group of 30 sorted by
  name, every third file is test (10 per group, 60 in all), the rest train
  (:func:`~assets_pkg.core.segmentation.datasets.bbbc005_split`).

Without ``--tune`` the baseline runs with :data:`assets_pkg.core.segmentation.classical.CLASSICAL_PRESETS`.
With ``--tune`` it first tunes ``detect_nuclei``'s parameters by coordinate search on the
train parts only (BBBC039: mean F1 at IoU 0.5; BBBC005: count MAE per stain, all blur levels
together), prints the search, then scores the tuned parameters; paste them into the presets.

Prints, for BBBC039, F1 and TP/(TP+FP+FN) at IoU 0.5, its mean over IoU 0.50..0.95, pixel
accuracy, foreground IoU, merges and splits (test, train and all 150, with the untuned
``detect_nuclei`` defaults beside); for BBBC005, count MAE, RMSE, R² and bias per blur level
and stain; and single-process images/s at 520 x 696.
"""

from __future__ import annotations

import argparse
import os
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from assets_pkg.core.imaging.io import read_image
from assets_pkg.core.segmentation import datasets as cs
from assets_pkg.core.segmentation.classical import (
    CLASSICAL_PRESETS,
    classical_count,
    classical_segment,
)
from assets_pkg.core.segmentation.metrics import count_metrics_by, score_segmentation

# Data shared with worker processes (fork start method: inherited, never pickled).
_IMAGES: list[np.ndarray] = []
_MASKS: list[np.ndarray | None] = []

#: Starting diameters of the BBBC005 search: the median equivalent diameter of the Otsu
#: objects of the real F1 files with at most 27 cells (w1 about 31 px, w2 about 63 px).
START_DIAMETER_PX = {1: 31.0, 2: 63.0}

SEG_COLUMNS = [
    "f1",
    "precision_tp_over_all",
    "ap_50_95",
    "pixel_accuracy",
    "foreground_iou",
    "dice",
    "merges",
    "splits",
    "n_true",
    "n_pred",
]


def _score_one(args):
    i, params = args
    t0 = time.perf_counter()
    pred = classical_segment(_IMAGES[i], **params)
    dt = time.perf_counter() - t0
    return {"idx": i, "seconds": dt, **score_segmentation(pred, _MASKS[i])}


def _count_one(args):
    i, params = args
    return {"idx": i, "pred_count": classical_count(_IMAGES[i], **params)}


def _map(fn, idx, params, jobs):
    work = [(int(i), params) for i in idx]
    if jobs <= 1:
        return pd.DataFrame([fn(w) for w in work])
    with get_context("fork").Pool(jobs) as pool:
        return pd.DataFrame(pool.map(fn, work, chunksize=4))


def coordinate_search(objective, start: dict, grid: dict, rounds: int = 2, label: str = ""):
    """Minimise ``objective(params)`` one parameter at a time over ``grid``."""
    best = dict(start)
    best_val = objective(best)
    print(f"  [{label}] start {best} -> {best_val:.4f}")
    seen = {tuple(sorted(best.items())): best_val}
    for r in range(rounds):
        changed = False
        for key, values in grid.items():
            for v in values:
                cand = {**best, key: v}
                k = tuple(sorted(cand.items()))
                if k not in seen:
                    seen[k] = objective(cand)
                if seen[k] < best_val - 1e-9:
                    best, best_val, changed = cand, seen[k], True
            print(f"  [{label}] round {r + 1}, {key}: best {best} -> {best_val:.4f}")
        if not changed:
            break
    return best, best_val


def summarise_seg(df: pd.DataFrame) -> dict:
    out = {c: df[c].mean() for c in SEG_COLUMNS if c not in ("merges", "splits", "n_true", "n_pred")}
    out.update(
        merges=int(df["merges"].sum()),
        splits=int(df["splits"].sum()),
        n_true=int(df["n_true"].sum()),
        n_pred=int(df["n_pred"].sum()),
        images=len(df),
    )
    return out


def bbbc039(data: Path, tune: bool, jobs: int) -> None:
    global _IMAGES, _MASKS
    s = cs.read_bbbc039(data / "bbbc039")
    t0 = time.perf_counter()
    triples = list(s)
    print(f"BBBC039: {len(triples)} fields read in {time.perf_counter() - t0:.1f} s")
    names = [n for n, _, _ in triples]
    _IMAGES = [im for _, im, _ in triples]
    _MASKS = [lab for _, _, lab in triples]
    train, test = cs.bbbc039_split(names)
    pos = {n: i for i, n in enumerate(names)}
    itrain = [pos[n] for n in train]
    itest = [pos[n] for n in test]
    print(f"split: train = first {len(train)} by sorted name, test = last {len(test)}")

    params = dict(CLASSICAL_PRESETS["bbbc039"])
    if tune:
        grid = {
            "nucleus_diameter_px": [23.0, 26.0, 29.0, 32.0, 35.0],
            "threshold_scale": [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1],
            "gap_contrast": [0.02, 0.035, 0.05, 0.075, 0.1],
            "min_distance": [6.0, 8.0, 10.0, 12.0],
        }

        def objective(p):
            return -_map(_score_one, itrain, p, jobs)["f1"].mean()

        params, val = coordinate_search(objective, {"nucleus_diameter_px": 29.0}, grid, label="bbbc039 F1")
        print(f"tuned on train: {params} (train F1 {-val:.4f})")

    rows = {}
    for label, p in (("defaults d=29", {"nucleus_diameter_px": 29.0}), ("preset/tuned", params)):
        df = _map(_score_one, range(len(names)), p, jobs)
        df["name"] = [names[i] for i in df["idx"]]
        for part, idx in (("test 50", itest), ("train 100", itrain), ("all 150", range(len(names)))):
            rows[(label, part)] = summarise_seg(df[df["idx"].isin(list(idx))])
    table = pd.DataFrame(rows).T
    table.index.names = ["params", "part"]
    print(f"\nBBBC039 classical baseline, params = {params}")
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 200):
        print(table.to_string())

    # Single-process speed at 520 x 696 (uint16), params above.
    sample = itest[:20]
    t0 = time.perf_counter()
    for i in sample:
        classical_segment(_IMAGES[i], **params)
    dt = time.perf_counter() - t0
    print(f"\nspeed: {len(sample) / dt:.2f} images/s at {_IMAGES[0].shape[0]}x{_IMAGES[0].shape[1]} "
          f"(one process, {os.cpu_count()} CPUs on the machine)")


def bbbc005(data: Path, tune: bool, jobs: int) -> None:
    global _IMAGES, _MASKS
    t = cs.bbbc005_table(data / "bbbc005")
    t["split"] = cs.bbbc005_split(t)
    _IMAGES = [read_image(p) for p in t["path"]]
    _MASKS = [None] * len(t)
    print(f"\nBBBC005: {len(t)} images; split: every third file of each (blur, stain) group by "
          f"sorted name is test -> {dict(t['split'].value_counts())}")
    preds = np.zeros(len(t), np.int64)
    truth = t["count"].to_numpy()
    for stain in (1, 2):
        preset = f"bbbc005_w{stain}"
        params = dict(CLASSICAL_PRESETS[preset])
        itrain = np.flatnonzero((t["stain"] == stain) & (t["split"] == "train"))
        if tune:
            d0 = START_DIAMETER_PX[stain]
            grid = {
                "nucleus_diameter_px": [round(d0 * f, 1) for f in (0.7, 0.85, 1.0, 1.15, 1.3)],
                "threshold_scale": [0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.15],
                "gap_contrast": [0.02, 0.035, 0.05, 0.075, 0.1],
            }

            def objective(p, itrain=itrain):
                r = _map(_count_one, itrain, p, jobs)
                return float(np.mean(np.abs(r["pred_count"].to_numpy() - truth[r["idx"]])))

            params, val = coordinate_search(objective, {"nucleus_diameter_px": d0}, grid, label=f"w{stain} MAE")
            print(f"tuned w{stain} on train: {params} (train MAE {val:.3f})")
        iall = np.flatnonzero(t["stain"] == stain)
        r = _map(_count_one, iall, params, jobs)
        preds[r["idx"].to_numpy()] = r["pred_count"].to_numpy()
        print(f"w{stain} params: {params}")
    t["pred_count"] = preds
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 200):
        for part in ("test", "train"):
            sub = t[t["split"] == part]
            print(f"\nBBBC005 classical count ({part} part, {len(sub)} images), per blur and stain:")
            print(count_metrics_by(sub, by=["blur", "stain"]).to_string(index=False))
            print(count_metrics_by(sub, by=["stain"], overall=False).to_string(index=False))
        print("\nall 180 images, per blur and stain:")
        print(count_metrics_by(t, by=["blur", "stain"]).to_string(index=False))
    t0 = time.perf_counter()
    for i in range(0, len(t), 9):
        classical_count(_IMAGES[i], preset=f"bbbc005_w{t['stain'].iloc[i]}")
    dt = time.perf_counter() - t0
    n = len(range(0, len(t), 9))
    print(f"\nspeed: {n / dt:.2f} images/s counting at 520x696 uint8 (one process)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--tune", action="store_true", help="tune on the train parts first")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--only", choices=("bbbc039", "bbbc005"), default=None)
    args = ap.parse_args()
    if not (args.data / "bbbc039").is_dir() or not (args.data / "bbbc005").is_dir():
        raise SystemExit(f"reference data not found under {args.data}")
    t0 = time.perf_counter()
    if args.only in (None, "bbbc039"):
        bbbc039(args.data, args.tune, args.jobs)
    if args.only in (None, "bbbc005"):
        bbbc005(args.data, args.tune, args.jobs)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
