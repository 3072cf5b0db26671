"""The fallback every published and evaluated list is completed with: exactly n rows per user, ranks 1..n,
never an owned or unavailable item."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from recsys_dagster.models.fallback import FallbackLists


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
        table = FallbackLists(model_recs, popular, owned, n=4, recent_days=30).arrow(con).to_pandas()

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


def test_a_windows_users_are_completed_from_what_they_browsed_before_it() -> None:
    """Evaluation runs the same SQL over a window's users and its train table: only those users are
    listed, and one absent from the train table gets global popularity even if they browse later."""
    model_recs = pd.DataFrame({"user_id": ["warm"], "rank": [1], "item_id": ["b1"], "score": [0.9]})
    popular = pd.DataFrame({"rank": [1, 2, 3, 4, 5], "item_id": ["old", "a1", "a2", "b1", "g1"], "score": 1.0})
    owned = pd.DataFrame({"user_id": pd.Series(dtype=object), "item_id": pd.Series(dtype=object)})
    with duckdb.connect() as con:
        _shop(con)
        con.execute(
            "CREATE TABLE fct_train_user_item AS SELECT * FROM fct_user_item_interactions WHERE user_id <> 'cold'"
        )
        table = FallbackLists(
            model_recs, popular, owned, n=3, recent_days=30,
            interactions="fct_train_user_item", users=pd.Series(["warm", "cold"]),
        ).arrow(con).to_pandas()

    lists = {user: frame.sort_values("rank") for user, frame in table.groupby("user_id")}
    assert set(lists) == {"warm", "cold"}
    # warm last touched a1 (c1): recent c1 items of the train table by users, a1 (warm, u3, u4) then a2 (u5)
    assert lists["warm"]["item_id"].tolist() == ["b1", "a1", "a2"] and lists["warm"]["tier"].tolist() == [0, 1, 1]
    assert lists["cold"]["item_id"].tolist() == ["old", "a1", "a2"] and lists["cold"]["tier"].tolist() == [2, 2, 2]


def test_the_interactions_table_is_checked_before_it_reaches_sql() -> None:
    with duckdb.connect() as con, pytest.raises(ValueError, match="unknown training table"):
        FallbackLists(
            pd.DataFrame(),
            pd.DataFrame({"rank": [], "item_id": []}),
            pd.DataFrame({"user_id": [], "item_id": []}),
            n=3, recent_days=30, interactions="dim_users; DROP TABLE x",
        ).arrow(con)
