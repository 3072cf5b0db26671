"""Smoke test of ``python -m bench.ingest_floor`` on a small generated log with a few broken rows appended.

Runs the CLI as documented (a subprocess from the project root, one repeat) and checks the JSON it
writes: every step timed, (a) the reference, both floors reported, and the one-pass design routing
exactly as the pipeline does: the same rows validated and quarantined as ``route_raw_rows`` over the
same file ingested into ``raw_events`` by ``insert_events``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb

from bench.ingest_floor import FLOORS, STEPS, detected_events
from bench.pipeline import dataset_dir
from recsys_dagster.ingest.assets import ensure_tables, insert_events
from recsys_dagster.settings import PROJECT_ROOT
from recsys_dagster.validate.assets import ValidationConfig
from recsys_dagster.validate.routing import QUARANTINED, VALIDATED, route_raw_rows
from recsys_dagster.validate.suite import Bounds

EVENTS = 2_000
#: Appended to the generated file: no user, an unknown event type, an unreadable time (+ a duplicate).
BROKEN_ROWS = ("1430600412684,,view,7441,", "1430600412684,123,return,7441,", "yesterday,123,view,7441,")


def data_with_broken_rows(scratch: Path) -> Path:
    """The generated log of ``EVENTS`` events, its first event repeated and ``BROKEN_ROWS`` appended."""
    data_dir = dataset_dir(scratch, EVENTS, seed=0)
    events = data_dir / "events.csv"
    first_event = events.read_text().splitlines()[1]
    with events.open("a") as handle:
        handle.write("\n".join((first_event, *BROKEN_ROWS)) + "\n")
    return data_dir


def routed_counts(data_dir: Path) -> tuple[int, int]:
    """(validated, quarantined) rows of the pipeline's own ingest + routing of ``data_dir``'s events."""
    config = ValidationConfig()
    with duckdb.connect() as con:
        ensure_tables(con)
        insert_events(con, detected_events(data_dir), datetime.now())
        route_raw_rows(con, Bounds.from_config(config.min_event_time, config.max_future_hours))
        return con.execute(f"SELECT (SELECT count(*) FROM {VALIDATED}), (SELECT count(*) FROM {QUARANTINED})").fetchone()


def test_ingest_floor_times_every_step_and_routes_like_the_pipeline(tmp_path: Path) -> None:
    data_dir = data_with_broken_rows(tmp_path / "scratch")
    results = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.ingest_floor", "--events", str(EVENTS), "--data", str(data_dir), "--repeats", "1",
         "--scratch", str(tmp_path / "scratch"), "--results", str(results)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((results / f"ingest-floor-{EVENTS}.json").read_text())
    steps = {step["key"]: step for step in report["steps"]}
    assert set(steps) == {step.key for step in STEPS} - {"h"}  # no pipeline-2000.json in this results folder
    assert all(step["seconds"] > 0 and step["ratio"] > 0 for step in steps.values())
    assert steps["a"]["ratio"] == 1
    assert [floor["floor"] for floor in report["floors"]] == list(FLOORS)
    one_pass = report["one_pass"]
    assert (one_pass["validated_rows"], one_pass["quarantined_rows"]) == routed_counts(data_dir)
    assert one_pass["quarantined_rows"] == len(BROKEN_ROWS) + 1
    assert report["raw_rows"] == EVENTS + len(BROKEN_ROWS) + 1
    assert one_pass["gx_expectations_passed"] == one_pass["gx_expectations"] > 0
    assert "| (g) GX suite |" in (results / f"ingest-floor-{EVENTS}.md").read_text()
