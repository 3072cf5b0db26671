"""Failed runs, recorded where on-call engineers look: ``ml.pipeline_failures`` and the sensor log.

One row per failed step (run_id, job_name, step, error, failed_at); a run that failed before any
step ran (e.g. a launch error) gets one row with step NULL. The error text includes the causes,
which name the actual problem (a rejected file, a failed dbt test, a broken invariant). A step that
failed on blocking asset checks only raises "1 blocking asset check failed ... <check name>": the
row then starts with each failed check's own description (e.g. "only 1 distinct user(s) in
fct_train_user_item"), read from the run's check evaluation events.

Where the row goes, and why. The table lives in the warehouse, but DuckDB allows one writing process
per file and a warehouse step of the next queued run can hold the lock for minutes (dbt builds and
model training keep their connection open). A sensor has about a minute per evaluation, and a
run-failure sensor does not evaluate the same failure twice. So the sensor waits a bounded time
(``LOCK_WAIT_SECONDS``) for the lock; when the warehouse stays busy it appends the row to a small
spool file beside it (``pipeline_failures_spool.duckdb``, same table name), which is moved into the
warehouse by the next recorded failure. The record is never lost and no run is ever blocked by it.
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
from dagster import (
    AssetCheckEvaluation,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    RunFailureSensorContext,
    run_failure_sensor,
)
from dagster._utils.error import SerializableErrorInfo  # the type of step errors; not re-exported by dagster

from recsys_dagster import settings
from recsys_dagster.relations import registered

FAILURES_TABLE = "ml.pipeline_failures"
FAILURES_DDL = (
    "CREATE SCHEMA IF NOT EXISTS ml",
    f"""CREATE TABLE IF NOT EXISTS {FAILURES_TABLE} (
        run_id VARCHAR, job_name VARCHAR, step VARCHAR, error VARCHAR, failed_at TIMESTAMP)""",
)
SPOOL_FILE_NAME = "pipeline_failures_spool.duckdb"
#: How long the sensor waits for the warehouse lock (the sensor's evaluation budget is 60 s).
LOCK_WAIT_SECONDS = 40.0
#: Longest error text stored per failed step (the start names the problem; stack traces are in the UI).
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class PipelineFailure:
    """One failed step of one run (step None: the run failed outside any step)."""

    run_id: str
    job_name: str
    step: str | None
    error: str
    failed_at: datetime


def error_messages(error: SerializableErrorInfo | None) -> list[str]:
    """The error's message and those of its causes, outermost first."""
    messages = []
    while error is not None:
        messages.append(error.message.strip())
        error = error.cause or error.context
    return messages


def clipped(lines: list[str]) -> str:
    """The lines as one text, cut to ``MAX_ERROR_CHARS``."""
    text = "\n".join(lines)
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " [...]"


def failed_checks_by_step(instance: DagsterInstance, run_id: str) -> dict[str, list[str]]:
    """One line per failed asset check of the run ("check <asset>:<name> failed: <description>"),
    grouped by the step that evaluated it."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    failed: dict[str, list[str]] = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        evaluation: AssetCheckEvaluation = event.event_specific_data
        if not evaluation.passed:
            check = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            description = evaluation.description or "(no description)"
            failed.setdefault(event.step_key, []).append(f"check {check} failed: {description}")
    return failed


def failure_time(context: RunFailureSensorContext) -> datetime:
    """When the run ended (UTC, naive like every warehouse timestamp); now if not recorded yet."""
    record = context.instance.get_run_record_by_id(context.dagster_run.run_id)
    ended = record.end_time if record is not None and record.end_time else time.time()
    return datetime.fromtimestamp(ended, UTC).replace(tzinfo=None)


def failures_of(context: RunFailureSensorContext) -> list[PipelineFailure]:
    """One record per failed step of the run (its failed checks' descriptions first), or one for the
    run itself when no step failed."""
    run, failed_at = context.dagster_run, failure_time(context)
    failed_checks = failed_checks_by_step(context.instance, run.run_id)
    steps = [
        PipelineFailure(
            run.run_id, run.job_name, event.step_key,
            clipped(failed_checks.get(event.step_key, []) + error_messages(event.step_failure_data.error)),
            failed_at,
        )
        for event in context.get_step_failure_events()
    ]
    if steps:
        return steps
    run_error = getattr(context.failure_event.event_specific_data, "error", None)
    message = clipped([line for line in [context.failure_event.message, *error_messages(run_error)] if line])
    return [PipelineFailure(run.run_id, run.job_name, None, message, failed_at)]


def connect_when_free(path: Path, wait_seconds: float) -> duckdb.DuckDBPyConnection | None:
    """A write connection to ``path``, waiting up to ``wait_seconds`` while another process holds
    its lock; None when it is still locked then. Other errors are raised."""
    deadline, delay = time.monotonic() + wait_seconds, 0.1
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise
            if time.monotonic() + delay > deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def append_failures(con: duckdb.DuckDBPyConnection, failures: pd.DataFrame) -> int:
    """Insert records not already present (same run and step); returns the number inserted."""
    for ddl in FAILURES_DDL:
        con.execute(ddl)
    with registered(con, incoming_failures=failures):
        return con.execute(
            f"""INSERT INTO {FAILURES_TABLE}
            SELECT DISTINCT run_id, job_name, step, error, failed_at FROM incoming_failures i
            WHERE NOT EXISTS (SELECT 1 FROM {FAILURES_TABLE} p
                              WHERE p.run_id = i.run_id AND p.step IS NOT DISTINCT FROM i.step)"""
        ).fetchall()[0][0]


def as_frame(failures: list[PipelineFailure]) -> pd.DataFrame:
    frame = pd.DataFrame([asdict(failure) for failure in failures], columns=list(PipelineFailure.__annotations__))
    return frame.astype({"run_id": "string", "job_name": "string", "step": "string", "error": "string"})


def spool_path(warehouse: Path) -> Path:
    return warehouse.with_name(SPOOL_FILE_NAME)


def move_spool_into(con: duckdb.DuckDBPyConnection, spool: Path) -> int:
    """Move spooled records into the warehouse connection ``con``; returns how many were spooled."""
    if not spool.exists():
        return 0
    with closing(duckdb.connect(str(spool))) as spool_con:
        for ddl in FAILURES_DDL:
            spool_con.execute(ddl)
        spooled = spool_con.execute(f"SELECT * FROM {FAILURES_TABLE}").df()
        if len(spooled):
            append_failures(con, spooled)
            spool_con.execute(f"DELETE FROM {FAILURES_TABLE}")
    return len(spooled)


def record_failures(failures: list[PipelineFailure], warehouse: Path, wait_seconds: float = LOCK_WAIT_SECONDS) -> Path:
    """Append the records to the warehouse (with any spooled ones), or to the spool if it stays
    locked for ``wait_seconds``; returns the file written."""
    con = connect_when_free(warehouse, wait_seconds)
    if con is None:
        with closing(duckdb.connect(str(spool_path(warehouse)))) as spool_con:
            append_failures(spool_con, as_frame(failures))
        return spool_path(warehouse)
    with closing(con):
        con.execute("SET TimeZone = 'UTC'")
        append_failures(con, as_frame(failures))
        move_spool_into(con, spool_path(warehouse))
    return warehouse


@run_failure_sensor(
    name="pipeline_failure_sensor",
    default_status=DefaultSensorStatus.RUNNING,
    description="Record every failed run of this code location in ml.pipeline_failures and log what failed.",
)
def pipeline_failure_sensor(context: RunFailureSensorContext) -> None:
    failures = failures_of(context)
    written = record_failures(failures, settings.warehouse_path())
    for failure in failures:
        first_line = failure.error.splitlines()[0] if failure.error else "(no error message)"
        context.log.error(
            f"Run {failure.run_id} of job {failure.job_name} FAILED at step {failure.step or '(run)'}: "
            f"{first_line} -- recorded in {FAILURES_TABLE} of {written}"
        )
