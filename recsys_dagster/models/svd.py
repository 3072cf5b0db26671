"""Explicit-rating matrix factorisation: scikit-surprise's (biased) SVD, scored with numpy.

What SVD learns from: the pair's star rating (``last_rating``) where the pair was rated; otherwise
a rating derived from the strongest event on the pair — transaction 5, addtocart 4, view 3 —
so a shop without reviews still gets a rating model, and buying ranks above looking. The scale
is always 1..5, as ratings are validated to that range upstream.

After fitting, only surprise's learnt numbers are kept (``pu``, ``qi``, ``bu``, ``bi``, the global
mean, the id order): the estimate ``mean + bu + bi + qi . pu`` is recomputed with numpy, with
surprise's rules for unknown users/items (their bias and factors count as zero) and its
clipping to the rating scale, so scores equal ``SVD.predict`` without a live surprise object.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
from dagster import Config
from pydantic import Field
from surprise import SVD, Dataset, Reader, Trainset

from recsys_dagster.models.artifacts import FitArrays
from recsys_dagster.models.matrix import checked_table, ids_by_index

RATING_SCALE = (1.0, 5.0)


def derived_rating_sql(last_rating: str, n_transactions: str, n_addtocarts: str, n_views: str) -> str:
    """SQL for the rating of a pair: its star rating, else 5/4/3 for its strongest event.

    Arguments are code-defined column expressions, never user input.
    """
    return f"""coalesce({last_rating},
        CASE WHEN {n_transactions} > 0 THEN 5.0 WHEN {n_addtocarts} > 0 THEN 4.0 WHEN {n_views} > 0 THEN 3.0 END)"""


class SvdConfig(Config):
    """Hyperparameters of ``surprise.SVD`` (biased, SGD-trained)."""

    n_factors: int = 50
    n_epochs: int = 20
    lr_all: float = 0.005
    reg_all: float = 0.02
    random_state: int = 42
    #: Rating rows SVD trains on at most: a larger table is fitted on a seeded sample of this many.
    #: surprise builds its trainset in Python dicts (about 10 us a row, twice per run), and SVD is
    #: a challenger, never scored for every user. 500k keeps every real shop log of bench.quality
    #: whole and bounds the fit at RetailRocket size and beyond (README "Performance").
    max_ratings: int = Field(default=500_000, ge=1)
    #: Take the parameters the latest ``model_tuning`` run selected (ml.tuning_runs) over these defaults.
    use_tuned: bool = True


def training_ratings(
    con: duckdb.DuckDBPyConnection, table: str, max_rows: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """(user_id, item_id, rating) of every pair of ``table`` that has a rating, given or derived.

    ``max_rows`` keeps a deterministic sample: the rows with the smallest hash of (pair, ``seed``),
    the same rows every run on the same data, whatever DuckDB's thread count.
    """
    rating = derived_rating_sql("last_rating", "n_transactions", "n_addtocarts", "n_views")
    return con.execute(
        f"""
        SELECT user_id, item_id, rating FROM (
            SELECT user_id, item_id, rating
            FROM (SELECT user_id, item_id, {rating} AS rating FROM {checked_table(table)})
            WHERE rating IS NOT NULL
            ORDER BY hash(user_id, item_id, $seed), user_id, item_id
            LIMIT $max_rows
        )
        ORDER BY user_id, item_id
        """,
        {"seed": seed, "max_rows": max_rows},
    ).df()


def holdout_ratings(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """(user_id, item_id, rating) of the holdout pairs, rated or derived as in training.

    The holdout mart only counts transactions, so the holdout's add-to-carts and views are the
    all-events counts minus the train counts (all events = train events + holdout events).
    """
    rating = derived_rating_sql(
        "h.last_rating",
        "h.n_transactions",
        "a.n_addtocarts - coalesce(t.n_addtocarts, 0)",
        "a.n_views - coalesce(t.n_views, 0)",
    )
    return con.execute(
        f"""
        SELECT user_id, item_id, rating
        FROM (
            SELECT h.user_id, h.item_id, {rating} AS rating
            FROM fct_holdout_interactions h
            JOIN fct_user_item_interactions a USING (user_id, item_id)
            LEFT JOIN fct_train_user_item t USING (user_id, item_id)
        )
        WHERE rating IS NOT NULL
        ORDER BY user_id, item_id
        """
    ).df()


def inner_ids(raw_to_inner: dict[str, int]) -> np.ndarray:
    """Surprise's raw ids ordered by its inner ids (the row order of ``pu`` / ``qi``)."""
    mapping = pd.Series(raw_to_inner, dtype="int64")
    return ids_by_index(pd.Series(mapping.index), mapping.to_numpy(), len(mapping))


def train_surprise(ratings: pd.DataFrame, config: SvdConfig) -> tuple[SVD, Trainset]:
    """A fitted ``surprise.SVD`` and its trainset, from (user_id, item_id, rating) rows."""
    trainset = Dataset.load_from_df(ratings[["user_id", "item_id", "rating"]], Reader(rating_scale=RATING_SCALE))
    trainset = trainset.build_full_trainset()
    model = SVD(
        n_factors=config.n_factors,
        n_epochs=config.n_epochs,
        lr_all=config.lr_all,
        reg_all=config.reg_all,
        random_state=config.random_state,
    )
    model.fit(trainset)
    return model, trainset


def surprise_arrays(model: SVD, trainset: Trainset) -> FitArrays:
    """The learnt numbers of a fitted ``surprise.SVD``, ids in its inner-id order."""
    return FitArrays(
        user_ids=inner_ids(trainset._raw2inner_id_users),
        item_ids=inner_ids(trainset._raw2inner_id_items),
        dense={
            "pu": model.pu,
            "qi": model.qi,
            "bu": model.bu,
            "bi": model.bi,
            "global_mean": np.array(trainset.global_mean),
            "rating_scale": np.array(trainset.rating_scale, dtype=np.float64),
        },
        stats={"n_users": trainset.n_users, "n_items": trainset.n_items, "nnz": trainset.n_ratings},
    )


def fit_svd(con: duckdb.DuckDBPyConnection, table: str, config: SvdConfig) -> FitArrays:
    ratings = training_ratings(con, table, config.max_ratings, config.random_state)
    if ratings.empty:
        raise ValueError(f"{table} has no rated or rateable pairs to train SVD on")
    return surprise_arrays(*train_surprise(ratings, config))


def score_svd(fit: FitArrays, user_rows: np.ndarray) -> np.ndarray:
    """Unclipped estimates of every item for known users: clipping would only create ties."""
    d = fit.dense
    return d["global_mean"] + d["bu"][user_rows, None] + d["bi"][None, :] + d["pu"][user_rows] @ d["qi"].T


def predict_svd(fit: FitArrays, pairs: pd.DataFrame) -> np.ndarray:
    """Surprise's ``predict(...).est`` for every (user_id, item_id) pair, clipped to the scale."""
    d = fit.dense
    users = fit.user_index.get_indexer(pairs["user_id"].astype(str))
    items = fit.item_index.get_indexer(pairs["item_id"].astype(str))
    known_user, known_item = users >= 0, items >= 0
    both = known_user & known_item
    estimate = np.full(len(pairs), float(d["global_mean"]))
    estimate[known_user] += d["bu"][users[known_user]]
    estimate[known_item] += d["bi"][items[known_item]]
    estimate[both] += np.einsum("ij,ij->i", d["pu"][users[both]], d["qi"][items[both]])
    low, high = d["rating_scale"]
    return np.clip(estimate, low, high)


def validation_ratings(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """(user_id, item_id, rating) of the validation window's pairs, rated or derived as in training."""
    rating = derived_rating_sql("last_rating", "n_transactions", "n_addtocarts", "n_views")
    return con.execute(
        f"""
        SELECT user_id, item_id, rating
        FROM (SELECT user_id, item_id, {rating} AS rating FROM ml.validation_holdout_interactions)
        WHERE rating IS NOT NULL
        ORDER BY user_id, item_id
        """
    ).df()
