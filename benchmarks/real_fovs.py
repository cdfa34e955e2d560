"""Nucleus detection and crop centring on the real OpenCell fields of view.

Usage: ``python benchmarks/real_fovs.py [--data ../shared/data] [--out artifacts/figures/real_fovs]``

For each of the four HEK293T Hoechst fields in ``<data>/opencell/fovs`` it prints the nuclei
found, the crops kept, the share of crops whose centre pixel lies inside their own nucleus and
the seconds taken, and writes an overlay figure (outlines, crop centres, crop boxes) per field
plus a grid of the nucleus channel of the crops.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile

from assets_pkg.core.plots.fields import plot_field_nuclei, plot_frame_grid
from assets_pkg.core.plots.figures import save_png
from assets_pkg.core.segmentation.nuclei import detect_nuclei
from assets_pkg.core.store.frames import default_downsample, extract_frames

#: Inferred, not given by the data: 1024x1024 fields fit an Andor iXon 888 (13 um pixels)
#: behind a 63x objective.
PIXEL_SIZE_UM = 0.206


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("artifacts/figures/real_fovs"))
    args = ap.parse_args()
    fovs = sorted((args.data / "opencell" / "fovs").glob("*.tif"))
    if not fovs:
        raise SystemExit(f"no fields under {args.data / 'opencell' / 'fovs'}")
    factor = default_downsample(PIXEL_SIZE_UM, 0.4)
    print(f"pixel size {PIXEL_SIZE_UM} um, downsample {factor}, crop 100 px = {100 * factor * PIXEL_SIZE_UM:.0f} um")
    print(f"{'field':<20}{'nuclei':>8}{'crops':>8}{'centred':>9}{'seconds':>9}")
    for path in fovs:
        img = tifffile.imread(path)
        t0 = time.perf_counter()
        labels = detect_nuclei(img, pixel_size_um=PIXEL_SIZE_UM)
        frames, centres = extract_frames(img, img, labels, downsample=factor)
        dt = time.perf_counter() - t0
        cy = np.round(centres["centre_y"].to_numpy()).astype(int)
        cx = np.round(centres["centre_x"].to_numpy()).astype(int)
        centred = float(np.mean(labels[cy, cx] == centres["label"].to_numpy())) if len(centres) else float("nan")
        print(f"{path.stem:<20}{int(labels.max()):>8}{len(centres):>8}{centred:>9.2f}{dt:>9.2f}")
        half = 50 * factor
        fig = plot_field_nuclei(img, labels, np.c_[cy, cx], half, title=path.stem)
        save_png(fig, args.out / f"{path.stem}_nuclei.png")
        pick = np.linspace(0, len(frames) - 1, min(16, len(frames))).astype(int)
        grid = frames[pick].copy()
        grid[..., 0] = grid[..., 1]  # show the nucleus channel in the protein slot
        fig = plot_frame_grid(grid, [f"n{int(x)}" for x in centres["label"].iloc[pick]], title=path.stem)
        save_png(fig, args.out / f"{path.stem}_crops.png")
    print(f"figures in {args.out}")


if __name__ == "__main__":
    main()
