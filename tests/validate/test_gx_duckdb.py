"""The DB-API adapter that lets GX's SQL engine read the warehouse through the duckdb-engine dialect."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from recsys_dagster.validate.gx_duckdb import DUCKDB_DIALECT_URL, EagerConnection, Loan


def test_a_result_outlives_the_block_that_ran_it(tmp_path: Path) -> None:
    """GX's pattern: execute inside ``with engine.connect()``, fetch after the block has rolled back.

    Through duckdb-engine's own connections the rows are gone by then (the bug that made every GX
    metric fail with ``list index out of range``); through the adapter they are still there.
    """
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE TABLE events AS SELECT range AS n FROM range(5)")
        loan = Loan(con)
        engine = sa.create_engine(DUCKDB_DIALECT_URL, creator=lambda: EagerConnection(loan))
        with engine.connect() as connection:
            result = connection.execute(sa.text("SELECT count(*), sum(n) FROM events WHERE n >= :low"), {"low": 2})
        assert result.fetchall() == [(3, 9)]
        with engine.connect() as connection:
            first_two = connection.execute(sa.text("SELECT n FROM events ORDER BY n LIMIT 2"))
        assert [row.n for row in first_two] == [0, 1]
        engine.dispose()


def test_the_connection_is_unreachable_once_the_loan_ends(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        loan = Loan(con)
        cursor = EagerConnection(loan).cursor()
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
        loan.end()
        with pytest.raises(RuntimeError, match="already returned"):
            cursor.execute("SELECT 1")
