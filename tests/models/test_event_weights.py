"""ALS's own event weights (``AlsConfig.event_weights``): the matrix they give, and that the incremental
user refit reads the users' rows with the same weights as the fit it updates."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys_dagster.models.als import WEIGHTINGS, AlsConfig, fit_als
from recsys_dagster.models.marts import build_marts
from recsys_dagster.models.matrix import load_matrix
from recsys_dagster.models.registry import LoadedModel
from recsys_dagster.publish.incremental import SERVING_TABLE, current_rows, user_side_refit
from tests.features.conftest import REES46_EVENT_TYPES

#: (user, item, n_views, n_addtocarts, n_transactions, last_rating, strength = dbt's 1, 3, 5, 1 weights).
HAND_MADE_PAIRS = """
CREATE TABLE fct_train_user_item AS
SELECT * FROM (VALUES
    ('u1', 'a', 2, 1, 0, NULL, 5.0),
    ('u1', 'b', 0, 0, 1, NULL, 5.0),
    ('u2', 'a', 3, 0, 0, NULL, 3.0),
    ('u2', 'c', 0, 0, 0, 4.0, 4.0)
) AS pairs(user_id, item_id, n_views, n_addtocarts, n_transactions, last_rating, strength)
"""

#: REES46 shop events (views, carts, purchases), as the pipeline maps their types.
REES46_EVENTS = f"""
SELECT CAST(user_id AS VARCHAR) AS user_id, CAST(product_id AS VARCHAR) AS item_id,
       {REES46_EVENT_TYPES}[event_type] AS event_type, CAST(NULL AS DOUBLE) AS rating,
       CAST(event_time AS TIMESTAMP) AS event_time
FROM read_csv($path, header = true)
"""

WEIGHTS = [0.5, 3.0, 15.0, 1.0]


def dense(con: duckdb.DuckDBPyConnection, event_weights: list[float] | None) -> tuple[list, list, list]:
    data = load_matrix(con, "fct_train_user_item", event_weights)
    return list(data.user_ids), list(data.item_ids), data.matrix.toarray().tolist()


def test_event_weights_sum_the_mart_counts_and_none_keeps_strength() -> None:
    with duckdb.connect() as con:
        con.execute(HAND_MADE_PAIRS)
        assert dense(con, None) == (["u1", "u2"], ["a", "b", "c"], [[5.0, 5.0, 0.0], [3.0, 0.0, 4.0]])
        assert dense(con, [0.5, 2.0, 10.0, 0.25]) == (
            ["u1", "u2"], ["a", "b", "c"], [[0.5 * 2 + 2.0 * 1, 10.0, 0.0], [0.5 * 3, 0.0, 0.25 * 4]]
        )
        # a pair whose events all weigh 0 leaves the matrix, and a user or item left without one with it
        assert dense(con, [0.0, 0.0, 1.0, 0.0]) == (["u1"], ["b"], [[1.0]])


def test_no_event_weights_reproduce_the_strength_matrix_exactly(retail_db: Path) -> None:
    with duckdb.connect(str(retail_db), read_only=True) as con:
        data = load_matrix(con, "fct_train_user_item")
        table = con.execute(
            "SELECT user_id, item_id, CAST(strength AS FLOAT) AS strength FROM fct_train_user_item WHERE strength > 0"
        ).df()
    rows = pd.Index(data.user_ids).get_indexer(table["user_id"])
    cols = pd.Index(data.item_ids).get_indexer(table["item_id"])
    assert data.nnz == len(table)
    np.testing.assert_array_equal(np.asarray(data.matrix[rows, cols]).ravel(), table["strength"].to_numpy(np.float32))


@pytest.mark.parametrize("weights", [[1.0, 3.0], [1.0, -1.0, 5.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
def test_als_refuses_event_weights_that_cannot_weigh_the_four_terms(weights: list[float]) -> None:
    with pytest.raises(ValidationError, match="event_weights"):
        AlsConfig(event_weights=weights)


@pytest.fixture(scope="module")
def shop_db(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The marts of REES46 events of every shop type (views, carts, purchases)."""
    source = shared_datasets / "rees46_multicategory_head" / "2019-Oct_head_0000-0249UTC.csv"
    return build_marts(tmp_path_factory.mktemp("rees46") / "warehouse.duckdb", REES46_EVENTS, source)


def mixed_users(con: duckdb.DuckDBPyConnection) -> pd.Index:
    """Users with several items and more than one event type: where weights change the matrix's shape."""
    frame = con.execute(
        f"""
        SELECT user_id FROM {SERVING_TABLE} GROUP BY user_id
        HAVING count(*) >= 3 AND sum(n_views) > 0 AND sum(n_addtocarts + n_transactions) > 0
        ORDER BY user_id LIMIT 20
        """
    ).df()
    return pd.Index(frame["user_id"].astype(str))


def weighted_counts(con: duckdb.DuckDBPyConnection, users: pd.Index) -> pd.DataFrame:
    """The users' pairs with ``WEIGHTS`` applied to their counts in numpy (REES46 has no ratings)."""
    pairs = con.execute(
        f"SELECT user_id, item_id, n_views, n_addtocarts, n_transactions FROM {SERVING_TABLE} "
        "WHERE user_id IN (SELECT unnest($users))",
        {"users": users.tolist()},
    ).df()
    counts = pairs[["n_views", "n_addtocarts", "n_transactions"]].to_numpy(np.float64)
    return pairs[["user_id", "item_id"]].assign(value=counts @ np.array(WEIGHTS[:3]))


@pytest.mark.parametrize("weighting", ["none", "bm25", "tfidf"])
def test_the_incremental_user_rows_are_the_fits_rows_under_its_event_weights(shop_db: Path, weighting: str) -> None:
    config = AlsConfig(event_weights=WEIGHTS, weighting=weighting, use_tuned=False)
    with duckdb.connect(str(shop_db), read_only=True) as con:
        users = mixed_users(con)
        whole = load_matrix(con, SERVING_TABLE, config.event_weights)
        rows = current_rows(con, users, pd.Index(whole.item_ids), config)
        expected = weighted_counts(con, users)
    assert len(users) >= 5
    fitted = WEIGHTINGS[weighting](whole.matrix)[pd.Index(whole.user_ids).get_indexer(users)].astype(np.float32)
    assert (rows != fitted).nnz == 0
    if weighting == "none":  # the values themselves, from the counts: 0.5 per view, 3 per cart, 15 per purchase
        cells = rows[users.get_indexer(expected["user_id"]), pd.Index(whole.item_ids).get_indexer(expected["item_id"])]
        np.testing.assert_array_equal(np.asarray(cells).ravel(), expected["value"].to_numpy(np.float32))


def test_the_incremental_user_refit_solves_als_on_the_event_weighted_rows(shop_db: Path) -> None:
    """``user_side_refit`` of an ALS champion trained with event weights: each user's factors are the
    exact ALS solve (Hu et al.) with confidence alpha * (the weighted sum of their counts), and differ
    from those the mart's strength would give."""
    config = AlsConfig(factors=8, iterations=5, event_weights=WEIGHTS, use_tuned=False)
    with duckdb.connect(str(shop_db), read_only=True) as con:
        users = mixed_users(con)
        fit = fit_als(con, SERVING_TABLE, config)
        champion = LoadedModel("als_model", "test", Path(), config.model_dump(), _fits={"serving": fit})
        refit = user_side_refit(con, champion, users)
        unweighted = LoadedModel("als_model", "test", Path(), {**config.model_dump(), "event_weights": None},
                                 _fits={"serving": fit})
        strength_refit = user_side_refit(con, unweighted, users)
        pairs = weighted_counts(con, users)
    assert list(refit.user_ids) == list(users)
    item_factors = fit.dense["item_factors"].astype(np.float64)
    for row, user in enumerate(users):
        own = pairs[pairs["user_id"] == user]
        y, confidence = item_factors[fit.item_index.get_indexer(own["item_id"])], config.alpha * own["value"].to_numpy()
        lhs = item_factors.T @ item_factors + config.regularization * np.eye(8) + (y.T * (confidence - 1)) @ y
        solved = np.linalg.solve(lhs, y.T @ confidence)
        np.testing.assert_allclose(refit.dense["user_factors"][row], solved, rtol=1e-3, atol=1e-4)
    assert not np.allclose(refit.dense["user_factors"], strength_refit.dense["user_factors"], atol=1e-3)
