"""Popularity top-up: the one rule for users a model cannot fill a list for.

Evaluation and publishing both call ``top_up_from_popularity`` so that the evaluated lists are the
published lists: a user unknown to the model (cold) gets the popularity ranking, and a user for whom
the model has fewer than ``n`` candidates gets the rest from popularity, never an item they own.
"""

from collections.abc import Sequence

import duckdb
import pandas as pd

from recsys_dagster.models.matrix import Fit
from recsys_dagster.models.registry import LoadedModel

#: Popularity is user-agnostic: any id returns the global ranking.
GLOBAL_USER = "__all_users__"

TOP_UP_SQL = """
WITH short_users AS (
    SELECT u.user_id FROM users u
    LEFT JOIN (SELECT user_id, count(*) AS n FROM recs GROUP BY user_id) c USING (user_id)
    WHERE coalesce(c.n, 0) < $n
),
fill_rows AS (
    SELECT s.user_id, p.item_id, NULL::DOUBLE AS score, 1 AS tier, p.rank
    FROM short_users s CROSS JOIN popular p
    ANTI JOIN owned o ON o.user_id = s.user_id AND o.item_id = p.item_id
),
candidates AS (
    SELECT user_id, item_id, score, 0 AS tier, rank FROM recs
    UNION ALL
    SELECT * FROM fill_rows
),
deduplicated AS (
    SELECT * FROM candidates
    QUALIFY row_number() OVER (PARTITION BY user_id, item_id ORDER BY tier, rank) = 1
)
SELECT user_id, new_rank AS rank, item_id, score, tier
FROM (
    SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY tier, rank) AS new_rank FROM deduplicated
)
WHERE new_rank <= $n
ORDER BY user_id, new_rank
"""


def popular_ranking(
    popularity: LoadedModel, n: int, fit: Fit, banned_items: Sequence[str] = ()
) -> pd.DataFrame:
    """The global popularity ranking without ``banned_items``: DataFrame[rank, item_id, score], best first."""
    ranking = popularity.recommend([GLOBAL_USER], n, fit=fit, banned_items=banned_items)
    return ranking[["rank", "item_id", "score"]].reset_index(drop=True)


def ranking_depth(n: int, owned: pd.DataFrame) -> int:
    """How much of the popularity ranking a top-up may need: ``n`` plus the most items one user owns."""
    most_owned = int(owned.groupby("user_id").size().max()) if len(owned) else 0
    return n + most_owned


def top_up_from_popularity(
    recs: pd.DataFrame, users: pd.Series, popular: pd.DataFrame, owned: pd.DataFrame, n: int
) -> pd.DataFrame:
    """Top ``n`` per user in ``users``: the model's list, completed from ``popular``.

    Returns DataFrame[user_id, rank, item_id, score, tier]; tier 1 rows come from popularity and
    carry a NULL score (popularity is not on the model's scale). ``owned`` (user_id, item_id)
    pairs are never added.
    """
    with duckdb.connect() as con:
        con.register("recs", recs[["user_id", "rank", "item_id", "score"]])
        con.register("users", pd.DataFrame({"user_id": pd.unique(users.astype(str))}))
        con.register("popular", popular)
        con.register("owned", owned[["user_id", "item_id"]])
        return con.execute(TOP_UP_SQL, {"n": n}).df()
