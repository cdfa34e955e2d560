"""With vs without the classification head: codebook perplexity and reconstructions.

Usage::

    python benchmarks/quality_localization.py --store artifacts/frames --out artifacts/quality \\
        [--preset tiny|full|cytoself] [--epochs 15] [--model-json '{"embedding_dim": 32}']

Trains the same model twice from the same seed on a field-exclusive split of the store's
catalog, once with ``classification_weight`` 1 and once with 0 (the ablation), and prints the
final train/valid metrics side by side; figures (reconstructions, curves) land in ``--out/<run>/figures``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from assets_pkg.core.localization.config import train_config_from_preset
from assets_pkg.core.localization.training import (
    fit,
    save_training_figures,
)
from assets_pkg.core.ml.devices import describe_devices
from assets_pkg.core.store.config import SplitConfig
from assets_pkg.core.store.frame_store import FrameStore
from assets_pkg.core.store.splits import make_splits, split_summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="full")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--learning-rate", type=float, default=None)
    ap.add_argument("--model-json", default="{}", help="ModelConfig overrides as JSON")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    store = FrameStore(args.store)
    splits = make_splits(store.catalog(), SplitConfig(exclusive_by="field", seed=args.seed))
    print("split:", json.dumps(split_summary(splits)))
    print("devices:", describe_devices())
    rows = {}
    for weight in (1.0, 0.0):
        cfg = train_config_from_preset(
            args.preset, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
            classification_weight=weight, seed=args.seed, model=json.loads(args.model_json),
            early_stopping_patience=0,
        )
        name = "with_head" if weight else "without_head"
        t0 = time.perf_counter()
        res = fit(store, splits, cfg, args.out / name, resume=False, log=lambda s, n=name: print(f"[{n}] {s}", flush=True))
        rows[name] = {**res.final_metrics, "seconds": time.perf_counter() - t0,
                      "num_embeddings": res.model_config.num_embeddings}
        save_training_figures(res, store, splits, name, n_frames=10)
    table = pd.DataFrame(rows)
    keep = [k for k in table.index if k.startswith(("train_", "valid_")) or k in ("seconds", "frames_per_second", "num_embeddings")]
    print(table.loc[keep].to_string(float_format=lambda v: f"{v:.4g}"))
    (args.out / "quality.json").write_text(json.dumps(rows, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
