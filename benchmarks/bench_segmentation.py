"""Inference speed at 520x696: U-Net and counting CNN against the classical baseline, one run.

    python benchmarks/bench_segmentation.py [--model SEG_MODEL_DIR] [--count-model COUNT_DIR]

Images: the 50 BBBC039 test fields (``../shared/data``) when present, else simulated 520x696
fields.  Timed per method over the same images, after one warm-up call (jit compile):

- classical: :func:`classical_segment` (preset ``bbbc039``);
- U-Net network only, one image per call and ``--batch`` images per call (random weights
  when no model is given: the network's cost does not depend on them);
- U-Net end to end (network + distance watershed), only with ``--model`` (post-processing
  cost depends on what the network predicts);
- counting CNN (with flip averaging), random weights unless ``--count-model``.

Prints images/s and each ratio to the classical baseline, taken in this run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.imaging.io import read_image  # noqa: E402
from assets_pkg.core.segmentation.classical import classical_segment  # noqa: E402
from assets_pkg.core.segmentation.datasets import bbbc039_split, read_bbbc039  # noqa: E402
from assets_pkg.core.segmentation.models import CountingModel, load_model, prepare_count_input  # noqa: E402
from assets_pkg.core.segmentation.unet import (  # noqa: E402
    CountingCNN,
    UNet,
    UNetConfig,
    forward_maps,
    normalize_image,
)


def _images(data: Path, n: int) -> tuple[list[np.ndarray], str]:
    if (data / "bbbc039" / "images").is_dir():
        ds = read_bbbc039(data / "bbbc039")
        _, test = bbbc039_split(ds.names)
        return [im for _, im, _ in ds.subset(test[:n])], f"BBBC039 test fields ({n})"
    from assets_pkg.core.imaging.cellsim import simulate_cells

    with tempfile.TemporaryDirectory() as tmp:
        t = simulate_cells(tmp, (n + 1) // 2, seed=1)
        return [read_image(p) for p in t.path[:n]], f"simulated 520x696 fields ({n})"


def _rate(fn, items, repeat: int = 1) -> float:
    fn(items[0])
    t0 = time.perf_counter()
    for _ in range(repeat):
        for x in items:
            fn(x)
    return repeat * len(items) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--model", default=None, help="segmentation model folder (enables end-to-end U-Net)")
    p.add_argument("--count-model", default=None)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", type=int, default=16)
    a = p.parse_args(argv)
    images, what = _images(Path(a.data), a.images)
    print(f"{what}, shape {images[0].shape}; jax {jax.__version__} on {jax.devices()[0].platform} "
          f"({jax.devices()[0].device_kind})")
    rows = {}
    rows["classical (bbbc039 preset)"] = _rate(lambda im: classical_segment(im, preset="bbbc039"), images)

    if a.model:
        seg = load_model(a.model, kind="segmentation")
        cfg, params = seg.config, seg.params
    else:
        cfg = UNetConfig(depth=a.depth, base_width=a.width)
        params = UNet(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 1)))["params"]
    label = f"U-Net d{cfg.depth} w{cfg.base_width}"

    def net_one(im):
        fg = forward_maps(params, cfg, jnp.asarray(normalize_image(im)[None, ..., None]))[0]
        return jax.block_until_ready(fg)

    rows[f"{label} network, 1 image/call"] = _rate(net_one, images)
    batches = [np.stack([normalize_image(im) for im in images[i : i + a.batch]])[..., None]
               for i in range(0, len(images) - a.batch + 1, a.batch)]
    if batches:
        def net_batch(x):
            fg = forward_maps(params, cfg, jnp.asarray(x))[0]
            return jax.block_until_ready(fg)

        rows[f"{label} network, {a.batch} images/call"] = _rate(net_batch, batches) * a.batch
    if a.model:
        rows[f"{label} + watershed (end to end)"] = _rate(seg.segment, images)

    if a.count_model:
        cm = load_model(a.count_model, kind="counting")
    else:
        net = CountingCNN()
        cparams = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 344, 1)))["params"]
        cm = CountingModel(net=net, params=cparams, input_shape=(256, 344))
    rows["counting CNN (resize + 4 flips)"] = _rate(cm.count, images)
    prepared = np.stack([prepare_count_input(im, cm.input_shape) for im in images])
    rows["counting CNN network only, all images/call"] = _rate(
        lambda x: cm.predict_batch(x), [prepared]) * len(prepared)

    base = rows["classical (bbbc039 preset)"]
    print(f"\n{'method':<48} {'images/s':>9} {'/ classical':>12}")
    for k, v in rows.items():
        print(f"{k:<48} {v:>9.2f} {v / base:>11.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
