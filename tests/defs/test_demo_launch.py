"""The demo's runs carry their code location: created from the location workspace.yaml loads,
they are listed on their job's page and placed on the Overview timeline, as launched runs are."""

import shutil
from pathlib import Path

import dagster as dg
from dagster_graphql.test.utils import execute_dagster_graphql

from assets_pkg.core.imaging.simulator import simulate_plates
from assets_pkg.pipeline import project_workspace, workspace_launcher

REPO = Path(__file__).resolve().parents[2]

# what the job page asks (its runs) and what the Overview timeline groups runs by
JOB_RUNS = """
query($loc: String!, $repo: String!, $job: String!) {
  pipelineOrError(params: {repositoryLocationName: $loc, repositoryName: $repo, pipelineName: $job}) {
    __typename
    ... on Pipeline { runs { runId status repositoryOrigin { repositoryLocationName repositoryName } } }
  }
}"""


def test_a_demo_launch_records_the_code_location_and_lists_the_run_for_its_job(tmp_path, monkeypatch):
    root = tmp_path / "project"
    simulate_plates(root / "data" / "plates", n_plates=1, seed=11, wells=2, fields_per_well=1, field_size=256)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the instance's storage follows $DAGSTER_HOME
    monkeypatch.setenv("CELLSCAPE_ROOT", str(root))
    assert project_workspace(root) == REPO / "workspace.yaml"  # no workspace.yaml in root: the checkout's
    with dg.DagsterInstance.get() as instance, workspace_launcher(instance, project_workspace(root)) as launcher:
        assert Path(instance.root_directory) == home
        instance.add_dynamic_partitions("plates", ["plate01"])
        res = launcher.launch("ingest_plate_job", {"ops": {}}, partition_key="plate01")
        assert res.success
        assert res.asset_materializations_for_node("plate_frames")[0].partition == "plate01"
        run = instance.get_run_by_id(res.run_id)
        origin = run.remote_job_origin
        assert origin is not None and origin.job_name == "ingest_plate_job"
        assert origin.location_name == launcher.location.name == "assets_pkg.definitions"
        assert run.job_code_origin is not None and run.tags["dagster/partition"] == "plate01"
        assert run.run_config["execution"] == {"config": {"in_process": {}}}
        out = execute_dagster_graphql(launcher.workspace, JOB_RUNS, {
            "loc": launcher.location.name, "repo": launcher.repository.name, "job": "ingest_plate_job"})
        assert not out.errors, out.errors
        runs = out.data["pipelineOrError"]["runs"]
        assert [r["runId"] for r in runs] == [res.run_id] and runs[0]["status"] == "SUCCESS"
        assert runs[0]["repositoryOrigin"] == {"repositoryLocationName": "assets_pkg.definitions",
                                               "repositoryName": launcher.repository.name}


def test_the_demo_launches_through_the_workspace():
    src = (REPO / "assets_pkg" / "pipeline.py").read_text()
    assert "execute_in_process" not in src and "launcher.launch(" in src
