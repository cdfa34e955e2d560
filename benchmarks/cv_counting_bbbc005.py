"""5-fold cross-validation of the default counting CNN on BBBC005: MAE per fold, blur level and stain.

Folds: :func:`assets_pkg.core.segmentation.datasets.stratified_folds` (seeded; each fold holds 6 of
the 30 images of every blur x stain group, spread over the count range; a field imaged at several
blur levels or in both stains, which shows the same simulated cells, stays in one fold).  Each
fold trains the counting CNN exactly as ``cellscape train-counting --images DIR --out M`` does with
no other flag (``CountTrainConfig()``, on the other folds' images sorted by name) and counts the
held-out fold exactly as ``cellscape count DIR --out counts.csv --model M`` does (flip-averaged,
rounded to a whole cell; the unrounded output is kept too).  The classical baseline counts the
same images with its instances (preset per stain, as in ``train_counting_bbbc005.py``).
Prints per fold the MAE overall, per blur level and per stain for both, then mean ± sd over the
folds (also per blur x stain); ``--out DIR`` gets ``predictions.csv`` (one row per image),
``fold_errors.csv`` (per fold, method and group: n, MAE, RMSE, R², bias) and ``summary.json``
(mean, sd, pooled; R² overall; config, times, load average).

    nice -n 10 python benchmarks/cv_counting_bbbc005.py --out /tmp/countcv
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.imaging.io import read_image  # noqa: E402
from assets_pkg.core.ml.loop import ProgressBar, TrainRun  # noqa: E402
from assets_pkg.core.ml.model_folder import atomic_write_text  # noqa: E402
from assets_pkg.core.segmentation.classical import classical_count  # noqa: E402
from assets_pkg.core.segmentation.config import CountTrainConfig  # noqa: E402
from assets_pkg.core.segmentation.datasets import bbbc005_table, stratified_folds  # noqa: E402
from assets_pkg.core.segmentation.metrics import fold_count_errors, summarise_folds  # noqa: E402
from assets_pkg.core.segmentation.run import counter  # noqa: E402
from assets_pkg.core.segmentation.training import train_counting  # noqa: E402

#: Method name -> predicted count column of ``predictions.csv``.
METHODS = {"counting CNN": "cnn", "counting CNN, unrounded": "cnn_raw", "classical instances": "classical"}
#: Groupings scored per fold: blur level, stain, and their combination.
BY = ("blur", "stain", ("blur", "stain"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data", help="folder holding bbbc005/")
    p.add_argument("--out", required=True, type=Path, help="folder for predictions.csv, fold_errors.csv, summary.json")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold-seed", type=int, default=0, help="seed of the fold assignment")
    p.add_argument("--only", type=int, nargs="*", default=None, help="run only these folds (a timing check)")
    p.add_argument("--steps", type=int, default=None,
                   help="smoke runs only: override the default steps (the reported figures use the default)")
    p.add_argument("--no-baseline", action="store_true")
    return p.parse_args(argv)


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _fold_line(err: pd.DataFrame, method: str) -> str:
    e = err[err.method == method]
    part = {g: " ".join(f"{prefix}{lv} {v:.2f}" for lv, v in e[e.grouping == g].set_index("level").mae.items())
            for g, prefix in (("blur", "F"), ("stain", "w"))}
    return f"  {method:<26} MAE {e[e.grouping == 'all'].mae.iloc[0]:6.2f} | {part['blur']} | {part['stain']}"


def main(argv=None) -> int:
    a = parse_args(argv)
    t0, c0, load0 = time.perf_counter(), _cpu_seconds(), os.getloadavg()
    cfg = CountTrainConfig() if a.steps is None else CountTrainConfig(steps=a.steps)
    table = bbbc005_table(Path(a.data) / "bbbc005")
    table["fold"] = stratified_folds(table, a.folds, seed=a.fold_seed)
    print(f"BBBC005: {len(table)} images, {a.folds} folds of {table.fold.value_counts().sort_index().tolist()}; "
          f"jax on {jax.devices()[0].platform}; counting config "
          f"{'CountTrainConfig() (the default command)' if cfg == CountTrainConfig() else cfg}", flush=True)
    images = {n: read_image(p) for n, p in zip(table.name, table.path, strict=True)}
    methods = METHODS
    if a.no_baseline:
        methods = {k: v for k, v in METHODS.items() if v != "classical"}
    else:
        tb = time.perf_counter()
        table["classical"] = [classical_count(images[n], preset=f"bbbc005_w{s}") for n, s in
                              tqdm(zip(table.name, table.stain, strict=True), total=len(table),
                                   desc="classical baseline", unit="image")]
        baseline_s = time.perf_counter() - tb
    folds = a.only if a.only is not None else list(range(a.folds))
    preds, timing = [], []
    for k in folds:
        tf, cf = time.perf_counter(), _cpu_seconds()
        train = table[table.fold != k].sort_values("name")
        test = table[table.fold == k].copy()
        with ProgressBar(f"fold {k}: train counting CNN ({len(train)} images)") as bar:
            model = train_counting([images[n] for n in train.name], train["count"], cfg, names=list(train.name),
                                   run=TrainRun(progress=bar, log=bar.write))
        count, _ = counter(model)
        test["cnn_raw"] = [count(images[n]) for n in test.name]
        test["cnn"] = np.maximum(0, np.round(test["cnn_raw"])).astype(int)
        preds.append(test)
        fold_s, fold_cpu = time.perf_counter() - tf, _cpu_seconds() - cf
        timing.append({"fold": k, "train_images": len(train), "test_images": len(test),
                       "train_seconds": model.info["train_seconds"], "steps_done": model.info["steps_done"],
                       "wall_seconds": fold_s, "cpu_seconds": fold_cpu, "load_after": os.getloadavg()[0]})
        err = fold_count_errors(test, methods)
        print(f"fold {k}: {len(test)} held out; trained {model.info['steps_done']} steps in "
              f"{model.info['train_seconds']:.0f}s (fold wall {fold_s:.0f}s, CPU {fold_cpu:.0f}s, "
              f"load {os.getloadavg()[0]:.1f}); train MAE {model.info['train_mae']:.2f}", flush=True)
        for m in methods:
            print(_fold_line(err, m), flush=True)
    pred = pd.concat(preds).sort_values(["fold", "name"])
    errors = fold_count_errors(pred, methods, by=BY)
    summary = summarise_folds(errors, "mae")
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    _print_summary(summary, methods, len(folds))
    print(f"wall {wall:.0f}s, CPU {cpu:.0f}s (user + system, all threads), load average "
          f"{load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} cores")
    a.out.mkdir(parents=True, exist_ok=True)
    cols = ["fold", "name", "blur", "stain", "site", "count", "cnn", "cnn_raw"] + (
        [] if a.no_baseline else ["classical"])
    atomic_write_text(a.out / "predictions.csv", pred[cols].to_csv(index=False))
    atomic_write_text(a.out / "fold_errors.csv", errors.to_csv(index=False))
    record = {
        "command": "python benchmarks/cv_counting_bbbc005.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": str(Path(a.data).resolve() / "bbbc005"), "folds": a.folds, "fold_seed": a.fold_seed,
        "folds_run": folds, "default_config": cfg == CountTrainConfig(), "config": cfg.model_dump(mode="json"),
        "prediction": "flip-averaged (CountingModel.count); 'counting CNN' rounded to a whole cell as cellscape count",
        "mae": summary.to_dict(orient="records"),
        "r2": summarise_folds(errors[errors.grouping == "all"], "r2").to_dict(orient="records"), "timing": timing,
        "baseline_seconds": None if a.no_baseline else baseline_s,
        "wall_seconds": wall, "cpu_seconds": cpu, "load_average_start": load0, "load_average_end": os.getloadavg(),
        "cpu_count": os.cpu_count(), "jax_platform": jax.devices()[0].platform,
    }
    atomic_write_text(a.out / "summary.json", json.dumps(record, indent=1) + "\n")
    print(f"wrote {a.out}/predictions.csv, fold_errors.csv, summary.json")
    return 0


def _print_summary(summary: pd.DataFrame, methods: dict, n_folds: int) -> None:
    cell = summary.assign(v=[f"{m:.2f} ± {s:.2f}" for m, s in zip(summary["mean"], summary["sd"], strict=True)])
    tab = cell.pivot_table(index=["grouping", "level"], columns="method", values="v", aggfunc="first", sort=False)
    tab = tab[[m for m in methods if m in tab.columns]]
    pd.set_option("display.width", 160)
    print(f"\nMAE, mean ± sd over {n_folds} folds (images per fold and group in fold_errors.csv):")
    print(tab.to_string())


if __name__ == "__main__":
    raise SystemExit(main())
