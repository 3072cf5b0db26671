"""``python -m bench.generate --next-day``: one more day after the log, the incremental benchmark's
inbox file. Deterministic, on the single day after the log's last event, returning and new visitors,
transaction ids after the log's, and a file the ingest step recognises."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from recsys_dagster.ingest.formats import detect_format
from tests.bench.test_generate import run_generator

DAY_EVENTS = 2_000
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The same log and next day generated twice (seed 7)."""
    base = tmp_path_factory.mktemp("next-day")
    for name in ("a", "b"):
        run_generator(base / name, 7, "--next-day", str(DAY_EVENTS))
    return [base / name for name in ("a", "b")]


def test_the_next_day_is_deterministic(days: list[Path]) -> None:
    [first], [second] = (sorted(folder.glob("day-*.csv")) for folder in days)
    assert first.name == second.name and first.read_bytes() == second.read_bytes()
    assert detect_format(first).format.name == "retailrocket"


def test_the_day_follows_the_log_with_returning_and_new_visitors(days: list[Path]) -> None:
    folder = days[0]
    [day] = folder.glob("day-*.csv")
    con = duckdb.connect()
    con.execute("CREATE TABLE log AS SELECT * FROM read_csv(?)", [str(folder / "events.csv")])
    con.execute("CREATE TABLE day AS SELECT * FROM read_csv(?)", [str(day)])
    n_events, first, last, min_tx, n_visitors = con.execute(
        "SELECT count(*), min(timestamp), max(timestamp), min(transactionid), count(DISTINCT visitorid) FROM day"
    ).fetchone()
    log_last, log_max_tx = con.execute("SELECT max(timestamp), max(transactionid) FROM log").fetchone()
    returning = con.execute(
        "SELECT count(DISTINCT visitorid) FROM day WHERE visitorid IN (SELECT visitorid FROM log)"
    ).fetchone()[0]
    assert n_events == pytest.approx(DAY_EVENTS, rel=0.1)
    assert first // DAY_MS == last // DAY_MS == log_last // DAY_MS + 1  # one day, the next one
    assert min_tx > log_max_tx
    assert 0 < returning < n_visitors / 2  # mostly new visitors, some come back
    assert day.name == f"day-{con.execute('SELECT CAST(make_timestamp(? * 1000) AS DATE)', [first]).fetchone()[0]}.csv"
