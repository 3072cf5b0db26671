"""The baselines every learnt model must beat: popularity (global and recent), item-item kNN
(cosine and BM25) and user-based cosine kNN.

Popularity is also the fallback for users a personalised model has never seen (cold users).
"""

from __future__ import annotations

import warnings
from typing import Literal

import duckdb
import numpy as np
from dagster import Config
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
from implicit.utils import ParameterWarning
from scipy.sparse import csr_matrix, diags

from recsys_dagster.models.artifacts import FitArrays
from recsys_dagster.models.matrix import checked_table, load_matrix
from recsys_dagster.models.scoring import ranks_within_rows


class PopularityConfig(Config):
    """``recent_days``: count only pairs last active within that many days of the table's newest
    event (None = all history), so seasonal shops can favour what sells now."""

    recent_days: int | None = None


def fit_popularity(con: duckdb.DuckDBPyConnection, table: str, config: PopularityConfig) -> FitArrays:
    """Items ranked by distinct users (ties by total strength, then item id), stored best first.

    The stored order is the ranking, so ``n_users`` need not be unique to rank deterministically.
    """
    if config.recent_days is not None and config.recent_days <= 0:
        raise ValueError("recent_days must be a positive number of days or None")
    table = checked_table(table)
    ranked = con.execute(
        f"""
        WITH window_pairs AS (
            SELECT user_id, item_id, strength
            FROM {table}
            WHERE $recent_days IS NULL
               OR last_event_time >= (SELECT max(last_event_time) FROM {table}) - to_days(CAST($recent_days AS INTEGER))
        )
        SELECT item_id, count(DISTINCT user_id) AS n_users, sum(strength) AS strength,
               (SELECT count(DISTINCT user_id) FROM window_pairs) AS users_in_window,
               (SELECT count(*) FROM window_pairs) AS pairs_in_window
        FROM window_pairs
        GROUP BY item_id
        ORDER BY n_users DESC, strength DESC, item_id
        """,
        {"recent_days": config.recent_days},
    ).df()
    return FitArrays(
        user_ids=np.array([], dtype=str),
        item_ids=ranked["item_id"].to_numpy(),
        dense={
            "n_users": ranked["n_users"].to_numpy(np.float64),
            "strength": ranked["strength"].to_numpy(np.float64),
        },
        stats={
            "n_users": int(ranked["users_in_window"].iloc[0]) if len(ranked) else 0,
            "n_items": len(ranked),
            "nnz": int(ranked["pairs_in_window"].iloc[0]) if len(ranked) else 0,
        },
    )


class ItemKnnConfig(Config):
    """Item-item nearest neighbours from ``implicit.nearest_neighbours``.

    ``similarity``: "cosine" (CosineRecommender) or "bm25" (BM25Recommender, which damps very
    active users and very popular items with ``bm25_k1`` / ``bm25_b``); ``neighbours``: K, the
    number of most similar items kept per item.
    """

    similarity: Literal["cosine", "bm25"] = "cosine"
    neighbours: int = 50
    bm25_k1: float = 1.2
    bm25_b: float = 0.75


def fit_item_knn(con: duckdb.DuckDBPyConnection, table: str, config: ItemKnnConfig) -> FitArrays:
    """The item x item similarity matrix plus the user history it is applied to when scoring."""
    data = load_matrix(con, table)
    model = (
        BM25Recommender(K=config.neighbours, K1=config.bm25_k1, B=config.bm25_b, num_threads=1)
        if config.similarity == "bm25"
        else CosineRecommender(K=config.neighbours, num_threads=1)
    )
    with warnings.catch_warnings():
        # implicit's own cosine/BM25 weighting hands itself a COO matrix and then warns about it.
        warnings.simplefilter("ignore", ParameterWarning)
        model.fit(data.matrix, show_progress=False)
    return FitArrays(
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        sparse={"similarity": csr_matrix(model.similarity, dtype=np.float64), "user_items": data.matrix},
        stats={"n_users": data.n_users, "n_items": data.n_items, "nnz": data.nnz},
    )


def no_evidence_to_minus_inf(scores: np.ndarray) -> np.ndarray:
    """Item-kNN gives 0 to items unrelated to the user's history: never recommend those."""
    scores[scores <= 0] = -np.inf
    return scores


def score_item_knn(fit: FitArrays, user_rows: np.ndarray) -> np.ndarray:
    """History times similarity, as implicit's ``ItemItemRecommender.recommend`` scores."""
    history = fit.sparse["user_items"][user_rows]
    return no_evidence_to_minus_inf((history @ fit.sparse["similarity"]).toarray().astype(np.float64))


def similar_item_knn(fit: FitArrays, item_rows: np.ndarray) -> np.ndarray:
    return no_evidence_to_minus_inf(fit.sparse["similarity"][item_rows].toarray().astype(np.float64))


class PopularityRecentConfig(PopularityConfig):
    """The recent-window popularity baseline: what sold in the last ``recent_days`` of the data."""

    recent_days: int | None = 7


class ItemKnnBm25Config(ItemKnnConfig):
    """The BM25-weighted item-kNN baseline (damps heavy users and blockbuster items)."""

    similarity: Literal["cosine", "bm25"] = "bm25"


class UserKnnConfig(Config):
    """User-based kNN ("users like you liked"): ``neighbours`` most cosine-similar users per user."""

    neighbours: int = 20


def fit_user_knn(con: duckdb.DuckDBPyConnection, table: str, config: UserKnnConfig) -> FitArrays:
    """Nothing is learnt: the fit keeps the user x item strength matrix and its row-normalised copy."""
    if config.neighbours <= 0:
        raise ValueError("neighbours must be positive")
    data = load_matrix(con, table)
    norms = np.sqrt(np.asarray(data.matrix.multiply(data.matrix).sum(axis=1), dtype=np.float64)).ravel()
    normalized = csr_matrix(diags(1.0 / np.where(norms > 0, norms, 1.0)) @ data.matrix, dtype=np.float64)
    return FitArrays(
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        dense={"neighbours": np.array(config.neighbours)},
        sparse={"user_items": csr_matrix(data.matrix, dtype=np.float64), "normalized": normalized},
        stats={"n_users": data.n_users, "n_items": data.n_items, "nnz": data.nnz},
    )


def top_neighbours(similarity: csr_matrix, self_columns: np.ndarray, k: int) -> csr_matrix:
    """The ``k`` largest positive entries of every row, the row's own user (``self_columns``) removed.

    Sorting the sparse entries by (row, -value) and keeping the first ``k`` of each row never
    materialises a dense users x users block.
    """
    coo = similarity.tocoo()
    keep = (coo.col != self_columns[coo.row]) & (coo.data > 0)
    rows, cols, values = coo.row[keep], coo.col[keep], coo.data[keep]
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    top = ranks_within_rows(rows) <= k
    return csr_matrix((values[top], (rows[top], cols[top])), shape=similarity.shape)


def score_user_knn(fit: FitArrays, user_rows: np.ndarray) -> np.ndarray:
    """Weighted average of the top-k neighbours' strengths: sum(sim * strength) / sum(sim).

    An item a neighbour never touched counts as 0 for that neighbour; items no neighbour touched
    get no score (-inf).
    """
    normalized = fit.sparse["normalized"]
    similarity = normalized[user_rows] @ normalized.T
    neighbours = top_neighbours(similarity, user_rows, int(fit.dense["neighbours"]))
    totals = np.asarray(neighbours.sum(axis=1), dtype=np.float64).ravel()
    weighted = (neighbours @ fit.sparse["user_items"]).toarray()
    return no_evidence_to_minus_inf(weighted / np.where(totals > 0, totals, 1.0)[:, None])
