"""Frame store benchmark: random batches from the store vs a NumPy memmap, and chunk layouts.

Run ``python benchmarks/bench_store.py [--frames N]`` from the repository root.  It prints
tables and ratios measured within one run (never compare absolute figures across machines):

(a) random batches of ``--batch-size`` frames read through :class:`FrameStore` (default
    layout) and from the same frames in a ``numpy.memmap``: frames/s each and their ratio;
(b) chunk layouts: 1, 8, 32, 64 frames per chunk, and ``sharding_indexed`` with 1-frame
    inner chunks in shards of 64 and 256 frames (uncompressed, and the default shard with
    zstd): write MB/s, stored objects and bytes, random-batch read frames/s;
(c) with ``--ingest``: the end-to-end plate ingest, a summary of the quick run of
    ``benchmarks/bench_ingest.py`` (run that script for its full tables).

Files go to a temporary folder (``--root`` to choose one, e.g. on the disk that will hold the
store).  The page cache is warm (the frames were just written), so reads measure the
software path, not the disk; on a cloud kvstore the read amplification of large chunks
weighs far more.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.store.frame_store import DEFAULT_LAYOUT, ChunkLayout, FrameStore  # noqa: E402

FRAME_SHAPE = (100, 100, 3)

LAYOUTS: dict[str, ChunkLayout] = {
    "chunk 1": ChunkLayout(chunk_frames=1, shard_frames=None),
    "chunk 8": ChunkLayout(chunk_frames=8, shard_frames=None),
    "chunk 32": ChunkLayout(chunk_frames=32, shard_frames=None),
    "chunk 64": ChunkLayout(chunk_frames=64, shard_frames=None),
    "shard 64 x 1": ChunkLayout(chunk_frames=1, shard_frames=64),
    "shard 256 x 1": ChunkLayout(chunk_frames=1, shard_frames=256),
    "shard 256 x 1 zstd": ChunkLayout(chunk_frames=1, shard_frames=256, compression="zstd"),
}


def synthetic_frames(n: int, seed: int = 0) -> np.ndarray:
    """Frame-like float32 data (smooth blobs + noise), shape (n, 100, 100, 3)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    base = rng.random((32, *FRAME_SHAPE), dtype=np.float32)
    base = ndi.gaussian_filter(base, sigma=(0, 4, 4, 0)).astype(np.float32)
    base = (base - base.mean()) * 8 + 0.3
    base[..., 2] = (base[..., 2] - 0.3) * 100  # distance-like channel, pixels
    frames = base[np.arange(n) % len(base)]
    frames += rng.normal(0, 0.02, frames.shape).astype(np.float32)
    return frames


def _dir_stats(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _batches(n: int, n_batches: int, batch_size: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(n, size=min(batch_size, n), replace=False) for _ in range(n_batches)]


def _time_reads(read, batches, repeats: int = 3) -> float:
    """Frames per second over ``batches``: median of ``repeats`` passes, after one warm-up."""
    read(batches[0])
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        total = sum(len(read(b)) for b in batches)
        rates.append(total / (time.perf_counter() - t))
    return float(np.median(rates))


def bench_store_vs_memmap(frames: np.ndarray, root: Path, batches) -> dict:
    """(a) FrameStore (default layout) vs numpy.memmap on the same random batches."""
    n = len(frames)
    mm_path = root / "frames.npy"
    np.save(mm_path, frames)
    mm = np.load(mm_path, mmap_mode="r")

    def read_mm(idx):
        return np.asarray(mm[np.sort(idx)])

    store = FrameStore(root / "store_default")
    store.write_plate("bench", frames, pd.DataFrame({"frame_index": np.arange(n)}))

    def read_store(idx):
        return store.read_frames("bench", idx)

    def read_batch_api(idx):
        return store.read_batch([("bench", int(i)) for i in idx])

    assert np.array_equal(read_store(batches[0]), frames[batches[0]])
    return {
        "memmap": _time_reads(read_mm, batches),
        "store read_frames": _time_reads(read_store, batches),
        "store read_batch": _time_reads(read_batch_api, batches),
    }


def bench_layouts(frames: np.ndarray, root: Path, batches) -> pd.DataFrame:
    """(b) write and random-read speed of each chunk layout."""
    rows = []
    mb = frames.nbytes / 1e6
    for name, layout in LAYOUTS.items():
        path = root / name.replace(" ", "_")
        store = FrameStore(path, layout=layout)
        t = time.perf_counter()
        store.write_plate("bench", frames, pd.DataFrame({"frame_index": np.arange(len(frames))}))
        wt = time.perf_counter() - t
        n_obj, n_bytes = _dir_stats(path)
        fps = _time_reads(lambda idx, s=store: s.read_frames("bench", idx), batches)
        rows.append(
            {
                "layout": name,
                "write MB/s": mb / wt,
                "objects": n_obj,
                "stored MB": n_bytes / 1e6,
                "read frames/s": fps,
            }
        )
        shutil.rmtree(path)
    return pd.DataFrame(rows)


def bench_ingest(args: argparse.Namespace, root: Path) -> pd.DataFrame | None:
    """(c) End-to-end ingest (plate folder -> frames -> store), only with ``--ingest``.

    Runs ``benchmarks/bench_ingest.py --quick`` under ``root`` and returns its summary table
    (fields/s, seconds per field by step, cost ratios of a new plate vs plates already held).
    """
    if not getattr(args, "ingest", False):
        return None
    import importlib.util

    path = Path(__file__).resolve().with_name("bench_ingest.py")
    spec = importlib.util.spec_from_file_location("bench_ingest", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    res = mod.run_all(quick=True, root=Path(tempfile.mkdtemp(prefix="ingest_", dir=root)), verbose=False)
    return mod.summary_table(res)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2048, help="frames in the test plate")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    ap.add_argument("--root", type=Path, default=None, help="folder for the files (temp)")
    ap.add_argument("--skip-layouts", action="store_true")
    ap.add_argument("--ingest", action="store_true", help="also run (c), the quick ingest benchmark")
    args = ap.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="bench_store_", dir=args.root))
    try:
        frames = synthetic_frames(args.frames)
        batches = _batches(args.frames, args.batches + 1, args.batch_size)
        print(
            f"{args.frames} frames of {FRAME_SHAPE} float32 ({frames.nbytes / 1e6:.0f} MB), "
            f"random batches of {args.batch_size}, {args.batches} timed batches; root {root}"
        )
        print(f"default layout: {DEFAULT_LAYOUT.describe()}\n")

        r = bench_store_vs_memmap(frames, root, batches)
        print("(a) random batches: FrameStore vs numpy.memmap")
        for k, v in r.items():
            print(f"  {k:<20} {v:>10,.0f} frames/s")
        print(f"  ratio store/memmap (read_frames): {r['store read_frames'] / r['memmap']:.2f}")
        print(f"  ratio store/memmap (read_batch):  {r['store read_batch'] / r['memmap']:.2f}\n")

        if not args.skip_layouts:
            t = bench_layouts(frames, root, batches)
            ref = t.loc[t["layout"] == "chunk 1"].iloc[0]
            t["read ratio vs chunk 1"] = t["read frames/s"] / ref["read frames/s"]
            t["write ratio vs chunk 1"] = t["write MB/s"] / ref["write MB/s"]
            print("(b) chunk layouts")
            print(t.to_string(index=False, float_format=lambda x: f"{x:,.2f}"))
            print()

        ing = bench_ingest(args, root)
        if ing is not None:
            print("(c) ingest")
            print(ing.to_string(index=False))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
