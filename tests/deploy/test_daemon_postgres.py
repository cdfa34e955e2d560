"""dagster-daemon on the PostgreSQL instance (deploy/dagster-postgres.yaml), as deployed: a
code server of its own for a tiny probe location, the project's real workspace.yaml beside it.

Before the daemon starts, runs are submitted through the QueuedRunCoordinator (as
`dagster job launch` does) and stay QUEUED: four of a job whose op sits in the ``gpu`` pool
(limit 1 from the yaml's default) and four of the same op in a ``wide`` pool set to 4 (the
control: it shows overlapping ops are possible and would be seen).  The probe's every-minute
schedule is started as if the daemon had been down for its last tick.  Then one daemon
session dequeues and launches everything, evaluates the sensors (the probe's and the real
``new_plate_sensor`` on an empty project) and catches up the schedule tick.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster import __version__ as dagster_version
from dagster._cli.job import execute_launch_command
from dagster._cli.workspace.cli_target import get_workspace_from_cli_opts
from dagster._core.scheduler.instigation import ScheduleInstigatorData, TickStatus
from dagster._grpc.client import DagsterGrpcClient
from dagster_shared.cli import WorkspaceOpts
from processes import stop_process_group

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "dagster-postgres.yaml"
PROBE = Path(__file__).with_name("deploy_probe.py")
LOCATION = "deploy_probe"
N_RUNS = 4
HOLD_SECONDS = 3.0
TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}

pytestmark = pytest.mark.timeout(400)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_code_server(port: int, proc: subprocess.Popen, log: Path) -> None:
    client = DagsterGrpcClient(port=port, host="127.0.0.1")
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, f"code server exited:\n{log.read_text()[-3000:]}"
        try:
            client.ping("up")
            return
        except Exception:
            time.sleep(0.5)
    raise AssertionError(f"code server did not answer in time:\n{log.read_text()[-3000:]}")


def _ticks_by_name(instance: dg.DagsterInstance) -> dict[str, list]:
    out = {}
    for state in instance.all_instigator_state():
        out[state.instigator_name] = instance.get_ticks(state.instigator_origin_id, state.selector_id)
    return out


def _intervals(out_dir: Path, pool: str) -> list[tuple[float, float]]:
    recs = [json.loads(p.read_text()) for p in out_dir.glob("*.json")]
    return sorted((r["start"], r["end"]) for r in recs if r["pool"] == pool)


def _overlapping_pairs(iv: list[tuple[float, float]]) -> int:
    return sum(1 for i, (s1, e1) in enumerate(iv) for s2, e2 in iv[i + 1:] if s1 < e2 and s2 < e1)


@pytest.fixture(scope="module")
def deployment(postgres, tmp_path_factory):
    db = postgres.create_database("dagster_daemon")
    tmp = tmp_path_factory.mktemp("deploy")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(CONFIG, home / "dagster.yaml")
    project = tmp / "project"
    (project / "data" / "plates").mkdir(parents=True)
    holds = tmp / "holds"
    holds.mkdir()
    port = _free_port()
    probe_ws = tmp / "probe_workspace.yaml"
    probe_ws.write_text(yaml.safe_dump({"load_from": [
        {"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": LOCATION}}]}))
    pg_env = postgres.env(db)
    env = dict(os.environ, DAGSTER_HOME=str(home), CELLSCAPE_ROOT=str(project), JAX_PLATFORMS="cpu", **pg_env)
    bindir = Path(sys.executable).parent
    t0 = time.time()
    server_log, daemon_log = tmp / "code_server.log", tmp / "daemon.log"
    with pytest.MonkeyPatch.context() as mp, open(server_log, "w") as slog, open(daemon_log, "w") as dlog:
        for k, v in pg_env.items():
            mp.setenv(k, v)
        server = subprocess.Popen(
            [str(bindir / "dagster"), "api", "grpc", "--python-file", str(PROBE), "--host", "127.0.0.1",
             "--port", str(port), "--location-name", LOCATION],
            cwd=tmp, env=env, stdout=slog, stderr=subprocess.STDOUT, start_new_session=True)
        daemon = None
        try:
            _wait_for_code_server(port, server, server_log)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                # the README's deployment step `dagster instance concurrency set gpu 1`: explicit
                # limits (the yaml's default_limit initialises a pool lazily, on the first claim,
                # and concurrent first claims race on PostgreSQL)
                instance.event_log_storage.set_concurrency_slots("gpu", 1)
                # the control pool: room for every run at once
                instance.event_log_storage.set_concurrency_slots("wide", N_RUNS)
                opts = WorkspaceOpts(workspace=[str(probe_ws)])
                submitted = {}
                for job in ("gpu_job", "wide_job"):
                    for _ in range(N_RUNS):
                        op = "gpu_hold" if job == "gpu_job" else "wide_hold"
                        run_config = {"ops": {op: {"config": {"out_dir": str(holds), "hold_seconds": HOLD_SECONDS}}}}
                        run = execute_launch_command(instance=instance, workspace_opts=opts, job_name=job,
                                                     config_json=json.dumps(run_config))
                        submitted[run.run_id] = job
                queued_before = {r.run_id: r.status for r in instance.get_runs()}
                # the schedule was started 90 s ago: the daemon owes it the last minute's tick
                with get_workspace_from_cli_opts(instance, version=dagster_version, workspace_opts=opts) as ws:
                    schedule = (ws.get_code_location(LOCATION).get_repository("__repository__")
                                .get_schedule("every_minute"))
                    state = instance.start_schedule(schedule)
                instance.update_instigator_state(state.with_data(
                    ScheduleInstigatorData(schedule.cron_schedule, start_timestamp=time.time() - 90)))
                t_daemon = time.time()
                daemon = subprocess.Popen(
                    [str(bindir / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml"), "-w", str(probe_ws)],
                    cwd=REPO, env=env, stdout=dlog, stderr=subprocess.STDOUT, start_new_session=True)
                deadline = time.time() + 300
                while True:
                    assert daemon.poll() is None, f"daemon exited:\n{daemon_log.read_text()[-4000:]}"
                    runs = instance.get_runs()
                    by_probe = {r.tags.get("probe"): r for r in runs if r.tags.get("probe")}
                    ticks = _ticks_by_name(instance)
                    done = (all(r.status in TERMINAL for r in runs if r.run_id in submitted)
                            and all(p in by_probe and by_probe[p].status in TERMINAL for p in ("schedule", "sensor"))
                            and ticks.get("new_plate_sensor"))
                    if done:
                        break
                    if time.time() > deadline:
                        raise AssertionError(
                            f"not done in time: {[(r.job_name, r.status) for r in runs]} ticks {list(ticks)}\n"
                            + daemon_log.read_text()[-4000:])
                    time.sleep(2)
                t_done = time.time()
                yield {
                    "instance": instance, "submitted": submitted, "queued_before": queued_before,
                    "runs": {r.run_id: r for r in runs}, "ticks": ticks, "holds": holds,
                    "seconds": {"setup": t_daemon - t0, "daemon": t_done - t_daemon},
                    "daemon_log": daemon_log,
                }
        finally:
            if daemon is not None:
                stop_process_group(daemon)
            stop_process_group(server)
    print(f"\n[deploy] setup {t_daemon - t0:.1f} s, daemon session {t_done - t_daemon:.1f} s")


def test_daemon_dequeues_and_launches_queued_runs(deployment):
    submitted, before, runs = deployment["submitted"], deployment["queued_before"], deployment["runs"]
    assert len(submitted) == 2 * N_RUNS
    assert {before[r] for r in submitted} == {dg.DagsterRunStatus.QUEUED}
    failed = {r: runs[r].status for r in submitted if runs[r].status != dg.DagsterRunStatus.SUCCESS}
    assert not failed, f"{failed}\n" + deployment["daemon_log"].read_text()[-3000:]


def test_gpu_pool_runs_one_op_at_a_time_across_runs(deployment):
    iv = _intervals(deployment["holds"], "gpu")
    assert len(iv) == N_RUNS
    assert _overlapping_pairs(iv) == 0, iv
    info = deployment["instance"].event_log_storage.get_concurrency_info("gpu")
    assert info.slot_count == 1 and not info.claimed_slots


def test_control_pool_with_room_lets_ops_overlap(deployment):
    # the same op and hold in a pool of 4: overlap happens, so the gpu check above can fail
    iv = _intervals(deployment["holds"], "wide")
    assert len(iv) == N_RUNS
    assert _overlapping_pairs(iv) >= 1, iv


def test_sensor_and_schedule_ticks(deployment):
    ticks, runs = deployment["ticks"], deployment["runs"]
    by_probe = {r.tags.get("probe"): r for r in runs.values() if r.tags.get("probe")}
    for name, probe in (("every_minute", "schedule"), ("probe_sensor", "sensor")):
        assert any(t.status == TickStatus.SUCCESS and by_probe[probe].run_id in t.run_ids for t in ticks[name]), \
            (name, ticks[name])
        assert by_probe[probe].status == dg.DagsterRunStatus.SUCCESS
    # the project's own sensor, loaded from workspace.yaml, evaluated against the Postgres instance
    real = ticks["new_plate_sensor"]
    assert real[0].status == TickStatus.SKIPPED and "no new complete plate" in (real[0].skip_reason or ""), real
