"""Readers never see a partial or mixed serving file, and killed publishes leave no litter behind.

The real ``publish_serving_file`` publishes version after version (users and items of the bundled
Online Retail sample, each version with a different number of users) while a separate reader
process (``serving_reader.py``) opens the file again and again and checks every read: a single
model_version, ranks 1..n for every user, and exactly the users and rows of that version.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from recsys_dagster.publish.serving import (
    RECOMMENDATIONS_PER_USER,
    SERVING_TABLES,
    Forbidden,
    publish_serving_file,
    remove_leftover_staging_files,
)
from recsys_dagster.settings import DATA_DIR

READER = Path(__file__).with_name("serving_reader.py")
SAMPLE = DATA_DIR / "sample" / "online_retail.csv"
PUBLISHES = 12


@pytest.fixture(scope="module")
def sample_ids() -> tuple[list[str], list[str]]:
    """Customers and products of the sample, products by number of buyers (a popularity list)."""
    with duckdb.connect() as con:
        con.execute("CREATE TABLE sales AS SELECT * FROM read_csv(?, all_varchar = true)", [str(SAMPLE)])
        users = [u for (u,) in con.execute(
            "SELECT DISTINCT CustomerID FROM sales WHERE CustomerID IS NOT NULL ORDER BY 1").fetchall()]
        items = [i for (i,) in con.execute(
            "SELECT StockCode FROM sales GROUP BY 1 ORDER BY count(DISTINCT CustomerID) DESC, 1").fetchall()]
    return users, items


def version_tables(version: int, users: list[str], items: list[str]) -> tuple[str, dict[str, pd.DataFrame]]:
    """Version ``version``: fewer users each time, a rotated popularity list for every user."""
    chosen = users[: len(users) - 9 * version]
    model_version = f"v{version:03d}-users{len(chosen)}-per{RECOMMENDATIONS_PER_USER}"
    ranks = range(1, RECOMMENDATIONS_PER_USER + 1)
    recs = pd.DataFrame(
        [(user, rank, items[(rank + version) % len(items)], 1.0 / rank) for user in chosen for rank in ranks],
        columns=["user_id", "rank", "item_id", "score"],
    ).assign(model="popularity_model", model_version=model_version, generated_at=pd.Timestamp("2026-01-01"))
    tables = {table: pd.DataFrame({name: [] for name, _ in columns}) for table, columns in SERVING_TABLES.items()}
    tables["recs.user_recommendations"] = recs
    return model_version, tables


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Block until ``path`` exists (the reader has read once), failing if the reader dies first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"reader exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.05)


NOTHING_FORBIDDEN = Forbidden(pd.DataFrame({"user_id": pd.Series(dtype=object), "item_id": pd.Series(dtype=object)}), [])


def test_a_polling_reader_never_sees_a_partial_or_mixed_version(
    tmp_path: Path, sample_ids: tuple[list[str], list[str]]
) -> None:
    serving, stop, report = tmp_path / "serving.duckdb", tmp_path / "stop", tmp_path / "reader.json"
    published = [version_tables(0, *sample_ids)[0]]
    publish_serving_file(serving, version_tables(0, *sample_ids)[1], NOTHING_FORBIDDEN)
    reader = subprocess.Popen([sys.executable, str(READER), str(serving), str(stop), str(report)])
    try:
        wait_for(report.with_suffix(".ready"), reader)
        for version in range(1, PUBLISHES + 1):
            model_version, tables = version_tables(version, *sample_ids)
            publish_serving_file(serving, tables, NOTHING_FORBIDDEN)
            published.append(model_version)
    finally:
        stop.touch()
        reader.wait(timeout=60)
    seen = json.loads(report.read_text())
    assert seen["problems"] == []
    assert seen["reads"] >= 10
    assert len(seen["versions"]) >= 3, seen["versions"]  # the reader really overlapped the publishes
    assert set(seen["versions"]) <= set(published)
    assert seen["versions"] == sorted(seen["versions"])  # never an older version after a newer one
    assert list(tmp_path.glob(".serving.duckdb.*")) == []


def test_the_next_publish_removes_files_of_killed_publishes(
    tmp_path: Path, sample_ids: tuple[list[str], list[str]]
) -> None:
    serving = tmp_path / "serving.duckdb"
    leftovers = [tmp_path / ".serving.duckdb.0123abcd.tmp", tmp_path / ".serving.duckdb.0123abcd.tmp.wal"]
    for leftover in leftovers:
        leftover.write_bytes(b"half-written by a killed publish")
    unrelated = tmp_path / ".other.duckdb.0123abcd.tmp"
    unrelated.write_bytes(b"not ours")

    publish_serving_file(serving, version_tables(1, *sample_ids)[1], NOTHING_FORBIDDEN)

    assert [path for path in leftovers if path.exists()] == []
    assert unrelated.exists()
    assert remove_leftover_staging_files(serving) == []
    with duckdb.connect(str(serving), read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT user_id) FROM recs.user_recommendations").fetchone()[0] == 314
