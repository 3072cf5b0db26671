"""The automation proven against a running deployment: ``dagster dev`` (webserver + daemon + the
workspace.yaml code location) on a free loopback port, with a temporary DAGSTER_HOME and temporary
RECSYS_* files.

One scenario, in order (each step needs the state the previous one left):

1. a full-graph run launched through GraphQL succeeds and its asset checks pass;
2. a separate reader process opens the published serving file and holds it open to the end;
3. with the inbox sensor switched on (through GraphQL), a new events file with NEW users lands in the
   inbox; as soon as the sensor's run exists, an ingest + validate materialization is launched
   through GraphQL, while the sensor's run is still going: both succeed and their warehouse steps
   never overlap (the ``duckdb_warehouse`` pool keeps the second run queued instead of letting it
   fail on DuckDB's file lock); the sensor's run is done within 120 s of the file landing;
4. SQL on the warehouse and serving files: the file was ingested exactly once, the recommendation
   tables were regenerated (generated_at moved) and include the new users; the reader never failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from recsys_dagster.definitions import defs
from recsys_dagster.resources import WAREHOUSE_POOL
from recsys_dagster.settings import DATA_DIR
from scripts.live_dagster import LOCATION_NAME, REPOSITORY_NAME, TERMINAL_RUN_STATUSES, LiveDagster, running_dagster

pytestmark = [pytest.mark.live, pytest.mark.timeout(420)]

SAMPLE_LINES = 1001  # header + 1000 rows of the bundled Online Retail sample: a full run in about a minute
SENSOR_RUN_TIMEOUT = 120
FULL_RUN_TIMEOUT = 240
NEW_USERS = [f"live-user-{n}" for n in range(1, 6)]
INBOX_FILE = "events-live.csv"

START_SENSOR = """mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""
LAUNCH_RUN = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
    ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
RUN_STATUS = """query($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status creationTime startTime endTime } } }"""
SENSOR_RUNS = """query($sensor: String!) {
    runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: $sensor}]}) {
        ... on Runs { results { runId } } } }"""
RUN_EVENTS = """query($runId: ID!) { logsForRun(runId: $runId, limit: 20000) { __typename
    ... on EventConnection { events { __typename
        ... on MessageEvent { stepKey timestamp }
        ... on AssetCheckEvaluationEvent { evaluation { checkName success severity assetKey { path } } } } } } }"""
STEP_END_EVENTS = {"ExecutionStepSuccessEvent", "ExecutionStepFailureEvent"}

READER = """
import os, sys, time, duckdb
path = sys.argv[1]
while not os.path.exists(path):
    time.sleep(0.2)
con = duckdb.connect(path, read_only=True)
print("opened", flush=True)
while True:
    print("rows", con.execute("SELECT count(*) FROM recs.user_recommendations").fetchone()[0], flush=True)
    time.sleep(0.5)
"""


# ---------------------------------------------------------------- GraphQL helpers

def launch(live: LiveDagster, job: str, assets: list[str] | None = None) -> str:
    selector = {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME, "jobName": job}
    if assets:
        selector["assetSelection"] = [{"path": [name]} for name in assets]
    result = live.graphql(LAUNCH_RUN, {"params": {"selector": selector, "runConfigData": {}}})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def wait_for_run(live: LiveDagster, run_id: str, timeout: float) -> dict:
    """The run's status, startTime and endTime once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = live.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]
        if run["status"] in TERMINAL_RUN_STATUSES:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} not finished after {timeout} s:\n{live.log_tail()}")


def wait_for_sensor_run(live: LiveDagster, sensor: str, timeout: float) -> str:
    """The id of the first run the sensor launches within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = live.graphql(SENSOR_RUNS, {"sensor": sensor})["runsOrError"]["results"]
        if runs:
            return runs[-1]["runId"]
        time.sleep(1)
    raise AssertionError(f"no {sensor} run after {timeout} s:\n{live.log_tail()}")


def run_events(live: LiveDagster, run_id: str) -> list[dict]:
    return live.graphql(RUN_EVENTS, {"runId": run_id}, timeout=60)["logsForRun"]["events"]


def step_intervals(events: list[dict], steps: set[str]) -> list[tuple[float, float, str]]:
    """(start, end, step) in seconds of every attempt of the given steps."""
    starts, intervals = {}, []
    for event in events:
        if event.get("stepKey") not in steps:
            continue
        seconds = float(event["timestamp"]) / 1000
        if event["__typename"] == "ExecutionStepStartEvent":
            starts[event["stepKey"]] = seconds
        elif event["__typename"] in STEP_END_EVENTS:
            intervals.append((starts.pop(event["stepKey"]), seconds, event["stepKey"]))
    return intervals


def warehouse_steps() -> set[str]:
    """Step keys of every op in the warehouse pool (one writer at a time across runs)."""
    job = defs.resolve_job_def("refresh_recommendations")
    return {name for name, node in job.graph.node_dict.items() if node.definition.pool == WAREHOUSE_POOL}


# ---------------------------------------------------------------- the scenario

def query(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def write_new_users_file(target: Path, items: list[str]) -> int:
    """Canonical events of users the warehouse has never seen, on items it knows; written under a
    temporary name and renamed, then marked ``.done`` (how an upload should land). Returns row count."""
    rows = [f"{user},{item},{'view' if n % 3 else 'addtocart'},2010-12-01 1{n % 10}:00:00"
            for user in NEW_USERS for n, item in enumerate(items)]
    partial = target.with_name(target.name + ".part")
    partial.write_text("user_id,item_id,event_type,event_time\n" + "\n".join(rows) + "\n")
    partial.rename(target)
    target.with_name(target.name + ".done").write_text("")
    return len(rows)


@pytest.fixture()
def deployment(tmp_path: Path) -> Iterator[tuple[LiveDagster, Path]]:
    root = tmp_path
    for folder in ("input_dir", "inbox_dir", "models_dir", "published_dir"):
        (root / folder).mkdir()
    with (DATA_DIR / "sample" / "online_retail.csv").open(encoding="utf-8") as sample:
        head = [line for _, line in zip(range(SAMPLE_LINES), sample)]
    (root / "input_dir" / "online_retail.csv").write_text("".join(head), encoding="utf-8")
    env = {f"RECSYS_{folder.upper()}": str(root / folder) for folder in ("input_dir", "inbox_dir", "models_dir",
                                                                           "published_dir")}
    env |= {"RECSYS_DUCKDB_PATH": str(root / "warehouse.duckdb"), "RECSYS_SERVING_PATH": str(root / "serving.duckdb"),
            "RECSYS_INBOX_SETTLE_SECONDS": "1"}
    with running_dagster(env, root / "dagster_home", root / "dagster_dev.log") as live:
        yield live, root


@pytest.fixture()
def reader(deployment: tuple[LiveDagster, Path]) -> Iterator[subprocess.Popen]:
    """A downstream process that opens the serving file (once it exists) and keeps it open."""
    _, root = deployment
    process = subprocess.Popen([sys.executable, "-c", READER, str(root / "serving.duckdb")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_live_deployment_ingests_once_serializes_writers_and_republishes(deployment, reader) -> None:
    live, root = deployment
    warehouse, serving = root / "warehouse.duckdb", root / "serving.duckdb"
    sensor = {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME, "sensorName": "inbox_sensor"}
    started = live.graphql(START_SENSOR, {"selector": sensor})["startSensor"]
    assert started == {"__typename": "Sensor", "sensorState": {"status": "RUNNING"}}

    # 1. the full graph, launched like the UI's "Materialize all" on the job
    full_run = launch(live, "refresh_recommendations")
    assert wait_for_run(live, full_run, FULL_RUN_TIMEOUT)["status"] == "SUCCESS"
    checks = [e["evaluation"] for e in run_events(live, full_run) if e["__typename"] == "AssetCheckEvaluationEvent"]
    assert len(checks) >= 10
    assert {c["checkName"] for c in checks if c["checkName"] == "row_accounting"} == {"row_accounting"}
    assert [c for c in checks if not c["success"] and c["severity"] == "ERROR"] == []

    # 2. the reader holds the first published version open from now on
    assert reader.stdout.readline().strip() == "opened"
    [(before_generated, before_users)] = query(
        serving, "SELECT max(generated_at), count(DISTINCT user_id) FROM recs.user_recommendations")
    items = [row[0] for row in query(warehouse, "SELECT item_id FROM dim_items ORDER BY n_users DESC LIMIT 6")]

    # 3. a new file for the sensor and, while its run is under way, another warehouse-writing run
    n_rows = write_new_users_file(root / "inbox_dir" / INBOX_FILE, items)
    dropped = time.monotonic()
    sensor_run = wait_for_sensor_run(live, "inbox_sensor", SENSOR_RUN_TIMEOUT)
    concurrent_run = launch(live, "__ASSET_JOB",
                            ["raw_events", "raw_items", "validated_interactions", "quarantined_events"])
    sensor_result = wait_for_run(live, sensor_run, SENSOR_RUN_TIMEOUT - (time.monotonic() - dropped))
    assert sensor_result["status"] == "SUCCESS", live.log_tail()
    concurrent_result = wait_for_run(live, concurrent_run, 90)
    assert concurrent_result["status"] == "SUCCESS", live.log_tail()
    assert concurrent_result["creationTime"] < sensor_result["endTime"]  # launched while the other was running

    pooled = warehouse_steps()
    sensor_steps = step_intervals(run_events(live, sensor_run), pooled)
    concurrent_steps = step_intervals(run_events(live, concurrent_run), pooled)
    assert {step for *_, step in concurrent_steps} == {"ingest", "validate_interactions"}
    overlaps = [(a, b) for a in sensor_steps for b in concurrent_steps if a[0] < b[1] and b[0] < a[1]]
    assert overlaps == []

    # 4. ingested once, republished, new users served; the reader was never in the way
    inbox_path = str((root / "inbox_dir" / INBOX_FILE).resolve())
    assert query(warehouse, "SELECT status, n_rows FROM main.ingested_files WHERE file_path = ?", [inbox_path]) == [
        ("loaded", n_rows)]
    assert query(warehouse, "SELECT count(*) FROM main.raw_events WHERE source_file = ?", [inbox_path]) == [(n_rows,)]
    [(after_generated, after_users)] = query(
        serving, "SELECT max(generated_at), count(DISTINCT user_id) FROM recs.user_recommendations")
    assert after_generated > before_generated
    assert after_users == before_users + len(NEW_USERS)
    served_new = query(serving, "SELECT DISTINCT user_id FROM recs.user_recommendations WHERE user_id LIKE 'live-user-%' "
                                "ORDER BY 1")
    assert [user for (user,) in served_new] == NEW_USERS
    assert reader.poll() is None, reader.stderr.read()
    assert reader.stdout.readline().startswith("rows ")
