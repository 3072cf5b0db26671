"""Materialization metadata shared by every stage: row counts, timing and a markdown preview.

One helper so that every asset shows the same fields in the Dagster UI, whatever the stage.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import duckdb
import pandas as pd
from dagster import MetadataValue


@dataclass
class Stopwatch:
    """Wall-clock seconds of a ``with timed()`` block, read after (or during) the block."""

    started: float = field(default_factory=time.perf_counter)
    stopped: float | None = None

    @property
    def seconds(self) -> float:
        end = self.stopped if self.stopped is not None else time.perf_counter()
        return round(end - self.started, 3)


@contextmanager
def timed() -> Iterator[Stopwatch]:
    watch = Stopwatch()
    try:
        yield watch
    finally:
        watch.stopped = time.perf_counter()


def frame_preview(frame: pd.DataFrame, limit: int = 10) -> MetadataValue:
    """A markdown table of the first ``limit`` rows of ``frame``."""
    return MetadataValue.md(frame.head(limit).to_markdown(index=False) if len(frame) else "_(no rows)_")


def table_preview(con: duckdb.DuckDBPyConnection, table: str, limit: int = 10) -> MetadataValue:
    """A markdown table of the first ``limit`` rows of ``table`` (a trusted, code-defined name)."""
    frame = con.execute(f"SELECT * FROM {table} LIMIT {int(limit)}").df()
    return frame_preview(frame, limit)


def count_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Row count of ``table`` (a trusted, code-defined name)."""
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def table_metadata(
    con: duckdb.DuckDBPyConnection, table: str, seconds: float, limit: int = 10
) -> dict[str, object]:
    """The standard metadata of an asset materialized as a warehouse table."""
    return {
        "dagster/row_count": MetadataValue.int(count_rows(con, table)),
        "duration_s": MetadataValue.float(seconds),
        "table": MetadataValue.text(table),
        "preview": table_preview(con, table, limit),
    }
