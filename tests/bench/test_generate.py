"""The event generator's CLI on a small run: determinism, event mix, funnel order, ingest recognition.

The CLI runs as a subprocess from the project root, exactly as documented (``python -m
bench.generate``): the ``bench`` package is not installed, so it is found from the working directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from recsys_dagster.ingest.formats import detect_format
from recsys_dagster.settings import PROJECT_ROOT

EVENTS = 20_000
#: RetailRocket's published mix (2,664,312 / 69,332 / 22,457 of 2,756,101 events)
PUBLISHED_SHARES = {"view": 0.966697, "addtocart": 0.025156, "transaction": 0.008148}


def run_generator(out: Path, seed: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.generate", "--events", str(EVENTS), "--out", str(out), "--seed", str(seed)]
        + list(extra),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seed 7 twice and seed 8 once."""
    base = tmp_path_factory.mktemp("generated")
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        run_generator(base / name, seed)
    return {name: base / name for name in ("a", "b", "c")}


@pytest.fixture(scope="module")
def events(runs: dict[str, Path]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE events AS SELECT * FROM read_csv(?, header = true)", [str(runs["a"] / "events.csv")])
    return con


def test_same_seed_gives_identical_bytes_and_other_seed_differs(runs: dict[str, Path]) -> None:
    for name in ("events.csv", "items.csv"):
        assert (runs["a"] / name).read_bytes() == (runs["b"] / name).read_bytes(), name
        assert (runs["a"] / name).read_bytes() != (runs["c"] / name).read_bytes(), name


def test_event_mix_and_visitor_count_match_the_scaled_published_totals(events: duckdb.DuckDBPyConnection) -> None:
    counts = dict(events.execute("SELECT event, count(*) FROM events GROUP BY event").fetchall())
    assert sum(counts.values()) == EVENTS
    for event, share in PUBLISHED_SHARES.items():
        assert counts[event] / EVENTS == pytest.approx(share, abs=0.0005), event
    visitors = events.execute("SELECT count(DISTINCT visitorid) FROM events").fetchone()[0]
    assert visitors == round(EVENTS * 1_407_580 / 2_756_101)


def test_shapes_are_long_tailed_and_within_the_window(events: duckdb.DuckDBPyConnection) -> None:
    one_event_share, max_events = events.execute(
        "SELECT avg((n = 1)::INT), max(n) FROM (SELECT count(*) AS n FROM events GROUP BY visitorid)"
    ).fetchone()
    assert 0.5 < one_event_share < 0.7  # most visitors have a single event ...
    assert max_events >= 20  # ... and a few are heavy
    top_item_share = events.execute(
        "SELECT max(n) / sum(n) * 100 FROM (SELECT count(*) AS n FROM events GROUP BY itemid)"
    ).fetchone()[0]
    assert top_item_share > 0.2  # one item alone takes >0.2% of a 20k-event log (uniform: ~0.01%)
    first, last = events.execute("SELECT min(timestamp), max(timestamp) FROM events").fetchone()
    assert 1_430_600_400_000 <= first and last < 1_442_523_600_000 + 86_400_000
    assert last - first > 100 * 86_400_000  # spread over months, not days


def test_every_transaction_follows_a_view_or_cart_of_the_same_visitor_and_item(
    events: duckdb.DuckDBPyConnection,
) -> None:
    unexplained, transactions, with_id = events.execute("""
        SELECT count(*) FILTER (WHERE NOT EXISTS (
                   SELECT 1 FROM events e WHERE e.visitorid = t.visitorid AND e.itemid = t.itemid
                   AND e.event IN ('view', 'addtocart') AND e.timestamp < t.timestamp)),
               count(*), count(transactionid)
        FROM events t WHERE event = 'transaction'""").fetchone()
    assert transactions > 0 and unexplained == 0
    assert with_id == transactions
    assert events.execute("SELECT count(transactionid) FROM events WHERE event <> 'transaction'").fetchone()[0] == 0
    carts_without_view = events.execute("""
        SELECT count(*) FROM events c WHERE event = 'addtocart' AND NOT EXISTS (
            SELECT 1 FROM events e WHERE e.visitorid = c.visitorid AND e.itemid = c.itemid
            AND e.event = 'view' AND e.timestamp < c.timestamp)""").fetchone()[0]
    assert carts_without_view == 0


def test_catalog_covers_every_event_item(runs: dict[str, Path], events: duckdb.DuckDBPyConnection) -> None:
    events.execute("CREATE TABLE items AS SELECT * FROM read_csv(?, header = true)", [str(runs["a"] / "items.csv")])
    n_items, distinct_ids, missing = events.execute("""
        SELECT (SELECT count(*) FROM items), (SELECT count(DISTINCT item_id) FROM items),
               (SELECT count(DISTINCT itemid) FROM events
                WHERE itemid NOT IN (SELECT item_id FROM items))""").fetchone()
    assert n_items == distinct_ids == round(235_061 * (EVENTS / 2_756_101) ** 0.5)
    assert missing == 0


def test_ingest_recognises_both_files(runs: dict[str, Path]) -> None:
    assert detect_format(runs["a"] / "events.csv").format.name == "retailrocket"
    assert detect_format(runs["a"] / "items.csv").format.name == "canonical_items"


def test_stats_option_prints_generated_beside_published(tmp_path: Path) -> None:
    printed = run_generator(tmp_path / "out", 1, "--stats").stdout
    assert "| transactions | 163 | 163 |" in printed
    assert "RetailRocket published" in printed
