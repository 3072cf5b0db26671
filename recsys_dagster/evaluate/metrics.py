"""Top-K ranking metrics and rating errors, vectorized over all users at once.

Inputs are long frames: recommendations ``[user_id, rank, item_id]`` (rank 1 = best) and
relevant pairs ``[user_id, item_id]``. Relevance is binary. Every user with at least one relevant
item counts, including users with no recommendations (they score 0): dropping them would reward
a model for refusing to answer.

Definitions (``rel`` = the user's relevant items, ``hits`` = relevant items in the top K):

- precision@K = hits / K, averaged over users. implicit's ``ranking_metrics_at_k`` instead reports
  sum(hits) / sum(min(K, |rel|)) over all users, which is not a precision of the list shown
  (a user with one relevant item and one hit in 10 slots would score 1.0); ours is the
  conventional per-user precision, and ``per_user_ranking`` exposes ``hits`` and ``n_relevant``
  so implicit's number can be recomputed from ours.
- recall@K = hits / |rel|.
- NDCG@K = sum over hit ranks r of 1/log2(r+1), divided by the ideal DCG of min(K, |rel|) hits
  (same as implicit).
- MAP@K = mean of AP@K, AP@K = sum over hit ranks r of (hits within the first r)/r, divided by
  min(K, |rel|) (same as implicit).
- hit rate@K = share of users with at least one hit.
- coverage@K = distinct items in anyone's top K / catalog size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RANKING_METRICS = ("precision", "recall", "ndcg", "map", "hit_rate")


def _top_k(recommendations: pd.DataFrame, k: int) -> pd.DataFrame:
    top = recommendations.loc[recommendations["rank"] <= k, ["user_id", "rank", "item_id"]]
    if top.duplicated(["user_id", "item_id"]).any():
        raise ValueError("recommendations repeat an item for a user: metrics would count it twice")
    if top.duplicated(["user_id", "rank"]).any():
        raise ValueError("recommendations give two items the same rank for a user")
    return top


def per_user_ranking(recommendations: pd.DataFrame, relevant: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per user with a relevant item: user_id, n_relevant, hits, precision, recall, ndcg,
    ap, hit (all @k)."""
    if k <= 0:
        raise ValueError("k must be positive")
    rel = relevant[["user_id", "item_id"]].drop_duplicates()
    users = pd.Index(rel["user_id"].unique())
    n_relevant = np.bincount(users.get_indexer(rel["user_id"]), minlength=len(users)).astype(np.float64)

    hits = _top_k(recommendations, k).merge(rel, on=["user_id", "item_id"]).sort_values(["user_id", "rank"])
    hit_user = users.get_indexer(hits["user_id"])
    hit_rank = hits["rank"].to_numpy(np.float64)
    hits_so_far = hits.groupby("user_id", sort=False).cumcount().to_numpy(np.float64) + 1

    n_hits = np.bincount(hit_user, minlength=len(users)).astype(np.float64)
    dcg = np.bincount(hit_user, weights=1.0 / np.log2(hit_rank + 1), minlength=len(users))
    precision_sum = np.bincount(hit_user, weights=hits_so_far / hit_rank, minlength=len(users))
    ideal_hits = np.minimum(k, n_relevant)
    ideal_dcg = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[ideal_hits.astype(np.int64) - 1]
    return pd.DataFrame(
        {
            "user_id": users.to_numpy(),
            "n_relevant": n_relevant.astype(np.int64),
            "hits": n_hits.astype(np.int64),
            "precision": n_hits / k,
            "recall": n_hits / n_relevant,
            "ndcg": dcg / ideal_dcg,
            "ap": precision_sum / ideal_hits,
            "hit": (n_hits > 0).astype(np.float64),
        }
    )


def catalog_coverage(recommendations: pd.DataFrame, k: int, n_catalog_items: int) -> float:
    if n_catalog_items <= 0:
        raise ValueError("the catalog is empty")
    return recommendations.loc[recommendations["rank"] <= k, "item_id"].nunique() / n_catalog_items


def ranking_metrics(
    recommendations: pd.DataFrame, relevant: pd.DataFrame, k: int, n_catalog_items: int
) -> dict[str, float]:
    """``{"precision@K": ..., "recall@K", "ndcg@K", "map@K", "hit_rate@K", "coverage@K"}``."""
    if relevant.empty:
        raise ValueError("no relevant pairs: ranking metrics are undefined")
    per_user = per_user_ranking(recommendations, relevant, k)
    columns = {"precision": "precision", "recall": "recall", "ndcg": "ndcg", "map": "ap", "hit_rate": "hit"}
    values = {f"{metric}@{k}": float(per_user[columns[metric]].mean()) for metric in RANKING_METRICS}
    values[f"coverage@{k}"] = float(catalog_coverage(recommendations, k, n_catalog_items))
    return values


def standard_error_of_mean(values: np.ndarray) -> float:
    """Sample standard deviation / sqrt(n): how far a per-user mean could move by the luck of which
    users fell into the window (0 for fewer than two users). The champion rule compares leads with it."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0


def rmse(actual: np.ndarray, predicted: np.ndarray) -> float:
    errors = np.asarray(actual, dtype=np.float64) - np.asarray(predicted, dtype=np.float64)
    if errors.size == 0:
        raise ValueError("no ratings to compare")
    return float(np.sqrt(np.mean(errors**2)))


def mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    errors = np.asarray(actual, dtype=np.float64) - np.asarray(predicted, dtype=np.float64)
    if errors.size == 0:
        raise ValueError("no ratings to compare")
    return float(np.mean(np.abs(errors)))
