"""Run the main job on the project's Dagster instance, as the UI would, from the command line.

Every run is recorded in ``$DAGSTER_HOME`` (default ``<root>/dagster_home``), so the UI shows
the materializations, checks and figures afterwards.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_INFO_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def run_main_job(root: Path, pin: bool = True, train: bool = True) -> int:
    """Register every complete plate under ``data/plates``, ingest each, build the dataset,
    then train the ``tiny`` localization model.

    Returns a process exit code: 0 when every run succeeded.
    """
    os.environ.setdefault("DAGSTER_HOME", str(root / "dagster_home"))
    os.environ.setdefault("CELLSCAPE_ROOT", str(root))
    import dagster as dg

    from .core.plates import list_plates
    from .definitions import defs
    from .defs.plates import plates_partitions
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
        ingest = defs.resolve_job_def("ingest_plate_job")
        failed = []
        for pk in plates:
            res = ingest.execute_in_process(
                instance=instance, partition_key=pk, run_config=_INFO_LOGS, raise_on_error=False
            )
            print(f"[ingest] {pk}: {'ok' if res.success else 'FAILED'} (run {res.run_id})", flush=True)
            if not res.success:
                failed.append(pk)
        dataset = defs.resolve_job_def("dataset_job")
        res = dataset.execute_in_process(
            instance=instance,
            run_config={"ops": {"dataset_version": {"config": {"pin": pin, "push": pin}}}, **_INFO_LOGS},
            raise_on_error=False,
        )
        print(f"[dataset] catalog + splits: {'ok' if res.success else 'FAILED'} (run {res.run_id})", flush=True)
        if res.success and train:
            res = defs.resolve_job_def("train_job").execute_in_process(
                instance=instance,
                run_config={"ops": {"localization_model": {"config": {"preset": "tiny"}}}, **_INFO_LOGS},
                raise_on_error=False,
            )
            print(f"[model] tiny localization model: {'ok' if res.success else 'FAILED'} (run {res.run_id})", flush=True)
            if res.success:
                md = res.asset_materializations_for_node("localization_model")[0].metadata
                print(f"[model] checkpoint and figures: {md['checkpoint_dir'].value}", flush=True)
                res = defs.resolve_job_def("ablation_job").execute_in_process(
                    instance=instance,
                    run_config={"ops": {"localization_model_ablation": {"config": {"preset": "tiny"}}}, **_INFO_LOGS},
                    raise_on_error=False,
                )
                print(f"[model] ablation without the head: {'ok' if res.success else 'FAILED'} (run {res.run_id})", flush=True)
            if res.success:
                res = defs.resolve_job_def("atlas_job").execute_in_process(
                    instance=instance, run_config=_INFO_LOGS, raise_on_error=False)
                print(f"[atlas] embeddings, spectra, clusters, UMAP, report: {'ok' if res.success else 'FAILED'} "
                      f"(run {res.run_id})", flush=True)
                if res.success:
                    md = res.asset_materializations_for_node("localization_report")[0].metadata
                    print(md["scores"].value, flush=True)
                    print(f"[atlas] report, exports and figures: {md['path'].value}", flush=True)
    if failed:
        print(f"plates that failed (see their checks in the UI): {failed}", file=sys.stderr)
    return 0 if res.success and not failed else 1
