"""Train the U-Net on BBBC039 for a fixed time budget and score it beside the classical baseline.

Run from the repository root::

    python benchmarks/train_unet_bbbc039.py --minutes 10      # CPU: depth 3, width 16, 256 crops

Split: :func:`bbbc039_split` (first 100 sorted names train, last 50 test).  Training uses
random ``--crop`` crops of the percentile-normalised train images (seeded numpy rng), targets
from :func:`seg_targets`, and the jitted :func:`seg_train_step` (random symmetries) until
``--minutes`` are spent.  ``threshold`` / ``marker_threshold`` / ``min_area`` of
:func:`predict_instances` are then picked by a small grid on a few TRAIN images only; the
test images (full 520x696) are scored with F1 at IoU 0.5 and the mean TP/(TP+FP+FN) over IoU
0.50..0.95, beside :func:`classical_segment` (preset ``"bbbc039"``) on the same images with
the same code.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core import segmentation  # noqa: E402
from assets_pkg.core.cellsets import bbbc039_split, read_bbbc039  # noqa: E402
from assets_pkg.core.segmentation import classical_segment  # noqa: E402
from assets_pkg.core.segmetrics import average_precision_over_thresholds, match_instances  # noqa: E402
from assets_pkg.core.unet import (  # noqa: E402
    UNetConfig,
    create_seg_state,
    normalize_image,
    predict_instances,
    predict_maps,
    seg_targets,
    seg_train_step,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data", help="folder holding bbbc039/")
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tune-images", type=int, default=6, help="train images for the threshold grid")
    return p.parse_args(argv)


def score(pred, true) -> tuple[int, int, int, float]:
    """(TP, FP, FN) at IoU 0.5 and the mean TP/(TP+FP+FN) over IoU 0.50..0.95 of one image."""
    m = match_instances(pred, true, 0.5)
    return m["tp"], m["fp"], m["fn"], average_precision_over_thresholds(pred, true)


def summarise(rows) -> tuple[float, float, float]:
    """Micro F1 at IoU 0.5 (pooled counts), mean per-image F1, mean AP over 0.50..0.95."""
    tp, fp, fn = (sum(r[i] for r in rows) for i in range(3))
    micro = 2 * tp / max(2 * tp + fp + fn, 1)
    per_image = np.mean([2 * r[0] / max(2 * r[0] + r[1] + r[2], 1) for r in rows])
    return micro, float(per_image), float(np.mean([r[3] for r in rows]))


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    ds = read_bbbc039(Path(args.data) / "bbbc039")
    train_names, test_names = bbbc039_split(ds.names)
    train = ds.subset(train_names)
    test = ds.subset(test_names)
    print(
        f"BBBC039: {len(train)} train / {len(test)} test fields; jax {jax.__version__} on {jax.devices()[0].platform}"
    )

    raw_train, lab_train, imgs, fgs, dists = [], [], [], [], []
    for _, image, labels in train:
        raw_train.append(image)
        lab_train.append(labels)
        imgs.append(normalize_image(image))
        fg, dist = seg_targets(labels)
        fgs.append(fg)
        dists.append(dist)
    imgs, fgs, dists = np.stack(imgs), np.stack(fgs), np.stack(dists)
    print(f"loaded + targets in {time.perf_counter() - t0:.1f}s; train array {imgs.shape}")

    config = UNetConfig(depth=args.depth, base_width=args.width)
    c = args.crop
    state = create_seg_state(config, jax.random.PRNGKey(args.seed), (c, c), args.lr)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(state.params))
    step = jax.jit(seg_train_step, static_argnames="do_augment")
    rng = np.random.default_rng(args.seed)
    key = jax.random.PRNGKey(args.seed + 1)
    n, h, w = imgs.shape

    def batch():
        idx = rng.integers(0, n, args.batch)
        ys = rng.integers(0, h - c + 1, args.batch)
        xs = rng.integers(0, w - c + 1, args.batch)
        sl = [np.s_[i, y : y + c, x : x + c] for i, y, x in zip(idx, ys, xs, strict=True)]
        return (
            jnp.asarray(np.stack([imgs[s] for s in sl])[..., None]),
            jnp.asarray(np.stack([fgs[s] for s in sl])),
            jnp.asarray(np.stack([dists[s] for s in sl])),
        )

    tc = time.perf_counter()
    key, sub = jax.random.split(key)
    state, metrics = step(state, batch(), sub)
    jax.block_until_ready(metrics)
    print(
        f"U-Net depth {args.depth} width {args.width}: {n_params:,} params; compile + step 1 {time.perf_counter() - tc:.1f}s"
    )

    budget = args.minutes * 60.0
    t_train = time.perf_counter()
    t_log, s_log, steps = t_train, 1, 1
    while time.perf_counter() - t_train < budget:
        key, sub = jax.random.split(key)
        state, metrics = step(state, batch(), sub)
        steps += 1
        if steps % 25 == 0:
            m = {k: float(v) for k, v in metrics.items()}
            now = time.perf_counter()
            print(
                f"step {steps:5d}  loss {m['loss']:.4f}  bce {m['bce']:.4f}  dist_mse {m['distance_mse']:.4f}"
                f"  {(steps - s_log) / (now - t_log):.2f} steps/s  t={now - t_train:.0f}s",
                flush=True,
            )
            t_log, s_log = now, steps
    jax.block_until_ready(state.params)
    train_s = time.perf_counter() - t_train
    print(
        f"trained {steps} steps in {train_s:.0f}s ({steps / train_s:.2f} steps/s, {steps * args.batch} crops of {c}x{c})"
    )

    # Threshold grid on a few TRAIN images (maps computed once; predict_instances = maps + this).
    tune_idx = np.linspace(0, n - 1, args.tune_images).round().astype(int)
    maps = [predict_maps(state.params, config, raw_train[i]) for i in tune_idx]
    grid = list(itertools.product([0.4, 0.5, 0.6], [0.3, 0.5, 0.7], [0, 30]))
    best = None
    for th, mth, ma in grid:
        rows = []
        for (fg, dist), i in zip(maps, tune_idx, strict=True):
            pred = segmentation.instances_from_maps(
                fg, dist, th, kind="distance", marker_threshold=mth, min_area=ma
            )
            rows.append(score(pred, lab_train[i]))
        micro = summarise(rows)[0]
        if best is None or micro > best[0]:
            best = (micro, th, mth, ma)
    _, th, mth, ma = best
    print(
        f"tuned on {len(tune_idx)} train images ({len(grid)} settings): threshold {th}, "
        f"marker_threshold {mth}, min_area {ma} (train F1@0.5 {best[0]:.3f})"
    )

    test_items = list(test)
    _ = predict_instances(state.params, config, test_items[0][1], th, mth, ma)  # compile full size
    results = {}
    for name, fn in (
        ("U-Net", lambda im: predict_instances(state.params, config, im, th, mth, ma)),
        ("classical bbbc039", lambda im: classical_segment(im, preset="bbbc039")),
    ):
        rows, secs = [], 0.0
        for _, image, labels in test_items:
            ts = time.perf_counter()
            pred = fn(image)
            secs += time.perf_counter() - ts
            rows.append(score(pred, labels))
        results[name] = (*summarise(rows), len(test_items) / secs)

    print(
        f"\nTest: {len(test_items)} BBBC039 fields, full 520x696 (inference time excludes scoring)"
    )
    print(
        f"{'method':<20} {'F1@0.5 (pooled)':>15} {'F1@0.5 (mean/img)':>17} {'mean TP/(TP+FP+FN) .50-.95':>27} {'images/s':>9}"
    )
    for name, (micro, per_img, ap, ips) in results.items():
        print(f"{name:<20} {micro:>15.3f} {per_img:>17.3f} {ap:>27.3f} {ips:>9.2f}")
    ratio = results["U-Net"][3] / results["classical bbbc039"][3]
    print(
        f"inference speed U-Net / classical: {ratio:.2f}x;  total wall {time.perf_counter() - t0:.0f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
