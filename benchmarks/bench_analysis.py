"""Time of the localization-atlas analysis on synthetic frames: UMAP, spectra, clustering, scores.

Synthetic data, generated before any timing:

* ``--frames`` feature vectors of ``--dim`` dimensions from a mixture of 17 Gaussian clusters
  (one per localization class), the UMAP input;
* the same number of frame histograms over ``--codes`` codebook entries (625 = 25 x 25 code
  positions per frame) for ``--proteins`` proteins, each protein drawing its codes from a
  class-specific profile, the spectra / clustering input.

Stages (seconds measured in this run, one repetition each):

* ``umap``: :func:`umap_projection` (umap-learn, 2-D, seed fixed so single-threaded, default
  parameters) on all frames, after a small warm-up call that pays numba's compilation (shown
  separately);
* ``protein_spectra``: frames -> per-protein spectra;
* ``cluster_codes (proteins)``: Pearson over proteins + average linkage + fcluster + leaf order
  on the (proteins x codes) spectra;
* ``cluster_codes (frames)``: the same on the (frames x codes) histograms directly (the
  correlation is a K x K matrix whatever the number of frames; hierarchical clustering of the
  frames themselves, N^2 / 2 distances, is not sensible at this size and is not timed);
* ``protein_clusters``, ``knn accuracy``, ``clustering_score`` (on the UMAP coordinates).

Usage::

    python benchmarks/bench_analysis.py                # 100,000 frames (a few minutes on 2 cores)
    python benchmarks/bench_analysis.py --frames 20000 --skip-umap
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.imaging.plates import LOCALIZATIONS  # noqa: E402
from assets_pkg.core.localization.projection import umap_projection  # noqa: E402
from assets_pkg.core.localization.scores import (  # noqa: E402
    clustering_score,
    knn_localization_accuracy,
    protein_clusters,
)
from assets_pkg.core.localization.spectra import cluster_codes, protein_spectra  # noqa: E402

POSITIONS = 25 * 25


def make_features(n: int, dim: int, rng: np.random.Generator):
    """Mixture of len(LOCALIZATIONS) Gaussian clusters: (n, dim) float32 and class labels."""
    c = len(LOCALIZATIONS)
    centres = rng.normal(0.0, 1.0, size=(c, dim))
    cls = rng.integers(0, c, size=n)
    x = centres[cls] + rng.normal(0.0, 1.0, size=(n, dim))
    return x.astype(np.float32), np.asarray(LOCALIZATIONS)[cls]


def make_histograms(n: int, n_proteins: int, k: int, rng: np.random.Generator):
    """Frame histograms (n, k) float32 with protein-specific code profiles, and protein names."""
    c = len(LOCALIZATIONS)
    # class profiles: each class favours a block of codes; proteins perturb their class profile
    block = rng.integers(0, c, size=k)
    class_profile = np.where(block[None, :] == np.arange(c)[:, None], 20.0, 1.0)
    protein_class = np.arange(n_proteins) % c
    prof = class_profile[protein_class] * rng.lognormal(0.0, 0.5, size=(n_proteins, k))
    cdf = np.cumsum(prof / prof.sum(axis=1, keepdims=True), axis=1)
    frame_protein = np.sort(rng.integers(0, n_proteins, size=n))
    codes = np.empty((n, POSITIONS), dtype=np.int64)
    bounds = np.searchsorted(frame_protein, np.arange(n_proteins + 1))
    for p in range(n_proteins):
        a, b = bounds[p], bounds[p + 1]
        if b > a:
            u = rng.random((b - a, POSITIONS))
            codes[a:b] = np.minimum(np.searchsorted(cdf[p], u.ravel()), k - 1).reshape(b - a, -1)
    flat = (np.arange(n)[:, None] * k + codes).ravel()
    hist = np.bincount(flat, minlength=n * k).reshape(n, k).astype(np.float32)
    names = np.array([f"P{p:04d}" for p in range(n_proteins)])
    annotations = {names[p]: {LOCALIZATIONS[protein_class[p]]} for p in range(n_proteins)}
    return hist, names[frame_protein], annotations


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64, help="feature dimension for UMAP")
    ap.add_argument("--proteins", type=int, default=1000)
    ap.add_argument("--codes", type=int, default=2048, help="codebook size K")
    ap.add_argument("--n-clusters", type=int, default=17)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-umap", action="store_true")
    ap.add_argument("--skip-frame-clustering", action="store_true")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    n = args.frames
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
          f"affinity={len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} "
          f"python={platform.python_version()} numpy={np.__version__}")
    t0 = time.perf_counter()
    feats, feat_labels = make_features(n, args.dim, rng)
    hist, frame_protein, annotations = make_histograms(n, args.proteins, args.codes, rng)
    print(f"data: {n} frames, features {feats.shape} float32, histograms {hist.shape} float32 "
          f"({hist.nbytes / 2**20:.0f} MiB), {args.proteins} proteins; generated in "
          f"{time.perf_counter() - t0:.1f} s (not timed)")

    rows = []  # (stage, input, seconds, frames)

    if not args.skip_umap:
        warm = min(n, 5000)  # >= 4096 points: pays the NN-descent compilation too
        _, t = timed(umap_projection, feats[:warm], seed=args.seed)
        rows.append(("umap warm-up (numba JIT)", f"{warm} x {args.dim}", t, None))
        coords, t = timed(umap_projection, feats, seed=args.seed)
        rows.append(("umap", f"{n} x {args.dim}", t, n))
        (score, _), t = timed(clustering_score, coords, feat_labels)
        rows.append(("clustering_score", f"{n} x 2", t, n))

    (spectra, counts), t_spec = timed(protein_spectra, hist, frame_protein)
    rows.append(("protein_spectra", f"{n} x {args.codes}", t_spec, n))
    cc, t_cc = timed(cluster_codes, spectra, args.n_clusters)
    rows.append(("cluster_codes (proteins)", f"{spectra.shape[0]} x {args.codes}", t_cc, None))
    rows.append(("  = spectra + clustering", f"{n} frames", t_spec + t_cc, n))
    if not args.skip_frame_clustering:
        cc_frames, t = timed(cluster_codes, hist, args.n_clusters)
        rows.append(("cluster_codes (frames)", f"{n} x {args.codes}", t, n))
    pcl, t = timed(protein_clusters, spectra, len(LOCALIZATIONS))
    rows.append(("protein_clusters", f"{spectra.shape[0]} x {args.codes}", t, None))
    (acc, _), t = timed(knn_localization_accuracy, spectra, annotations, 5)
    rows.append(("knn accuracy (k=5, LOPO)", f"{spectra.shape[0]} x {args.codes}", t, None))

    print()
    print(f"{'stage':<28} {'input':>16} {'seconds':>9} {'frames/s':>10}")
    print("-" * 66)
    for stage, inp, sec, frames in rows:
        fps = f"{frames / sec:,.0f}" if frames else ""
        print(f"{stage:<28} {inp:>16} {sec:>9.2f} {fps:>10}")
    print()
    sizes = np.bincount(cc.labels)[1:]
    print(f"sanity: knn accuracy {acc:.3f}; code clusters {len(sizes)} (sizes {sizes.min()}..{sizes.max()}); "
          f"protein clusters {pcl.nunique()}"
          + ("" if args.skip_umap else f"; clustering score {score:.2f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
