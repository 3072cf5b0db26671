"""The repeat-aware challenger: the user's own items blended with ALS, the best own items first.

In shop logs a large share of what a user touches next is something they touched before (27% of
Online Retail's post-cutoff purchases, 23% of YooChoose's next clicks). Factor models rank those
items no higher than any similar item, so this model scores the user's own history too:

- own score of a pair, by ``own_ranking``: ``intensity`` = strength (views, carts, purchases as
  weighted by dbt), ``recency`` = 0.5 ** (age of the pair's last event / ``half_life_days``, age
  measured before the table's newest event), ``both`` = their product;
- blend = ``repeat_weight * own + (1 - repeat_weight) * als``, both scaled to [0, 1] per user;
- stage 1: the user's ``own_cap`` own items with the best blend come first, by blend (ALS breaks
  the many ties of own scores: most pairs were bought once);
- stage 2: every other item by blend (``own_cap`` 0 is the plain linear blend, ``repeat_weight`` 0
  plain ALS, ``own_cap`` >= K with ``repeat_weight`` near 1 the plain "own items, then ALS" list).

The knobs are tuned on the validation window by ``model_tuning`` (models/tuning.py), so how much
own history counts is learnt per shop rather than fixed.

Which own items may come back is decided where recommendations are made, not here: with the
shop's ``repurchase`` policy off, bought items are excluded like for every model, so only viewed
or carted (not bought) items are repeated; with it on, bought items may return too.
"""

from __future__ import annotations

from typing import Literal

import duckdb
import numpy as np
from pydantic import Field
from scipy.sparse import csr_matrix

from recsys_dagster.models.als import AlsConfig, fit_als, score_als
from recsys_dagster.models.artifacts import FitArrays, reusable_fit
from recsys_dagster.models.matrix import checked_table

OwnRanking = Literal["intensity", "recency", "both"]
#: How own items are scored, as SQL over the mart's strength and the pair's decay factor (code constants).
OWN_SCORE_SQL: dict[str, str] = {"intensity": "strength", "recency": "decay", "both": "strength * decay"}
#: Stage-1 items score above every stage-2 item (whose blend lies in [0, 1]).
STAGE_ONE_OFFSET = 2.0
#: The plain "own recent items first, then ALS" list as knobs: every own item (strength x 0.5^(age / 14 days))
#: ahead of ALS's, ALS breaking ties. Tuning's reference, and the benchmark's bar for the challenger.
PLAIN_OWN_FIRST: dict[str, object] = {"repeat_weight": 0.999, "half_life_days": 14.0, "own_ranking": "both", "own_cap": 1000}
#: The smallest own score kept: a very old pair's decay underflows to 0, and 0 would drop it from the history.
MIN_OWN_SCORE = 1e-300


class RepeatAwareConfig(AlsConfig):
    """ALS hyperparameters plus the repeat policy: how own items are scored, weighed and how many come first."""

    repeat_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    half_life_days: float = Field(default=14.0, gt=0.0)
    own_ranking: OwnRanking = "both"
    own_cap: int = Field(default=0, ge=0, le=1000)


def own_history(
    con: duckdb.DuckDBPyConnection, table: str, fit: FitArrays, own_ranking: OwnRanking, half_life_days: float
) -> csr_matrix:
    """users x items own score (``OWN_SCORE_SQL[own_ranking]``) in ``fit``'s order; > 0 exactly on owned pairs."""
    frame = con.execute(
        f"""
        WITH pairs AS (
            SELECT user_id, item_id, strength,
                   pow(0.5, epoch(max(last_event_time) OVER () - last_event_time) / 86400.0
                            / CAST($half_life AS DOUBLE)) AS decay
            FROM {checked_table(table)}
            WHERE strength > 0
        )
        SELECT user_id, item_id, greatest({OWN_SCORE_SQL[own_ranking]}, $floor) AS weight FROM pairs
        """,
        {"half_life": half_life_days, "floor": MIN_OWN_SCORE},
    ).df()
    rows = fit.user_index.get_indexer(frame["user_id"].astype(str))
    cols = fit.item_index.get_indexer(frame["item_id"].astype(str))
    known = (rows >= 0) & (cols >= 0)
    return csr_matrix(
        (frame["weight"].to_numpy(np.float64)[known], (rows[known], cols[known])),
        shape=(len(fit.user_ids), fit.n_items),
    )


def with_own_history(
    con: duckdb.DuckDBPyConnection, table: str, fit: FitArrays, config: RepeatAwareConfig
) -> FitArrays:
    """``fit`` (an ALS fit of ``table``) plus what the repeat-aware scoring reads: the own-score
    matrix and the blend knobs (stored with the artifact, so scoring needs no config)."""
    fit.sparse["history"] = own_history(con, table, fit, config.own_ranking, config.half_life_days)
    fit.dense["repeat_weight"] = np.array(config.repeat_weight)
    fit.dense["own_cap"] = np.array(config.own_cap)
    return fit


def fit_repeat_aware(
    con: duckdb.DuckDBPyConnection, table: str, config: RepeatAwareConfig, start: FitArrays | None = None
) -> FitArrays:
    """ALS factors plus what the repeat-aware scoring reads; the factors are als_model's own fit of
    ``table`` when it used the same ALS parameters on the same data (saves a whole ALS fit), else fitted
    here (warm-started from ``start``, see ``fit_als``)."""
    fit = reusable_fit(con, "als_model", table, config.model_dump())
    fit = fit if fit is not None else fit_als(con, table, config, start)
    return with_own_history(con, table, fit, config)


def scaled_per_row(scores: np.ndarray) -> np.ndarray:
    """Each row min-max scaled to [0, 1] (a constant row becomes 0)."""
    low = scores.min(axis=1, keepdims=True)
    spread = scores.max(axis=1, keepdims=True) - low
    return (scores - low) / np.where(spread > 0, spread, 1.0)


def top_own_mask(own: np.ndarray, blend: np.ndarray, cap: int) -> np.ndarray:
    """True on each row's ``cap`` own items (own > 0) with the best blend score."""
    if cap <= 0:
        return np.zeros(own.shape, dtype=bool)
    order = np.argsort(-np.where(own > 0, blend, -np.inf), axis=1, kind="stable")[:, :cap]
    mask = np.zeros(own.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask & (own > 0)


def score_repeat_aware(fit: FitArrays, user_rows: np.ndarray) -> np.ndarray:
    weight = float(fit.dense["repeat_weight"])
    cap = int(fit.dense["own_cap"]) if "own_cap" in fit.dense else 0  # artifacts saved before the cap: plain blend
    own = fit.sparse["history"][user_rows].toarray()
    own_max = own.max(axis=1, keepdims=True)
    own = own / np.where(own_max > 0, own_max, 1.0)
    blend = weight * own + (1.0 - weight) * scaled_per_row(score_als(fit, user_rows))
    return np.where(top_own_mask(own, blend, cap), STAGE_ONE_OFFSET + blend, blend)
