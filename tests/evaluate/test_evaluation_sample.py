"""The evaluation's user cap: a stable subset, whole users, the same for every call."""

import duckdb
import pytest

from recsys_dagster.evaluate.assets import WINDOWS, load_window

TEST_WINDOW = next(window for window in WINDOWS if window.prefix == "")


@pytest.fixture()
def con() -> duckdb.DuckDBPyConnection:
    """A holdout of 500 users with 1-3 items each and the train table evaluation reads beside it."""
    con = duckdb.connect()
    con.execute(
        """
        CREATE TABLE fct_holdout_interactions AS
        SELECT 'u' || u AS user_id, 'i' || (u * 7 + j) % 97 AS item_id, j = 0 AS seen_in_train
        FROM range(500) t(u), range(3) s(j) WHERE j <= u % 3
        """
    )
    con.execute(
        """
        CREATE TABLE fct_train_user_item AS
        SELECT 'u' || u AS user_id, 'i' || u % 97 AS item_id, 1.0 AS strength, 0 AS n_transactions, 0 AS n_ratings,
               NULL::DOUBLE AS last_rating
        FROM range(400) t(u)
        """
    )
    return con


def test_cap_keeps_whole_users_and_the_same_ones_every_time(con) -> None:
    first = load_window(con, TEST_WINDOW, repurchase=False, max_users=120)
    again = load_window(con, TEST_WINDOW, repurchase=False, max_users=120)

    assert first.relevant["user_id"].nunique() == 120
    assert first.n_window_users == 500
    assert sorted(first.relevant["user_id"].unique()) == sorted(again.relevant["user_id"].unique())
    sampled = list(first.relevant["user_id"].unique())
    full_rows = con.execute(
        "SELECT count(*) FROM fct_holdout_interactions WHERE list_contains($users, user_id)", {"users": sampled}
    ).fetchone()[0]
    assert len(first.relevant) == full_rows  # every pair of a sampled user, none of the others


def test_no_cap_below_the_window_size(con) -> None:
    window = load_window(con, TEST_WINDOW, repurchase=False, max_users=10_000)
    assert window.relevant["user_id"].nunique() == window.n_window_users == 500
    assert len(window.relevant) == con.execute("SELECT count(*) FROM fct_holdout_interactions").fetchone()[0]
