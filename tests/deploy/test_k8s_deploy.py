"""The Kubernetes deployment: the Helm values for Dagster's chart, the user-code Dockerfile and
the GPU pod settings of the training assets, checked with dagster-k8s's own parser."""

import importlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_k8s import k8s_job_executor
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)

from assets_pkg.core.errors import CellscapeError
from assets_pkg.defs.deploy import EXECUTOR_ENV, GPU_OP_TAGS, GPU_STEP_K8S_CONFIG, executor_from_env

REPO = Path(__file__).resolve().parents[2]
VALUES = REPO / "deploy" / "helm" / "values.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
INSTANCE = REPO / "deploy" / "dagster-postgres.yaml"
TRAINING = ("localization_model", "localization_model_ablation", "segmentation_model", "counting_model")


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def assets_by_name() -> dict:
    from assets_pkg.definitions import defs

    return {key.to_user_string(): a for a in defs.resolve_asset_graph().assets_defs for key in a.keys}


def test_values_deploy_the_user_code_with_postgres_k8s_launcher_and_queue(values):
    (dep,) = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True
    assert dep["codeServerArgs"] == ["-m", "assets_pkg.definitions"] and dep["port"] == 4000
    assert dep["image"]["repository"] and dep["image"]["tag"]
    assert dep["env"]["CELLSCAPE_EXECUTOR"] == "k8s"
    assert dep["includeConfigInLaunchedRuns"]["enabled"] is True
    pg = values["postgresql"]
    assert pg["postgresqlHost"] and pg["postgresqlDatabase"] and pg["postgresqlUsername"]
    assert pg["postgresqlScheme"] == "postgresql+psycopg2"
    assert "postgresqlPassword" not in pg and values["global"]["postgresqlSecretName"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    rc = values["dagsterDaemon"]["runCoordinator"]
    assert rc["enabled"] is True and rc["type"] == "QueuedRunCoordinator"
    assert values["concurrency"]["enabled"] is True


def _instance_concurrency_from_values(values: dict) -> dict:
    """What the chart writes under ``concurrency:`` in dagster.yaml (helpers/instance/_concurrency.tpl)."""
    pools, runs = values["concurrency"]["pools"], values["concurrency"]["runs"]
    out = {"pools": {"default_limit": pools["defaultLimit"], "granularity": pools["granularity"]},
           "runs": {"max_concurrent_runs": runs["maxConcurrentRuns"],
                    "tag_concurrency_limits": runs["tagConcurrencyLimits"]}}
    return out


def test_values_limits_match_the_postgres_instance_and_load(values, tmp_path):
    # the chart's concurrency block is the one of deploy/dagster-postgres.yaml
    mine = yaml.safe_load(INSTANCE.read_text())
    assert _instance_concurrency_from_values(values) == mine["concurrency"]
    qrc = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert {"dequeue_interval_seconds": qrc["dequeueIntervalSeconds"], "dequeue_use_threads": qrc["dequeueUseThreads"],
            "dequeue_num_workers": qrc["dequeueNumWorkers"]} == mine["run_coordinator"]["config"]
    # and Dagster accepts it next to the queued run coordinator, as the chart renders them
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": mine["run_coordinator"]["config"]},
        "concurrency": _instance_concurrency_from_values(values)}))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        cfg = instance.get_concurrency_config()
        assert cfg.pool_config.default_pool_limit == 1
        assert cfg.run_queue_config.max_concurrent_runs == values["concurrency"]["runs"]["maxConcurrentRuns"]


def test_training_assets_carry_the_gpu_k8s_config(assets_by_name):
    for name in TRAINING:
        tags = assets_by_name[name].op.tags
        raw = tags["dagster-k8s/config"]
        assert isinstance(raw, str) and json.loads(raw) == GPU_STEP_K8S_CONFIG, name
        # dagster-k8s's own parser, as the k8s step handler calls it on the step's tags
        cfg = get_user_defined_k8s_config(tags)
        assert cfg.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert cfg.pod_spec_config["node_selector"] == {"nvidia.com/gpu.present": "true"}


def test_the_gpu_step_pod_gets_one_gpu_on_a_gpu_node(assets_by_name):
    cfg = get_user_defined_k8s_config(assets_by_name["segmentation_model"].op.tags)
    job = construct_dagster_k8s_job(DagsterK8sJobConfig(job_image="cellscape-user-code:0.1.0"),
                                    ["dagster", "api", "execute_step"], "probe-step", user_defined_k8s_config=cfg)
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert container.resources.requests["cpu"] == "4"
    assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
    assert pod.tolerations[0].key == "nvidia.com/gpu"


def test_only_the_gpu_pool_lands_on_gpu_nodes(assets_by_name):
    gpu_pool = {n for n, a in assets_by_name.items() if a.op.pool == "gpu"}
    tagged = {n for n, a in assets_by_name.items() if "dagster-k8s/config" in a.op.tags}
    assert gpu_pool == tagged == set(TRAINING)
    assert GPU_OP_TAGS == {"dagster-k8s/config": GPU_STEP_K8S_CONFIG}


def test_executor_follows_the_environment(monkeypatch):
    assert executor_from_env({}) is None
    assert executor_from_env({EXECUTOR_ENV: "default"}) is None
    assert executor_from_env({EXECUTOR_ENV: "k8s"}) is k8s_job_executor
    with pytest.raises(CellscapeError) as e:
        executor_from_env({EXECUTOR_ENV: "celery"})
    assert e.value.field == EXECUTOR_ENV
    import assets_pkg.definitions as definitions

    monkeypatch.setenv(EXECUTOR_ENV, "k8s")
    try:
        k8s = importlib.reload(definitions).defs
        assert k8s.resolve_job_def("train_job").executor_def is k8s_job_executor
    finally:
        monkeypatch.delenv(EXECUTOR_ENV)
        local = importlib.reload(definitions).defs
    assert local.resolve_job_def("train_job").executor_def.name == "multi_or_in_process_executor"


def _dockerfile() -> tuple[dict, list[str]]:
    lines, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        buf += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(buf.strip())
            buf = ""
    instr = {}
    for line in lines:
        op, _, rest = line.partition(" ")
        instr.setdefault(op.upper(), []).append(rest)
    return instr, lines


def test_dockerfile_builds_the_user_code_image():
    instr, _ = _dockerfile()
    assert instr["FROM"] == ["python:3.11-slim"]
    runs = " ".join(instr["RUN"])
    assert "pip install -r requirements.txt" in runs and "--no-deps" in runs
    copied = [shlex.split(c)[:-1] for c in instr["COPY"]]
    for sources in copied:
        for src in sources:
            assert (REPO / src).exists(), src
    ignore = (REPO / "deploy" / "Dockerfile.dockerignore").read_text()
    for sources in copied:
        for src in sources:
            assert f"!{src}" in ignore or f"!{src}/" in ignore, f"{src} is excluded from the build context"
    cmd = json.loads(instr["CMD"][0])
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert cmd[cmd.index("-p") + 1] == "4000" and cmd[cmd.index("-m") + 1] == "assets_pkg.definitions"
    # the run and step pods load the instance from this image: its storage and launcher must import
    pins = (REPO / "requirements.txt").read_text().split()
    assert "dagster-postgres==0.29.27" in pins and "dagster-k8s==0.29.27" in pins


@pytest.mark.slow
def test_dockerfile_command_serves_the_code_location(tmp_path):
    """The image's CMD, run from the project root: the code server answers and lists the jobs."""
    from dagster._grpc.client import DagsterGrpcClient

    instr, _ = _dockerfile()
    cmd = json.loads(instr["CMD"][0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd[cmd.index("-p") + 1] = str(port)
    cmd[cmd.index("-h") + 1] = "127.0.0.1"
    cmd[0] = str(Path(sys.executable).parent / "dagster")
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, DAGSTER_HOME=str(tmp_path)),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                names = client.list_repositories()
                if names:
                    break
            except Exception:
                pass
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
