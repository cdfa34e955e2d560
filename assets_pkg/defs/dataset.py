"""Dataset-level assets: the DVC pin, the frame catalog over all plates, and the splits."""


import dagster as dg
import pandas as pd

from ..core.store.config import SplitConfig
from ..core.store.dvc import run_dvc
from ..core.store.splits import (
    check_disjoint,
    make_splits,
    split_summary,
    split_version,
)
from .config import dagster_config
from .plates import plate_frames, plate_images
from .resources import CellscapeResource

DATASET_GROUP = "dataset"


class DatasetVersionConfig(dg.Config):
    """Whether to re-pin and push the plates with DVC (needs a DVC repository at the root)."""

    pin: bool = True
    push: bool = True


@dg.asset(
    group_name=DATASET_GROUP,
    deps=[plate_images],
    pool="dvc",
    kinds={"dvc"},
)
def dataset_version(
    context: dg.AssetExecutionContext, config: DatasetVersionConfig, cellscape: CellscapeResource
) -> dg.MaterializeResult:
    """The DVC md5 that pins data/ (re-pinned and pushed when plates changed)."""
    root = cellscape.root_path()
    if config.pin:
        target = cellscape.path(cellscape.dvc_file).with_suffix("")
        status = run_dvc(["status", "--json", str(cellscape.path(cellscape.dvc_file).relative_to(root))], root)
        changed = status.stdout.strip() not in ("", "{}")
        if changed:
            context.log.info(f"data changed since {cellscape.dvc_file}; re-pinning {target.name}/")
            run_dvc(["add", str(target.relative_to(root))], root)
        if config.push:
            run_dvc(["push"], root)
    md5 = cellscape.dataset_md5()
    if md5 is None:
        raise dg.Failure(f"no {cellscape.dvc_file} at {root}: the dataset is not pinned")
    return dg.MaterializeResult(
        metadata={"dataset_md5": md5, "dvc_file": dg.MetadataValue.path(str(cellscape.path(cellscape.dvc_file)))},
        data_version=dg.DataVersion(md5),
    )


@dg.asset(
    group_name=DATASET_GROUP,
    deps=[plate_frames, dataset_version],
    kinds={"parquet"},
    automation_condition=dg.AutomationCondition.eager(),
)
def frame_catalog(context: dg.AssetExecutionContext, cellscape: CellscapeResource) -> dg.MaterializeResult:
    """Every frame of every ingested plate, one row each, with a dense protein id."""
    store = cellscape.store()
    catalog = store.catalog()
    if len(catalog) == 0:
        raise dg.Failure("the frame store holds no plates yet; ingest a plate first")
    proteins = sorted(catalog["ensg_id"].astype(str).unique())
    catalog["protein_id"] = catalog["ensg_id"].astype(str).map({p: i for i, p in enumerate(proteins)}).astype("int64")
    md5 = cellscape.dataset_md5()
    manifest = store.write_catalog(catalog, {"dataset_md5": md5, "plates": store.plate_ids()})
    per_plate = catalog.groupby("plate_id").agg(frames=("frame_id", "size"), proteins=("ensg_id", "nunique"))
    return dg.MaterializeResult(
        metadata={
            "frames": len(catalog),
            "plates": int(catalog["plate_id"].nunique()),
            "proteins": len(proteins),
            "per_plate": dg.MetadataValue.md(per_plate.reset_index().to_markdown(index=False)),
            "dataset_md5": md5 or "unpinned",
            "catalog_version": manifest.get("version", ""),
        },
        data_version=dg.DataVersion(str(manifest.get("version", ""))),
    )


SplitsConfig = dagster_config(SplitConfig, "SplitsConfig")


@dg.asset(
    group_name=DATASET_GROUP,
    deps=[frame_catalog],
    kinds={"parquet"},
    check_specs=[dg.AssetCheckSpec("splits_disjoint", asset="dataset_splits", blocking=True)],
)
def dataset_splits(
    context: dg.AssetExecutionContext, config: SplitsConfig, cellscape: CellscapeResource
):
    """Train/valid/test assignment of frames, exclusive by field of view or by protein."""
    store = cellscape.store()
    catalog = store.read_catalog()
    sc = config.to_library()
    splits = make_splits(catalog, sc)
    version = split_version(splits, sc)
    problems = check_disjoint(splits, sc.exclusive_by)
    manifest = store.write_dataset_table(
        "splits",
        splits,
        {"split_version": version, "config": sc.model_dump(), "catalog_version": store.read_catalog_manifest().get("version")},
    )
    summary = split_summary(splits)
    yield dg.MaterializeResult(
        metadata={
            "split_version": version,
            "summary": dg.MetadataValue.md(pd.DataFrame(summary).T.reset_index(names="split").to_markdown(index=False)),
            "frames": len(splits),
            "proteins": int(splits["label"].nunique()),
            "store_version": manifest.get("version", ""),
        },
        data_version=dg.DataVersion(version),
        check_results=[
            dg.AssetCheckResult(
                check_name="splits_disjoint",
                passed=not problems,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"problems": "; ".join(problems) or "none"},
            )
        ],
    )
