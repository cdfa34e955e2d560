"""The ``cellscape`` command line: the same library functions the Dagster assets call.

Why one module: every subcommand is a parser function and a command function of a few lines
over the library, and the conventions they share (flags made from the config models, bad input
reported as exit code 2) are easiest to keep alike when the whole command line reads in one file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
import typing
from pathlib import Path

from .cli_export import add_export_commands
from .cli_store import add_store_commands, open_store
from .core.errors import CellscapeError

# ----------------------------------------------------------------------------- flags from the config models
_HELP = argparse.ArgumentDefaultsHelpFormatter

#: CPU time per training step on 2 cores, measured on the idle box: a U-Net step of 4 random 256² crops
#: 0.97 s plus 0.02 s of augmentation, and the evaluations on held-out images and the threshold
#: tuning add about 15 %; 4000 counting steps took 8 min.  Shown in the help of --steps / --minutes.
UNET_CPU_MINUTES_PER_STEP = 1.15 / 60
COUNT_CPU_MINUTES_PER_STEP = 8 / 4000


def _unwrap_optional(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def add_config_arguments(
    parser: argparse.ArgumentParser,
    model,
    exclude: tuple[str, ...] = (),
    aliases: dict[str, tuple[str, ...]] | None = None,
    metavars: dict[str, tuple[str, ...]] | None = None,
    notes: dict[str, str] | None = None,
) -> None:
    """One ``--kebab-name`` flag per field of the library config ``model``.

    The flag's type, choices (``Literal``), ``nargs`` (tuples) or ``--x/--no-x`` (bool) come
    from the field's annotation and its help from the field's description, with the default
    shown.  A flag not given stays out of the namespace (``argparse.SUPPRESS``), so that
    :func:`config_from_args` passes only what the user typed and a ``--preset`` fills the rest.
    ``aliases`` keeps older flag names working; ``notes`` adds command-line-only help.
    """
    aliases, metavars, notes = aliases or {}, metavars or {}, notes or {}
    presets = getattr(model, "PRESETS", None) or {}
    preset_keys = {k for values in presets.values() for k in values}
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        ann = _unwrap_optional(info.annotation)
        origin, args = typing.get_origin(ann), typing.get_args(ann)
        kw: dict = {"dest": name, "default": argparse.SUPPRESS}
        if origin is typing.Literal:
            kw.update(choices=list(args), type=type(args[0]))
        elif ann is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin is tuple:
            kw.update(type=args[0], nargs=len(args) if Ellipsis not in args else "+")
        elif ann in (int, float, str, Path):
            kw["type"] = ann
        else:
            raise TypeError(f"{model.__name__}.{name}: no command-line flag for {info.annotation}; exclude it")
        if name in metavars:
            kw["metavar"] = metavars[name]
        if info.is_required():
            kw["required"] = True
            shown = ""
        else:
            default = info.get_default(call_default_factory=True)
            if isinstance(default, tuple):
                default = " ".join(map(str, default))
            shown = f" (default: {default}{'; the preset may set it' if name in preset_keys else ''})"
        text = (info.description or "") + shown + (f" {notes[name]}" if name in notes else "")
        kw["help"] = text.replace("%", "%%")
        parser.add_argument(f"--{name.replace('_', '-')}", *aliases.get(name, ()), **kw)


def config_from_args(model, args: argparse.Namespace, **fixed):
    """The library config ``model`` from the flags given (see :func:`add_config_arguments`) and ``fixed``."""
    given = {k: getattr(args, k) for k in model.model_fields if hasattr(args, k)}
    return model(**{**given, **fixed})


def _add_simulate(sub):
    from .core.imaging.config import SimulatePlatesConfig

    p = sub.add_parser("simulate-plates", help="write simulated OpenCell-like plates", formatter_class=_HELP)
    p.add_argument("--out", required=True, type=Path, help="folder that receives the plate folders")
    add_config_arguments(p, SimulatePlatesConfig)
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(a) -> int:
    from .core.imaging.config import SimulatePlatesConfig
    from .core.imaging.simulator import simulate_plates

    c = config_from_args(SimulatePlatesConfig, a)
    paths = simulate_plates(
        a.out, n_plates=c.plates, seed=c.seed, proteins=c.proteins, wells=c.wells,
        fields_per_well=c.fields_per_well, field_size=c.field_size, defects=c.defects,
        defect_rate=c.defect_rate, plate_prefix=c.prefix, progress=True,
    )
    for p in paths:
        print(p)
    return 0


def _add_validate(sub):
    from .core.qc.config import PlateQCConfig

    p = sub.add_parser("validate", help="run the metadata, provenance, file and image suites on plate folders "
                                        "(read-only)", formatter_class=_HELP)
    p.add_argument("plates", nargs="+", type=Path, help="plate folders, or OME-Zarr HCS plates (PLATE.ome.zarr)")
    p.add_argument("--instruments", type=Path, default=None, help="instrument registry YAML")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    add_config_arguments(p, PlateQCConfig)
    p.set_defaults(func=cmd_validate)


def cmd_validate(a) -> int:
    from .core.qc.config import PlateQCConfig
    from .core.qc.instruments import load_instrument_registry
    from .core.store.hcs_source import validate_plate_source

    registry = load_instrument_registry(a.instruments)
    qc = config_from_args(PlateQCConfig, a)
    ok = True
    reports = []
    for d in a.plates:
        r = validate_plate_source(d, registry=registry, qc=qc)[0]
        ok &= r.success
        reports.append(r)
        if not a.json:
            print(r.to_text())
    if a.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2, default=str))
    return 0 if ok else 1


def _add_ingest(sub):
    from .core.qc.config import PlateQCConfig
    from .core.store.config import IngestParams

    p = sub.add_parser("ingest", help="validate plates and write their frames to a frame store", formatter_class=_HELP)
    p.add_argument("plates", nargs="+", type=Path,
                   help="plate folders, or OME-Zarr HCS plates (PLATE.ome.zarr, as export-hcs writes them)")
    p.add_argument("--store", required=True, help="store root: a path, file:// or memory:// URL, or a kvstore JSON spec")
    add_config_arguments(p, IngestParams)
    add_config_arguments(p, PlateQCConfig, exclude=("nucleus_diameter_um",),
                         notes={"debris_nuclei": "(Nucleus size: --nucleus-diameter-um.)"})
    p.add_argument("--instruments", type=Path, default=None, help="instrument registry YAML (default: built-in)")
    p.add_argument("--no-catalog", action="store_true", help="do not rebuild the catalog afterwards")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes over fields (default: one per core, at most one per 8 fields); "
                        "the frames do not depend on it")
    p.set_defaults(func=cmd_ingest)


def cmd_ingest(a) -> int:
    from tqdm import tqdm

    from .core.errors import ValidationFailed
    from .core.qc.config import PlateQCConfig
    from .core.qc.instruments import load_instrument_registry
    from .core.store.config import IngestParams
    from .core.store.dvc import dataset_pin, pinned_md5
    from .core.store.ingest import ingest_plate

    params = config_from_args(IngestParams, a)
    qc = config_from_args(PlateQCConfig, a, nucleus_diameter_um=params.nucleus_diameter_um)
    store = open_store(a.store)
    registry = load_instrument_registry(a.instruments)
    failed = ingested = 0
    for d in a.plates:
        bars = {}

        def progress(step, i, n, d=d, bars=bars):
            if step not in bars:
                bars[step] = tqdm(total=n, desc=f"{d.name} {step}", unit="field", leave=False)
            bars[step].update(i - bars[step].n)

        # the md5 of the pin that holds this plate as it is on disk (its own repository)
        md5, pin = pinned_md5(d)
        if md5 is None:
            print(f"{d.name}: dataset md5 not recorded: {pin}", file=sys.stderr)
        try:
            res = ingest_plate(d, store, params, provenance={"dataset_md5": md5, "pin": pin}, registry=registry,
                               progress=progress, qc=qc, workers=a.workers)
        except ValidationFailed as e:
            failed += 1
            print(f"REFUSED {e}", file=sys.stderr)
            continue
        finally:
            for b in bars.values():
                b.close()
        ingested += 1
        print(f"{res.plate_id}: {res.n_fields} fields, {res.n_nuclei} nuclei, {res.n_frames} frames in {res.seconds:.1f}s")
        if res.excluded:
            print(f"WARNING {res.plate_id}: {len(res.excluded)} field(s) excluded for image defects:", file=sys.stderr)
            for x in res.excluded:
                print(f"  {res.plate_id} {x['well']} f{x['field_id']:02d} ({', '.join(x['defects'])}): "
                      f"{', '.join(x['files'])}: {'; '.join(x['details'])}", file=sys.stderr)
    if ingested and not a.no_catalog:
        # A conditional update, rebuilt on conflict: concurrent ingests never drop a plate.
        # The catalog records the dataset pin (data.dvc) when it holds every plate given.
        try:
            md5 = dataset_pin(a.plates)[0]
        except CellscapeError:
            md5 = None
        man = store.update_catalog({"dataset_md5": md5})
        print(f"catalog: {man['n_rows']} frames from {man['n_plates']} plates")
    return 1 if failed else 0


def _add_import(sub):
    from .core.store.config import IngestParams
    from .core.store.sources import CYTOSELF_PSEUDO_FIELD_FRAMES

    p = sub.add_parser("import", help="put an image folder or released cytoself arrays into a frame store",
                       formatter_class=_HELP)
    p.add_argument("folder", type=Path)
    p.add_argument("--format", choices=["images", "cytoself"], required=True,
                   help="images: nucleus/protein image pairs (nuclei are detected); cytoself: "
                        "Image_dataNN.npy + Label_dataNN.csv or *_pro/_nuc/_label.npy")
    p.add_argument("--store", required=True)
    p.add_argument("--plate-id", required=True, help="id the frames are stored under")
    p.add_argument("--pixel-size-um", type=float, default=None, help="images only: pixel size of the images")
    p.add_argument("--gene", default="", help="images only: the tagged gene")
    p.add_argument("--ensg-id", default="", help="images only: its Ensembl id")
    p.add_argument("--frames-per-pseudo-field", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="cytoself only: released crops have no plate wells, so each protein's gene is its well; "
                        "a frame's field is its released FOV_id, and frames without one (e.g. *_label.npy with "
                        "3 columns) are grouped into pseudo-fields of N consecutive frames of the same protein, "
                        f"in file order, so that field-exclusive splits still hold out whole groups "
                        f"(default: {CYTOSELF_PSEUDO_FIELD_FRAMES})")
    add_config_arguments(p, IngestParams, notes={k: "(images only)" for k in IngestParams.model_fields})
    p.set_defaults(func=cmd_import)


def cmd_import(a) -> int:
    from .core.store.config import IngestParams
    from .core.store.ingest import import_cytoself, ingest_image_folder

    params = config_from_args(IngestParams, a)
    store = open_store(a.store)
    if a.format == "cytoself":
        given = sorted(params.model_fields_set)
        if given:
            raise CellscapeError(f"--format cytoself takes already cropped frames; {given} would be ignored",
                                 path=a.folder, field=given[0])
        res = import_cytoself(a.folder, store, a.plate_id, frames_per_pseudo_field=getattr(a, "frames_per_pseudo_field", None))
        grouping = res.manifest["provenance"]["field_grouping"]
        print(f"{res.plate_id}: wells are genes; {grouping['frames_with_fov_id']} frames grouped by FOV_id, "
              f"{grouping['frames_in_pseudo_fields']} in pseudo-fields of {grouping['frames_per_pseudo_field']} "
              f"consecutive frames per protein ({res.n_fields} fields)")
    else:
        if hasattr(a, "frames_per_pseudo_field"):
            raise CellscapeError("--frames-per-pseudo-field is for --format cytoself", path=a.folder,
                                 field="frames_per_pseudo_field")
        if a.pixel_size_um is None:
            raise CellscapeError("--pixel-size-um is required for --format images", path=a.folder, field="pixel_size_um")
        res = ingest_image_folder(a.folder, store, a.plate_id, a.pixel_size_um, params, a.gene, a.ensg_id)
    print(f"{res.plate_id}: {res.n_frames} frames from {a.folder} in {res.seconds:.1f}s")
    return 0


def _add_train(sub):

    p = sub.add_parser("train", help="train the localization VQ-VAE on the frames of a store", formatter_class=_HELP)
    p.add_argument("--frames", required=True, help="frame store (path, URL or kvstore JSON)")
    p.add_argument("--out", required=True, type=Path, help="model folder: checkpoints/, metrics.json, history.csv, figures/")
    _add_training_arguments(p)
    p.set_defaults(func=cmd_train)


def _add_training_arguments(p) -> None:
    """The flags ``train`` and ``train-distributed`` share: TrainConfig's fields, the split, resume, pins."""
    from .core.localization.config import TrainConfig

    add_config_arguments(p, TrainConfig, exclude=("model",))
    p.add_argument("--split-by", choices=["field", "protein"], default="field",
                   help="when the store holds no splits table: exclusive unit of the split made here")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds checkpoints")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the store versions read (pins keep them through `cellscape gc`; the DVC "
                        "stages rebuild their store and pass this, so a stage never writes into its input)")


def _report_training(res, store, splits, out: Path, seed: int) -> None:
    """Save the training figures and print the validation metrics and where the model is."""
    from .core.localization.training import save_training_figures

    figs = save_training_figures(res, store, splits, out.name, seed=seed)
    fm = res.final_metrics
    print(" ".join(f"{k}={fm[k]:.4g}" for k in sorted(fm) if k.startswith("valid_") or k == "frames_per_second"))
    print(f"model: {out}  (model.json, metrics.json, history.csv, checkpoints/, figures: "
          f"{', '.join(p.name for p in figs.values())})")


def cmd_train(a) -> int:
    from .core.localization.config import TrainConfig
    from .core.localization.training import fit
    from .core.ml.devices import describe_devices
    from .core.ml.loop import ProgressBar

    cfg = config_from_args(TrainConfig, a)
    store = open_store(a.frames)
    splits, version = store_splits(store, a.split_by, cfg.seed)
    provenance = training_lineage(store, splits, version, a.out, pin=not a.no_pin)
    print(f"devices: {describe_devices()}")
    with ProgressBar("training") as bar:
        res = fit(store, splits, cfg, a.out, provenance=provenance, resume=not a.no_resume, log=bar.write, progress=bar)
    _report_training(res, store, splits, a.out, cfg.seed)
    return 0


def training_lineage(store, splits, version: str | None, out: Path, pin: bool = True) -> dict:
    """The provenance a model trained on ``splits`` records, and the store pin that keeps what it read.

    The model records the exact versions it read -- the splits table's store version (None for a
    split made here), every plate version the rows name -- and the DVC md5 those plate versions
    recorded at ingest (:func:`~assets_pkg.core.store.lineage.rows_lineage`), not the md5 of
    whatever repository surrounds the working directory.  With ``pin`` the versions are pinned
    in the store under ``cli-model-<hash of the model folder>``, so ``cellscape gc`` keeps them.
    """
    import hashlib

    from .core.store.lineage import lineage_refs, rows_lineage

    stored = splits.attrs.get("store_version")
    prov = {**rows_lineage(store, splits), "split_version": version, "splits_store_version": stored}
    if pin:
        tag = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:12]
        store.pin(f"cli-model-{tag}", lineage_refs(prov["plates"], {"splits": stored} if stored else {}),
                  note=str(Path(out).resolve()))
    return prov


def store_splits(store, split_by: str, seed: int):
    """The store's splits table, or -- only when none has been written -- one made here.

    ``cellscape train`` and ``cellscape report`` read the splits the ``dataset_splits`` asset
    wrote (refused when they fail :func:`~assets_pkg.core.store.splits.check_disjoint` under
    the config recorded with them).  When the store holds no splits table (:class:`~assets_pkg.core.errors.TableNotWritten`)
    a ``split_by``-exclusive split with ``seed`` and the default fractions is made from the
    catalog (or from the plates' tables when no catalog was written either), checked with
    :func:`~assets_pkg.core.store.splits.check_disjoint` and used without being saved; stderr
    says so.  Any other store error (a checksum that differs, a missing table file) propagates.

    Returns
    -------
    (pandas.DataFrame, str or None)
        The splits and their ``split_version``.

    Raises
    ------
    StoreError
        The store is damaged or unreadable.
    CellscapeError
        The split made here fails its check (e.g. an empty split).
    """
    from .core.errors import TableNotWritten
    from .core.store.config import SplitConfig
    from .core.store.splits import check_disjoint, make_splits, split_version

    try:
        splits, manifest = store.read_dataset("splits")
    except TableNotWritten:
        pass
    else:
        prov = manifest.get("provenance", {})
        version = prov.get("split_version")
        problems = check_disjoint(splits, SplitConfig(**prov["config"])) if "config" in prov else []
        if problems:
            raise CellscapeError(f"the store's splits table (version {version}) failed its check: {'; '.join(problems)}",
                                 path=store.url, field="splits")
        print(f"splits: the store's splits table (version {version}, stored as {manifest['version']})")
        splits.attrs["store_version"] = manifest["version"]
        return splits, version
    try:
        catalog, source = store.read_catalog(), "the store's catalog"
    except TableNotWritten:
        catalog, source = store.catalog(), "the plates' tables (the store holds no catalog either)"
    sc = SplitConfig(exclusive_by=split_by, seed=seed)
    splits = make_splits(catalog, sc)
    problems = check_disjoint(splits, sc)
    if problems:
        raise CellscapeError(f"the store holds no splits table and the split made here is unusable: {'; '.join(problems)}",
                             path=store.url, field="splits")
    version = split_version(splits, sc)
    print(f"splits: the store holds no splits table; made one here from {source}, {split_by}-exclusive, "
          f"fractions {sc.train:g}/{sc.valid:g}/{sc.test:g}, seed {seed} (version {version}); not saved",
          file=sys.stderr)
    return splits, version


def _add_train_distributed(sub):

    p = sub.add_parser(
        "train-distributed", formatter_class=_HELP,
        help="train the VQ-VAE data-parallel over several processes (run once per process, same flags)",
        description="Data-parallel VQ-VAE training over several processes (jax.distributed): start this "
                    "command once per process with the same flags and its own --process-id. Each process reads "
                    "its rows of every batch; process 0 alone writes --out (checkpoints, model, figures).")
    p.add_argument("--coordinator", required=True, metavar="HOST:PORT",
                   help="address of process 0's coordinator, the same for every process (e.g. 127.0.0.1:12355)")
    p.add_argument("--num-processes", required=True, type=int, help="processes in the run")
    p.add_argument("--process-id", required=True, type=int, help="this process, 0 .. num-processes - 1")
    p.add_argument("--frames", required=True, help="frame store (path, URL or kvstore JSON), readable by every process")
    p.add_argument("--out", required=True, type=Path, help="model folder, written by process 0 only")
    _add_training_arguments(p)
    p.add_argument("--log-every", type=int, default=0, help="print the mean step metrics every this many steps")
    p.set_defaults(func=cmd_train_distributed)


def cmd_train_distributed(a) -> int:
    from .core.ml import distributed

    distributed.initialize(a.coordinator, a.num_processes, a.process_id)  # before any JAX computation

    from .core.localization.config import TrainConfig
    from .core.localization.training import fit
    from .core.ml.devices import describe_devices
    from .core.ml.loop import ProgressBar

    primary = distributed.is_primary()
    say = print if primary else (lambda *_: None)
    cfg = config_from_args(TrainConfig, a)
    store = open_store(a.frames)
    splits, version = store_splits(store, a.split_by, cfg.seed)
    say(f"devices: {describe_devices()}")
    provenance = training_lineage(store, splits, version, a.out, pin=primary and not a.no_pin)
    if primary:
        with ProgressBar("training") as bar:
            res = fit(store, splits, cfg, a.out, provenance=provenance, resume=not a.no_resume, log=bar.write,
                      progress=bar, log_every=a.log_every)
    else:
        res = fit(store, splits, cfg, a.out, provenance=provenance, resume=not a.no_resume, log_every=a.log_every)
    if not primary:
        return 0
    _report_training(res, store, splits, a.out, cfg.seed)
    return 0


def _add_report(sub):
    from .core.localization.config import AtlasConfig

    p = sub.add_parser("report", help="localization atlas of a trained model: spectra, clusters, UMAP, and each "
                                      "model's own scores on the test frames beside a classical-feature baseline "
                                      "(--no-baseline skips it)", formatter_class=_HELP)
    p.add_argument("--checkpoint", required=True, type=Path, help="model folder written by cellscape train")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=DIR",
                   help="another model to score side by side (e.g. ablation=models/no_head); repeatable")
    p.add_argument("--frames", required=True, help="frame store")
    p.add_argument("--out", required=True, type=Path)
    add_config_arguments(p, AtlasConfig)
    p.add_argument("--split-by", choices=["field", "protein"], default="field",
                   help="when the store holds no splits table: exclusive unit of the split made here (as for train)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the store versions read (pins keep them through `cellscape gc`; the DVC "
                        "stages rebuild their store and pass this, so a stage never writes into its input)")
    p.set_defaults(func=cmd_report)


def cmd_report(a) -> int:
    import hashlib

    from .core.localization.atlas import build_report
    from .core.localization.config import AtlasConfig
    from .core.ml.model_folder import read_record
    from .core.store.lineage import lineage_refs, rows_lineage

    cfg = config_from_args(AtlasConfig, a)
    store = open_store(a.frames)
    models = {a.checkpoint.name or "model": a.checkpoint}
    for item in a.compare:
        name, _, path = item.partition("=")
        if not path:
            raise CellscapeError(f"--compare takes NAME=DIR, got {item!r}", field="compare")
        models[name] = Path(path)
    # the frames the model's own split named, read at the versions it trained on
    record = read_record(a.checkpoint) if (a.checkpoint / "model.json").is_file() else {}
    trained = record.get("provenance", {}).get("splits_store_version")
    if trained:
        splits = store.read_dataset_table("splits", version=trained)
        print(f"splits: the split {a.checkpoint} was trained on (stored as {trained})")
    else:
        splits, _ = store_splits(store, a.split_by, cfg.seed)
    lineage = rows_lineage(store, splits)
    if not a.no_pin:
        tag = hashlib.sha256(str(a.out.resolve()).encode()).hexdigest()[:12]
        store.pin(f"cli-report-{tag}", lineage_refs(lineage["plates"], {"splits": trained} if trained else {}),
                  note=str(a.out.resolve()))
    table, paths = build_report(models, store, splits, a.out, cfg,
                                provenance={**lineage, "splits_store_version": trained})
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    print(f"report: {a.out} (scores.json with per-seed values, scores.md, *_frames/_spectra/_knn/_predictions.parquet, "
          f"*_matrices.npz, figures/)")
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
    from .core.imaging.config import SimulateCellsConfig

    p = sub.add_parser("simulate-cells", help="write SIMCEP-like cell images with exact masks (BBBC005 naming)",
                       formatter_class=_HELP)
    p.add_argument("--out", required=True, type=Path, help="folder for the images (masks go to OUT/masks)")
    add_config_arguments(p, SimulateCellsConfig, metavars={"size": ("HEIGHT", "WIDTH")})
    p.set_defaults(func=cmd_simulate_cells)


def cmd_simulate_cells(a) -> int:
    from .core.imaging.cellsim import simulate_cells
    from .core.imaging.config import SimulateCellsConfig

    c = config_from_args(SimulateCellsConfig, a)
    table = simulate_cells(a.out, c.images, seed=c.seed, size=c.size, counts=c.count,
                           blur_levels=list(c.blur), overwrite=c.overwrite, progress=True)
    print(f"{len(table)} images in {a.out} (masks in {Path(a.out) / 'masks'}), "
          f"{int(table['count'].sum()) // 2} cells per stain")
    return 0


def _add_train_segmentation(sub):
    from .core.segmentation.config import SegTrainConfig

    p = sub.add_parser("train-segmentation", help="train the nucleus U-Net on images and instance masks",
                       formatter_class=_HELP)
    p.add_argument("--images", required=True, type=Path, help="folder of images (.tif/.png, 8/16-bit)")
    p.add_argument("--masks", required=True, type=Path,
                   help="masks paired by file stem: label TIFFs, or BBBC039-style PNGs (channel 0, 0..3)")
    p.add_argument("--out", required=True, type=Path, help="model folder to write (replaced atomically)")
    p.add_argument("--valid-images", type=Path, default=None, help="held-out images to tune the thresholds on")
    p.add_argument("--valid-masks", type=Path, default=None, help="their masks, paired by stem")
    cpu = SegTrainConfig().steps * UNET_CPU_MINUTES_PER_STEP
    add_config_arguments(
        p, SegTrainConfig, aliases={"base_width": ("--width",), "learning_rate": ("--lr",), "max_minutes": ("--minutes",)},
        notes={"steps": f"On 2 CPU cores the default {SegTrainConfig().steps} steps of 256² crops, with the "
                        f"evaluations on held-out images, take about {cpu:.0f} min (early stopping may end "
                        f"sooner); a GPU takes minutes.",
               "max_minutes": f"Caps the training time: the defaults run about {cpu:.0f} min on 2 CPU cores."})
    p.set_defaults(func=cmd_train_segmentation)


def cmd_train_segmentation(a) -> int:
    from .core.segmentation.config import SegTrainConfig
    from .core.segmentation.run import training_pairs
    from .core.segmentation.training import train_segmentation

    cfg = config_from_args(SegTrainConfig, a)
    names, images, labels = training_pairs(a.images, a.masks)
    valid = {}
    if a.valid_images is not None:
        if a.valid_masks is None:
            raise ValueError("--valid-images needs --valid-masks")
        _, vi, vl = training_pairs(a.valid_images, a.valid_masks)
        valid = {"valid_images": vi, "valid_labels": vl}
    print(f"training on {len(images)} images from {a.images}")
    model, out = _train_into(a.out, "train U-Net",
                             lambda run: train_segmentation(images, labels, cfg, names=names, run=run, **valid),
                             extra={"images": str(a.images.resolve()), "masks": str(a.masks.resolve())})
    t = model.info["tuning"]
    print(f"saved {out}: {model.info['steps_done']} steps in {model.info['train_seconds']:.0f}s; thresholds "
          f"{t['threshold']}/{t['marker_threshold']}, min area {t['min_area']} (F1@0.5 {t['f1']:.3f}, count error "
          f"{t['count_error']:.1f} per image on {t['on']})")
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
    from .core.segmentation.config import SegmentRunConfig

    p = sub.add_parser("segment", help="write one uint16 instance-label TIFF per image (<stem>.tif)",
                       formatter_class=_HELP)
    p.add_argument("images", type=Path, help="folder of images (.tif/.png, 8/16-bit)")
    p.add_argument("--out", required=True, type=Path, help="folder for the label images")
    add_config_arguments(p, SegmentRunConfig, aliases={"classical_preset": ("--preset",)},
                         metavars={"nucleus_diameter": "PX"})
    p.set_defaults(func=cmd_segment)


def cmd_segment(a) -> int:
    from .core.segmentation.config import SegmentRunConfig
    from .core.segmentation.run import segment_folder

    c = config_from_args(SegmentRunConfig, a)
    table = segment_folder(a.images, a.out, c.model, preset=c.classical_preset, object_diameter_px=c.nucleus_diameter,
                           progress=True)
    print(f"{len(table)} label images in {a.out} ({table['method'].iloc[0]}), "
          f"{int(table['objects'].sum())} objects, {len(table) / table['seconds'].sum():.2f} images/s")
    return 0


def _add_train_counting(sub):
    from .core.segmentation.config import CountTrainConfig

    p = sub.add_parser("train-counting", help="train the counting CNN on BBBC005-style names (_C<count>_)",
                       formatter_class=_HELP)
    p.add_argument("--images", required=True, type=Path, help="folder of images named <well>_C<count>_F<blur>_...")
    p.add_argument("--out", required=True, type=Path, help="model folder to write (replaced atomically)")
    cpu = CountTrainConfig().steps * COUNT_CPU_MINUTES_PER_STEP
    add_config_arguments(
        p, CountTrainConfig,
        aliases={"input_shape": ("--input-size",), "learning_rate": ("--lr",), "max_minutes": ("--minutes",)},
        metavars={"input_shape": ("HEIGHT", "WIDTH")},
        notes={"steps": f"On 2 CPU cores the default {CountTrainConfig().steps} steps take about {cpu:.0f} min "
                        "(README: 4000 steps took 8 min).",
               "max_minutes": f"Caps the training time: the defaults run about {cpu:.0f} min on 2 CPU cores."})
    p.set_defaults(func=cmd_train_counting)


def cmd_train_counting(a) -> int:
    from .core.imaging.io import read_image as load_image
    from .core.segmentation.config import CountTrainConfig
    from .core.segmentation.datasets import bbbc005_table
    from .core.segmentation.training import train_counting

    cfg = config_from_args(CountTrainConfig, a)
    table = bbbc005_table(a.images)
    images = [load_image(p) for p in table.path]
    print(f"training on {len(images)} images from {a.images} (counts {table['count'].min()}..{table['count'].max()})")
    model, out = _train_into(a.out, "train counting CNN",
                             lambda run: train_counting(images, table["count"], cfg, names=list(table.name), run=run),
                             extra={"images": str(a.images.resolve())})
    print(f"saved {out}: {model.info['steps_done']} steps in {model.info['train_seconds']:.0f}s, "
          f"train MAE {model.info['train_mae']:.2f}")
    return 0


def _add_count(sub):
    from .core.segmentation.config import CountRunConfig

    p = sub.add_parser("count", help="count cells per image into a CSV (image,count)", formatter_class=_HELP)
    p.add_argument("images", type=Path, help="folder of images (.tif/.png, 8/16-bit)")
    p.add_argument("--out", required=True, type=Path, help="CSV to write")
    add_config_arguments(p, CountRunConfig, aliases={"classical_preset": ("--preset",)},
                         metavars={"nucleus_diameter": "PX"}, notes={"nucleus_diameter": "(instance counting only)"})
    p.set_defaults(func=cmd_count)


def cmd_count(a) -> int:
    from .core.segmentation.config import CountRunConfig
    from .core.segmentation.run import count_folder

    c = config_from_args(CountRunConfig, a)
    table = count_folder(a.images, c.model, preset=c.classical_preset, object_diameter_px=c.nucleus_diameter,
                         progress=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(f".{a.out.name}.tmp")
    table[["image", "count"]].to_csv(tmp, index=False)
    os.replace(tmp, a.out)
    print(f"{len(table)} images counted ({table['method'].iloc[0]}): {a.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``cellscape`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="cellscape", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_validate(sub)
    _add_ingest(sub)
    _add_import(sub)
    _add_train(sub)
    _add_train_distributed(sub)
    _add_report(sub)
    _add_pipeline(sub)
    _add_simulate_cells(sub)
    _add_train_segmentation(sub)
    _add_segment(sub)
    _add_train_counting(sub)
    _add_count(sub)
    add_store_commands(sub)
    add_export_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cellscape`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CellscapeError, ValueError) as e:  # bad input or arguments: a message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
