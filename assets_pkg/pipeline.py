"""Run the main job on the project's Dagster instance, as the UI would, from the command line.

Every run is recorded in ``$DAGSTER_HOME`` (default ``<root>/dagster_home``), so the UI shows
the materializations, checks and figures afterwards.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_INFO_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def run_main_job(root: Path, pin: bool = True, train: bool = True, segment: bool = True) -> int:
    """Register every complete plate under ``data/plates``, ingest each, build the dataset,
    train the ``tiny`` localization model, its ablation and the atlas, then (``segment``) the
    segmentation branch (simulated cells, the ``tiny`` presets: short CPU trainings).

    Returns a process exit code: 0 when every run succeeded.
    """
    os.environ.setdefault("DAGSTER_HOME", str(root / "dagster_home"))
    os.environ.setdefault("CELLSCAPE_ROOT", str(root))
    import dagster as dg

    from .core.imaging.plates import list_plates
    from .definitions import defs
    from .defs.imaging import plates_partitions
    from .defs.resources import CellscapeResource

    cellscape = CellscapeResource(root=str(root))
    plates = [p.name for p in list_plates(cellscape.plates_path())]
    if not plates:
        print(f"no complete plate folder under {cellscape.plates_path()}", file=sys.stderr)
        return 1
    with dg.DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions(plates_partitions.name))
        new = [p for p in plates if p not in known]
        if new:
            instance.add_dynamic_partitions(plates_partitions.name, new)
        def run(job: str, tag: str, what: str, ops: dict | None = None, **kw):
            res = defs.resolve_job_def(job).execute_in_process(
                instance=instance, run_config={"ops": ops or {}, **_INFO_LOGS}, raise_on_error=False, **kw
            )
            print(f"[{tag}] {what}: {'ok' if res.success else 'FAILED'} (run {res.run_id})", flush=True)
            return res

        failed = [pk for pk in plates if not run("ingest_plate_job", "ingest", pk, partition_key=pk).success]
        res = run("dataset_job", "dataset", "catalog + splits",
                  {"dataset_version": {"config": {"pin": pin, "push": pin}}})
        if res.success and train:
            res = run("train_job", "model", "tiny localization model", {"localization_model": {"config": {"preset": "tiny"}}})
            if res.success:
                md = res.asset_materializations_for_node("localization_model")[0].metadata
                print(f"[model] checkpoint and figures: {md['checkpoint_dir'].value}", flush=True)
                res = run("ablation_job", "model", "ablation without the head",
                          {"localization_model_ablation": {"config": {"preset": "tiny"}}})
            if res.success:
                res = run("atlas_job", "atlas", "embeddings, spectra, clusters, UMAP, report")
                if res.success:
                    md = res.asset_materializations_for_node("localization_report")[0].metadata
                    print(md["scores"].value, flush=True)
                    print(f"[atlas] report, exports and figures: {md['path'].value}", flush=True)
        if segment:
            seg = run("segmentation_job", "segmentation", "cell image sets, U-Net, counting CNN, results",
                      {"cell_image_sets": {"config": {"preset": "tiny"}},
                       "segmentation_model": {"config": {"preset": "tiny"}}, "counting_model": {"config": {"preset": "tiny"}}})
            if seg.success:
                md = seg.asset_materializations_for_node("segmentation_results")[0].metadata
                print(md["segmentation_metrics"].value, flush=True)
                print(md["count_metrics"].value, flush=True)
                print(f"[segmentation] labels, tables and figures: {md['path'].value}", flush=True)
            res = res if not res.success else seg
    if failed:
        print(f"plates that failed (see their checks in the UI): {failed}", file=sys.stderr)
    return 0 if res.success and not failed else 1
