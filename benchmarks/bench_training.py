"""Training-loop benchmark: FrameLoader vs a book-style pandas + memmap loop vs the ceiling.

All three drive the same jitted ``train_step`` on the same model (the ceiling: batches already
on the device).

Run from the repository root::

    python benchmarks/bench_training.py                      # tiny preset, ~3-5 min on 2 CPU cores
    python benchmarks/bench_training.py --memory             # + peak memory of the full preset (slow on CPU)
    python benchmarks/bench_training.py --memory --skip-throughput
    python benchmarks/bench_training.py --preset full        # on a GPU

Variants (same batch size, same number of steps, same ``train_step`` jitted once):

* ``ours store``: :class:`FrameLoader` over a :class:`FrameStore` (shuffle, prefetch=2, device
  put on the prefetch thread, ``cache=False``): every batch is a sorted batched TensorStore read;
* ``ours cached``: the same with ``cache="auto"`` (the split is held in host memory);
* ``book-style``: per batch a pandas lookup of the batch's catalog rows, a ``numpy.memmap``
  gather in sorted order, labels from pandas, ``jnp.asarray`` on the main thread, no prefetch;
* ``ceiling``: the same batches already on the device; only the step runs.

The variants are interleaved (one window of each per round, order rotated every round) and
each window is ``--warmup`` untimed steps (compile done beforehand; the warm-up lets the
prefetch queue reach its steady state) then ``--steps`` timed steps, with
``block_until_ready`` on the final state before the clock stops.  No per-step block: like
:func:`assets_pkg.core.localization.training.fit`, the loop relies on async dispatch.  Ratios are taken per
round (paired) and the medians printed; absolute frames/s on a shared machine are noise.

``--memory`` runs, in a fresh subprocess, create_state + one jitted step (incl. compile) + 2
more steps of ``--memory-preset`` (default full) at ``--memory-batch-size`` (default 256) and
reports peak host RSS (``ru_maxrss``, cumulative, with Linux ``VmHWM`` as a cross-check) after
each phase, device ``memory_stats()`` where the backend has them (GPU: ``peak_bytes_in_use``),
and the bytes of params, optimizer state and one batch computed from the pytrees.  The child is
forked by ``/bin/sh`` because Linux carries ``ru_maxrss`` across exec: spawned directly it
would start with this process's peak.

``XLA_PYTHON_CLIENT_PREALLOCATE`` defaults to ``false`` here so that, on a GPU, the memory
subprocess can start while this process holds the device.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.localization.config import train_config_from_preset  # noqa: E402
from assets_pkg.core.localization.loader import FrameLoader  # noqa: E402
from assets_pkg.core.localization.models import parameter_count  # noqa: E402
from assets_pkg.core.localization.training import (  # noqa: E402
    create_state,
    jitted_train_step,
)
from assets_pkg.core.ml.devices import Devices  # noqa: E402
from assets_pkg.core.store.frame_store import FrameStore  # noqa: E402

FRAME_SHAPE = (100, 100, 3)
N_PLATES = 4
N_CLASSES = 32
CLASSIFICATION_WEIGHT = 1.0
AUGMENT = True
MEMORY_TAG = "MEMORY_JSON "


# --------------------------------------------------------------------------- data
def build_dataset(root: Path, n: int, seed: int = 0) -> tuple[FrameStore, pd.DataFrame, np.memmap]:
    """A store of ``n`` synthetic frames over 4 plates, its catalog (with ``label``) and a
    ``.npy`` memmap holding the same frames in catalog (``row_id``) order."""
    rng = np.random.default_rng(seed)
    store = FrameStore(root / "store")
    genes = [f"GENE{k:02d}" for k in range(N_CLASSES)]
    mm_path = root / "frames.npy"
    mm = np.lib.format.open_memmap(mm_path, mode="w+", dtype=np.float32, shape=(n, *FRAME_SHAPE))
    plate_ids = [f"P{p + 1}" for p in range(N_PLATES)]  # sorted order == catalog order
    start = 0
    for pid, size in zip(plate_ids, np.array_split(np.arange(n), N_PLATES), strict=True):
        m = len(size)
        frames = rng.standard_normal((m, *FRAME_SHAPE), dtype=np.float32)
        gene_idx = rng.integers(0, N_CLASSES, m)
        table = pd.DataFrame(
            {
                "frame_index": np.arange(m, dtype=np.int64),
                "frame_id": [f"{pid}_{i:06d}" for i in range(m)],
                "plate_id": pid,
                "well": [f"{'ABCDEFGH'[(i // 12) % 8]}{i % 12 + 1:02d}" for i in range(m)],
                "field_id": np.arange(m, dtype=np.int64) % 9 + 1,
                "gene": [genes[g] for g in gene_idx],
                "ensg_id": [f"ENSG{g:011d}" for g in gene_idx],
            }
        )
        store.write_plate(pid, frames, table)
        mm[start : start + m] = frames
        start += m
    mm.flush()
    del mm
    catalog = store.catalog()
    catalog["label"] = pd.Categorical(catalog["gene"], categories=genes).codes.astype(np.int32)
    return store, catalog, np.load(mm_path, mmap_mode="r")


# --------------------------------------------------------------------------- batch sources
def loader_source(loader: FrameLoader, first_epoch: int) -> Iterator[tuple]:
    """Device batches of consecutive epochs from ``first_epoch`` (close it to stop the thread)."""
    for e in itertools.count(first_epoch):
        for b in loader.epoch(e):
            yield b.frames, b.labels


def book_source(catalog: pd.DataFrame, mm: np.ndarray, batch_size: int, first_epoch: int, seed: int = 1):
    """The textbook loop: pandas lookup, sorted memmap gather, ``jnp.asarray``, main thread."""
    n = len(catalog)
    for e in itertools.count(first_epoch):
        order = np.random.default_rng((seed, e)).permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            rows = catalog.loc[catalog["row_id"].isin(order[i : i + batch_size])]  # catalog order = sorted
            frames = mm[rows["row_id"].to_numpy()]
            labels = rows["label"].to_numpy(np.int32)
            yield jnp.asarray(frames), jnp.asarray(labels)


def ceiling_source(batches: list) -> Iterator[tuple]:
    return itertools.cycle(batches)


# --------------------------------------------------------------------------- timing
def run_window(step, state, it: Iterator, keys: list, warmup: int, steps: int, batch_size: int):
    """``warmup`` untimed steps, then ``steps`` timed ones; returns (state, frames/s)."""
    try:
        for i in range(warmup):
            state, _ = step(state, next(it), keys[i])
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        for i in range(steps):
            state, _ = step(state, next(it), keys[warmup + i])
        jax.block_until_ready(state)  # the final state depends on every step of the window
        dt = time.perf_counter() - t0
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # stops a prefetch thread so it does not compete with the next variant
    return state, steps * batch_size / dt


def _fmt_table(df: pd.DataFrame) -> str:
    return df.to_string(index=False, float_format=lambda x: f"{x:,.3f}" if abs(x) < 10 else f"{x:,.0f}")


def machine_line() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load avg {load[0]:.2f}; "
        f"python {platform.python_version()}, jax {jax.__version__}\n"
        f"jax.devices(): {jax.devices()}"
    )


def throughput(args) -> pd.DataFrame:
    root = Path(tempfile.mkdtemp(prefix="bench_training_", dir=args.root))
    try:
        return _throughput(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _throughput(args, root: Path) -> pd.DataFrame:
    bs = args.batch_size
    t = time.perf_counter()
    store, catalog, mm = build_dataset(root, args.frames)
    print(
        f"\ndata: {args.frames} frames {FRAME_SHAPE} float32 ({args.frames * np.prod(FRAME_SHAPE) * 4 / 1e6:.0f} MB) "
        f"in {N_PLATES} plates, {N_CLASSES} classes; store + memmap written in {time.perf_counter() - t:.1f} s "
        f"under {root}"
    )
    devices = Devices.local()
    rows = catalog[["plate_id", "frame_index", "label"]]
    ours_store = FrameLoader(store, rows, bs, shuffle=True, drop_remainder=True, seed=0, cache=False,
                             prefetch=2, put=devices.put_batch)
    t = time.perf_counter()
    ours_cached = FrameLoader(store, rows, bs, shuffle=True, drop_remainder=True, seed=0, cache="auto",
                              prefetch=2, put=devices.put_batch)
    fill_s = time.perf_counter() - t
    print(f"cache='auto' -> cached={ours_cached.cached} (filled in {fill_s:.2f} s); {len(ours_store)} batches/epoch")

    # Same frames in the same global order in the store and the memmap.
    probe = ours_store.order(0)[:bs]
    assert np.array_equal(ours_store.host_batch(probe)[0], mm[probe]), "store and memmap differ"
    assert np.array_equal(ours_store.host_batch(probe)[1], catalog["label"].to_numpy()[probe])

    cfg = train_config_from_preset(args.preset, batch_size=bs)
    model_cfg = cfg.vqvae_config(N_CLASSES)
    t = time.perf_counter()
    state = create_state(model_cfg, cfg, ours_store.host_batch(np.arange(2))[0], total_steps=10_000)
    state = jax.device_put(state, devices.replicated)
    jax.block_until_ready(state)
    print(f"preset {args.preset}: {parameter_count(state.params):,} parameters, batch {bs}, "
          f"create_state {time.perf_counter() - t:.1f} s")
    step = jitted_train_step(CLASSIFICATION_WEIGHT, AUGMENT)
    base = jax.random.PRNGKey(0)
    keys = [jax.random.fold_in(base, i) for i in range(args.warmup + args.steps)]

    n_ceil = min(args.warmup + args.steps, 32)
    order = ours_store.order(10_000)
    ceiling_batches = [
        devices.put_batch(*ours_cached.host_batch(order[(i * bs) % (len(order) - bs + 1):][:bs])) for i in range(n_ceil)
    ]
    jax.block_until_ready(ceiling_batches)

    sources: dict[str, Callable[[int], Iterator]] = {
        "ours store": lambda e: loader_source(ours_store, e),
        "ours cached": lambda e: loader_source(ours_cached, e),
        "book-style": lambda e: book_source(catalog, mm, bs, e),
        "ceiling": lambda e: ceiling_source(ceiling_batches),
    }
    names = list(sources)

    # Compile (each input sharding once) and warm every path before timing.
    for name in names:
        t = time.perf_counter()
        state, _ = run_window(step, state, sources[name](0), keys, 0, 2, bs)
        print(f"  warm-up {name:<12} 2 steps {time.perf_counter() - t:6.1f} s (incl. any compile)")

    print(f"\n{args.rounds} rounds x {len(names)} variants x ({args.warmup} warm-up + {args.steps} timed steps), "
          "order rotated each round")
    recs = []
    for r in range(args.rounds):
        line = []
        for name in names[r % len(names):] + names[: r % len(names)]:
            state, fps = run_window(step, state, sources[name](r + 1), keys, args.warmup, args.steps, bs)
            recs.append({"round": r, "variant": name, "frames/s": fps})
            line.append(f"{name} {fps:,.1f}")
        print(f"  round {r}: " + " | ".join(line), flush=True)
    jax.block_until_ready(state)

    # Context: the batch sources alone (no step), to show the loaders' headroom over the step.
    print(f"\nbatch sources alone (no train step), {args.rounds} rounds x {args.steps} batches:")
    alone = []
    for r in range(args.rounds):
        for name in names[:3]:
            alone.append({"round": r, "variant": name,
                          "frames/s": time_source(sources[name](100 + r), args.warmup, args.steps, bs)})
    alone = pd.DataFrame(alone).groupby("variant", sort=False)["frames/s"].median()
    print("  " + " | ".join(f"{k} {v:,.0f}" for k, v in alone.items()))
    out = pd.DataFrame(recs)
    out.attrs["source_alone"] = alone.to_dict()
    return out


def time_source(it: Iterator, warmup: int, n: int, batch_size: int) -> float:
    """Frames/s of a batch source on its own (each batch blocked on, so transfers count)."""
    try:
        for _ in range(warmup):
            jax.block_until_ready(next(it))
        t0 = time.perf_counter()
        for _ in range(n):
            jax.block_until_ready(next(it))
        return n * batch_size / (time.perf_counter() - t0)
    finally:
        it.close()


def summarize(recs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    wide = recs.pivot(index="round", columns="variant", values="frames/s")
    per_variant = pd.DataFrame(
        {
            "variant": wide.columns,
            "median frames/s": wide.median().to_numpy(),
            "min": wide.min().to_numpy(),
            "max": wide.max().to_numpy(),
            "vs ceiling": (wide.div(wide["ceiling"], axis=0)).median().to_numpy(),
        }
    )
    order = ["ours store", "ours cached", "book-style", "ceiling"]
    per_variant = per_variant.set_index("variant").loc[order].reset_index()
    alone = recs.attrs.get("source_alone", {})
    per_variant["source alone frames/s"] = [alone.get(v, float("nan")) for v in order]
    ratios = []
    for path in ("ours store", "ours cached"):
        r_book = wide[path] / wide["book-style"]
        r_ceil = wide[path] / wide["ceiling"]
        ratios.append(
            {
                "path": path,
                "ours/book-style": r_book.median(),
                "(min..max)": f"{r_book.min():.2f}..{r_book.max():.2f}",
                "loader overhead 1-ours/ceiling": 1 - r_ceil.median(),
                "(range)": f"{1 - r_ceil.max():+.2f}..{1 - r_ceil.min():+.2f}",
            }
        )
    book_ceil = wide["book-style"] / wide["ceiling"]
    ratios.append(
        {
            "path": "book-style",
            "ours/book-style": float("nan"),
            "(min..max)": "",
            "loader overhead 1-ours/ceiling": 1 - book_ceil.median(),
            "(range)": f"{1 - book_ceil.max():+.2f}..{1 - book_ceil.min():+.2f}",
        }
    )
    return per_variant, pd.DataFrame(ratios)


# --------------------------------------------------------------------------- memory
def _tree_mb(tree) -> float:
    """Bytes of a pytree's leaves in MB (from shapes and dtypes; no device-to-host copy)."""
    return sum(x.nbytes if hasattr(x, "nbytes") else np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(tree)) / 1e6


def _maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1e6 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def _vmhwm_mb() -> float:
    """Peak RSS of this process image from /proc (Linux; reset at exec), else NaN."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _device_stats() -> dict | None:
    try:
        s = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - some backends raise instead of returning None
        return None
    if not s:
        return None
    return {k: s[k] / 1e6 for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit") if k in s}


def memory_child(preset: str, bs: int, extra_steps: int) -> None:
    """Run in a subprocess: prints one ``MEMORY_JSON {...}`` line."""
    out: dict = {"preset": preset, "batch_size": bs, "device": str(jax.local_devices()[0]), "phases": []}
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((bs, *FRAME_SHAPE), dtype=np.float32)
    labels = rng.integers(0, N_CLASSES, bs).astype(np.int32)

    def phase(name, seconds):
        out["phases"].append({"phase": name, "seconds": seconds, "peak RSS MB": _maxrss_mb(), "VmHWM MB": _vmhwm_mb(),
                              "device": _device_stats()})

    phase("imports + host batch", 0.0)
    devices = Devices.local()
    cfg = train_config_from_preset(preset, batch_size=bs)
    t = time.perf_counter()
    state = create_state(cfg.vqvae_config(N_CLASSES), cfg, frames, total_steps=1000)
    state = jax.device_put(state, devices.replicated)
    jax.block_until_ready(state)
    phase("create_state", time.perf_counter() - t)
    out["params"] = parameter_count(state.params)
    out["params MB"] = _tree_mb(state.params)
    out["opt_state MB"] = _tree_mb(state.opt_state)
    out["batch MB"] = (frames.nbytes + labels.nbytes) / 1e6
    step = jitted_train_step(CLASSIFICATION_WEIGHT, AUGMENT)
    batch = devices.put_batch(frames, labels)
    key = jax.random.PRNGKey(0)
    t = time.perf_counter()
    state, _ = step(state, batch, jax.random.fold_in(key, 0))
    jax.block_until_ready(state)
    phase("1st step (incl. compile)", time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(extra_steps):
        state, _ = step(state, batch, jax.random.fold_in(key, i + 1))
    jax.block_until_ready(state)
    phase(f"+{extra_steps} steps", (time.perf_counter() - t) / max(extra_steps, 1))
    print(MEMORY_TAG + json.dumps(out), flush=True)


def memory(args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-child", "--memory-preset", args.memory_preset,
           "--memory-batch-size", str(args.memory_batch_size), "--memory-steps", str(args.memory_steps)]
    if os.name == "posix" and Path("/bin/sh").exists():
        # On Linux ru_maxrss survives exec: a child spawned by this (large) process would start
        # with our peak RSS.  A shell that forks the child (";exit" stops it exec'ing in place)
        # hands it a fresh count.
        cmd = ["/bin/sh", "-c", shlex.join(cmd) + "; exit $?"]
    print(f"\nmemory: subprocess {args.memory_preset} preset, batch {args.memory_batch_size}, "
          f"create_state + 1 step + {args.memory_steps} steps ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"memory subprocess failed with exit code {proc.returncode}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith(MEMORY_TAG)][-1]
    res = json.loads(line[len(MEMORY_TAG):])
    rows = []
    for p in res["phases"]:
        d = p["device"]
        rows.append({
            "phase": p["phase"],
            "s (per step)": p["seconds"],
            "peak host RSS MB": p["peak RSS MB"],
            "(VmHWM)": p["VmHWM MB"],
            "device in use MB": d.get("bytes_in_use", float("nan")) if d else float("nan"),
            "device peak MB": d.get("peak_bytes_in_use", float("nan")) if d else float("nan"),
        })
    table = pd.DataFrame(rows)
    print(f"device {res['device']}, {res['params']:,} parameters")
    print(_fmt_table(table))
    if all(p["device"] is None for p in res["phases"]):
        print("device memory_stats(): n/a on CPU (memory_stats() returned None); pytree sizes instead:")
    else:
        print("pytree sizes:")
    sizes = pd.DataFrame([
        {"item": "params", "MB": res["params MB"]},
        {"item": "optimizer state (Adam mu, nu, hyperparams)", "MB": res["opt_state MB"]},
        {"item": f"one batch ({res['batch_size']} frames + labels)", "MB": res["batch MB"]},
        {"item": "total", "MB": res["params MB"] + res["opt_state MB"] + res["batch MB"]},
    ])
    print(_fmt_table(sizes))
    res["table"] = table
    return res


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--frames", type=int, default=2048, help="frames in the synthetic store (4 plates)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 32 (tiny), 256 (full)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant per round (default 12 tiny, 8 full)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before each timed window (> prefetch)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5 tiny, 3 full)")
    ap.add_argument("--root", type=Path, default=None, help="parent folder of the temporary files")
    ap.add_argument("--memory", action="store_true", help="also measure peak memory (subprocess)")
    ap.add_argument("--skip-throughput", action="store_true", help="with --memory: only the memory part")
    ap.add_argument("--memory-preset", choices=["tiny", "full"], default="full")
    ap.add_argument("--memory-batch-size", type=int, default=256)
    ap.add_argument("--memory-steps", type=int, default=2, help="steps after the first one")
    ap.add_argument("--_memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._memory_child:
        memory_child(args.memory_preset, args.memory_batch_size, args.memory_steps)
        return 0
    tiny = args.preset == "tiny"
    args.batch_size = args.batch_size or (32 if tiny else 256)
    args.steps = args.steps or (12 if tiny else 8)
    args.rounds = args.rounds or (5 if tiny else 3)
    if args.frames < N_PLATES * 2 or args.frames < args.batch_size:
        ap.error("--frames must hold at least one batch and 2 frames per plate")

    t_all = time.perf_counter()
    print(machine_line())
    per_variant = ratios = mem = None
    if not args.skip_throughput:
        recs = throughput(args)
        per_variant, ratios = summarize(recs)
    if args.memory:
        mem = memory(args)

    print("\n" + "=" * 78)
    print(f"SUMMARY  preset {args.preset}, batch {args.batch_size}, {args.frames} frames, "
          f"{args.rounds} rounds x {args.steps} timed steps; {os.cpu_count()} CPUs, {jax.devices()}")
    if per_variant is not None:
        print("\nframes/s per variant (median over rounds; 'vs ceiling' = median of per-round ratios;\n"
              "'source alone' = the batch source iterated without the train step)")
        print(_fmt_table(per_variant))
        print("\nratios (medians of per-round paired ratios)")
        print(_fmt_table(ratios))
    if mem is not None:
        print(f"\nmemory, {mem['preset']} preset, batch {mem['batch_size']}, {mem['params']:,} parameters "
              f"(params {mem['params MB']:.1f} MB + opt state {mem['opt_state MB']:.1f} MB + "
              f"batch {mem['batch MB']:.1f} MB)")
        print(_fmt_table(mem["table"]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s; load avg at end {load:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
