"""Through the UI's own API: start `dagster dev` (webserver + daemon, as a user does), launch
one plate's ingest over GraphQL, wait for success, check the frames exist."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from processes import stop_process_group

from assets_pkg.core.imaging.simulator import simulate_plates
from assets_pkg.core.store.frame_store import FrameStore

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.webserver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        out = json.loads(r.read())
    assert "errors" not in out, out
    return out["data"]


ADD_PARTITION = """
mutation($loc: String!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: {repositoryLocationName: $loc, repositoryName: "__repository__"},
                      partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""

LAUNCH = """
mutation($loc: String!, $job: String!, $pk: String!) {
  launchRun(executionParams: {
      selector: {repositoryLocationName: $loc, repositoryName: "__repository__", jobName: $job},
      runConfigData: "{}",
      executionMetadata: {tags: [{key: "dagster/partition", value: $pk}]}}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""

STATUS = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""

LOCATIONS = """query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus } } } }"""


def test_ingest_one_plate_through_the_webserver(tmp_path):
    root = tmp_path / "project"
    simulate_plates(root / "data" / "plates", n_plates=1, seed=11, wells=2, fields_per_well=1, field_size=384)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    env = dict(os.environ, DAGSTER_HOME=str(home), CELLSCAPE_ROOT=str(root), JAX_PLATFORMS="cpu")
    log = open(tmp_path / "webserver.log", "w")
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.Popen(
        [str(dagster), "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        loc = None
        while time.time() < deadline and loc is None:
            assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            try:
                data = _graphql(port, LOCATIONS)
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["loadStatus"] == "LOADED":
                    loc = entries[0]["name"]
            except OSError:
                pass
            time.sleep(1)
        assert loc, "webserver did not load the code location in time"
        r = _graphql(port, ADD_PARTITION, {"loc": loc, "name": "plates", "key": "plate01"})
        # new_plate_sensor runs in the daemon and may have registered the plate first
        assert r["addDynamicPartition"]["__typename"] in (
            "AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"), r
        r = _graphql(port, LAUNCH, {"loc": loc, "job": "ingest_plate_job", "pk": "plate01"})
        assert r["launchRun"]["__typename"] == "LaunchRunSuccess", r
        run_id = r["launchRun"]["run"]["runId"]
        status = None
        deadline = time.time() + 240
        while time.time() < deadline:
            status = _graphql(port, STATUS, {"id": run_id})["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(2)
        assert status == "SUCCESS", f"run {run_id} ended {status}: " + (tmp_path / "webserver.log").read_text()[-3000:]
    finally:
        stop_process_group(proc)
        log.close()
    store = FrameStore(str(root / "artifacts" / "frames"))
    assert store.plate_ids() == ["plate01"]
    table = store.read_table("plate01")
    assert len(table) > 0
    frames = store.read_frames("plate01", [0, len(table) - 1])
    assert frames.shape == (2, 100, 100, 3)
