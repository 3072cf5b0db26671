"""The plain-SQL marts (``recsys_dagster.models.marts``) equal dbt's, row for row, on every event type.

The validation split, the model tests and ``bench.quality`` build their marts with ``marts.py``;
production reads dbt's. Both are built here from the same events: real REES46 views, carts and
purchases, real Amazon ratings, and a few written ratings for what those lack (a rating changed
later, two ratings of one pair at the same second, ratings after the holdout cutoff). dbt is the
source of truth: a difference is a bug in ``marts.py``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from dagster import materialize

from recsys_dagster.features.dbt import recsys_dbt_assets
from recsys_dagster.models.marts import build_marts
from recsys_dagster.resources import build_resources
from tests.features.conftest import INSERT_AMAZON_RATINGS, INSERT_REES46_EVENTS, create_warehouse

#: Ratings the real slices do not have. REES46 ends at 02:49:59, so the 02:4x rows fall after the
#: holdout cutoff; same-second ties are broken by (source_file, source_row), the later row winning.
WRITTEN_RATINGS = """
insert into main.validated_interactions
select user_id, item_id, 'rating', rating, cast(event_time as timestamp), null, source_file, source_row, 'canonical'
from (values
    ('rater', 'changed-mind', 2.0, '2019-10-01 00:30:00', 'ratings_a.csv', 1),
    ('rater', 'changed-mind', 4.0, '2019-10-01 02:48:00', 'ratings_a.csv', 2),
    ('rater', 'same-second', 1.0, '2019-10-01 02:48:30', 'ratings_a.csv', 3),
    ('rater', 'same-second', 5.0, '2019-10-01 02:48:30', 'ratings_a.csv', 4),
    ('rater', 'same-second', 3.0, '2019-10-01 02:48:30', 'ratings_a.csv', 5),
    ('rater', 'two-files', 5.0, '2019-10-01 01:10:00', 'ratings_b.csv', 1),
    ('rater', 'two-files', 2.0, '2019-10-01 01:10:00', 'ratings_a.csv', 9),
    ('541312140', '44600062', 3.0, '2019-10-01 02:49:00', 'ratings_a.csv', 6)
) as written(user_id, item_id, rating, event_time, source_file, source_row)
"""

#: Every table ``build_marts`` writes that dbt also builds (``stg_interactions`` is their common input).
MARTS = ("int_holdout_cutoff", "fct_user_item_interactions", "fct_train_user_item", "fct_holdout_interactions",
         "dim_items", "dim_users")


@pytest.fixture(scope="module")
def both_builds(tmp_path_factory: pytest.TempPathFactory, shared_datasets: Path) -> duckdb.DuckDBPyConnection:
    """dbt's warehouse (attached as ``dbt``) and marts.py's (``plain``) from the same events, no catalog."""
    folder = tmp_path_factory.mktemp("marts_vs_dbt")
    warehouse, events = folder / "warehouse.duckdb", folder / "events.parquet"
    rees46 = shared_datasets / "rees46_multicategory_head" / "2019-Oct_head_0000-0249UTC.csv"
    amazon = shared_datasets / "amazon_electronics_ratings" / "ratings_Electronics_head.csv"
    with create_warehouse(warehouse) as con:
        con.execute(INSERT_REES46_EVENTS, {"path": str(rees46)})
        con.execute(INSERT_AMAZON_RATINGS, {"path": str(amazon), "n_rows": 2000})
        con.execute(WRITTEN_RATINGS)
        con.execute("COPY main.validated_interactions TO $path (FORMAT parquet)", {"path": str(events)})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECSYS_DUCKDB_PATH", str(warehouse))
        assert materialize([recsys_dbt_assets], resources=build_resources()).success
    plain = build_marts(folder / "plain.duckdb", "SELECT * FROM read_parquet($path)", events)
    con = duckdb.connect()
    con.execute("ATTACH $path AS dbt (READ_ONLY)", {"path": str(warehouse)})
    con.execute("ATTACH $path AS plain (READ_ONLY)", {"path": str(plain)})
    yield con
    con.close()


def columns(con: duckdb.DuckDBPyConnection, database: str, table: str) -> list[str]:
    return [name for (name,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = ? AND table_name = ?"
        " ORDER BY ordinal_position", [database, table]).fetchall()]


def test_the_events_cover_every_event_type(both_builds: duckdb.DuckDBPyConnection) -> None:
    counts = dict(both_builds.execute(
        "SELECT event_type, count(*) FROM dbt.main.stg_interactions GROUP BY event_type").fetchall())
    assert counts == {"view": 17_045, "addtocart": 165, "transaction": 214, "rating": 2_008}
    in_holdout = both_builds.execute(
        "SELECT count(*) FILTER (n_events > n_transactions), count(last_rating) FROM dbt.main.fct_holdout_interactions"
    ).fetchone()
    assert in_holdout[0] > 0 and in_holdout[1] == 3  # views/carts and ratings after the cutoff too


@pytest.mark.parametrize("table", MARTS)
def test_marts_sql_equals_dbt_row_for_row(both_builds: duckdb.DuckDBPyConnection, table: str) -> None:
    dbt_columns = columns(both_builds, "dbt", table)
    assert set(dbt_columns) <= set(columns(both_builds, "plain", table)), "marts.py lacks a dbt column"
    listed = ", ".join(f'"{name}"' for name in dbt_columns)
    dbt_rows, plain_rows, only_dbt, only_plain = both_builds.execute(f"""
        SELECT (SELECT count(*) FROM dbt.main.{table}), (SELECT count(*) FROM plain.main.{table}),
               (SELECT count(*) FROM (SELECT {listed} FROM dbt.main.{table} EXCEPT ALL
                                      SELECT {listed} FROM plain.main.{table})),
               (SELECT count(*) FROM (SELECT {listed} FROM plain.main.{table} EXCEPT ALL
                                      SELECT {listed} FROM dbt.main.{table}))
    """).fetchone()
    assert dbt_rows == plain_rows > 0
    assert (only_dbt, only_plain) == (0, 0)


@pytest.mark.parametrize(("table", "item_id", "last_rating"), [
    ("fct_user_item_interactions", "changed-mind", 4.0),
    ("fct_train_user_item", "changed-mind", 2.0),
    ("fct_user_item_interactions", "same-second", 3.0),
    ("fct_holdout_interactions", "same-second", 3.0),
    ("fct_user_item_interactions", "two-files", 5.0),
])
def test_the_latest_rating_breaks_ties_by_file_and_row(
    both_builds: duckdb.DuckDBPyConnection, table: str, item_id: str, last_rating: float
) -> None:
    """dbt's latest_rating(): latest event_time, then source_file, then source_row, the later one winning."""
    for database in ("dbt", "plain"):
        rows = both_builds.execute(
            f"SELECT last_rating FROM {database}.main.{table} WHERE user_id = 'rater' AND item_id = ?", [item_id]
        ).fetchall()
        assert rows == [(last_rating,)], database
