"""deploy/dagster-postgres.yaml against a live PostgreSQL server: the storages, the run queue
and the pools it configures, and a run recorded there and read back by another instance."""

import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "dagster-postgres.yaml"


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(CONFIG, home / "dagster.yaml")
    return home


@pytest.fixture
def pg_env(monkeypatch, postgres, pg_db):
    for k, v in postgres.env(pg_db).items():
        monkeypatch.setenv(k, v)
    return pg_db


@dg.asset(pool="gpu")
def probe_model() -> int:
    """Stands in for a training asset: one op in the gpu pool."""
    return 1


def test_instance_config_loads_against_live_server(tmp_path, pg_env):
    with dg.DagsterInstance.from_config(str(_home(tmp_path))) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        cfg = instance.get_concurrency_config()
        assert cfg.pool_config.default_pool_limit == 1
        assert cfg.pool_config.pool_granularity.value == "op"
        queue = cfg.run_queue_config
        assert queue.max_concurrent_runs == 10
        assert {"key": "dagster/partition", "limit": 4} in queue.tag_concurrency_limits
        # a run whose first ops would only wait for a full pool stays queued
        assert queue.should_block_op_concurrency_limited_runs


def test_run_is_recorded_in_postgres(tmp_path, pg_env, postgres):
    home = _home(tmp_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize([probe_model], instance=instance)
        assert result.success
        run_id = result.run_id
        # the gpu pool got the yaml's default limit when the op claimed its slot
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
        assert limits.get("gpu") == 1, limits
    # another instance (another process would do the same) reads the run back from the server
    with dg.DagsterInstance.from_config(str(home)) as again:
        run = again.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        mats = again.fetch_materializations(dg.AssetKey("probe_model"), limit=1).records
        assert mats and mats[0].run_id == run_id
    rows = postgres.query(pg_env, "SELECT status FROM runs WHERE run_id = %s", (run_id,))
    assert rows == [("SUCCESS",)]


def test_missing_connection_variable_is_named(tmp_path, pg_env, monkeypatch):
    monkeypatch.delenv("DAGSTER_PG_HOST")
    with pytest.raises(Exception, match="DAGSTER_PG_HOST"):
        with dg.DagsterInstance.from_config(str(_home(tmp_path))) as instance:
            instance.get_runs(limit=1)
