"""Test-time scale for a cross-validated U-Net: does averaging its maps over resized copies of the
image help the held-out BBBC039 fold?

Run from the repository root on a folder written by ``cv_segmentation_bbbc039.py``::

    python benchmarks/tta_scale_bbbc039.py --cv /tmp/cv_seg --fold 2 --scales 1 1.25 1.5 0.8 1+1.25

Each ``--scales`` entry is one variant: ``1.25`` resizes the image by 1.25 (bilinear), computes the
model's maps on it (flip-averaged as the model was saved) and resizes the maps back; ``1+1.25``
averages the maps of scale 1 and 1.25.  For each variant the post-processing is tuned again
exactly as training tunes it (:func:`tune_postprocessing` on the held-out training fields the model
recorded: nothing is picked on the test fold) and the fold's held-out fields are scored with the
CV's code (F1 at IoU 0.5 pooled over objects, mean TP/(TP+FP+FN) over IoU 0.50..0.95, mean
absolute count error per field).  Variant ``1`` reproduces the CV's own figures.  A table is
printed and written to ``CV/tta_scale_fold<k>.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.segmentation.classical import score_folder  # noqa: E402
from assets_pkg.core.segmentation.datasets import read_bbbc039  # noqa: E402
from assets_pkg.core.segmentation.metrics import summarise_scores  # noqa: E402
from assets_pkg.core.segmentation.models import SegmentationModel, load_model  # noqa: E402
from assets_pkg.core.segmentation.training import tune_postprocessing  # noqa: E402


@dataclasses.dataclass
class ScaledMaps(SegmentationModel):
    """A :class:`SegmentationModel` whose maps are the mean over the image resized by each of
    ``scales`` (maps resized back to the image's shape, bilinear)."""

    scales: tuple[float, ...] = (1.0,)

    def maps(self, image):
        from skimage.transform import resize

        image = np.asarray(image, np.float32)
        per_scale = []
        for s in self.scales:
            if s == 1.0:
                per_scale.append(super().maps(image))
            else:
                shape = (round(image.shape[0] * s), round(image.shape[1] * s))
                maps = super().maps(resize(image, shape, order=1, anti_aliasing=s < 1, preserve_range=True))
                per_scale.append([resize(m, image.shape, order=1, anti_aliasing=s > 1, preserve_range=True)
                                  for m in maps])
        return tuple(np.mean(m, 0, dtype=np.float32) for m in zip(*per_scale, strict=True))


def parse_variant(text: str) -> tuple[float, ...]:
    scales = tuple(float(s) for s in text.split("+"))
    if not scales or min(scales) <= 0:
        raise argparse.ArgumentTypeError(f"scales must be positive, got {text!r}")
    return scales


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=Path, required=True, help="output folder of cv_segmentation_bbbc039.py")
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--scales", type=parse_variant, nargs="+", default=[(1.0,), (1.25,), (1.0, 1.25)],
                    help="variants: a scale, or scales joined by + whose maps are averaged (default: 1 1.25 1+1.25)")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/bbbc039"))
    args = ap.parse_args(argv)
    # The CV recorded its folds (whatever its -k and --seed); the held-out fold is read from there.
    assignment = pd.read_csv(args.cv / "fold_assignment.csv")
    ds = read_bbbc039(args.data)
    if sorted(assignment["name"]) != sorted(ds.names):
        raise SystemExit(f"{args.cv / 'fold_assignment.csv'} names other fields than {args.data}")
    base = load_model(args.cv / f"fold_{args.fold}" / "model", kind="segmentation")
    held = ds.subset(base.info["data"]["held_out"])
    test = ds.subset(list(assignment.loc[assignment["fold"] == args.fold, "name"]))
    rows = []
    for scales in args.scales:
        t0 = time.perf_counter()
        model = ScaledMaps(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)}, scales=scales)
        tuned = tune_postprocessing(model, [im for _, im, _ in held], [lab for _, _, lab in held])
        scores = score_folder(test, None, model.segment, extra={"method": "+".join(f"{s:g}" for s in scales)})
        summary = summarise_scores(scores).iloc[0]
        rows.append({"scales": summary["method"], "f1_iou50": float(summary["f1_iou50"]),
                     "mean_ap_50_95": float(summary["mean_ap_50_95"]),
                     "count_mae": float((scores["n_pred"] - scores["n_true"]).abs().mean()),
                     "validation_f1": tuned["f1"], "threshold": tuned["threshold"],
                     "marker_threshold": tuned["marker_threshold"], "min_area": tuned["min_area"],
                     "wall_s": time.perf_counter() - t0})
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.cv / f"tta_scale_fold{args.fold}.csv", index=False)
    print(f"\nfold {args.fold}, {len(test)} held-out fields; thresholds tuned on {len(held)} held-out training fields")
    print(table.round(4).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
