"""The fallback: the one rule for users a model cannot fill a list for.

Publishing and evaluation both build their lists with ``FallbackLists`` so that the evaluated lists are
the published lists: a user unknown to the model (cold) gets the items most popular lately in the
category they browsed last (when the catalog has categories and they browsed one), then global
popularity; a user for whom the model has fewer than ``n`` candidates gets the rest the same way,
never an item they own. Publishing runs it over ``dim_users`` and all interactions; evaluation over
a window's users and that window's train table, so a cold user there is judged on what they would
be served.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import pandas as pd

from recsys_dagster.models.matrix import Fit, checked_table
from recsys_dagster.models.registry import LoadedModel
from recsys_dagster.relations import registered
from recsys_dagster.settings import min_items_for_model

#: Popularity is user-agnostic: any id returns the global ranking.
GLOBAL_USER = "__all_users__"
#: How many last days of a category count as "recently popular" (publishing's and evaluation's default).
DEFAULT_FALLBACK_RECENT_DAYS = 30


def popular_ranking(
    popularity: LoadedModel, n: int, fit: Fit, banned_items: Sequence[str] = ()
) -> pd.DataFrame:
    """The global popularity ranking without ``banned_items``: DataFrame[rank, item_id, score], best first."""
    ranking = popularity.recommend([GLOBAL_USER], n, fit=fit, banned_items=banned_items)
    return ranking[["rank", "item_id", "score"]].reset_index(drop=True)


def users_served_the_model(con: duckdb.DuckDBPyConnection) -> pd.Series:
    """``user_id`` of the users of ``dim_users`` with at least ``min_items_for_model()`` items: those
    publishing (full and incremental) serves the champion's list to; everyone else gets the fallback list."""
    return con.execute("SELECT user_id FROM dim_users WHERE n_items >= ?", [min_items_for_model()]).df()["user_id"]


def ranking_depth(n: int, owned: pd.DataFrame) -> int:
    """How much of the popularity ranking a top-up may need: ``n`` plus the most items one user owns."""
    most_owned = int(owned.groupby("user_id").size().max()) if len(owned) else 0
    return n + most_owned


#: The published list of every user of ``{users}`` (``dim_users`` when publishing), built in DuckDB
#: from the champion's rows (``model_recs``: user_id, rank, item_id, score), the global popularity
#: ranking (``popular``: rank, item_id), the pairs never to recommend (``owned``) and the user-item
#: pairs ``{interactions}`` (``fct_user_item_interactions`` when publishing) for what was browsed.
#: Users the model filled keep its list as is; every other user gets the model's rows (if any),
#: then the most popular items of the last ``$recent_days`` in the category of the item they
#: touched last (when the catalog has categories), then global popularity; never an owned or
#: unavailable item, no duplicates.
PUBLISHED_RECOMMENDATIONS_SQL = """
WITH model AS (
    SELECT CAST(user_id AS VARCHAR) AS user_id, CAST(item_id AS VARCHAR) AS item_id, score, rank FROM model_recs
),
model_counts AS (SELECT user_id, count(*) AS n_model FROM model GROUP BY user_id),
owned_counts AS (SELECT user_id, count(*) AS n_owned FROM owned GROUP BY user_id),
short AS (
    SELECT u.user_id, coalesce(m.n_model, 0) + coalesce(o.n_owned, 0) AS n_taken
    FROM {users} u LEFT JOIN model_counts m USING (user_id) LEFT JOIN owned_counts o USING (user_id)
    WHERE coalesce(m.n_model, 0) < $n
),
browsed AS (
    SELECT f.user_id, arg_max(i.category, f.last_event_time) AS category
    FROM {interactions} f JOIN short s USING (user_id) JOIN dim_items i USING (item_id)
    WHERE i.category IS NOT NULL
    GROUP BY f.user_id
),
recent AS (
    SELECT i.category, f.item_id, count(*) AS n_recent_users
    FROM {interactions} f JOIN dim_items i USING (item_id)
    WHERE f.last_event_time >= (SELECT max(last_event_time) FROM {interactions})
                               - to_days(CAST($recent_days AS INTEGER))
      AND i.category IN (SELECT category FROM browsed) AND coalesce(i.available, true)
    GROUP BY ALL
),
lists AS (
    SELECT category, item_id, 1 AS tier,
           row_number() OVER (PARTITION BY category ORDER BY n_recent_users DESC, item_id) AS rank
    FROM recent
    UNION ALL
    SELECT c.category, p.item_id, 2 AS tier, p.rank
    FROM (SELECT DISTINCT category FROM browsed UNION ALL SELECT NULL) c CROSS JOIN popular p
),
fallback AS (
    SELECT category, item_id, tier, row_number() OVER (PARTITION BY category ORDER BY tier, rank) AS rank
    FROM (
        SELECT * FROM lists QUALIFY row_number() OVER (PARTITION BY category, item_id ORDER BY tier, rank) = 1
    )
),
fill AS (
    SELECT s.user_id, f.item_id, NULL::DOUBLE AS score, f.tier, f.rank
    FROM short s LEFT JOIN browsed b USING (user_id)
    JOIN fallback f ON f.category IS NOT DISTINCT FROM b.category AND f.rank <= $n + s.n_taken
    ANTI JOIN owned o ON o.user_id = s.user_id AND o.item_id = f.item_id
    ANTI JOIN model m ON m.user_id = s.user_id AND m.item_id = f.item_id
),
short_lists AS (
    SELECT user_id, item_id, score, tier,
           row_number() OVER (PARTITION BY user_id ORDER BY tier, rank) AS list_rank
    FROM (
        SELECT user_id, item_id, score, 0 AS tier, rank FROM model SEMI JOIN short USING (user_id)
        UNION ALL
        SELECT * FROM fill
    )
    QUALIFY list_rank <= $n
)
SELECT user_id, CAST(rank AS INTEGER) AS rank, item_id, score, 0 AS tier FROM model ANTI JOIN short USING (user_id)
UNION ALL
SELECT user_id, CAST(list_rank AS INTEGER) AS rank, item_id, score, tier FROM short_lists
"""


@dataclass(frozen=True)
class FallbackLists:
    """The inputs of ``PUBLISHED_RECOMMENDATIONS_SQL``: every user's top ``n`` [user_id, rank, item_id,
    score, tier]; tier 0 = the model, 1 = recent in their category, 2 = global popularity.

    ``model_recs`` is any table DuckDB can scan (Arrow, pandas). ``users`` None = every ``dim_users``
    user (publishing); evaluation passes a window's users and its train table as ``interactions``
    (what they had browsed by then)."""

    model_recs: object
    popular: pd.DataFrame
    owned: pd.DataFrame
    n: int
    recent_days: int
    interactions: str = "fct_user_item_interactions"
    users: pd.Series | None = None

    @contextmanager
    def query(self, con: duckdb.DuckDBPyConnection) -> Iterator[tuple[str, dict[str, int]]]:
        """The SQL and its parameters, runnable on ``con`` inside the block (the inputs are registered
        there): publishing streams the rows into the serving file with it, never holding them in Python."""
        views = {
            "model_recs": self.model_recs,
            "popular": self.popular[["rank", "item_id"]],
            "owned": self.owned[["user_id", "item_id"]],
        }
        if self.users is not None:
            views["listed_users"] = pd.DataFrame({"user_id": pd.unique(self.users.astype(str))})
        sql = PUBLISHED_RECOMMENDATIONS_SQL.format(
            users="listed_users" if self.users is not None else "dim_users",
            interactions=checked_table(self.interactions),
        )
        with registered(con, **views):
            yield sql, {"n": self.n, "recent_days": self.recent_days}

    def arrow(self, con: duckdb.DuckDBPyConnection) -> object:
        """The lists as an Arrow table (evaluation and the incremental publish: a subset of users)."""
        with self.query(con) as (sql, params):
            return con.sql(sql, params=params).to_arrow_table()
