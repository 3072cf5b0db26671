"""The repeat-aware challenger: the user's own recent items blended with ALS.

In shop logs a large share of what a user touches next is something they touched before (27% of
Online Retail's post-cutoff purchases, 23% of YooChoose's next clicks). Factor models rank those
items no higher than any similar item, so this model adds a per-user "own history" score:
the pair's strength (intensity: views, carts, purchases as weighted by dbt) decayed by the age of
its last event (half-life ``half_life_days`` before the table's newest event). Both scores are
scaled to [0, 1] per user and blended ``repeat_weight * own + (1 - repeat_weight) * als``.

Which own items may come back is decided where recommendations are made, not here: with the
shop's ``repurchase`` policy off, bought items are excluded like for every model, so only viewed
or carted (not bought) items are repeated; with it on, bought items may return too.
"""

from __future__ import annotations

import duckdb
import numpy as np
from pydantic import Field
from scipy.sparse import csr_matrix

from recsys_dagster.models.als import AlsConfig, fit_als, score_als
from recsys_dagster.models.artifacts import FitArrays, reusable_fit
from recsys_dagster.models.matrix import checked_table


class RepeatAwareConfig(AlsConfig):
    """ALS hyperparameters plus the blend: ``repeat_weight`` in [0, 1] (0 = plain ALS)."""

    repeat_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    half_life_days: float = Field(default=14.0, gt=0.0)


def recency_weighted_history(
    con: duckdb.DuckDBPyConnection, table: str, fit: FitArrays, half_life_days: float
) -> csr_matrix:
    """users x items: strength * 0.5 ** (age of the pair's last event / half-life), in ``fit``'s order."""
    frame = con.execute(
        f"""
        SELECT user_id, item_id,
               strength * pow(0.5, epoch(max(last_event_time) OVER () - last_event_time) / 86400.0
                                   / CAST($half_life AS DOUBLE)) AS weight
        FROM {checked_table(table)}
        WHERE strength > 0
        """,
        {"half_life": half_life_days},
    ).df()
    rows = fit.user_index.get_indexer(frame["user_id"].astype(str))
    cols = fit.item_index.get_indexer(frame["item_id"].astype(str))
    known = (rows >= 0) & (cols >= 0)
    return csr_matrix(
        (frame["weight"].to_numpy(np.float64)[known], (rows[known], cols[known])),
        shape=(len(fit.user_ids), fit.n_items),
    )


def fit_repeat_aware(con: duckdb.DuckDBPyConnection, table: str, config: RepeatAwareConfig) -> FitArrays:
    """ALS factors plus the history the blend needs; the factors are als_model's own fit of ``table``
    when it used the same ALS parameters on the same data (saves a whole ALS fit), else fitted here."""
    fit = reusable_fit(con, "als_model", table, config.model_dump())
    fit = fit if fit is not None else fit_als(con, table, config)
    fit.sparse["history"] = recency_weighted_history(con, table, fit, config.half_life_days)
    fit.dense["repeat_weight"] = np.array(config.repeat_weight)
    return fit


def scaled_per_row(scores: np.ndarray) -> np.ndarray:
    """Each row min-max scaled to [0, 1] (a constant row becomes 0)."""
    low = scores.min(axis=1, keepdims=True)
    spread = scores.max(axis=1, keepdims=True) - low
    return (scores - low) / np.where(spread > 0, spread, 1.0)


def score_repeat_aware(fit: FitArrays, user_rows: np.ndarray) -> np.ndarray:
    weight = float(fit.dense["repeat_weight"])
    own = fit.sparse["history"][user_rows].toarray()
    own_max = own.max(axis=1, keepdims=True)
    own = own / np.where(own_max > 0, own_max, 1.0)
    return weight * own + (1.0 - weight) * scaled_per_row(score_als(fit, user_rows))
