"""A tiny code location for the daemon test (served by its own gRPC server, like a user
deployment): two jobs whose single op holds for a while in a pool and writes when it ran,
a sensor that requests one run, and a schedule that ticks every minute."""

import json
import os
import time
from pathlib import Path

import dagster as dg


class HoldConfig(dg.Config):
    """Where the op writes its start and end (one JSON file per run) and how long it holds."""

    out_dir: str
    hold_seconds: float = 2.0


def _hold(name: str, pool: str) -> dg.OpDefinition:
    @dg.op(name=name, pool=pool)
    def _op(context: dg.OpExecutionContext, config: HoldConfig) -> None:
        start = time.time()
        time.sleep(config.hold_seconds)
        end = time.time()
        out = Path(config.out_dir) / f"{context.run_id}.json"
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run_id": context.run_id, "pool": pool, "start": start, "end": end,
                                   "pid": os.getpid()}))
        tmp.replace(out)

    return _op


gpu_hold = _hold("gpu_hold", "gpu")
wide_hold = _hold("wide_hold", "wide")


# in-process: one process per run (the run worker), as cheap as a run gets
@dg.job(executor_def=dg.in_process_executor)
def gpu_job():
    gpu_hold()


@dg.job(executor_def=dg.in_process_executor)
def wide_job():
    wide_hold()


@dg.op
def touch(context: dg.OpExecutionContext) -> None:
    context.log.info(f"launched by {context.run.tags.get('probe')}")


@dg.job(executor_def=dg.in_process_executor)
def tick_job():
    touch()


@dg.schedule(cron_schedule="* * * * *", job=tick_job)
def every_minute(context: dg.ScheduleEvaluationContext):
    # one run in all: later ticks are skipped on the run key
    return dg.RunRequest(run_key="probe-schedule", tags={"probe": "schedule"})


@dg.sensor(job=tick_job, minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING)
def probe_sensor(context: dg.SensorEvaluationContext):
    if context.cursor:
        return dg.SkipReason("already requested its run")
    context.update_cursor("requested")
    return dg.RunRequest(run_key="probe-sensor-once", tags={"probe": "sensor"})


defs = dg.Definitions(jobs=[gpu_job, wide_job, tick_job], schedules=[every_minute], sensors=[probe_sensor])
