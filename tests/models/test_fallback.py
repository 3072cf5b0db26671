"""The popularity top-up: exactly n rows per user, ranks 1..n, never an owned item."""

from __future__ import annotations

import duckdb
import pandas as pd

from recsys_dagster.models.fallback import published_recommendations, top_up_from_popularity


def test_short_and_cold_users_are_topped_up_to_exactly_n() -> None:
    recs = pd.DataFrame({"user_id": ["warm", "warm"], "rank": [1, 2], "item_id": ["a", "b"], "score": [0.9, 0.5]})
    popular = pd.DataFrame({"rank": range(1, 31), "item_id": [f"p{i}" for i in range(30)], "score": 1.0})
    owned = pd.DataFrame({"user_id": ["cold"], "item_id": ["p0"]})

    topped = top_up_from_popularity(recs, pd.Series(["warm", "cold"]), popular, owned, n=5)

    by_user = {user: frame.sort_values("rank") for user, frame in topped.groupby("user_id")}
    assert by_user["warm"]["item_id"].tolist() == ["a", "b", "p0", "p1", "p2"]
    assert by_user["warm"]["tier"].tolist() == [0, 0, 1, 1, 1]
    assert by_user["cold"]["item_id"].tolist() == ["p1", "p2", "p3", "p4", "p5"]
    assert all(frame["rank"].tolist() == [1, 2, 3, 4, 5] for frame in by_user.values())
    assert by_user["cold"]["score"].isna().all()


def _shop(con) -> None:
    """Four users, two categories; 'c1' items are recently popular, 'old' was popular long ago."""
    con.execute(
        """
        CREATE TABLE dim_items AS SELECT * FROM (VALUES
            ('a1', 'c1', true), ('a2', 'c1', true), ('a3', 'c1', false), ('old', 'c1', true),
            ('b1', 'c2', true), ('g1', NULL, true)
        ) t(item_id, category, available);
        CREATE TABLE fct_user_item_interactions AS SELECT user_id, item_id,
            TIMESTAMP '2024-03-01' - to_days(age) AS last_event_time FROM (VALUES
            ('warm', 'a1', 1), ('warm', 'b1', 2), ('cold', 'a2', 1), ('u3', 'a1', 2), ('u4', 'a1', 3),
            ('u3', 'a3', 1), ('u4', 'a3', 1), ('u5', 'a2', 5), ('u5', 'old', 200), ('u6', 'old', 200),
            ('u7', 'old', 200), ('nocat', 'g1', 1)
        ) t(user_id, item_id, age);
        CREATE TABLE dim_users AS SELECT user_id, count(*) AS n_items FROM fct_user_item_interactions GROUP BY 1;
        """
    )


def test_published_lists_use_the_model_then_recent_category_then_global_popularity() -> None:
    model_recs = pd.DataFrame({"user_id": ["warm"] * 2, "rank": [1, 2], "item_id": ["b1", "g1"], "score": [0.9, 0.4]})
    popular = pd.DataFrame({"rank": [1, 2, 3, 4, 5], "item_id": ["old", "a1", "a2", "b1", "g1"], "score": 1.0})
    owned = pd.DataFrame({"user_id": ["cold"], "item_id": ["a1"]})
    with duckdb.connect() as con:
        _shop(con)
        table = published_recommendations(con, model_recs, popular, owned, n=4, recent_days=30).to_pandas()

    lists = {user: frame.sort_values("rank") for user, frame in table.groupby("user_id")}
    assert set(lists) == {"warm", "cold", "u3", "u4", "u5", "u6", "u7", "nocat"}
    # a short model list continues like a cold one: warm last touched a1, so recent c1 items follow
    assert lists["warm"]["item_id"].tolist() == ["b1", "g1", "a1", "a2"]
    assert lists["warm"]["tier"].tolist() == [0, 0, 1, 1]
    # cold browsed c1: recent c1 items by recent users (a1 owned, a3 unavailable, 'old' not recent), then global
    assert lists["cold"]["item_id"].tolist() == ["a2", "old", "b1", "g1"]
    assert lists["cold"]["tier"].tolist() == [1, 2, 2, 2] and lists["cold"]["score"].isna().all()
    assert lists["nocat"]["item_id"].tolist() == ["old", "a1", "a2", "b1"]
    assert all(frame["rank"].tolist() == [1, 2, 3, 4] for frame in lists.values())
    assert "a3" not in set(table["item_id"])
