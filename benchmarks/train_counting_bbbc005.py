"""Train the counting CNN on BBBC005 and score count MAE per blur level and stain.

Split: :func:`assets_pkg.core.segmentation.datasets.bbbc005_split` (every third image of each blur x stain
group by sorted name is test: 120 train / 60 test of the 180 in ``../shared/data/bbbc005``).
The counting CNN (:func:`assets_pkg.core.segmentation.training.train_counting`) is trained on the train
part (optionally plus ``--sim N`` simulated BBBC005-like fields, or ``--sim-only``), and scored
on the test part beside the classical baseline's instance count (preset per stain) on the same
images.  Prints MAE / RMSE / R² / bias per (blur, stain) and overall; ``--save DIR`` keeps the
model folder.

    python benchmarks/train_counting_bbbc005.py --steps 3000
    python benchmarks/train_counting_bbbc005.py --sim-only --sim 240 --steps 3000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.imaging.cellsim import simulate_cells  # noqa: E402
from assets_pkg.core.imaging.io import read_image  # noqa: E402
from assets_pkg.core.ml.loop import ProgressBar, TrainRun  # noqa: E402
from assets_pkg.core.segmentation.classical import classical_count  # noqa: E402
from assets_pkg.core.segmentation.config import CountTrainConfig  # noqa: E402
from assets_pkg.core.segmentation.datasets import bbbc005_split, bbbc005_table  # noqa: E402
from assets_pkg.core.segmentation.metrics import count_metrics_by  # noqa: E402
from assets_pkg.core.segmentation.models import save_model  # noqa: E402
from assets_pkg.core.segmentation.training import train_counting  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data", help="folder holding bbbc005/")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=344)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sim", type=int, default=0, help="simulated fields added (each gives both stains)")
    p.add_argument("--sim-only", action="store_true", help="train on simulated images only")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--save", default=None, help="keep the model folder here")
    p.add_argument("--load", default=None, help="score this saved model instead of training one")
    p.add_argument("--no-tta", action="store_true", help="no flip averaging at prediction")
    p.add_argument("--seg-model", default=None,
                   help="also count U-Net instances on the nucleus stain (w1) with this segmentation model")
    p.add_argument("--nucleus-diameter", type=float, default=31.0,
                   help="BBBC005 w1 nucleus diameter, px, for the U-Net's rescaling")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    t0 = time.perf_counter()
    table = bbbc005_table(Path(a.data) / "bbbc005")
    table["split"] = bbbc005_split(table)
    train, test = table[table.split == "train"], table[table.split == "test"]
    print(f"BBBC005: {len(train)} train / {len(test)} test images; jax on {jax.devices()[0].platform}")
    if a.load:
        from assets_pkg.core.segmentation.models import load_model

        model = load_model(a.load, kind="counting")
        a.sim_only = a.sim_only or False
        return _score(a, model, test, t0)
    images = [] if a.sim_only else [read_image(p) for p in train.path]
    counts = [] if a.sim_only else list(train["count"])
    names = [] if a.sim_only else list(train.name)
    if a.sim or a.sim_only:
        n_sim = a.sim or 240
        with tempfile.TemporaryDirectory() as tmp:
            ts = time.perf_counter()
            sim = simulate_cells(tmp, n_sim, seed=a.seed + 1000, progress=True)
            images += [read_image(p) for p in sim.path]
            counts += list(sim["count"])
            names += list(sim.name)
            print(f"simulated {len(sim)} images in {time.perf_counter() - ts:.0f}s")
    cfg = CountTrainConfig(input_shape=(a.height, a.width), steps=a.steps, batch_size=a.batch,
                           learning_rate=a.lr, seed=a.seed)
    with ProgressBar("train counting CNN") as bar:
        model = train_counting(images, counts, cfg, names=names, run=TrainRun(progress=bar, log=bar.write))
    if a.save:
        print("saved", save_model(model, a.save))
    return _score(a, model, test, t0)


def _score(a, model, test, t0) -> int:
    test = test.copy()
    test_imgs = [read_image(p) for p in test.path]
    ts = time.perf_counter()
    prep = np.stack([model.prepare(im) for im in test_imgs])
    test["pred_count"] = model.predict_batch(prep, tta=not a.no_tta)
    cnn_ips = len(test) / (time.perf_counter() - ts)
    rows = [count_metrics_by(test).assign(method="counting CNN")]
    if not a.no_baseline:
        ts = time.perf_counter()
        test["classical"] = [classical_count(im, preset=f"bbbc005_w{s}") for im, s in
                             zip(test_imgs, test.stain, strict=True)]
        cls_ips = len(test) / (time.perf_counter() - ts)
        rows.append(count_metrics_by(test, pred_col="classical").assign(method="classical instances"))
    if a.seg_model:
        from assets_pkg.core.segmentation.models import load_model

        seg = load_model(a.seg_model, kind="segmentation")
        w1 = test[test.stain == 1].copy()
        ts = time.perf_counter()
        w1["unet"] = [int(seg.segment(im, a.nucleus_diameter).max())
                      for im, s in zip(test_imgs, test.stain, strict=True) if s == 1]
        print(f"U-Net instances: {len(w1) / (time.perf_counter() - ts):.2f} images/s")
        rows.append(count_metrics_by(w1, pred_col="unet").assign(method="U-Net instances (w1)"))
    res = pd.concat(rows, ignore_index=True)
    pd.set_option("display.width", 160)
    print(f"\nTest {len(test)} BBBC005 images (model {a.load or 'trained here'}; flip averaging {not a.no_tta}; "
          f"train: {'simulated only' if a.sim_only else 'real train part'}"
          f"{f' + {a.sim} simulated fields' if a.sim and not a.sim_only else ''}), {model.info['steps_done']} steps, "
          f"{model.info['train_seconds']:.0f}s training")
    print(res.round(3).to_string(index=False))
    print(f"counting CNN {cnn_ips:.1f} images/s" + ("" if a.no_baseline else f", classical {cls_ips:.1f} images/s"))
    worst = res[(res.method == "counting CNN") & (res.blur != "all")].mae.max()
    print(f"worst (blur, stain) MAE of the CNN: {worst:.2f} (target < 2.4); wall {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
