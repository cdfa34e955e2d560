"""Full-plate ingest benchmark: a 96-well x 18-field plate of 1024 px fields (2 channels).

Run ``python benchmarks/bench_full_plate.py [--wells 96 --fields-per-well 18 --field-size 1024]``
from the repository root.  It

1. simulates the plate once into ``--cache`` (reused when already complete; simulation time
   is printed but is not part of the ingest figure);
2. times the stages of one field on its own, single process, on ``--sample`` fields: read the
   two TIFFs, nuclei at the frame scale, downsample + crops + distance, the store write of
   their frames; and validation of the whole plate (checksums + TIFF decode);
3. times ``ingest_plate`` end to end (validation, nuclei, frames, streamed store write) with
   ``--workers`` processes (default: one per core), printing fields/s, wall seconds and the
   CPU seconds of this process and its workers (``time.process_time`` + ``RUSAGE_CHILDREN``),
   so a figure taken on a shared machine still means something; the load average is printed;
   and peak resident memory (the frames stream: a 1728-field plate makes ~142k frames, 17 GB);
4. measures the old code path (full-resolution ``detect_nuclei`` + ``extract_frames`` on
   full-resolution labels) on the sample fields, for the ratio.

Latest run (2-core box, nothing else running, with the per-field image checks on block means):
1728 fields, 142,013 frames in 247.8 s wall (6.97 fields/s), 485.2 s CPU of all processes; per
field validate 22 %, nuclei 52 %, crops + distance 16 %, store write 10 %; 3.1x less CPU per
field than the old path.  An earlier run (load average ~4 from other jobs, before the per-field
image QC existed): 96 x 18 fields of 1024 px simulated in 1701 s (1043 s CPU, once); ingest 1728
fields, 183,092 nuclei, 142,013 frames in 351.7 s wall, 411.5 s CPU of all processes (0.238
CPU s per field, ~206 s on 2 idle cores); the old path costs ~0.885 CPU s per field (3.7x).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.core.imaging.io import read_image  # noqa: E402
from assets_pkg.core.imaging.plates import PIXEL_DTYPES, plate_is_complete, read_plate  # noqa: E402
from assets_pkg.core.imaging.simulator import simulate_plates  # noqa: E402
from assets_pkg.core.qc.validate import validate_plate  # noqa: E402
from assets_pkg.core.segmentation.nuclei import detect_nuclei  # noqa: E402
from assets_pkg.core.store.config import IngestParams  # noqa: E402
from assets_pkg.core.store.frame_store import FrameStore  # noqa: E402
from assets_pkg.core.store.frames import (  # noqa: E402
    cut_frames,
    downsample_image,
    extract_frames,
    full_to_frame_coords,
)
from assets_pkg.core.store.ingest import default_workers, detect_field_nuclei, ingest_plate  # noqa: E402

SEED = 20250111


def cpu_all() -> float:
    """CPU seconds of this process and of its finished children (the pool's workers)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def plate_folder(cache: Path, wells: int, fields: int, size: int) -> Path:
    root = cache / f"{wells}x{fields}x{size}"
    d = root / "plate01"
    if d.is_dir() and plate_is_complete(d):
        print(f"plate: cached {d}")
        return d
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t, c = time.perf_counter(), cpu_all()
    simulate_plates(root, 1, seed=SEED, wells=wells, fields_per_well=fields, field_size=size)
    print(f"plate: simulated {d} in {time.perf_counter() - t:.0f} s wall, {cpu_all() - c:.0f} s CPU")
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wells", type=int, default=96)
    ap.add_argument("--fields-per-well", type=int, default=18)
    ap.add_argument("--field-size", type=int, default=1024)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cellscape_bench_full_plate")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--sample", type=int, default=6, help="fields timed stage by stage and with the old path")
    ap.add_argument("--skip-old", action="store_true")
    a = ap.parse_args()

    print(f"load average before: {os.getloadavg()}, cores: {len(os.sched_getaffinity(0))}")
    d = plate_folder(a.cache, a.wells, a.fields_per_well, a.field_size)
    plate = read_plate(d)
    params = IngestParams()
    px = float(plate.metadata["pixel_size_um"].iloc[0])
    factor = params.factor(px)
    fields = plate.fields()
    n = len(fields)
    rng = np.random.default_rng(0)
    sample = fields.iloc[np.sort(rng.choice(n, size=min(a.sample, n), replace=False))]

    # -- stages, one process, CPU seconds per field
    validate_plate(d)  # Great Expectations start-up
    c = cpu_all()
    validate_plate(d)
    stages = {"validate (checksums, decode)": (cpu_all() - c) / n}
    acc = dict.fromkeys(("read", "nuclei", "crops + distance", "store write"), 0.0)
    old = dict.fromkeys(("nuclei (full res)", "crops + distance (full-res labels)"), 0.0)
    tmp = Path(tempfile.mkdtemp(dir=a.cache))
    store = FrameStore(str(tmp / "stages"))
    for row in sample.itertuples(index=False):
        c = time.process_time()
        nuc = read_image(plate.image_path(row.nucleus), dtypes=PIXEL_DTYPES)
        prot = read_image(plate.image_path(row.protein), dtypes=PIXEL_DTYPES)
        c1 = time.process_time()
        nuc_d = downsample_image(nuc, factor)
        labels, centres, _ = detect_field_nuclei(nuc, px, params, nucleus_small=nuc_d)
        c2 = time.process_time()
        cy = full_to_frame_coords(centres["centre_y"].to_numpy(), factor)
        cx = full_to_frame_coords(centres["centre_x"].to_numpy(), factor)
        frames, keep, _, _ = cut_frames(nuc_d, downsample_image(prot, factor), labels > 0, cy, cx, params.crop_size)
        c3 = time.process_time()
        store.write_plate("sample", frames, pd.DataFrame({"k": np.arange(len(frames))}))
        c4 = time.process_time()
        for k, v in zip(acc, (c1 - c, c2 - c1, c3 - c2, c4 - c3), strict=True):
            acc[k] += v / len(sample)
        if not a.skip_old:
            c = time.process_time()
            full = detect_nuclei(nuc, pixel_size_um=px, nucleus_diameter_um=params.nucleus_diameter_um)
            c1 = time.process_time()
            extract_frames(nuc, prot, full, factor, params.crop_size)
            c2 = time.process_time()
            old["nuclei (full res)"] += (c1 - c) / len(sample)
            old["crops + distance (full-res labels)"] += (c2 - c1) / len(sample)
    stages.update(acc)
    total = sum(stages.values())
    print(f"\nstages, CPU s per field (one process, {len(sample)} sample fields; validation over all {n}):")
    for k, v in stages.items():
        print(f"  {k:32s} {v:6.3f} s  {100 * v / total:5.1f} %")
    print(f"  {'sum':32s} {total:6.3f} s  -> {n * total / 60:.1f} CPU min for {n} fields")

    # -- end to end
    workers = default_workers(n) if a.workers is None else a.workers
    t, c = time.perf_counter(), cpu_all()
    res = ingest_plate(d, FrameStore(str(tmp / "store")), params, workers=workers)
    wall, cpu = time.perf_counter() - t, cpu_all() - c
    print(f"\ningest_plate, {workers} workers: {res.n_fields} fields, {res.n_nuclei} nuclei, {res.n_frames} frames")
    print(f"  wall {wall:.1f} s ({res.n_fields / wall:.2f} fields/s), CPU {cpu:.1f} s "
          f"({cpu / res.n_fields:.3f} CPU s/field; on 2 idle cores ~{cpu / 2:.0f} s wall)")
    rss = [resource.getrusage(w).ru_maxrss / 2**20 for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    print(f"  peak memory: this process {rss[0]:.2f} GiB, largest worker {rss[1]:.2f} GiB")
    print(f"  load average after: {os.getloadavg()}")
    if not a.skip_old:
        o = sum(old.values()) + stages["validate (checksums, decode)"] + acc["read"] * 1.5 + acc["store write"]
        print("\nold path, CPU s per field (sample): " + ", ".join(f"{k} {v:.3f}" for k, v in old.items()))
        print(f"  old per-field CPU ~{o:.3f} s (validate + nucleus read twice + full-res nuclei + crops + write) "
              f"vs measured {cpu / res.n_fields:.3f}: ratio {o / (cpu / res.n_fields):.1f}x")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
