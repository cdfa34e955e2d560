"""Train the U-Net on BBBC039 and score it beside the classical baseline on the same test images.

Run from the repository root::

    python benchmarks/train_unet_bbbc039.py --steps 1500 --save /tmp/unet_bbbc039
    python benchmarks/train_unet_bbbc039.py --load /tmp/unet_bbbc039          # score a saved model
    python benchmarks/train_unet_bbbc039.py --sim-only 120 --steps 1500       # simulated training only

Split: :func:`bbbc039_split` (first 100 sorted names train, last 50 test).  Training is
:func:`assets_pkg.core.segmentation.training.train_segmentation` (random ``--crop`` crops with the 8
symmetries, AdamW with warm-up and cosine decay over ``--steps``); its post-processing
thresholds are tuned on ``--tune-images`` TRAIN images only.  The 50 test images (full
520x696) are scored with F1 at IoU 0.5 and the mean TP/(TP+FP+FN) over IoU 0.50..0.95, beside
:func:`classical_segment` (preset ``"bbbc039"`` tuned on the train part, and its defaults at
BBBC039's nucleus size) with the same code; inference images/s exclude scoring.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.imaging.cellsim import simulate_cells  # noqa: E402
from assets_pkg.core.imaging.io import read_image  # noqa: E402
from assets_pkg.core.ml.loop import ProgressBar, TrainRun  # noqa: E402
from assets_pkg.core.segmentation.classical import (
    classical_segment,  # noqa: E402
    score_folder,  # noqa: E402
)
from assets_pkg.core.segmentation.config import SegTrainConfig  # noqa: E402
from assets_pkg.core.segmentation.datasets import bbbc039_split, load_mask, read_bbbc039  # noqa: E402
from assets_pkg.core.segmentation.metrics import summarise_scores  # noqa: E402
from assets_pkg.core.segmentation.models import load_model, save_model  # noqa: E402
from assets_pkg.core.segmentation.training import (  # noqa: E402
    median_diameter,
    train_segmentation,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data", help="folder holding bbbc039/")
    p.add_argument("--steps", type=int, default=1500, help="optimisation steps (the cosine schedule spans them)")
    p.add_argument("--minutes", type=float, default=None, help="stop earlier after this much training")
    p.add_argument("--save", default=None, help="keep the model folder here")
    p.add_argument("--load", default=None, help="score this model folder instead of training")
    p.add_argument("--sim-only", type=int, default=0, metavar="N", help="train on N simulated fields only")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tune-images", type=int, default=8, help="train images for the threshold grid")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    ds = read_bbbc039(Path(args.data) / "bbbc039")
    train_names, test_names = bbbc039_split(ds.names)
    train = ds.subset(train_names)
    test = ds.subset(test_names)
    print(f"BBBC039: {len(train)} train / {len(test)} test fields; jax {jax.__version__} on {jax.devices()[0].platform}")
    diameter = None
    if args.load:
        model = load_model(args.load, kind="segmentation")
        print(f"loaded {args.load}: {model.info.get('steps_done')} steps, {model.info.get('train_seconds', 0):.0f}s")
    else:
        if args.sim_only:
            with tempfile.TemporaryDirectory() as tmp:
                sim = simulate_cells(tmp, args.sim_only, seed=args.seed + 7, progress=True)
                nuc = sim[sim.stain == 1]
                names = list(nuc.name)
                images = [read_image(p) for p in nuc.path]
                labels = [load_mask(p) for p in nuc.mask_path]
            # BBBC039's nuclei measured on its train masks; the simulated model rescales to its own size
            diameter = median_diameter([lab for _, _, lab in train])
            print(f"training on {len(images)} simulated fields only; BBBC039 train nuclei {diameter:.1f} px")
        else:
            names, images, labels = [], [], []
            for name, image, lab in train:
                names.append(name)
                images.append(image)
                labels.append(lab)
        cfg = SegTrainConfig(depth=args.depth, base_width=args.width, crop=args.crop, batch_size=args.batch,
                             steps=args.steps, learning_rate=args.lr, max_minutes=args.minutes, seed=args.seed,
                             tune_images=args.tune_images)
        with ProgressBar("train U-Net") as bar:
            model = train_segmentation(images, labels, cfg, names=names, run=TrainRun(progress=bar, log=bar.write))
        if args.save:
            print("saved", save_model(model, args.save))
        print(f"trained {model.info['steps_done']} steps in {model.info['train_seconds']:.0f}s "
              f"({model.info['n_params']:,} params); tuning {model.info['tuning']}")

    _ = model.segment(test[0][1], diameter)  # compile at full size
    rows = []
    for name, fn in (
        ("U-Net", lambda im: model.segment(im, diameter)),
        ("classical bbbc039", lambda im: classical_segment(im, preset="bbbc039")),
        ("classical default", lambda im: classical_segment(im, nucleus_diameter_px=23.0)),
    ):
        rows.append(score_folder(test, None, fn, extra={"method": name}))
    summary = summarise_scores(pd.concat(rows, ignore_index=True)).set_index("method")
    results = {m: (r.f1_iou50, r.f1_mean_per_image, r.mean_ap_50_95, r.images_per_s) for m, r in summary.iterrows()}

    print(f"\nTest: {len(test)} BBBC039 fields (last 50 by name), full 520x696; inference time excludes scoring")
    print(f"{'method':<20} {'F1@0.5 (pooled)':>15} {'F1@0.5 (mean/img)':>17} {'mean TP/(TP+FP+FN) .50-.95':>27} {'images/s':>9}")
    for name, (micro, per_img, ap, ips) in results.items():
        print(f"{name:<20} {micro:>15.3f} {per_img:>17.3f} {ap:>27.3f} {ips:>9.2f}")
    u, c = results["U-Net"], results["classical bbbc039"]
    print(f"U-Net - classical (tuned) F1@0.5: {u[0] - c[0]:+.3f}; vs default: {u[0] - results['classical default'][0]:+.3f}")
    print(f"inference speed U-Net / classical: {u[3] / c[3]:.2f}x;  total wall {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
