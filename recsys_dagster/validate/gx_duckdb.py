"""Great Expectations' SQL engine on the warehouse's own DuckDB connection.

GX checks a SQL table with a handful of aggregate queries (one bundle per domain), so running the
suite inside DuckDB costs a few scans instead of exporting every validated row to pandas (which was
~85% of validation time at 2.76M rows). GX reaches DuckDB through SQLAlchemy and the
``duckdb-engine`` dialect, which works with one adaptation, made through SQLAlchemy's public
``creator`` hook instead of patching either library:

- Why GX got no rows back. ``duckdb-engine`` hands SQLAlchemy the DuckDB connection itself as the
  DB-API cursor, so a result can be read only until the next statement on that connection. GX
  executes a query inside ``with engine.connect()`` and fetches its rows *after* the block (for every
  dialect but sqlite/mssql/bigquery/databricks); leaving the block rolls the connection's transaction
  back, the ROLLBACK replaces the pending result, and GX's metric bundle gets ``[]``
  (``MetricResolutionError: list index out of range``).
- The adaptation. ``EagerConnection`` is a minimal DB-API connection over an existing DuckDB
  connection whose cursors fetch each result when the statement runs (GX's metric queries return one
  row, its samples are LIMITed), and whose transaction calls are no-ops: GX only reads, and the
  connection and its transactions belong to the asset that lends it. Lending the asset's connection
  also means no second handle on the warehouse file and that GX sees the asset's temporary tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import great_expectations as gx
from great_expectations.core.batch_definition import BatchDefinition

#: SQLAlchemy URL that selects the ``duckdb-engine`` dialect; the connections come from ``creator``.
DUCKDB_DIALECT_URL = "duckdb:///:memory:"


class Loan:
    """An open DuckDB connection lent to GX for the duration of one check, and no longer.

    GX keeps its latest context (with the datasource, engine and connection objects it made) alive
    for the rest of the process; they reach the connection only through the loan, which ``end``
    empties, so the asset's connection is not kept alive by them.
    """

    def __init__(self, database: duckdb.DuckDBPyConnection) -> None:
        self._database: duckdb.DuckDBPyConnection | None = database

    @property
    def database(self) -> duckdb.DuckDBPyConnection:
        if self._database is None:
            raise RuntimeError("the DuckDB connection lent to Great Expectations was already returned")
        return self._database

    def end(self) -> None:
        self._database = None


class EagerCursor:
    """DB-API cursor that reads every result at ``execute``: a later statement cannot discard it."""

    arraysize = 1

    def __init__(self, connection: EagerConnection) -> None:
        self.connection = connection
        self.description: Sequence[tuple] | None = None
        self.rowcount = -1
        self._rows: list[tuple] = []

    def execute(self, statement: str, parameters: Sequence[Any] | None = None) -> None:
        database = self.connection.loan.database
        database.execute(statement, parameters) if parameters else database.execute(statement)
        self.description = database.description
        self._rows = database.fetchall() if self.description else []
        self.rowcount = len(self._rows)

    def executemany(self, statement: str, parameters: Sequence[Sequence[Any]]) -> None:
        self.connection.loan.database.executemany(statement, list(parameters))
        self.description, self._rows, self.rowcount = None, [], -1

    def fetchone(self) -> tuple | None:
        return self._rows.pop(0) if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[tuple]:
        count = size or self.arraysize
        batch, self._rows = self._rows[:count], self._rows[count:]
        return batch

    def fetchall(self) -> list[tuple]:
        rows, self._rows = self._rows, []
        return rows

    def close(self) -> None:
        self._rows = []


class EagerConnection:
    """DB-API connection over a lent DuckDB connection, for SQLAlchemy's reads only.

    ``begin``/``commit``/``rollback``/``close`` do nothing: the lender owns the connection and its
    transactions. ``notices`` is read by the PostgreSQL base of the ``duckdb-engine`` dialect.
    """

    def __init__(self, loan: Loan) -> None:
        self.loan = loan
        self.notices: list[str] = []

    def cursor(self) -> EagerCursor:
        return EagerCursor(self)

    def begin(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


@contextmanager
def duckdb_table_batch(context: Any, con: duckdb.DuckDBPyConnection, relation: str) -> Iterator[BatchDefinition]:
    """A GX batch of the whole ``relation`` (a table or temp view visible to ``con``), read in place.

    ``create_temp_table=False``: GX must not write into the warehouse. On exit the loan ends.
    """
    loan = Loan(con)
    datasource = context.data_sources.add_sql(
        "warehouse",
        connection_string=DUCKDB_DIALECT_URL,
        create_temp_table=False,
        kwargs={"creator": lambda: EagerConnection(loan)},
    )
    try:
        yield datasource.add_table_asset(relation, table_name=relation).add_batch_definition_whole_table("whole")
    finally:
        loan.end()


def ephemeral_context() -> Any:
    """A GX context that writes no files (the suite is code, the verdicts become Dagster checks)."""
    return gx.get_context(mode="ephemeral")
