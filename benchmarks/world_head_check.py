"""Does the classification head learn on a simulated world? A short check before a long run.

Trains the ``tiny`` VQ-VAE for ``--steps`` steps on the train split of a world built by
``benchmarks/atlas_world.py`` (reusing its store and stored split) and prints the mean step
metrics every 50 steps beside chance (ln of the protein count). The run's checkpoints go to
``--scratch`` (replaced by the next check; a run stopped by ``--steps`` leaves no ``model.json``).
Run from the repository root::

    python benchmarks/world_head_check.py --world artifacts/world --channels 0 1 2 \
        --train-json '{"warmup_steps": 200, "schedule": "cosine", "epochs": 5}'   # learns
    python benchmarks/world_head_check.py --world artifacts/world --channels 0 1 2   # stuck at chance
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.localization.config import train_config_from_preset  # noqa: E402
from assets_pkg.core.localization.training import fit  # noqa: E402
from assets_pkg.core.store.frame_store import FrameStore  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, required=True, help="an atlas_world.py --out folder (store and split)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--channels", type=int, nargs="+", default=[0, 1], help="ModelConfig.input_channels")
    ap.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default: the preset's)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-json", default="{}",
                    help='TrainConfig overrides as JSON, e.g. \'{"warmup_steps": 200, "schedule": "cosine"}\'')
    ap.add_argument("--scratch", type=Path, default=None, help="model folder for the run (default: <world>/head_check)")
    args = ap.parse_args(argv)
    store = FrameStore(str(args.world / "store"))
    splits, _ = store.read_dataset("splits")
    flags = dict(epochs=1, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                 model={"input_channels": list(args.channels)})
    cfg = train_config_from_preset("tiny", **(flags | json.loads(args.train_json)))
    chance = math.log(int(splits["label"].max()) + 1)
    print(f"channels {args.channels}, peak LR {cfg.learning_rate} ({cfg.schedule}, warm-up {cfg.warmup_steps}), {args.steps} steps; chance: classification {chance:.3f}")
    t0 = time.perf_counter()
    res = fit(store, splits, cfg, args.scratch or args.world / "head_check", resume=False,
              stop_after_steps=args.steps, log_every=50)
    for row in res.train_log or []:
        print(f"step {int(row['step']):5d}  classification {row['classification']:.3f}  accuracy {row['accuracy']:.4f}  "
              f"reconstruction {row['reconstruction']:.4f}  perplexity {row['perplexity']:.1f}")
    print(f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
