"""Incremental validation: routing batch by batch gives exactly the tables of routing every raw row at once."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import materialize

from recsys_dagster.ingest.assets import TABLE_DDL
from recsys_dagster.resources import WarehouseResource
from recsys_dagster.validate.assets import suite_outcomes, validate_interactions
from recsys_dagster.validate.routing import (
    FULL,
    INCREMENTAL,
    NEW_ROWS_SCOPE,
    QUARANTINED,
    ROUTING_SETTINGS,
    VALIDATED,
    route_raw_rows,
)
from recsys_dagster.validate.suite import Bounds

#: The real raw_events table of the ingestion stage.
RAW_DDL = next(ddl for ddl in TABLE_DDL if "raw_events" in ddl)
DAY1, DAY2 = datetime(2024, 3, 1, 2), datetime(2024, 3, 2, 2)
SOON = datetime.now() + timedelta(hours=3)
# (user_id, item_id, event_type, rating, event_time, time_unit, transaction_id)
FIRST_FILE = [
    ("u1", "i1", "view", None, "1433221332", "s", None),
    ("u1", "i1", "view", None, "1433221332", "s", None),  # duplicate inside the file
    ("u2", "i2", "view", None, None, "text", None),  # missing_event_time
    ("u3", "i3", "view", None, SOON.isoformat(sep=" "), "text", None),  # in the future today
    ("u4", "i4", "addtocart", None, "1433221999", "s", None),
]
SECOND_FILE = [
    ("u1", "i1", "view", None, "1433221332", "s", None),  # duplicate of a row validated yesterday
    ("u5", "i5", "view", None, "1433225000", "s", None),
    ("u5", "i5", "view", None, "1433225000", "s", None),  # duplicate inside the new file
    ("u6", "i6", "return", None, "1433225000", "s", None),  # unknown_event_type
    ("u4", "i4", "addtocart", None, "1433221999", "s", None),  # duplicate of yesterday's add-to-cart
]
#: Tables compared between incremental and full routing (the quarantine time is the time of routing).
SNAPSHOT = {
    VALIDATED: f"SELECT * FROM {VALIDATED}",
    QUARANTINED: f"SELECT * EXCLUDE (quarantined_at) FROM {QUARANTINED}",
}


@pytest.fixture()
def con(tmp_path: Path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        connection.execute(RAW_DDL)
        yield connection


def add_file(con: duckdb.DuckDBPyConnection, name: str, rows: list[tuple], ingested_at: datetime) -> None:
    con.executemany(
        "INSERT INTO raw_events VALUES (?, ?, 'canonical', ?, ?, ?, ?, ?, ?, ?, ?)",
        [(name, number, *values, ingested_at) for number, values in enumerate(rows, start=1)],
    )


def snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    return {table: sorted(con.execute(sql).fetchall(), key=repr) for table, sql in SNAPSHOT.items()}


def routed_from_scratch(con: duckdb.DuckDBPyConnection, bounds: Bounds) -> dict[str, list[tuple]]:
    """The tables a full rebuild produces from the same raw rows (forced by forgetting the settings)."""
    con.execute(f"DROP TABLE {ROUTING_SETTINGS}")
    assert route_raw_rows(con, bounds).mode == FULL
    return snapshot(con)


def reasons(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, int], str]:
    return dict(((f, r), reason) for f, r, reason in con.execute(
        f"SELECT source_file, source_row, reason FROM {QUARANTINED}").fetchall())


def test_a_new_file_is_routed_alone_and_ends_as_a_full_rebuild_would(con: duckdb.DuckDBPyConnection) -> None:
    bounds = Bounds.from_config("1995-01-01", 24)
    add_file(con, "day1.csv", FIRST_FILE, DAY1)
    assert route_raw_rows(con, bounds).mode == FULL
    add_file(con, "day2.csv", SECOND_FILE, DAY2)

    run = route_raw_rows(con, bounds)

    assert (run.mode, run.rows_routed, run.batches_routed) == (INCREMENTAL, len(SECOND_FILE), 1)
    assert reasons(con) == {
        ("day1.csv", 2): "duplicate_event", ("day1.csv", 3): "missing_event_time",
        ("day2.csv", 1): "duplicate_event", ("day2.csv", 3): "duplicate_event",
        ("day2.csv", 4): "unknown_event_type", ("day2.csv", 5): "duplicate_event",
    }
    # GX checks the rows validated by this run and the older rows sharing their event key (none kept).
    scope = con.execute(f"SELECT source_file, source_row FROM {NEW_ROWS_SCOPE} ORDER BY ALL").fetchall()
    assert scope == [("day1.csv", 1), ("day1.csv", 5), ("day2.csv", 2)]
    assert all(outcome.success for outcome in suite_outcomes(con, bounds, NEW_ROWS_SCOPE))
    assert snapshot(con) == routed_from_scratch(con, bounds)


def test_an_event_ingested_earlier_wins_even_when_routed_later(con: duckdb.DuckDBPyConnection) -> None:
    """First ingested wins, not first routed: the older copy replaces the validated one."""
    bounds = Bounds.from_config("1995-01-01", 24)
    add_file(con, "late.csv", SECOND_FILE, DAY2)
    route_raw_rows(con, bounds)
    add_file(con, "early.csv", FIRST_FILE, DAY1)

    assert route_raw_rows(con, bounds).mode == INCREMENTAL

    validated = set(con.execute(f"SELECT source_file, source_row FROM {VALIDATED}").fetchall())
    assert {("early.csv", 1), ("early.csv", 5)} <= validated
    assert reasons(con)[("late.csv", 1)] == reasons(con)[("late.csv", 5)] == "duplicate_event"
    assert snapshot(con) == routed_from_scratch(con, bounds)


def test_a_row_quarantined_as_future_passes_once_its_time_has_come(con: duckdb.DuckDBPyConnection) -> None:
    today = Bounds.from_config("1995-01-01", 1)
    add_file(con, "day1.csv", FIRST_FILE, DAY1)
    route_raw_rows(con, today)
    assert reasons(con)[("day1.csv", 4)] == "event_time_out_of_range"
    add_file(con, "day2.csv", [FIRST_FILE[3]], DAY2)  # the same event sent again
    in_four_hours = Bounds(today.min_event_time, today.max_event_time + timedelta(hours=4), today.max_future_hours)

    run = route_raw_rows(con, in_four_hours)

    assert (run.mode, run.rows_routed) == (INCREMENTAL, 2)
    assert ("day1.csv", 4) not in reasons(con)
    assert reasons(con)[("day2.csv", 1)] == "duplicate_event"
    assert snapshot(con) == routed_from_scratch(con, in_four_hours)


@pytest.mark.parametrize("change", ["replaced_file", "other_bounds"])
def test_a_replaced_file_or_new_bounds_route_every_row_again(con: duckdb.DuckDBPyConnection, change: str) -> None:
    bounds = Bounds.from_config("1995-01-01", 24)
    add_file(con, "day1.csv", FIRST_FILE, DAY1)
    add_file(con, "day2.csv", SECOND_FILE, DAY2)
    route_raw_rows(con, bounds)
    if change == "replaced_file":  # what ingestion does when day1.csv's content changes
        con.execute("DELETE FROM raw_events WHERE source_file = 'day1.csv'")
        add_file(con, "day1.csv", FIRST_FILE[2:], DAY2 + timedelta(days=1))
    else:
        bounds = Bounds.from_config("2015-06-03", 24)  # every 2015-06-02 event is now too old

    run = route_raw_rows(con, bounds)

    assert run.mode == FULL
    counts = con.execute(f"SELECT (SELECT count(*) FROM {VALIDATED}), (SELECT count(*) FROM {QUARANTINED})").fetchone()
    assert sum(counts) == con.execute("SELECT count(*) FROM raw_events").fetchone()[0]
    if change == "replaced_file":  # day2's copies of the removed day1 rows are now the first ones
        assert ("day2.csv", 1) not in reasons(con) and ("day2.csv", 5) not in reasons(con)
    else:
        assert reasons(con)[("day1.csv", 1)] == "event_time_out_of_range"


def test_a_second_run_without_new_files_routes_nothing(tmp_path: Path) -> None:
    database = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute(RAW_DDL)
        add_file(con, "day1.csv", FIRST_FILE, DAY1)
    resources = {"warehouse": WarehouseResource(database=str(database))}
    materialize([validate_interactions], resources=resources)

    second = materialize([validate_interactions], resources=resources)

    metadata = second.asset_materializations_for_node("validate_interactions")[0].metadata
    assert metadata["validation_mode"].value == INCREMENTAL
    assert (metadata["raw_rows_routed"].value, metadata["gx_rows_checked"].value) == (0, 0)
    checks = {e.check_name: e.passed for e in second.get_asset_check_evaluations()}
    assert all(checks.values()) and len(checks) == 11
