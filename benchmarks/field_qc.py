"""How well the per-field image checks find blank, saturated, out-of-focus and debris fields.

Usage::

    python benchmarks/field_qc.py [--data ../shared/data] [--plates 2] [--seed 3] [--field-size 512]

With the default :class:`~assets_pkg.core.qc.config.PlateQCConfig` (no threshold tuned here):

1. Simulated plates with ``--defects`` (rate 0.5; the simulator records every defect in
   ``defects.csv``): per kind, fields found (true positives), flagged without that defect (false
   positives) and missed, against ``defects.csv``, field by field.
2. Simulated plates without defects, like the DVC-pinned sample (seed 20261121, 16 wells x 2
   fields): every flag is a false positive.
3. Real fields, where ``--data`` has them:

   - BBBC039 (150 Hoechst fields, U2OS, 12-bit; taken as 0.6 µm pixels with 15 µm nuclei):
     a field whose ground-truth mask holds no nucleus is a true blank; any other flag is counted
     and named, to be looked at.
   - BBBC005 (SIMCEP, blur F1/F23/F48 in the file name): for each stain, a "plate" of the 30 F1
     images plus 3 F23 or 3 F48 ones; the blurred ones should be out of focus, nothing else.
   - OpenCell (4 real 1024 x 1024 Hoechst fields, 0.2 µm): any flag is a false positive.

Also prints the time :func:`~assets_pkg.core.qc.fields.image_stats` takes per image.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from assets_pkg.core.imaging.io import read_image
from assets_pkg.core.imaging.simulator import simulate_plates
from assets_pkg.core.qc.config import DEFECT_KINDS, PlateQCConfig
from assets_pkg.core.qc.fields import assess_fields, defects_from_table, image_stats

QC = PlateQCConfig()


def assess(paths: list[Path], rows: pd.DataFrame, full_scale: float | None) -> tuple[list, float]:
    t0 = time.perf_counter()
    stats = [image_stats(read_image(p), full_scale, QC.debris_contrast) for p in paths]
    per_image = (time.perf_counter() - t0) / max(1, len(paths))
    return defects_from_table(rows, assess_fields(rows, stats, QC), QC), per_image


def simulated(root: Path, n_plates: int, seed: int, field_size: int, defects: bool, wells: int, fields: int):
    plates = simulate_plates(root, n_plates=n_plates, seed=seed, wells=wells, fields_per_well=fields,
                             field_size=field_size, defects=defects, defect_rate=0.5)
    counts = {k: [0, 0, 0] for k in DEFECT_KINDS}
    times, n_fields, missed = [], 0, []
    for plate in plates:
        meta = pd.read_csv(plate / "metadata.csv")
        found, dt = assess([plate / f for f in meta["file_name"]], meta, 65535.0)
        times.append(dt)
        truth_csv = plate / "defects.csv"
        truth = pd.read_csv(truth_csv) if truth_csv.exists() else pd.DataFrame(columns=["well", "field_id", "defect",
                                                                                         "detail"])
        n_fields += len(meta.drop_duplicates(["well", "field_id"]))
        for kind in DEFECT_KINDS:
            t = {(w, int(f)) for w, f, k in zip(truth["well"], truth["field_id"], truth["defect"], strict=True)
                 if k == kind}
            p = {(d.well, d.field_id) for d in found if d.kind == kind}
            counts[kind][0] += len(t & p)
            counts[kind][1] += len(p - t)
            counts[kind][2] += len(t - p)
            missed += [f"{plate.name} {w} f{f:02d} {d}" for w, f, k, d in
                       zip(truth["well"], truth["field_id"], truth["defect"], truth["detail"], strict=True)
                       if k == kind and (w, int(f)) not in p]
    return counts, n_fields, float(np.mean(times)), sorted(set(missed))


def plate_table(paths: list[Path], channel: str, pixel_size_um: float) -> pd.DataFrame:
    return pd.DataFrame({"well": [p.stem for p in paths], "field_id": 0, "channel": channel,
                         "file_name": [p.name for p in paths], "pixel_size_um": pixel_size_um})


def real(data: Path) -> None:
    b39 = data / "bbbc039"
    if b39.is_dir():
        import imageio.v3 as iio
        from scipy import ndimage as ndi

        paths = sorted((b39 / "images").glob("*.tif"))
        found, dt = assess(paths, plate_table(paths, "nucleus", 0.6), 4095.0)
        empty = {p.stem for p in paths if ndi.label(iio.imread(b39 / "masks" / f"{p.stem}.png")[..., 0] > 0)[1] == 0}
        blank = {d.well for d in found if d.kind == "blank"}
        print(f"BBBC039 {len(paths)} fields ({dt * 1000:.0f} ms/image): blank {len(blank & empty)}/{len(empty)} of the "
              f"fields without a nucleus, {len(blank - empty)} other blank; other flags: "
              f"{[(d.well[:15], d.kind, round(d.value, 2)) for d in found if d.kind != 'blank'] or 'none'}")
    b05 = data / "bbbc005"
    if b05.is_dir():
        for stain in ("w1", "w2"):
            files = sorted(b05.glob(f"*_{stain}.TIF"))
            sharp = [p for p in files if "_F1_" in p.name]
            for blur in ("F23", "F48"):
                extra = [p for p in files if f"_{blur}_" in p.name][:3]
                found, _ = assess(sharp + extra, plate_table(sharp + extra, "nucleus", 0.6), 255.0)
                hit = {d.file_name for d in found if d.kind == "out_of_focus"}
                want = {p.name for p in extra}
                other = [(d.file_name, d.kind) for d in found if d.kind != "out_of_focus"]
                print(f"BBBC005 {stain}: {len(sharp)} F1 + {len(extra)} {blur}: out of focus {len(hit & want)}/"
                      f"{len(want)}, {len(hit - want)} F1 flagged; other flags: {other or 'none'}")
    fovs = sorted((data / "opencell" / "fovs").glob("*.tif"))
    if fovs:
        found, dt = assess(fovs, plate_table(fovs, "nucleus", 0.2), 65535.0)
        print(f"OpenCell {len(fovs)} real FOVs ({dt * 1000:.0f} ms/image at 1024 x 1024): flags "
              f"{[(d.file_name, d.kind) for d in found] or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--plates", type=int, default=2)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--field-size", type=int, default=512)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        counts, n, dt, missed = simulated(Path(tmp) / "defects", a.plates, a.seed, a.field_size, True, 16, 3)
        print(f"simulated, defects at rate 0.5: {a.plates} plates, {n} fields ({dt * 1000:.0f} ms/image at "
              f"{a.field_size}²)")
        for kind, (tp, fp, fn) in counts.items():
            print(f"  {kind:13s} found {tp:3d}  false {fp:3d}  missed {fn:3d}")
        print("  missed:", *missed, sep="\n    ")
        counts, n, _, _ = simulated(Path(tmp) / "clean", 1, 20261121, a.field_size, False, 16, 2)
        print(f"simulated, no defects (the sample's seed): {n} fields, flags "
              f"{ {k: v[1] for k, v in counts.items()} }")
    if a.data.is_dir():
        real(a.data)
    else:
        print(f"{a.data} absent: real fields skipped")


if __name__ == "__main__":
    main()
