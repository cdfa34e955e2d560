"""Run the main job on the project's Dagster instance, as the UI would, from the command line.

Every run is recorded in ``$DAGSTER_HOME`` (default ``<root>/dagster_home``), so the UI shows
the materializations, checks and figures afterwards.  The runs are created from the code
location that ``workspace.yaml`` defines, loaded the way ``dagster dev`` loads it (a code
server), so each run carries its remote origin (code location and repository): the UI lists it
on its job's page and on the Overview timeline, and can re-execute it.  Each run then executes
in this process, in-process executor, so the demo prints its logs and takes the time it did.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

_INFO_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
#: The executor of the demo's runs: every step in the launching process, one after another.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}

class WorkspaceLauncher:
    """Launches the jobs of a loaded code location the way ``dagster job launch`` and the UI's
    launchpad create runs, and executes each run in this process.

    Attributes
    ----------
    workspace : dagster._core.workspace.context.WorkspaceRequestContext
        The loaded workspace (what the webserver's GraphQL API answers from).
    location : CodeLocation
        Its one code location.
    repository : RemoteRepository
        The location's one repository.
    """

    def __init__(self, instance, workspace, location, repository):
        self.instance = instance
        self.workspace = workspace
        self.location = location
        self.repository = repository

    def launch(self, job_name: str, run_config: Mapping | None = None, partition_key: str | None = None):
        """Create a run of ``job_name`` with its remote origin and execute it here.

        Parameters
        ----------
        job_name : str
            A job of the repository.
        run_config : mapping, optional
            Run config; the in-process executor is added unless it names an ``execution``.
        partition_key : str, optional
            Tagged as ``dagster/partition``, as the launchpad does for a partitioned job.

        Returns
        -------
        dagster.JobExecutionResult
            ``success``, ``run_id`` and the events (``asset_materializations_for_node`` ...).
        """
        from dagster._core.execution.api import execute_run
        from dagster._utils.hosted_user_process import recon_job_from_origin

        remote_job = self.repository.get_full_job(job_name)
        config = {**IN_PROCESS, **(run_config or {})}
        tags = {**remote_job.tags, **({"dagster/partition": partition_key} if partition_key else {})}
        plan = self.location.get_execution_plan(remote_job, config, step_keys_to_execute=None, known_state=None,
                                                instance=self.instance).execution_plan_snapshot
        run = self.instance.create_run(
            job_name=job_name, run_id=None, run_config=config, status=None, tags=tags,
            root_run_id=None, parent_run_id=None, step_keys_to_execute=plan.step_keys_to_execute,
            execution_plan_snapshot=plan, job_snapshot=remote_job.job_snapshot,
            parent_job_snapshot=remote_job.parent_job_snapshot, asset_selection=None,
            asset_check_selection=None, resolved_op_selection=remote_job.resolved_op_selection,
            op_selection=None, remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(), asset_graph=self.repository.asset_graph,
        )
        return execute_run(recon_job_from_origin(run.job_code_origin), run, self.instance)


@contextmanager
def workspace_launcher(instance, workspace_file: str | Path) -> Iterator[WorkspaceLauncher]:
    """Load the one code location of ``workspace_file`` (a code server, as ``dagster dev`` starts
    one) and yield a :class:`WorkspaceLauncher` for its jobs; the server stops on exit.

    Parameters
    ----------
    instance : dagster.DagsterInstance
        Where the runs are recorded.
    workspace_file : str or Path
        A ``workspace.yaml`` with exactly one code location holding one repository.

    Raises
    ------
    RuntimeError
        When the workspace does not hold exactly one code location and repository, or the
        location fails to load (the message names the file and the location's error).
    """
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    workspace_file = Path(workspace_file)
    if not workspace_file.is_file():
        raise RuntimeError(f"{workspace_file}: no such workspace file")
    with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(workspace_file)])) as process:
        workspace = process.create_request_context()
        names = list(workspace.code_location_names)
        if len(names) != 1:
            raise RuntimeError(f"{workspace_file}: expected one code location, found {names}")
        error = workspace.get_code_location_error(names[0])
        if error is not None:
            raise RuntimeError(f"{workspace_file}: code location {names[0]!r} failed to load: {error.message}")
        location = workspace.get_code_location(names[0])
        repos = list(location.get_repositories().values())
        if len(repos) != 1:
            raise RuntimeError(f"{workspace_file}: expected one repository in {names[0]!r}, found {len(repos)}")
        yield WorkspaceLauncher(instance, workspace, location, repos[0])


def project_workspace(root: Path) -> Path:
    """``root/workspace.yaml``, else the one beside this package (a checkout's root)."""
    own = root / "workspace.yaml"
    return own if own.is_file() else Path(__file__).resolve().parents[1] / "workspace.yaml"


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
    from .defs.imaging import plates_partitions
    from .defs.metadata import table_frame
    from .defs.resources import CellscapeResource

    cellscape = CellscapeResource(root=str(root))
    plates = [p.name for p in list_plates(cellscape.plates_path())]
    if not plates:
        print(f"no complete plate folder under {cellscape.plates_path()}", file=sys.stderr)
        return 1
    with dg.DagsterInstance.get() as instance, workspace_launcher(instance, project_workspace(root)) as launcher:
        known = set(instance.get_dynamic_partitions(plates_partitions.name))
        new = [p for p in plates if p not in known]
        if new:
            instance.add_dynamic_partitions(plates_partitions.name, new)
        def run(job: str, tag: str, what: str, ops: dict | None = None, partition_key: str | None = None):
            res = launcher.launch(job, {"ops": ops or {}, **_INFO_LOGS}, partition_key=partition_key)
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
                # scored on the held-out frames (valid + test): the demo's test split alone has no
                # localization class shared by two single-localization proteins, so its clustering
                # score and ARI would be undefined
                res = run("atlas_job", "atlas", "embeddings, spectra, clusters, UMAP, report",
                          {"localization_report": {"config": {"score_split": "heldout"}}})
                if res.success:
                    md = res.asset_materializations_for_node("localization_report")[0].metadata
                    print(table_frame(md["scores"]).to_markdown(index=False), flush=True)
                    print(f"[atlas] report, exports and figures: {md['path'].value}", flush=True)
        if segment:
            seg = run("segmentation_job", "segmentation", "cell image sets, U-Net, counting CNN, results",
                      {"cell_image_sets": {"config": {"preset": "tiny"}},
                       "segmentation_model": {"config": {"preset": "tiny"}}, "counting_model": {"config": {"preset": "tiny"}}})
            if seg.success:
                md = seg.asset_materializations_for_node("segmentation_results")[0].metadata
                print(table_frame(md["segmentation_metrics"]).to_markdown(index=False), flush=True)
                print(table_frame(md["count_metrics"]).to_markdown(index=False), flush=True)
                print(f"[segmentation] labels, tables and figures: {md['path'].value}", flush=True)
            res = res if not res.success else seg
    if failed:
        print(f"plates that failed (see their checks in the UI): {failed}", file=sys.stderr)
    return 0 if res.success and not failed else 1
