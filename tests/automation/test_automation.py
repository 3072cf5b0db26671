"""Definitions load; the nightly schedule and the inbox sensor decide correctly."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dagster import RunRequest, SkipReason, build_schedule_context, build_sensor_context
from dagster._core.definitions.sensor_definition import SensorResult

from recsys_dagster.automation.sensors import INGEST_OP_NAME, inbox_sensor
from recsys_dagster.definitions import defs

EVENTS = "timestamp,visitorid,event,itemid,transactionid\n1433221332117,257597,view,355908,\n"


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_definitions_load_the_whole_graph() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {
        "raw_events", "raw_items", "validated_interactions", "quarantined_events", "stg_interactions",
        "fct_user_item_interactions", "dim_items", "dim_users", "als_model", "svd_model", "popularity_model",
        "item_knn_model", "model_evaluation", "user_recommendations", "similar_items", "popular_items",
    } <= keys
    assert defs.resolve_job_def("refresh_recommendations") is not None


def test_schedule_requests_the_refresh_at_two_am() -> None:
    schedule = defs.resolve_schedule_def("nightly_refresh")
    assert schedule.cron_schedule == "0 2 * * *"
    requests = list(schedule.evaluate_tick(build_schedule_context()).run_requests)
    assert len(requests) == 1 and isinstance(requests[0], RunRequest)
    assert schedule.job_name == "refresh_recommendations"


def test_sensor_requests_each_settled_file_once(pipeline_env: Path) -> None:
    inbox = pipeline_env / "inbox_dir"
    settled = inbox / "events-2026-11-23.csv"
    settled.write_text(EVENTS)
    _age(settled, 60)
    (inbox / "upload.csv.part").write_text(EVENTS)
    (inbox / ".hidden.csv").write_text(EVENTS)
    (inbox / "still-writing.csv").write_text(EVENTS)  # fresh mtime, no .done marker

    first = inbox_sensor(build_sensor_context())
    assert isinstance(first, SensorResult)
    assert [r.run_config["ops"][INGEST_OP_NAME]["config"]["files"] for r in first.run_requests] == [
        [str(settled.resolve())]
    ]

    again = inbox_sensor(build_sensor_context(cursor=first.cursor))
    assert isinstance(again, SkipReason)

    (inbox / "still-writing.csv.done").write_text("")
    marked = inbox_sensor(build_sensor_context(cursor=first.cursor))
    assert [r.tags["recsys/inbox_file"] for r in marked.run_requests] == ["still-writing.csv"]
    assert marked.run_requests[0].run_key != first.run_requests[0].run_key


def test_sensor_ignores_links_that_leave_the_inbox(pipeline_env: Path) -> None:
    outside = pipeline_env / "outside.csv"
    outside.write_text(EVENTS)
    _age(outside, 60)
    (pipeline_env / "inbox_dir" / "sneaky.csv").symlink_to(outside)
    assert isinstance(inbox_sensor(build_sensor_context()), SkipReason)
