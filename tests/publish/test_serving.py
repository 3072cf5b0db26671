"""The serving file: contract types, invariants refused before the swap, readers never see a mix."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from recsys_dagster.publish.serving import (
    Forbidden,
    PublishInvariantError,
    Query,
    export_parquet,
    publish_serving_file,
)

NOW = datetime(2026, 11, 24, 2, 0)


def _tables(version: str, users: int = 50, per_user: int = 20) -> dict[str, pd.DataFrame]:
    recs = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(users) for _ in range(per_user)],
            "rank": [r + 1 for _ in range(users) for r in range(per_user)],
            "item_id": [f"i{(u + r) % 97}" for u in range(users) for r in range(per_user)],
            "score": [1.0 / (r + 1) for _ in range(users) for r in range(per_user)],
            "model": "als_model",
            "model_version": version,
            "generated_at": NOW,
        }
    )
    similar = pd.DataFrame(
        {"item_id": ["i1", "i1"], "rank": [1, 2], "similar_item_id": ["i2", "i3"], "score": [0.9, 0.5],
         "model_version": version, "generated_at": NOW}
    )
    popular = pd.DataFrame({"rank": [1, 2], "item_id": ["i1", "i2"], "score": [10.0, 5.0], "generated_at": NOW})
    items = pd.DataFrame({"item_id": ["i1"], "name": ["WHITE METAL LANTERN"], "category": [None], "price": [3.39]})
    runs = pd.DataFrame({"run_id": ["r"], "model": ["als_model"], "model_version": [version],
                         "metric": ["ndcg@10"], "value": [0.1], "evaluated_at": [NOW]})
    return {"recs.user_recommendations": recs, "recs.similar_items": similar, "recs.popular_items": popular,
            "recs.items": items, "ml.evaluation_runs": runs}


NOTHING_PURCHASED = pd.DataFrame({"user_id": pd.Series(dtype=str), "item_id": pd.Series(dtype=str)})
NOTHING_FORBIDDEN = Forbidden(NOTHING_PURCHASED, [])


def test_publish_writes_the_contract_tables(tmp_path: Path) -> None:
    serving = tmp_path / "serving.duckdb"
    counts = publish_serving_file(serving, _tables("v1"), NOTHING_FORBIDDEN)
    assert counts["recs.user_recommendations"] == 1000
    with duckdb.connect(str(serving), read_only=True) as con:
        types = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'recs' AND table_name = 'user_recommendations' ORDER BY ordinal_position"
        ).fetchall()
    assert types == [("user_id", "VARCHAR"), ("rank", "INTEGER"), ("item_id", "VARCHAR"), ("score", "DOUBLE"),
                     ("model", "VARCHAR"), ("model_version", "VARCHAR"), ("generated_at", "TIMESTAMP")]
    exported = export_parquet(serving, tmp_path / "published")
    assert duckdb.execute("SELECT count(*) FROM read_parquet($p)", {"p": str(exported['recs.user_recommendations'])}).fetchall() == [(1000,)]


@pytest.mark.parametrize(
    ("breakage", "invariant"),
    [
        (lambda t: t["recs.user_recommendations"].drop(index=3), "ranks_without_gaps"),
        (lambda t: t["recs.user_recommendations"].assign(item_id="i1"), "no_duplicate_items_per_user"),
        (lambda t: t["recs.user_recommendations"].assign(model_version=["a", "b"] * 500), "single_model_version"),
        (lambda t: t["recs.user_recommendations"].assign(score=float("inf")), "finite_scores"),
    ],
)
def test_a_broken_table_is_refused_and_the_old_file_stays(tmp_path: Path, breakage, invariant: str) -> None:
    serving = tmp_path / "serving.duckdb"
    publish_serving_file(serving, _tables("v1"), NOTHING_FORBIDDEN)
    broken = _tables("v2")
    broken["recs.user_recommendations"] = breakage(broken)
    with pytest.raises(PublishInvariantError, match=invariant):
        publish_serving_file(serving, broken, NOTHING_FORBIDDEN)
    with duckdb.connect(str(serving), read_only=True) as con:
        assert con.execute("SELECT DISTINCT model_version FROM recs.user_recommendations").fetchall() == [("v1",)]
    assert [p.name for p in tmp_path.iterdir()] == ["serving.duckdb"]


def _warehouse_with_recommendations(con: duckdb.DuckDBPyConnection, recs: pd.DataFrame) -> dict[str, object]:
    """``con`` holding ``recs`` (without its constant columns) as a table, and the tables to publish
    with recs.user_recommendations as a ``Query`` over it, the constants bound as parameters."""
    con.execute("CREATE TABLE scored AS SELECT user_id, rank, item_id, score FROM recs")
    tables = _tables("v2")
    tables["recs.user_recommendations"] = Query(
        "SELECT *, $version AS model_version, 'als_model' AS model, $now AS generated_at FROM scored",
        {"version": "v2", "now": NOW},
    )
    return tables


def test_a_query_table_streams_from_the_source_connection(tmp_path: Path) -> None:
    serving = tmp_path / "serving.duckdb"
    recs = _tables("v2", users=30)["recs.user_recommendations"]
    with duckdb.connect() as warehouse:
        tables = _warehouse_with_recommendations(warehouse, recs)
        counts = publish_serving_file(serving, tables, NOTHING_FORBIDDEN, source=warehouse)
        attached = warehouse.execute("SELECT database_name FROM duckdb_databases() WHERE NOT internal").fetchall()
    assert counts["recs.user_recommendations"] == 600
    assert attached == [("memory",)], "the new file is detached from the source before the swap"
    with duckdb.connect(str(serving), read_only=True) as con:
        published = con.execute("SELECT * FROM recs.user_recommendations ORDER BY user_id, rank").df()
    expected = recs.sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(published, expected, check_dtype=False)


def test_a_broken_query_table_is_refused_and_the_old_file_stays(tmp_path: Path) -> None:
    serving = tmp_path / "serving.duckdb"
    publish_serving_file(serving, _tables("v1"), NOTHING_FORBIDDEN)
    recs = _tables("v2")["recs.user_recommendations"].assign(item_id="i1")
    with duckdb.connect() as warehouse:
        tables = _warehouse_with_recommendations(warehouse, recs)
        with pytest.raises(PublishInvariantError, match="no_duplicate_items_per_user"):
            publish_serving_file(serving, tables, NOTHING_FORBIDDEN, source=warehouse)
    with duckdb.connect(str(serving), read_only=True) as con:
        assert con.execute("SELECT DISTINCT model_version FROM recs.user_recommendations").fetchall() == [("v1",)]
    assert [p.name for p in tmp_path.iterdir()] == ["serving.duckdb"]


def test_purchased_items_are_refused(tmp_path: Path) -> None:
    purchased = pd.DataFrame({"user_id": ["u0"], "item_id": ["i0"]})
    with pytest.raises(PublishInvariantError, match="never_a_purchased_item"):
        publish_serving_file(tmp_path / "serving.duckdb", _tables("v1"), Forbidden(purchased, []))
    assert not (tmp_path / "serving.duckdb").exists()


SOLD_OUT = "i-sold-out"
#: The catalog marks ``SOLD_OUT`` unavailable; ``_tables`` never lists it.
SOLD_OUT_FORBIDDEN = Forbidden(NOTHING_PURCHASED, ["i-discontinued", SOLD_OUT])


def _recommend_sold_out(table: str, column: str) -> dict[str, pd.DataFrame]:
    """Version v2 of the tables with ``SOLD_OUT`` in the first row's ``column`` of ``table``."""
    tables = _tables("v2")
    tables[table].loc[0, column] = SOLD_OUT
    return tables


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("recs.user_recommendations", "item_id"),
        ("recs.similar_items", "similar_item_id"),
        ("recs.popular_items", "item_id"),
    ],
)
def test_an_unavailable_item_is_refused_and_the_old_file_stays(tmp_path: Path, table: str, column: str) -> None:
    serving = tmp_path / "serving.duckdb"
    publish_serving_file(serving, _tables("v1"), SOLD_OUT_FORBIDDEN)
    before = serving.read_bytes()
    with pytest.raises(PublishInvariantError, match=r"never_an_unavailable_item \(1 rows\)$"):
        publish_serving_file(serving, _recommend_sold_out(table, column), SOLD_OUT_FORBIDDEN)
    assert serving.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["serving.duckdb"]


def test_an_unavailable_item_may_still_have_neighbours(tmp_path: Path) -> None:
    """similar_items.item_id is the item whose page shows the neighbours: only neighbours must be available."""
    serving = tmp_path / "serving.duckdb"
    counts = publish_serving_file(serving, _recommend_sold_out("recs.similar_items", "item_id"), SOLD_OUT_FORBIDDEN)
    assert counts["recs.similar_items"] == 2
    with duckdb.connect(str(serving), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM recs.similar_items WHERE item_id = ?", [SOLD_OUT]).fetchone() == (1,)


READER = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)
    before = con.execute("SELECT count(*), min(model_version) FROM recs.user_recommendations").fetchone()
    print("ready", flush=True)
    sys.stdin.readline()  # the parent republishes meanwhile
    after = con.execute(
        "SELECT count(*), count(DISTINCT model_version), min(model_version) FROM recs.user_recommendations"
    ).fetchone()
    print(before[0], before[1], after[0], after[1], after[2], flush=True)
    """
)


def test_a_reader_holding_the_file_keeps_a_complete_old_version(tmp_path: Path) -> None:
    serving = tmp_path / "serving.duckdb"
    publish_serving_file(serving, _tables("v1", users=50), NOTHING_FORBIDDEN)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(serving)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert reader.stdout.readline().strip() == "ready"
        publish_serving_file(serving, _tables("v2", users=80), NOTHING_FORBIDDEN)
        out, _ = reader.communicate("go\n", timeout=60)
    finally:
        reader.kill()
    assert out.split() == ["1000", "v1", "1000", "1", "v1"]
    with duckdb.connect(str(serving), read_only=True) as con:
        assert con.execute(
            "SELECT count(*), min(model_version) FROM recs.user_recommendations"
        ).fetchone() == (1600, "v2")
