"""Definitions load; the nightly schedule and the inbox sensor decide correctly; retries and
freshness are attached where the operator's guide says they are."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from dagster import AssetKey, RunRequest, SkipReason, build_schedule_context, build_sensor_context
from dagster._core.definitions.dependency import NodeHandle
from dagster._core.definitions.sensor_definition import SensorResult

from recsys_dagster.automation.freshness import PUBLISHED_TABLES
from recsys_dagster.automation.retries import STEP_RETRY_POLICY
from recsys_dagster.automation.sensors import FULL_REFRESH_TAG, inbox_sensor
from recsys_dagster.definitions import defs
from recsys_dagster.ingest.assets import INPUT_FILES

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
    assert defs.resolve_job_def("refresh_recommendations").partitions_def == INPUT_FILES
    assert defs.resolve_job_def("incremental_refresh").partitions_def == INPUT_FILES
    assert {s.name for s in defs.sensors} == {"inbox_sensor", "pipeline_failure_sensor"}


def test_only_the_raw_tables_and_the_increment_are_partitioned_by_file() -> None:
    graph = defs.resolve_asset_graph()
    partitioned = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).partitions_def}
    assert partitioned == {"raw_events", "raw_items", "recommendations_increment"}
    assert graph.get(AssetKey("raw_events")).partitions_def == INPUT_FILES


def test_published_tables_go_stale_after_26_hours() -> None:
    graph = defs.resolve_asset_graph()
    windows = {
        key.to_user_string(): graph.get(key).freshness_policy.fail_window.to_timedelta().total_seconds() / 3600
        for key in graph.get_all_asset_keys()
        if graph.get(key).freshness_policy is not None
    }
    assert windows == dict.fromkeys(PUBLISHED_TABLES, 26.0)


def test_dbt_and_model_steps_retry_but_ingestion_does_not() -> None:
    job = defs.resolve_job_def("refresh_recommendations")
    policies = {name: job.get_retry_policy_for_handle(NodeHandle(name, None)) for name in job.graph.node_dict}
    assert policies["recsys_dbt_assets"] == STEP_RETRY_POLICY
    assert policies["als_model"] == policies["item_knn_model"] == STEP_RETRY_POLICY
    assert policies["ingest"] is None  # a rejected file must fail the run, not be skipped by a retry
    assert STEP_RETRY_POLICY.max_retries == 2


def test_schedule_requests_the_refresh_at_two_am() -> None:
    schedule = defs.resolve_schedule_def("nightly_refresh")
    assert schedule.cron_schedule == "0 2 * * *"
    requests = list(schedule.evaluate_tick(build_schedule_context()).run_requests)
    assert len(requests) == 1 and isinstance(requests[0], RunRequest)
    assert requests[0].partition_key is None  # the nightly run scans every file
    assert schedule.job_name == "refresh_recommendations"


def test_sensor_requests_each_settled_file_once_as_a_partition(pipeline_env: Path) -> None:
    inbox = pipeline_env / "inbox_dir"
    settled = inbox / "events-2026-11-23.csv"
    settled.write_text(EVENTS)
    _age(settled, 60)
    (inbox / "upload.csv.part").write_text(EVENTS)
    (inbox / ".hidden.csv").write_text(EVENTS)
    (inbox / "still-writing.csv").write_text(EVENTS)  # fresh mtime, no .done marker

    first = inbox_sensor(build_sensor_context())
    assert isinstance(first, SensorResult)
    assert [r.partition_key for r in first.run_requests] == ["events-2026-11-23.csv"]
    assert first.run_requests[0].job_name == "refresh_recommendations"
    assert first.run_requests[0].tags[FULL_REFRESH_TAG] == "nothing is published yet"  # no serving file
    [add] = first.dynamic_partitions_requests
    assert (add.partitions_def_name, list(add.partition_keys)) == ("input_files", ["events-2026-11-23.csv"])

    again = inbox_sensor(build_sensor_context(cursor=first.cursor))
    assert isinstance(again, SkipReason)

    (inbox / "still-writing.csv.done").write_text("")
    marked = inbox_sensor(build_sensor_context(cursor=first.cursor))
    assert [r.tags["recsys/inbox_file"] for r in marked.run_requests] == ["still-writing.csv"]
    assert marked.run_requests[0].run_key != first.run_requests[0].run_key


def garbage_bytes(serving: Path) -> None:
    serving.write_bytes(b"\x00garbage, not a DuckDB file\xff" * 3)


def database_without_the_table(serving: Path) -> None:
    duckdb.connect(str(serving)).close()


def table_without_the_contract_columns(serving: Path) -> None:
    with duckdb.connect(str(serving)) as con:
        con.execute("CREATE SCHEMA recs; CREATE TABLE recs.user_recommendations (user_id VARCHAR)")


@pytest.mark.parametrize(
    ("make_serving_file", "reason"),
    [
        (
            garbage_bytes,
            r"^the live serving file .*serving\.duckdb could not be read: IO Error: .*not a valid DuckDB database file",
        ),
        (table_without_the_contract_columns, r"could not be read: Binder Error: .*\"model\" not found"),
        (database_without_the_table, r"^nothing is published yet$"),
    ],
)
def test_the_full_refresh_run_says_why_the_live_file_allows_no_increment(
    pipeline_env: Path, make_serving_file: Callable[[Path], None], reason: str
) -> None:
    make_serving_file(pipeline_env / "serving.duckdb")
    day = pipeline_env / "inbox_dir" / "events-2026-11-23.csv"
    day.write_text(EVENTS)
    _age(day, 60)

    [request] = inbox_sensor(build_sensor_context()).run_requests

    assert request.job_name == "refresh_recommendations"
    assert re.search(reason, request.tags[FULL_REFRESH_TAG], re.DOTALL), request.tags[FULL_REFRESH_TAG]


def test_sensor_skips_names_that_cannot_be_partition_keys(pipeline_env: Path) -> None:
    odd = pipeline_env / "inbox_dir" / "export...final.csv"
    odd.write_text(EVENTS)
    _age(odd, 60)
    assert isinstance(inbox_sensor(build_sensor_context()), SkipReason)


def test_sensor_ignores_links_that_leave_the_inbox(pipeline_env: Path) -> None:
    outside = pipeline_env / "outside.csv"
    outside.write_text(EVENTS)
    _age(outside, 60)
    (pipeline_env / "inbox_dir" / "sneaky.csv").symlink_to(outside)
    assert isinstance(inbox_sensor(build_sensor_context()), SkipReason)


def test_the_increment_runs_only_in_its_own_job_after_the_file_and_serving_marts() -> None:
    nightly = defs.resolve_job_def("refresh_recommendations").asset_layer.selected_asset_keys
    incremental = defs.resolve_job_def("incremental_refresh").asset_layer.selected_asset_keys
    assert AssetKey("recommendations_increment") not in nightly
    assert {key.to_user_string() for key in incremental} == {
        "raw_events", "raw_items", "validated_interactions", "quarantined_events", "stg_interactions",
        "fct_user_item_interactions", "dim_users", "dim_items", "recommendations_increment",
    }


def test_tuning_runs_weekly_in_its_own_job_not_in_the_nightly_refresh() -> None:
    nightly = defs.resolve_job_def("refresh_recommendations").asset_layer.selected_asset_keys
    weekly = defs.resolve_job_def("tune_hyperparameters").asset_layer.selected_asset_keys
    assert AssetKey("model_tuning") not in nightly and AssetKey("als_model") in nightly
    assert weekly == {AssetKey("model_tuning")}
    schedule = defs.resolve_schedule_def("weekly_tuning")
    assert (schedule.cron_schedule, schedule.job_name) == ("0 4 * * 0", "tune_hyperparameters")
