"""The popularity top-up: exactly n rows per user, ranks 1..n, never an owned item."""

from __future__ import annotations

import pandas as pd

from recsys_dagster.models.fallback import top_up_from_popularity


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
