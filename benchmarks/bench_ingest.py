"""Ingest benchmark: plate folder -> validated metadata -> nuclei -> frames -> frame store.

Run ``python benchmarks/bench_ingest.py [--quick]`` from the repository root.  It prints
tables and ratios measured within one run (never compare absolute figures across machines):

(a) throughput of :func:`assets_pkg.core.store.ingest.ingest_plate` on one simulated plate, in
    fields per second, and a breakdown over its steps, each timed on its own with the
    library's step functions: ``metadata.validate_plate`` (GX suites, checksums, TIFF
    geometry), ``plates.read_plate``, ``detect_plate_nuclei``, ``crop_plate_frames`` and
    ``FrameStore.write_plate`` (a first write into an empty store);
(b) the cost of one new plate when the store already holds N plates (N = 1, 4, 16): the
    plate write alone (``write_plate`` of precomputed frames and table, so only the store is
    timed), the whole ``ingest_plate`` of a plate folder, and the catalog rebuild
    (``store.catalog()`` + ``store.write_catalog``), which reads every plate's table and so
    necessarily grows with N.  The plate write should not grow with N (one array per plate,
    no other plate is touched): ratio N=16 / N=1 ~ 1.

Plates come from the simulator (byte-reproducible, fixed seed).  The new plate of (b) is one
simulated folder copied under fresh plate ids (plate.json and metadata.csv rewritten, images
unchanged), so every measurement ingests identical content.  Each timing is the median over
``--repeats`` passes after a warm-up (the first ``validate_plate`` in a process pays Great
Expectations' start-up, reported separately); the N values are measured interleaved, pass by
pass, so drift on a shared machine affects them alike.  Files go to a temporary folder
(``--root`` to choose the disk); the page cache is warm.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.imaging import plates  # noqa: E402
from assets_pkg.core.imaging.simulator import simulate_plates  # noqa: E402
from assets_pkg.core.qc.validate import validate_plate  # noqa: E402
from assets_pkg.core.store.config import IngestParams  # noqa: E402
from assets_pkg.core.store.frame_store import FrameStore  # noqa: E402
from assets_pkg.core.store.ingest import (  # noqa: E402
    crop_plate_frames,
    detect_plate_nuclei,
    ingest_plate,
    plate_digest,
    plate_pixel_size,
)

SEED = 20250101
#: (b) plate writes timed per pass and N (each takes ~10 ms, so one sample is noisy).
WRITE_REPEATS = 5


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run (see :func:`settings_for`)."""

    wells: int  # (a) plate: wells x fields_per_well fields of field_size px
    fields_per_well: int
    field_size: int
    repeats: int  # (a) passes per measurement
    small_wells: int  # (b) plates
    small_fields_per_well: int
    small_field_size: int
    n_existing: tuple[int, ...]
    store_repeats: int  # (b) passes per N


def settings_for(quick: bool) -> Settings:
    if quick:
        return Settings(4, 1, 512, 2, 2, 1, 384, (1, 4, 16), 5)
    # The simulator's default plate (8 wells x 2 fields of 512 px), as in the sample data.
    return Settings(8, 2, 512, 3, 2, 2, 512, (1, 4, 16), 7)


def machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line for line in fh if line.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count()
    from importlib.metadata import version

    return (
        f"{n} CPU cores ({cpu}){mem}, CPU only; Python {platform.python_version()}, "
        f"tensorstore {version('tensorstore')}, {platform.system()} {platform.release()}"
    )


def _timed(fn: Callable[..., object], *args) -> tuple[float, object]:
    """Seconds taken by ``fn(*args)``, and its result."""
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def copy_plate(src: Path, dst_root: Path, plate_id: str) -> Path:
    """Copy a plate folder under a new plate id (plate.json and metadata.csv rewritten)."""
    plates.check_plate_id(plate_id)
    dst = dst_root / plate_id
    shutil.copytree(src, dst)
    pj = dst / plates.PLATE_JSON
    info = json.loads(pj.read_text(encoding="utf-8"))
    info["plate_id"] = plate_id
    pj.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    meta = pd.read_csv(dst / plates.METADATA_CSV, dtype=str, keep_default_na=False)
    meta["plate_id"] = plate_id
    meta.to_csv(dst / plates.METADATA_CSV, index=False, lineterminator="\n")
    return dst


def provenance_of(plate: plates.Plate, plate_dir: Path, params: IngestParams) -> dict:
    """The provenance :func:`ingest_plate` records (so the isolated write stores the same)."""
    return {
        "source": str(plate_dir.resolve()),
        "source_digest": plate_digest(plate),
        "ingest_params": params.model_dump(),
        "downsample": params.factor(plate_pixel_size(plate)),
    }


# ---------------------------------------------------------------------- (a) throughput
def bench_throughput(plate_dir: Path, root: Path, repeats: int) -> dict:
    """End-to-end ``ingest_plate`` and its steps on one plate; seconds are medians."""
    params = IngestParams()
    warm_validate, _ = _timed(validate_plate, plate_dir)  # GX start-up, first call
    plate = plates.read_plate(plate_dir)
    n_fields = len(plate.fields())
    # Warm-up of the rest (TensorStore context, parquet, scipy caches): one whole ingest.
    ingest_plate(plate_dir, FrameStore(root / "warmup"))
    shutil.rmtree(root / "warmup")

    steps: dict[str, list[float]] = {
        k: [] for k in ("validate", "read metadata", "nuclei", "crops", "store write", "ingest_plate")
    }
    res = None
    for r in range(repeats):
        dt, report = _timed(validate_plate, plate_dir)
        assert report.success, report.to_text()
        steps["validate"].append(dt)
        dt, plate = _timed(plates.read_plate, plate_dir)
        steps["read metadata"].append(dt)
        dt, nuclei = _timed(detect_plate_nuclei, plate, params)
        steps["nuclei"].append(dt)
        dt, (frames, table) = _timed(crop_plate_frames, plate, nuclei, params)
        steps["crops"].append(dt)
        prov = provenance_of(plate, plate_dir, params)
        store = FrameStore(root / f"tp_steps_{r}")
        dt, _ = _timed(store.write_plate, plate.plate_id, frames, table, prov)
        steps["store write"].append(dt)
        store_e2e = FrameStore(root / f"tp_e2e_{r}")
        dt, res = _timed(ingest_plate, plate_dir, store_e2e, params)
        steps["ingest_plate"].append(dt)
        assert res.n_frames == len(table)
        shutil.rmtree(root / f"tp_steps_{r}")
        shutil.rmtree(root / f"tp_e2e_{r}")
    med = {k: _median(v) for k, v in steps.items()}
    return {
        "n_fields": n_fields,
        "n_nuclei": res.n_nuclei,
        "n_frames": res.n_frames,
        "frames_mb": res.n_frames * params.crop_size**2 * 3 * 4 / 1e6,
        "first_validate_s": warm_validate,
        "median_s": med,
        "spread_s": {k: (min(v), max(v)) for k, v in steps.items()},
    }


def throughput_table(r: dict) -> pd.DataFrame:
    n = r["n_fields"]
    med = r["median_s"]
    total = med["ingest_plate"]
    rows = []
    for k, s in med.items():
        lo, hi = r["spread_s"][k]
        rows.append(
            {
                "step": k if k != "ingest_plate" else "ingest_plate (end to end)",
                "s/field": s / n,
                "fields/s": n / s if s > 0 else float("inf"),
                "share of end to end": s / total,
                "min..max s (plate)": f"{lo:.3f}..{hi:.3f}",
            }
        )
    parts = sum(v for k, v in med.items() if k != "ingest_plate")
    rows.insert(
        len(rows) - 1,
        {
            "step": "sum of steps",
            "s/field": parts / n,
            "fields/s": n / parts,
            "share of end to end": parts / total,
            "min..max s (plate)": "",
        },
    )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- (b) N existing plates
def bench_new_plate(small_dir: Path, root: Path, ns: tuple[int, ...], repeats: int) -> pd.DataFrame:
    """Cost of adding one plate to a store holding N plates, for each N (medians)."""
    params = IngestParams()
    plate = plates.read_plate(small_dir)
    frames, table = crop_plate_frames(plate, detect_plate_nuclei(plate, params), params)
    prov = provenance_of(plate, small_dir, params)

    def table_for(pid: str) -> pd.DataFrame:
        t = table.copy()
        t["plate_id"] = pid
        t["frame_id"] = t["frame_id"].str.replace(plate.plate_id, pid, n=1, regex=False)
        return t

    # One store per N, filled with N plates of the same frames under distinct ids.
    stores = {}
    for n in ns:
        s = FrameStore(root / f"store_n{n:03d}")
        for i in range(n):
            pid = f"old{i + 1:03d}"
            s.write_plate(pid, frames, table_for(pid), prov)
        s.write_catalog(s.catalog(), {"plates": s.plate_ids()})
        assert len(s.plate_ids()) == n
        stores[n] = s

    # The new plate: identical folders under fresh ids (ingest_plate reads the id from disk).
    folders = root / "new_plates"
    folders.mkdir()
    new_dirs = [copy_plate(small_dir, folders, f"new{r + 1:02d}") for r in range(repeats)]
    for d in new_dirs[:1]:  # warm-up of the whole path on a scratch store
        ingest_plate(d, FrameStore(root / "warmup_b"), params)
    shutil.rmtree(root / "warmup_b")

    t: dict[int, dict[str, list[float]]] = {
        n: {"plate write": [], "ingest_plate": [], "catalog()": [], "write_catalog": []} for n in ns
    }
    for r in range(repeats):
        pid = new_dirs[r].name
        new_table = table_for(pid)
        for n in ns:  # interleaved: pass r measures every N
            s = stores[n]
            for _ in range(WRITE_REPEATS):  # cheap and short: several samples per pass
                dt, _ = _timed(s.write_plate, pid, frames, new_table, prov)
                t[n]["plate write"].append(dt)
                s.delete_plate(pid)
            assert len(s.plate_ids()) == n
            dt, res = _timed(ingest_plate, new_dirs[r], s, params)
            t[n]["ingest_plate"].append(dt)
            dt, cat = _timed(s.catalog)
            t[n]["catalog()"].append(dt)
            assert cat["plate_id"].nunique() == n + 1
            dt, _ = _timed(s.write_catalog, cat, {"plates": s.plate_ids()})
            t[n]["write_catalog"].append(dt)
            s.delete_plate(pid)
    rows = []
    for n in ns:
        med = {k: _median(v) * 1e3 for k, v in t[n].items()}
        rows.append(
            {
                "N existing": n,
                "catalog frames": (n + 1) * len(table),
                "plate write ms": med["plate write"],
                "ingest_plate ms": med["ingest_plate"],
                "catalog() ms": med["catalog()"],
                "write_catalog ms": med["write_catalog"],
                "catalog rebuild ms": med["catalog()"] + med["write_catalog"],
            }
        )
    out = pd.DataFrame(rows)
    out.attrs["frames_per_plate"] = len(table)
    out.attrs["fields_per_plate"] = len(plate.fields())
    return out


# ---------------------------------------------------------------------- driver
def run_all(quick: bool, root: Path, verbose: bool = True) -> dict:
    """Simulate the plates, run (a) and (b); print the tables when ``verbose``."""
    cfg = settings_for(quick)
    say = print if verbose else (lambda *a, **k: None)
    t0 = time.perf_counter()
    sim_dir = root / "plates"
    dt_sim, (big,) = _timed(
        lambda: simulate_plates(
            sim_dir, n_plates=1, seed=SEED, wells=cfg.wells,
            fields_per_well=cfg.fields_per_well, field_size=cfg.field_size, plate_prefix="big",
        )
    )
    (small,) = simulate_plates(
        sim_dir, n_plates=1, seed=SEED, wells=cfg.small_wells,
        fields_per_well=cfg.small_fields_per_well, field_size=cfg.small_field_size,
        plate_prefix="small",
    )
    say(f"machine: {machine()}")
    say(f"root {root}; {'--quick' if quick else 'default'} run; simulated the (a) plate in {dt_sim:.1f} s\n")

    tp = bench_throughput(big, root, cfg.repeats)
    tpt = throughput_table(tp)
    n = tp["n_fields"]
    say(
        f"(a) ingest throughput: one plate, {cfg.wells} wells x {cfg.fields_per_well} fields of "
        f"{cfg.field_size} px = {n} fields, {tp['n_nuclei']} nuclei, {tp['n_frames']} frames "
        f"({tp['frames_mb']:.0f} MB); median of {cfg.repeats}"
    )
    say(tpt.to_string(index=False, float_format=lambda x: f"{x:,.3f}"))
    med = tp["median_s"]
    e2e = med["ingest_plate"]
    say(f"  ingest_plate: {n / e2e:.2f} fields/s, {tp['n_frames'] / e2e:.1f} frames/s")
    say(
        f"  ratio validate / end to end: {med['validate'] / e2e:.2f}; nuclei + crops / end to "
        f"end: {(med['nuclei'] + med['crops']) / e2e:.2f}; store write / end to end: "
        f"{med['store write'] / e2e:.3f}"
    )
    say(
        f"  first validate_plate in the process (Great Expectations start-up): "
        f"{tp['first_validate_s']:.2f} s = {tp['first_validate_s'] / med['validate']:.1f}x a warm one\n"
    )

    nt = bench_new_plate(small, root, cfg.n_existing, cfg.store_repeats)
    lo, hi = nt.iloc[0], nt.iloc[-1]
    say(
        f"(b) one new plate ({nt.attrs['fields_per_plate']} fields of {cfg.small_field_size} px, "
        f"{nt.attrs['frames_per_plate']} frames) into a store holding N plates of the same size; "
        f"median of {cfg.store_repeats} (plate write: of {cfg.store_repeats * WRITE_REPEATS})"
    )
    say(nt.to_string(index=False, float_format=lambda x: f"{x:,.1f}"))
    ratios = {
        k: hi[k] / lo[k]
        for k in ("plate write ms", "ingest_plate ms", "catalog() ms", "write_catalog ms", "catalog rebuild ms")
    }
    a, b = int(hi["N existing"]), int(lo["N existing"])
    say(f"  ratio N={a} / N={b}:")
    say(f"    plate write (store only)  {ratios['plate write ms']:.2f}   (expected ~1)")
    say(f"    ingest_plate (end to end) {ratios['ingest_plate ms']:.2f}   (expected ~1)")
    say(
        f"    catalog rebuild           {ratios['catalog rebuild ms']:.2f}   (catalog() "
        f"{ratios['catalog() ms']:.2f}, write_catalog {ratios['write_catalog ms']:.2f}; grows with "
        f"N: reads all {a + 1} plate tables)"
    )
    say(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return {"settings": cfg, "throughput": tp, "throughput_table": tpt, "new_plate": nt, "ratios": ratios}


def summary_table(res: dict) -> pd.DataFrame:
    """One-line-per-figure summary (what ``bench_store.py --ingest`` prints)."""
    tp = res["throughput"]
    med = tp["median_s"]
    n = tp["n_fields"]
    nt = res["new_plate"]
    a, b = int(nt.iloc[-1]["N existing"]), int(nt.iloc[0]["N existing"])
    rows = [
        ("ingest_plate fields/s", n / med["ingest_plate"]),
        *((f"{k} s/field", med[k] / n) for k in ("validate", "nuclei", "crops", "store write")),
        (f"plate write ratio N={a}/N={b}", res["ratios"]["plate write ms"]),
        (f"ingest_plate ratio N={a}/N={b}", res["ratios"]["ingest_plate ms"]),
        (f"catalog rebuild ratio N={a}/N={b}", res["ratios"]["catalog rebuild ms"]),
    ]
    return pd.DataFrame(
        {"measurement": [r[0] for r in rows], "value": [f"{r[1]:,.3f}" for r in rows]}
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller plate, fewer repeats (~30 s)")
    ap.add_argument("--root", type=Path, default=None, help="folder for the files (temp)")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_ingest_", dir=args.root))
    try:
        run_all(args.quick, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
