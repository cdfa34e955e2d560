"""The ``cellscape`` command line: the same library functions the Dagster assets call."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .core.errors import CellscapeError


def _add_simulate(sub):
    p = sub.add_parser("simulate-plates", help="write simulated OpenCell-like plates")
    p.add_argument("--out", required=True, type=Path, help="folder that receives the plate folders")
    p.add_argument("--plates", type=int, default=1)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--proteins", type=Path, default=None, help="OpenCell-format annotation CSV (default: built-in panel)")
    p.add_argument("--wells", type=int, default=8, help="wells per plate (one protein each)")
    p.add_argument("--fields-per-well", type=int, default=2)
    p.add_argument("--field-size", type=int, default=512, help="field side in pixels")
    p.add_argument("--defects", action="store_true", help="inject out-of-focus, saturated and debris defects")
    p.add_argument("--defect-rate", type=float, default=0.1)
    p.add_argument("--prefix", default="plate", help="plate id prefix")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(a) -> int:
    from .core.imaging.simulator import simulate_plates

    paths = simulate_plates(
        a.out, n_plates=a.plates, seed=a.seed, proteins=a.proteins, wells=a.wells,
        fields_per_well=a.fields_per_well, field_size=a.field_size, defects=a.defects,
        defect_rate=a.defect_rate, plate_prefix=a.prefix, progress=True,
    )
    for p in paths:
        print(p)
    return 0


def _add_validate(sub):
    p = sub.add_parser("validate", help="run the metadata/provenance suites on plate folders (read-only)")
    p.add_argument("plates", nargs="+", type=Path)
    p.add_argument("--instruments", type=Path, default=None, help="instrument registry YAML")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.set_defaults(func=cmd_validate)


def cmd_validate(a) -> int:
    from .core.qc.metadata import load_instrument_registry, validate_plate

    registry = load_instrument_registry(a.instruments)
    ok = True
    reports = []
    for d in a.plates:
        r = validate_plate(d, registry=registry)
        ok &= r.success
        reports.append(r)
        if not a.json:
            print(r.to_text())
    if a.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2, default=str))
    return 0 if ok else 1


def _add_ingest(sub):
    p = sub.add_parser("ingest", help="validate plates and write their frames to a frame store")
    p.add_argument("plates", nargs="+", type=Path)
    p.add_argument("--store", required=True, help="store root: a path, file:// or memory:// URL, or a kvstore JSON spec")
    p.add_argument("--crop-size", type=int, default=100)
    p.add_argument("--target-um-per-px", type=float, default=0.4)
    p.add_argument("--downsample", type=float, default=None)
    p.add_argument("--nucleus-diameter-um", type=float, default=15.0)
    p.add_argument("--instruments", type=Path, default=None)
    p.add_argument("--no-catalog", action="store_true", help="do not rebuild the catalog afterwards")
    p.set_defaults(func=cmd_ingest)


def open_store(spec: str):
    from .core.store.frame_store import FrameStore

    return FrameStore(json.loads(spec) if spec.lstrip().startswith("{") else spec)


def cmd_ingest(a) -> int:
    from tqdm import tqdm

    from .core.errors import ValidationFailed
    from .core.qc.metadata import load_instrument_registry
    from .core.store.dvc import dataset_md5_or_none
    from .core.store.ingest import IngestParams, ingest_plate

    store = open_store(a.store)
    params = IngestParams(a.crop_size, a.target_um_per_px, a.downsample, a.nucleus_diameter_um)
    registry = load_instrument_registry(a.instruments)
    md5 = dataset_md5_or_none()
    failed = ingested = 0
    for d in a.plates:
        bars = {}

        def progress(step, i, n, d=d, bars=bars):
            if step not in bars:
                bars[step] = tqdm(total=n, desc=f"{d.name} {step}", unit="field", leave=False)
            bars[step].update(i - bars[step].n)

        try:
            res = ingest_plate(d, store, params, provenance={"dataset_md5": md5}, registry=registry, progress=progress)
        except ValidationFailed as e:
            failed += 1
            print(f"REFUSED {e}", file=sys.stderr)
            continue
        finally:
            for b in bars.values():
                b.close()
        ingested += 1
        print(f"{res.plate_id}: {res.n_fields} fields, {res.n_nuclei} nuclei, {res.n_frames} frames in {res.seconds:.1f}s")
    if ingested and not a.no_catalog:
        cat = store.catalog()
        store.write_catalog(cat, {"dataset_md5": md5, "plates": store.plate_ids()})
        print(f"catalog: {len(cat)} frames from {cat['plate_id'].nunique()} plates")
    return 1 if failed else 0


def _add_import(sub):
    p = sub.add_parser("import", help="put an image folder or released cytoself arrays into a frame store")
    p.add_argument("folder", type=Path)
    p.add_argument("--format", choices=["images", "cytoself"], required=True,
                   help="images: nucleus/protein image pairs (nuclei are detected); cytoself: "
                        "Image_dataNN.npy + Label_dataNN.csv or *_pro/_nuc/_label.npy")
    p.add_argument("--store", required=True)
    p.add_argument("--plate-id", required=True, help="id the frames are stored under")
    p.add_argument("--pixel-size-um", type=float, default=None, help="images only: pixel size of the images")
    p.add_argument("--gene", default="", help="images only: the tagged gene")
    p.add_argument("--ensg-id", default="", help="images only: its Ensembl id")
    p.add_argument("--target-um-per-px", type=float, default=0.4)
    p.add_argument("--nucleus-diameter-um", type=float, default=15.0)
    p.set_defaults(func=cmd_import)


def cmd_import(a) -> int:
    from .core.store.ingest import IngestParams, import_cytoself, ingest_image_folder

    store = open_store(a.store)
    if a.format == "cytoself":
        res = import_cytoself(a.folder, store, a.plate_id)
    else:
        if a.pixel_size_um is None:
            raise CellscapeError("--pixel-size-um is required for --format images", path=a.folder, field="pixel_size_um")
        params = IngestParams(target_um_per_px=a.target_um_per_px, nucleus_diameter_um=a.nucleus_diameter_um)
        res = ingest_image_folder(a.folder, store, a.plate_id, a.pixel_size_um, params, a.gene, a.ensg_id)
    print(f"{res.plate_id}: {res.n_frames} frames from {a.folder} in {res.seconds:.1f}s")
    return 0


def _add_train(sub):
    p = sub.add_parser("train", help="train the localization VQ-VAE on the frames of a store")
    p.add_argument("--frames", required=True, help="frame store (path, URL or kvstore JSON)")
    p.add_argument("--out", required=True, type=Path, help="model folder: checkpoints/, metrics.json, history.csv, figures/")
    p.add_argument("--preset", choices=["tiny", "full", "cytoself"], default="tiny")
    p.add_argument("--classification-weight", type=float, default=1.0, help="0 trains the ablation without the head")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--compute-dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-by", choices=["field", "protein"], default="field",
                   help="when the store holds no splits table: exclusive unit of the split made here")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds checkpoints")
    p.set_defaults(func=cmd_train)


def cmd_train(a) -> int:
    from .core.errors import StoreError
    from .core.localization.training import fit, save_training_figures, train_config_from_preset
    from .core.ml.devices import describe_devices
    from .core.ml.loop import ProgressBar
    from .core.store.dvc import dataset_md5_or_none
    from .core.store.splits import SplitConfig, make_splits, split_version

    store = open_store(a.frames)
    try:
        splits = store.read_dataset_table("splits")
        version = store.read_dataset_manifest("splits").get("provenance", {}).get("split_version")
        print(f"splits: the store's splits table (version {version})")
    except StoreError:
        try:
            catalog = store.read_catalog()
        except StoreError:
            catalog = store.catalog()
        sc = SplitConfig(exclusive_by=a.split_by, seed=a.seed)
        splits = make_splits(catalog, sc)
        version = split_version(splits, sc)
        print(f"splits: made here, {a.split_by}-exclusive, seed {a.seed} (version {version})")
    cfg = train_config_from_preset(
        a.preset, epochs=a.epochs, batch_size=a.batch_size, learning_rate=a.learning_rate,
        classification_weight=a.classification_weight, compute_dtype=a.compute_dtype, seed=a.seed,
    )
    print(f"devices: {describe_devices()}")
    with ProgressBar("training") as bar:
        res = fit(store, splits, cfg, a.out, provenance={"dataset_md5": dataset_md5_or_none(), "split_version": version},
                  resume=not a.no_resume, log=bar.write, progress=bar)
    figs = save_training_figures(res, store, splits, a.out.name, seed=a.seed)
    fm = res.final_metrics
    print(" ".join(f"{k}={fm[k]:.4g}" for k in sorted(fm) if k.startswith("valid_") or k == "frames_per_second"))
    print(f"model: {a.out}  (model.json, metrics.json, history.csv, checkpoints/, figures: {', '.join(p.name for p in figs.values())})")
    return 0


def _add_report(sub):
    p = sub.add_parser("report", help="localization atlas of a trained model: spectra, clusters, UMAP, scores")
    p.add_argument("--checkpoint", required=True, type=Path, help="model folder written by cellscape train")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=DIR",
                   help="another model to score side by side (e.g. ablation=models/no_head); repeatable")
    p.add_argument("--frames", required=True, help="frame store")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--split", choices=["all", "train", "valid", "test"], default="all")
    p.add_argument("--n-clusters", type=int, default=16, help="code clusters (fcluster maxclust)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_report)


def _splits_of(store, seed: int):
    from .core.errors import StoreError
    from .core.store.splits import SplitConfig, make_splits

    try:
        return store.read_dataset_table("splits")
    except StoreError:
        try:
            catalog = store.read_catalog()
        except StoreError:
            catalog = store.catalog()
        return make_splits(catalog, SplitConfig(seed=seed))


def cmd_report(a) -> int:
    from .core.localization.atlas import build_report
    from .core.store.dvc import dataset_md5_or_none

    store = open_store(a.frames)
    models = {a.checkpoint.name or "model": a.checkpoint}
    for item in a.compare:
        name, _, path = item.partition("=")
        if not path:
            raise CellscapeError(f"--compare takes NAME=DIR, got {item!r}", field="compare")
        models[name] = Path(path)
    table, paths = build_report(models, store, _splits_of(store, a.seed), a.out, split=a.split,
                                n_clusters=a.n_clusters, seed=a.seed,
                                provenance={"dataset_md5": dataset_md5_or_none()})
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    print(f"report: {a.out} (scores.json, *_frames/_spectra/_knn/_predictions.parquet, *_matrices.npz, figures/)")
    return 0


def _add_pipeline(sub):
    p = sub.add_parser(
        "pipeline",
        help="materialize the main job on the project's Dagster instance (what the UI would run)",
    )
    p.add_argument("--root", type=Path, default=Path.cwd(), help="project root (default: cwd)")
    p.add_argument("--no-dvc", action="store_true", help="skip re-pinning data/ with DVC")
    p.add_argument("--no-train", action="store_true", help="stop after the dataset (no tiny model)")
    p.add_argument("--no-segmentation", action="store_true", help="skip the segmentation branch")
    p.set_defaults(func=cmd_pipeline)


def cmd_pipeline(a) -> int:
    from .pipeline import run_main_job

    return run_main_job(a.root.resolve(), pin=not a.no_dvc, train=not a.no_train, segment=not a.no_segmentation)


# ----------------------------------------------------------------------------- cells: simulate, segment, count
def _add_simulate_cells(sub):
    p = sub.add_parser("simulate-cells", help="write SIMCEP-like cell images with exact masks (BBBC005 naming)")
    p.add_argument("--out", required=True, type=Path, help="folder for the images (masks go to OUT/masks)")
    p.add_argument("--images", type=int, required=True, help="simulated fields (each gives both stains)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--count", type=int, default=None, help="cells per field (default: drawn from BBBC005's counts)")
    p.add_argument("--blur", type=int, nargs="+", default=[1, 23, 48], help="focus blur indices, used in turn")
    p.add_argument("--size", type=int, nargs=2, default=[520, 696], metavar=("HEIGHT", "WIDTH"))
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_simulate_cells)


def cmd_simulate_cells(a) -> int:
    from .core.imaging.cellsim import simulate_cells

    table = simulate_cells(a.out, a.images, seed=a.seed, size=tuple(a.size), counts=a.count,
                           blur_levels=a.blur, overwrite=a.overwrite, progress=True)
    print(f"{len(table)} images in {a.out} (masks in {Path(a.out) / 'masks'}), "
          f"{int(table['count'].sum()) // 2} cells per stain")
    return 0


def _add_train_segmentation(sub):
    p = sub.add_parser("train-segmentation", help="train the nucleus U-Net on images and instance masks")
    p.add_argument("--images", required=True, type=Path, help="folder of images (.tif/.png, 8/16-bit)")
    p.add_argument("--masks", required=True, type=Path,
                   help="masks paired by file stem: label TIFFs, or BBBC039-style PNGs (channel 0, 0..3)")
    p.add_argument("--out", required=True, type=Path, help="model folder to write (replaced atomically)")
    p.add_argument("--valid-images", type=Path, default=None, help="held-out images to tune the thresholds on")
    p.add_argument("--valid-masks", type=Path, default=None)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", type=int, default=16, help="channels of the first level")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train_segmentation)


def cmd_train_segmentation(a) -> int:
    from .core.segmentation.run import training_pairs
    from .core.segmentation.training import SegTrainConfig, train_segmentation

    names, images, labels = training_pairs(a.images, a.masks)
    valid = {}
    if a.valid_images is not None:
        if a.valid_masks is None:
            raise ValueError("--valid-images needs --valid-masks")
        _, vi, vl = training_pairs(a.valid_images, a.valid_masks)
        valid = {"valid_images": vi, "valid_labels": vl}
    cfg = SegTrainConfig(depth=a.depth, base_width=a.width, crop=a.crop, batch_size=a.batch_size, steps=a.steps,
                         learning_rate=a.lr, max_minutes=a.minutes, seed=a.seed)
    print(f"training on {len(images)} images from {a.images}")
    model, out = _train_into(a.out, "train U-Net",
                             lambda run: train_segmentation(images, labels, cfg, names=names, run=run, **valid),
                             extra={"images": str(a.images.resolve()), "masks": str(a.masks.resolve())})
    t = model.info["tuning"]
    print(f"saved {out}: {model.info['steps_done']} steps in {model.info['train_seconds']:.0f}s; thresholds "
          f"{t['threshold']}/{t['marker_threshold']}, min area {t['min_area']} (F1@0.5 {t['f1']:.3f} on {t['on']})")
    return 0


def _train_into(out: Path, desc: str, train, extra: dict):
    """Run ``train(run)`` with the model folder ``out`` as its work folder (its ``checkpoints/``
    make a killed run resumable) under a progress bar, then save the model there.

    Returns
    -------
    (model, Path)
    """
    from .core.ml.loop import ProgressBar, TrainRun
    from .core.segmentation.models import save_model

    with ProgressBar(desc) as bar:
        model = train(TrainRun(out, progress=bar, log=bar.write))
    return model, save_model(model, out, extra=extra)


def _add_segment(sub):
    p = sub.add_parser("segment", help="write one uint16 instance-label TIFF per image (<stem>.tif)")
    p.add_argument("images", type=Path, help="folder of images (.tif/.png, 8/16-bit)")
    p.add_argument("--out", required=True, type=Path, help="folder for the label images")
    p.add_argument("--model", type=Path, default=None, help="U-Net model folder (default: classical baseline)")
    p.add_argument("--preset", default=None, help="classical parameter preset (bbbc039, bbbc005_w1, bbbc005_w2)")
    p.add_argument("--nucleus-diameter", type=float, default=None, metavar="PX",
                   help="typical nucleus diameter in these images (the U-Net rescales to its training size)")
    p.set_defaults(func=cmd_segment)


def cmd_segment(a) -> int:
    from .core.segmentation.run import segment_folder

    table = segment_folder(a.images, a.out, a.model, preset=a.preset, object_diameter_px=a.nucleus_diameter,
                           progress=True)
    print(f"{len(table)} label images in {a.out} ({table['method'].iloc[0]}), "
          f"{int(table['objects'].sum())} objects, {len(table) / table['seconds'].sum():.2f} images/s")
    return 0


def _add_train_counting(sub):
    p = sub.add_parser("train-counting", help="train the counting CNN on BBBC005-style names (_C<count>_)")
    p.add_argument("--images", required=True, type=Path, help="folder of images named <well>_C<count>_F<blur>_...")
    p.add_argument("--out", required=True, type=Path, help="model folder to write (replaced atomically)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--minutes", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--input-size", type=int, nargs=2, default=[256, 344], metavar=("HEIGHT", "WIDTH"),
                   help="images are resized to this before the network")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train_counting)


def cmd_train_counting(a) -> int:
    from .core.segmentation.datasets import bbbc005_table, load_image
    from .core.segmentation.training import CountTrainConfig, train_counting

    table = bbbc005_table(a.images)
    images = [load_image(p) for p in table.path]
    cfg = CountTrainConfig(input_shape=tuple(a.input_size), steps=a.steps, batch_size=a.batch_size,
                           learning_rate=a.lr, max_minutes=a.minutes, seed=a.seed)
    print(f"training on {len(images)} images from {a.images} (counts {table['count'].min()}..{table['count'].max()})")
    model, out = _train_into(a.out, "train counting CNN",
                             lambda run: train_counting(images, table["count"], cfg, names=list(table.name), run=run),
                             extra={"images": str(a.images.resolve())})
    print(f"saved {out}: {model.info['steps_done']} steps in {model.info['train_seconds']:.0f}s, "
          f"train MAE {model.info['train_mae']:.2f}")
    return 0


def _add_count(sub):
    p = sub.add_parser("count", help="count cells per image into a CSV (image,count)")
    p.add_argument("images", type=Path, help="folder of images (.tif/.png, 8/16-bit)")
    p.add_argument("--out", required=True, type=Path, help="CSV to write")
    p.add_argument("--model", type=Path, default=None,
                   help="counting or U-Net model folder (default: classical instances)")
    p.add_argument("--preset", default=None, help="classical parameter preset when no model is given")
    p.add_argument("--nucleus-diameter", type=float, default=None, metavar="PX",
                   help="typical nucleus diameter in these images (instance counting only)")
    p.set_defaults(func=cmd_count)


def cmd_count(a) -> int:
    from .core.segmentation.run import count_folder

    table = count_folder(a.images, a.model, preset=a.preset, object_diameter_px=a.nucleus_diameter, progress=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(f".{a.out.name}.tmp")
    table[["image", "count"]].to_csv(tmp, index=False)
    os.replace(tmp, a.out)
    print(f"{len(table)} images counted ({table['method'].iloc[0]}): {a.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cellscape`` console script."""
    parser = argparse.ArgumentParser(prog="cellscape", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_validate(sub)
    _add_ingest(sub)
    _add_import(sub)
    _add_train(sub)
    _add_report(sub)
    _add_pipeline(sub)
    _add_simulate_cells(sub)
    _add_train_segmentation(sub)
    _add_segment(sub)
    _add_train_counting(sub)
    _add_count(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CellscapeError, ValueError) as e:  # bad input or arguments: a message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
