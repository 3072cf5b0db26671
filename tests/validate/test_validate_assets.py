"""Validation routing on crafted raw rows: every row lands once, with the precise reason."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from dagster import materialize
from recsys_dagster.resources import WarehouseResource

from recsys_dagster.validate.assets import (
    QUARANTINED,
    VALIDATED,
    route_raw_rows,
    suite_outcomes,
    validate_interactions,
)
from recsys_dagster.validate.gx_duckdb import ephemeral_context
from recsys_dagster.validate.suite import EVENT_KEY_COLUMN, EVENT_KEY_SQL, Bounds, ExpectationOutcome, run_suite

RAW_DDL = """
CREATE TABLE raw_events (
    source_file VARCHAR, source_row BIGINT, source_format VARCHAR, user_id VARCHAR, item_id VARCHAR,
    event_type VARCHAR, rating VARCHAR, event_time VARCHAR, time_unit VARCHAR, transaction_id VARCHAR,
    ingested_at TIMESTAMP
)
"""

# (user_id, item_id, event_type, rating, event_time, time_unit, transaction_id) -> expected reason (None = valid)
CASES: list[tuple[tuple, str | None]] = [
    (("u1", "i1", "view", None, "1433221332117", "ms", None), None),
    ((" u1 ", "i2", " VIEW ", None, "1433221332", "s", None), None),
    (("u2", "i1", "transaction", None, "2010-12-01 08:26:00", "text", "536365"), None),
    (("u3", "i1", "rating", "4.0", "2019-10-01 00:00:00 UTC", "text", None), None),
    (("u3", "i9", "rating", "5", "12/1/2010 8:26", "text", None), None),
    (("", "i1", "view", None, "1433221332", "s", None), "missing_user_id"),
    ((None, "i1", "view", None, "1433221332", "s", None), "missing_user_id"),
    (("u4", "  ", "view", None, "1433221332", "s", None), "missing_item_id"),
    (("u4", "i1", "return", None, "1433221332", "s", "C536379"), "unknown_event_type"),
    (("u4", "i1", None, None, "1433221332", "s", None), "unknown_event_type"),
    (("u4", "i1", "view", None, None, "text", None), "missing_event_time"),
    (("u4", "i1", "view", None, "yesterday-ish", "text", None), "unparseable_event_time"),
    (("u4", "i1", "view", None, "1433221332117", "s", None), "event_time_in_milliseconds"),
    (("u4", "i1", "view", None, "-5", "s", None), "event_time_out_of_range"),
    (("u4", "i1", "view", None, "2999-01-01 00:00:00", "text", None), "event_time_out_of_range"),
    (("u4", "i1", "rating", None, "1433221332", "s", None), "missing_rating"),
    (("u4", "i1", "rating", "five", "1433221332", "s", None), "unparseable_rating"),
    (("u4", "i1", "rating", "7", "1433221332", "s", None), "rating_out_of_range"),
    (("u4", "i1", "rating", "nan", "1433221332", "s", None), "rating_out_of_range"),
    (("u4", "i1", "view", "3", "1433221332", "s", None), "rating_on_non_rating_event"),
    (("u4", "i1", "view", None, "1433221332", "s", "T1"), "transaction_id_on_non_transaction"),
    (("u1", "i1", "view", None, "1433221332117", "ms", None), "duplicate_event"),
]


@pytest.fixture()
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(RAW_DDL)
        rows = [
            ("crafted.csv", row_number, "canonical", *values, None)
            for row_number, (values, _) in enumerate(CASES, start=1)
        ]
        con.executemany("INSERT INTO raw_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return path


def test_every_raw_row_lands_once_with_the_expected_reason(warehouse: Path) -> None:
    result = materialize([validate_interactions], resources={"warehouse": WarehouseResource(database=str(warehouse))})
    assert result.success

    with duckdb.connect(str(warehouse), read_only=True) as con:
        reasons = dict(con.execute(f"SELECT source_row, reason FROM {QUARANTINED}").fetchall())
        validated_rows = {row for (row,) in con.execute(f"SELECT source_row FROM {VALIDATED}").fetchall()}
        normalised = con.execute(
            f"SELECT user_id, event_type, event_time::VARCHAR, rating FROM {VALIDATED} ORDER BY source_row"
        ).fetchall()

    expected = {row: reason for row, (_, reason) in enumerate(CASES, start=1) if reason}
    assert reasons == expected
    assert validated_rows == {row for row, (_, reason) in enumerate(CASES, start=1) if reason is None}
    assert normalised == [
        ("u1", "view", "2015-06-02 05:02:12.117", None),
        ("u1", "view", "2015-06-02 05:02:12", None),
        ("u2", "transaction", "2010-12-01 08:26:00", None),
        ("u3", "rating", "2019-10-01 00:00:00", 4.0),
        ("u3", "rating", "2010-12-01 08:26:00", 5.0),
    ]


def test_checks_pass_and_row_accounting_is_reported(warehouse: Path) -> None:
    result = materialize([validate_interactions], resources={"warehouse": WarehouseResource(database=str(warehouse))})
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["row_accounting"].passed
    accounting = {k: v.value for k, v in evaluations["row_accounting"].metadata.items()}
    assert accounting == {"raw": len(CASES), "validated": 5, "quarantined": len(CASES) - 5, "rows_in_both": 0}
    gx_checks = {name: e for name, e in evaluations.items() if name.startswith("gx_")}
    assert len(gx_checks) == 10
    assert all(e.passed for e in gx_checks.values())


def test_a_failed_rebuild_keeps_the_previous_tables(warehouse: Path) -> None:
    resources = {"warehouse": WarehouseResource(database=str(warehouse))}
    assert materialize([validate_interactions], resources=resources).success
    with duckdb.connect(str(warehouse)) as con:
        con.execute("ALTER TABLE raw_events DROP COLUMN time_unit")
    assert not materialize([validate_interactions], resources=resources, raise_on_error=False).success
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute(f"SELECT count(*) FROM {VALIDATED}").fetchone() == (5,)
        assert con.execute(f"SELECT count(*) FROM {QUARANTINED}").fetchone() == (len(CASES) - 5,)


def pandas_engine_outcomes(con: duckdb.DuckDBPyConnection, bounds: Bounds) -> list[ExpectationOutcome]:
    """The reference: the same suite run by GX's pandas engine on the validated rows as a frame
    (the event key as JSON text: a pandas column of dicts cannot be hashed)."""
    frame = con.execute(f"SELECT *, to_json({EVENT_KEY_SQL}) AS {EVENT_KEY_COLUMN} FROM {VALIDATED}").df()
    context = ephemeral_context()
    batch = (
        context.data_sources.add_pandas("frames")
        .add_dataframe_asset(VALIDATED)
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    return run_suite(context, batch, bounds, len(frame), batch_parameters={"dataframe": frame})


def test_gx_in_duckdb_finds_every_planted_violation(warehouse: Path) -> None:
    """GX's SQL engine inside DuckDB counts exactly what its pandas engine counts on the same rows.

    Violations are planted in validated_interactions after routing (the routing never lets them
    through), among them a duplicate of a validated event.
    """
    bounds = Bounds.from_config("1995-01-01", 24)
    with duckdb.connect(str(warehouse)) as con:
        route_raw_rows(con, bounds)
        con.execute(
            f"""
            INSERT INTO {VALIDATED} SELECT user_id, item_id, event_type, rating, event_time, transaction_id,
                                           source_file, source_row + 100, source_format
            FROM {VALIDATED} ORDER BY source_row LIMIT 1
            """
        )
        con.execute(
            f"""
            INSERT INTO {VALIDATED} VALUES
                (NULL, 'i1', 'view', NULL, TIMESTAMP '2015-06-01', NULL, 'planted', 1, 'canonical'),
                ('u9', 'i1', 'view', 9.0, TIMESTAMP '1990-01-01', NULL, 'planted', 2, 'canonical')
            """
        )
        whole = {o.reason: (o.success, o.unexpected_count, o.element_count) for o in suite_outcomes(con, bounds)}
        reference = {o.reason: (o.success, o.unexpected_count, o.element_count)
                     for o in pandas_engine_outcomes(con, bounds)}
    assert whole == reference
    failed = {reason for reason, (success, _, _) in whole.items() if not success}
    assert failed == {
        "missing_user_id", "event_time_out_of_range", "rating_out_of_range", "rating_on_non_rating_event",
        "duplicate_event",
    }
    assert whole["missing_user_id"] == (False, 1, 8)
    assert whole["duplicate_event"][1] == 2  # both copies of the duplicated event
