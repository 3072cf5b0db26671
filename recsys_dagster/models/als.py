"""Implicit-feedback matrix factorisation (ALS, Hu/Koren/Volinsky) on interaction strength.

Only the factor matrices are kept: a user's score for an item is the dot product of their
factors, exactly what ``implicit``'s own ``recommend`` ranks by, so scoring needs no live
``implicit`` object and runs as one numpy matmul per batch of users.
"""

from __future__ import annotations

from typing import Literal

import duckdb
import numpy as np
import pandas as pd
from dagster import Config
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import bm25_weight, tfidf_weight
from pydantic import Field, field_validator
from threadpoolctl import threadpool_limits

from recsys_dagster.models.artifacts import FitArrays
from recsys_dagster.models.matrix import load_matrix


class AlsConfig(Config):
    """Hyperparameters of ``implicit.cpu.als.AlternatingLeastSquares``."""

    factors: int = 64
    regularization: float = 0.05
    #: Confidence scale: implicit weighs an observed pair by ``1 + alpha * strength``.
    alpha: float = 10.0
    iterations: int = 15
    #: Iterations of a fit that starts from an earlier fit's factors on a subset of its rows (the
    #: holdout fit from the validation fit, the serving fit from the holdout fit): those factors
    #: are near the optimum already, so a few sweeps converge (measured: README, "What a full
    #: refresh does at scale").
    warm_start_iterations: int = Field(default=5, ge=1)
    #: Reweighting of the strength matrix before the fit (BM25 / TF-IDF damp heavy users and popular items).
    weighting: Literal["none", "bm25", "tfidf"] = "none"
    #: Weights of (views, add-to-carts, purchases, last rating) summed into a pair's matrix value in place
    #: of the mart's ``strength`` (dbt's ``event_weights`` var): None keeps ``strength``. Lets tuning try
    #: other weightings on the same marts, without a dbt rebuild (``matrix.pair_value_sql``).
    event_weights: list[float] | None = Field(default=None, min_length=4, max_length=4)
    random_state: int = 42
    #: Take the parameters the latest ``model_tuning`` run selected (ml.tuning_runs) over these defaults.
    use_tuned: bool = True

    @field_validator("event_weights")
    @classmethod
    def some_event_counts(cls, weights: list[float] | None) -> list[float] | None:
        """Weights must be >= 0 and not all 0: a negative one would make pairs with more events weigh
        less (or drop them: only positive values enter the matrix), all zero would leave no pair."""
        if weights is not None and (min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(f"event_weights must be >= 0 with at least one > 0, got {weights}")
        return weights


#: The ``weighting`` options: implicit's own BM25 / TF-IDF weights of a users x items matrix.
WEIGHTINGS = {
    "none": lambda matrix: matrix,
    "bm25": lambda matrix: bm25_weight(matrix).tocsr(),
    "tfidf": lambda matrix: tfidf_weight(matrix).tocsr(),
}


def carried_factors(
    start_ids: pd.Index, start_factors: np.ndarray, ids: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Factors for ``ids`` in that order: the earlier fit's row where it knew the id, else the
    small random vector implicit itself starts from (uniform in [0, 0.01))."""
    positions = start_ids.get_indexer(ids)
    known = positions >= 0
    factors = rng.random((len(ids), start_factors.shape[1]), dtype=np.float32) * np.float32(0.01)
    factors[known] = start_factors[positions[known]]
    return factors


def fit_als(
    con: duckdb.DuckDBPyConnection, table: str, config: AlsConfig, start: FitArrays | None = None
) -> FitArrays:
    """Fit ALS on the matrix of ``table``'s pair values (strength, or ``config.event_weights``); ``start``
    (an ALS fit of a subset of its rows) warm-starts it: its factors are the starting point and
    ``warm_start_iterations`` sweeps follow.

    implicit keeps factors that are set before ``fit`` (it draws random ones only when they are
    None), so a warm start is just presetting them. BLAS is pinned to one thread while fitting:
    implicit parallelises over users itself, and a multi-threaded OpenBLAS underneath
    oversubscribes the cores and slows the fit down.
    """
    data = load_matrix(con, table, config.event_weights)
    matrix = WEIGHTINGS[config.weighting](data.matrix)
    with threadpool_limits(limits=1, user_api="blas"):  # implicit checks the BLAS threads on construction
        model = AlternatingLeastSquares(
            factors=config.factors,
            regularization=config.regularization,
            alpha=config.alpha,
            iterations=config.iterations if start is None else config.warm_start_iterations,
            random_state=config.random_state,
        )
        if start is not None:
            rng = np.random.default_rng(config.random_state)
            model.user_factors = carried_factors(start.user_index, start.dense["user_factors"], data.user_ids, rng)
            model.item_factors = carried_factors(start.item_index, start.dense["item_factors"], data.item_ids, rng)
        model.fit(matrix, show_progress=False)
    return FitArrays(
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        dense={
            "user_factors": np.asarray(model.user_factors, dtype=np.float32),
            "item_factors": np.asarray(model.item_factors, dtype=np.float32),
        },
        stats={"n_users": data.n_users, "n_items": data.n_items, "nnz": data.nnz},
    )


def score_als(fit: FitArrays, user_rows: np.ndarray) -> np.ndarray:
    return (fit.dense["user_factors"][user_rows] @ fit.dense["item_factors"].T).astype(np.float64)


def item_vectors_als(fit: FitArrays) -> np.ndarray:
    """Item factors, compared by cosine as implicit's ``similar_items`` does."""
    return fit.dense["item_factors"]
