"""The run-failure sensor on a real failed run: one row per failed step in ml.pipeline_failures,
never twice, and a spool beside the warehouse while another process holds its lock."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb

from recsys_dagster.automation.failures import (
    PipelineFailure,
    pipeline_failure_sensor,
    record_failures,
    spool_path,
)
from tests.automation.failed_runs import failed_refresh

HOLD_LOCK = "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(60)"


def failures_in(path: Path) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT run_id, job_name, step, error FROM ml.pipeline_failures ORDER BY failed_at").fetchall()


def test_a_failed_run_is_recorded_once_with_its_step_and_error(pipeline_env: Path) -> None:
    (pipeline_env / "input_dir" / "empty_export.csv").write_bytes(b"")  # rejected: the ingest step fails
    result, context = failed_refresh()

    pipeline_failure_sensor(context)
    pipeline_failure_sensor(context)  # the same failure evaluated again adds nothing

    [(run_id, job_name, step, error)] = failures_in(pipeline_env / "warehouse.duckdb")
    assert (run_id, job_name, step) == (result.run_id, "refresh_recommendations", "ingest")
    assert "empty_export.csv" in error


def test_failures_wait_in_a_spool_while_the_warehouse_is_locked(pipeline_env: Path) -> None:
    warehouse = pipeline_env / "warehouse.duckdb"
    first = PipelineFailure("run-1", "refresh_recommendations", "recsys_dbt_assets", "dbt test failed", datetime(2026, 1, 1))
    second = PipelineFailure("run-2", "refresh_recommendations", None, "launch failed", datetime(2026, 1, 2))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(warehouse)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert record_failures([first], warehouse, wait_seconds=1) == spool_path(warehouse)
    finally:
        holder.kill()
        holder.wait()
    assert [row[0] for row in failures_in(spool_path(warehouse))] == ["run-1"]

    assert record_failures([second], warehouse, wait_seconds=1) == warehouse

    assert [(run_id, step) for run_id, _, step, _ in failures_in(warehouse)] == [
        ("run-1", "recsys_dbt_assets"), ("run-2", None)]
    assert failures_in(spool_path(warehouse)) == []
