"""The repeat-aware challenger: the user's own items and their co-occurring neighbours blended with ALS.

In shop logs a large share of what a user touches next is something they touched before (27% of
Online Retail's post-cutoff purchases, 23% of YooChoose's next clicks), and much of the rest sits
next to it (bought or clicked together by other users). Factor models rank those items no higher
than any similar item, so this model scores three kinds of evidence, each scaled per user:

- own: the user's own pairs, by ``own_ranking``: ``intensity`` = strength (views, carts,
  purchases as weighted by dbt), ``recency`` = 0.5 ** (age of the pair's last event /
  ``half_life_days``, age measured before the table's newest event), ``both`` = their product,
  ``sequence`` = strength / the pair's place in the user's own timeline (1 = their latest
  moment): recency counted in the user's own steps, which is what sessions (clicks seconds apart)
  and invoice clocks need, where wall-clock decay cannot tell the items apart; ``sequence_steep`` =
  strength / its square, for shops where the last click or two say most about the next (sessions:
  a user's latest clicks are what they are looking at now);
- related: co-occurrence neighbours of the user's items, ``own @ S`` with ``S`` the BM25 item-item
  similarity of the same table (the item_knn_bm25 baseline's), the best ``RELATED_PER_USER`` per user;
- model = ``(1 - related_weight) * als + related_weight * related``, ALS min-max scaled per user,
  own and related divided by the user's maximum (0 stays "no evidence");
- blend = ``repeat_weight * own + (1 - repeat_weight) * model``;
- stage 1: the user's ``own_cap`` own items with the best blend come first, by blend;
- stage 2: every other item by blend (``own_cap`` 0 is the plain linear blend, ``repeat_weight`` 0
  with ``related_weight`` 0 plain ALS, ``own_cap`` >= K with ``repeat_weight`` near 1 and
  ``related_weight`` 0 the plain "own items, then ALS" list).

The knobs are tuned on the validation window by ``model_tuning`` (models/tuning.py), so how much
own history and co-occurrence count is learnt per shop rather than fixed.

Which own items may come back is decided where recommendations are made, not here: with the
shop's ``repurchase`` policy off, bought items are excluded like for every model, so only viewed
or carted (not bought) items are repeated; with it on, bought items may return too.
"""

from __future__ import annotations

from typing import Literal

import duckdb
import numpy as np
from pydantic import Field
from scipy.sparse import csr_matrix, vstack

from recsys_dagster.models.als import AlsConfig, fit_als, score_als
from recsys_dagster.models.artifacts import FitArrays, reusable_fit
from recsys_dagster.models.baselines import ItemKnnBm25Config, fit_item_knn
from recsys_dagster.models.matrix import checked_table
from recsys_dagster.models.scoring import ranks_within_rows

OwnRanking = Literal["intensity", "recency", "both", "sequence", "sequence_steep"]
#: How own items are scored, as SQL over the mart's strength, the pair's decay factor and its step back
#: in the user's timeline (code constants).
OWN_SCORE_SQL: dict[str, str] = {
    "intensity": "strength", "recency": "decay", "both": "strength * decay", "sequence": "strength / steps_back",
    "sequence_steep": "strength / (steps_back * steps_back)",
}
#: Stage-1 items score above every stage-2 item (whose blend lies in [0, 1]).
STAGE_ONE_OFFSET = 2.0
#: The plain "own recent items first, then ALS" list as knobs: every own item (strength x 0.5^(age / 14 days))
#: ahead of ALS's, ALS breaking ties, no co-occurrence. The benchmark's bar for the challenger.
PLAIN_OWN_FIRST: dict[str, object] = {
    "repeat_weight": 0.999, "half_life_days": 14.0, "own_ranking": "both", "own_cap": 1000, "related_weight": 0.0,
}
#: Tuning's reference (trial 0, kept unless a grid point beats it beyond noise): the plain list whose
#: stage 2 weighs ALS and co-occurrence equally, the neutral prior for two scores on a common scale.
OWN_FIRST_WITH_RELATED: dict[str, object] = {**PLAIN_OWN_FIRST, "related_weight": 0.5}
#: Co-occurrence neighbours kept per user: they join the candidates every list is ranked from.
RELATED_PER_USER = 20
#: Users whose co-occurrence product is formed at once: bounds its memory (each owned item brings up
#: to item-kNN's K neighbours before the per-user cut) on shops with millions of users.
RELATED_BATCH_USERS = 50_000
#: The smallest own score kept: a very old pair's decay underflows to 0, and 0 would drop it from the history.
MIN_OWN_SCORE = 1e-300


class RepeatAwareConfig(AlsConfig):
    """ALS hyperparameters plus the repeat policy: how own items are scored, weighed and how many
    come first, and how much co-occurrence with them counts."""

    repeat_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    half_life_days: float = Field(default=14.0, gt=0.0)
    own_ranking: OwnRanking = "both"
    own_cap: int = Field(default=0, ge=0, le=1000)
    related_weight: float = Field(default=0.0, ge=0.0, le=1.0)


def own_history(
    con: duckdb.DuckDBPyConnection, table: str, fit: FitArrays, own_ranking: OwnRanking, half_life_days: float
) -> csr_matrix:
    """users x items own score (``OWN_SCORE_SQL[own_ranking]``) in ``fit``'s order; > 0 exactly on owned pairs."""
    frame = con.execute(
        f"""
        WITH pairs AS (
            SELECT user_id, item_id, strength,
                   pow(0.5, epoch(max(last_event_time) OVER () - last_event_time) / 86400.0
                            / CAST($half_life AS DOUBLE)) AS decay,
                   dense_rank() OVER (PARTITION BY user_id ORDER BY last_event_time DESC) AS steps_back
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


def item_similarity(con: duckdb.DuckDBPyConnection, table: str, fit: FitArrays) -> csr_matrix:
    """The BM25 item-item similarity of ``table`` in ``fit``'s item order: item_knn_bm25_model's own
    fit when it has one on the same data with the default parameters, else fitted here."""
    config = ItemKnnBm25Config()
    knn = reusable_fit(con, "item_knn_bm25_model", table, config.model_dump()) or fit_item_knn(con, table, config)
    order = knn.item_index.get_indexer(fit.item_ids)
    if (order < 0).any():
        raise ValueError(f"the item-kNN fit of {table} lacks items of the ALS fit: both must read the same table")
    return knn.sparse["similarity"][order][:, order].tocsr()


def best_cells_per_row(matrix: csr_matrix, per_row: int) -> csr_matrix:
    """Each row's ``per_row`` largest positive cells (ties: lower column first).

    One float sort key, row + (1 - value / above the largest value), orders by row and then by value
    descending: several times faster than a three-key lexsort on the tens of millions of cells a
    large shop's product has (keys equal to the last bits keep their column order: stable sort)."""
    matrix = matrix.tocsr()
    matrix.sort_indices()
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    positive = matrix.data > 0
    rows, cols, values = rows[positive], matrix.indices[positive], matrix.data[positive]
    scale = values.max(initial=0.0) * (1.0 + 1e-9) or 1.0
    order = np.argsort(rows + (1.0 - values / scale), kind="stable")
    rows, cols, values = rows[order], cols[order], values[order]
    keep = ranks_within_rows(rows) <= per_row
    return csr_matrix((values[keep], (rows[keep], cols[keep])), shape=matrix.shape)


def related_evidence(own: csr_matrix, similarity: csr_matrix, per_user: int = RELATED_PER_USER) -> csr_matrix:
    """users x items co-occurrence evidence ``own @ similarity``, each user's best ``per_user`` cells
    (formed ``RELATED_BATCH_USERS`` users at a time)."""
    parts = [
        best_cells_per_row(own[start : start + RELATED_BATCH_USERS] @ similarity, per_user)
        for start in range(0, own.shape[0], RELATED_BATCH_USERS)
    ]
    return vstack(parts, format="csr") if parts else csr_matrix(own.shape)


def with_own_history(
    con: duckdb.DuckDBPyConnection, table: str, fit: FitArrays, config: RepeatAwareConfig,
    similarity: csr_matrix | None,
) -> FitArrays:
    """``fit`` (an ALS fit of ``table``) plus what the repeat-aware scoring reads: the own scores, the
    co-occurrence evidence, their union as ``history`` (the cells the model may rank above their dot
    product: registry's ``FactorRanking.own``) and the blend knobs (stored with the artifact, so
    scoring needs no config). With ``related_weight`` 0 co-occurrence cannot move a score, so it is
    left empty (and ``similarity`` may be None): history is then the own items, which at
    RetailRocket size cuts the candidates scored per user from ~20 to ~2."""
    own = own_history(con, table, fit, config.own_ranking, config.half_life_days)
    related = related_evidence(own, similarity) if config.related_weight > 0 else csr_matrix(own.shape)
    history = (own.astype(bool) + related.astype(bool)).astype(np.float64)
    fit.sparse.update({"own": own, "related": related, "history": history.tocsr()})
    fit.dense["repeat_weight"] = np.array(config.repeat_weight)
    fit.dense["own_cap"] = np.array(config.own_cap)
    fit.dense["related_weight"] = np.array(config.related_weight)
    return fit


def fit_repeat_aware(
    con: duckdb.DuckDBPyConnection, table: str, config: RepeatAwareConfig, start: FitArrays | None = None
) -> FitArrays:
    """ALS factors plus what the repeat-aware scoring reads; the factors are als_model's own fit of
    ``table`` when it used the same ALS parameters on the same data (saves a whole ALS fit), else fitted
    here (warm-started from ``start``, see ``fit_als``)."""
    fit = reusable_fit(con, "als_model", table, config.model_dump())
    fit = fit if fit is not None else fit_als(con, table, config, start)
    return with_history_of(con, table, fit, config)


def with_history_of(
    con: duckdb.DuckDBPyConnection, table: str, fit: FitArrays, config: RepeatAwareConfig
) -> FitArrays:
    """``with_own_history`` of ``table``, its item similarity fitted (or reused) only when co-occurrence counts."""
    similarity = item_similarity(con, table, fit) if config.related_weight > 0 else None
    return with_own_history(con, table, fit, config, similarity)


def scaled_per_row(scores: np.ndarray) -> np.ndarray:
    """Each row min-max scaled to [0, 1] (a constant row becomes 0)."""
    low = scores.min(axis=1, keepdims=True)
    spread = scores.max(axis=1, keepdims=True) - low
    return (scores - low) / np.where(spread > 0, spread, 1.0)


def share_of_row_max(evidence: csr_matrix) -> np.ndarray:
    """Dense rows divided by their maximum: evidence in [0, 1], 0 staying "none"."""
    dense = evidence.toarray()
    peak = dense.max(axis=1, keepdims=True)
    return dense / np.where(peak > 0, peak, 1.0)


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
    related_weight = float(fit.dense["related_weight"])
    own = share_of_row_max(fit.sparse["own"][user_rows])
    related = share_of_row_max(fit.sparse["related"][user_rows])
    model = (1.0 - related_weight) * scaled_per_row(score_als(fit, user_rows)) + related_weight * related
    blend = weight * own + (1.0 - weight) * model
    return np.where(top_own_mask(own, blend, int(fit.dense["own_cap"])), STAGE_ONE_OFFSET + blend, blend)
