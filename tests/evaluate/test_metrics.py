"""Metrics on hand-computable cases, and against implicit.evaluation on real Online Retail data."""

import math
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from implicit.cpu.als import AlternatingLeastSquares
from implicit.evaluation import ranking_metrics_at_k
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from recsys_dagster.evaluate.metrics import mae, per_user_ranking, ranking_metrics, rmse, standard_error_of_mean


def recs_frame(lists: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(user, rank, item) for user, items in lists.items() for rank, item in enumerate(items, start=1)],
        columns=["user_id", "rank", "item_id"],
    )


def relevant_frame(sets: dict[str, list[str]]) -> pd.DataFrame:
    pairs = [(user, item) for user, items in sets.items() for item in items]
    return pd.DataFrame(pairs, columns=["user_id", "item_id"])


# a: hits at ranks 1 and 3 of 3 relevant (i5 is relevant but at rank 4, beyond K=3)
# b: one relevant item, hit at rank 2;  c: relevant items but no list;  d: a list but nothing relevant
RECS = recs_frame({"a": ["i1", "i2", "i3", "i5"], "b": ["i7", "i9", "i8"], "d": ["i1", "i8", "i10"]})
RELEVANT = relevant_frame({"a": ["i1", "i3", "i5"], "b": ["i9"], "c": ["i1", "i2"]})
IDCG_3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)


def test_per_user_values_by_hand() -> None:
    per_user = per_user_ranking(RECS, RELEVANT, k=3).set_index("user_id")

    assert per_user.loc["a"].to_dict() == pytest.approx(
        {
            "n_relevant": 3, "hits": 2, "precision": 2 / 3, "recall": 2 / 3,
            "ndcg": (1 + 1 / 2) / IDCG_3, "ap": (1 / 1 + 2 / 3) / 3, "hit": 1,
        }
    )
    assert per_user.loc["b"].to_dict() == pytest.approx(
        {"n_relevant": 1, "hits": 1, "precision": 1 / 3, "recall": 1.0, "ndcg": 1 / math.log2(3), "ap": 1 / 2, "hit": 1}
    )
    assert per_user.loc["c"].to_dict() == {
        "n_relevant": 2, "hits": 0, "precision": 0, "recall": 0, "ndcg": 0, "ap": 0, "hit": 0
    }
    assert "d" not in per_user.index


def test_means_and_coverage_by_hand() -> None:
    metrics = ranking_metrics(RECS, RELEVANT, k=3, n_catalog_items=12)

    assert metrics == pytest.approx(
        {
            "precision@3": (2 / 3 + 1 / 3 + 0) / 3,
            "recall@3": (2 / 3 + 1 + 0) / 3,
            "ndcg@3": (1.5 / IDCG_3 + 1 / math.log2(3) + 0) / 3,
            "map@3": (5 / 9 + 1 / 2 + 0) / 3,
            "hit_rate@3": 2 / 3,
            # top-3 items: a {i1,i2,i3}, b {i7,i9,i8}, d {i1,i8,i10} -> 7 distinct of 12
            "coverage@3": 7 / 12,
        },
        rel=1e-12,
    )


def test_ideal_dcg_and_ap_use_min_k_and_relevant_count() -> None:
    """Five relevant items, K=2, both slots hit: a perfect list scores 1, not 2/5."""
    relevant = relevant_frame({"u": ["x1", "x2", "x3", "x4", "x5"]})
    per_user = per_user_ranking(recs_frame({"u": ["x1", "x2"]}), relevant, k=2)
    assert per_user.loc[0, ["precision", "recall", "ndcg", "ap"]].tolist() == pytest.approx([1.0, 2 / 5, 1.0, 1.0])


def test_invalid_lists_are_rejected() -> None:
    with pytest.raises(ValueError, match="repeat an item"):
        per_user_ranking(recs_frame({"u": ["x", "x"]}), relevant_frame({"u": ["x"]}), k=2)
    with pytest.raises(ValueError, match="no relevant pairs"):
        ranking_metrics(RECS, relevant_frame({}), k=3, n_catalog_items=5)


def test_rating_errors_by_hand() -> None:
    actual, predicted = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0])
    assert rmse(actual, predicted) == pytest.approx(math.sqrt(5 / 3))
    assert mae(actual, predicted) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        rmse(np.array([]), np.array([]))


@pytest.fixture(scope="module")
def retail_split(shared_datasets: Path) -> tuple[csr_matrix, csr_matrix]:
    """Online Retail purchases as train (first 80% of time) and test matrices over one id space."""
    source = shared_datasets / "online_retail" / "online_retail_head10k.csv"
    with duckdb.connect() as con:
        cells = con.execute(
            """
            WITH events AS (
                SELECT CustomerID AS user_id, StockCode AS item_id, CAST(InvoiceDate AS TIMESTAMP) AS event_time
                FROM read_csv($path, header = true, all_varchar = true)
                WHERE CustomerID IS NOT NULL AND NOT starts_with(InvoiceNo, 'C')
            ), cutoff AS (SELECT quantile_disc(event_time, 0.8) AS cutoff_time FROM events)
            SELECT dense_rank() OVER (ORDER BY user_id) - 1 AS row_index,
                   dense_rank() OVER (ORDER BY item_id) - 1 AS col_index,
                   event_time < (SELECT cutoff_time FROM cutoff) AS in_train
            FROM events
            """,
            {"path": str(source)},
        ).df()
    shape = (cells["row_index"].max() + 1, cells["col_index"].max() + 1)

    def matrix(selected: pd.DataFrame) -> csr_matrix:
        ones = np.ones(len(selected), dtype=np.float32)
        binary = csr_matrix((ones, (selected["row_index"], selected["col_index"])), shape=shape)
        binary.data[:] = 1.0  # repeated purchases sum on construction; implicit's "likes" are a set
        return binary

    return matrix(cells[cells["in_train"]]), matrix(cells[~cells["in_train"]])


def test_ndcg_map_and_precision_agree_with_implicit_evaluation(retail_split) -> None:
    train, test = retail_split
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(factors=16, iterations=5, random_state=3)
        model.fit(train, show_progress=False)
    theirs = ranking_metrics_at_k(model, train, test, K=10, show_progress=False)

    users = np.flatnonzero(np.diff(test.indptr) > 0)
    ids, _ = model.recommend(users, train[users], N=10, filter_already_liked_items=True)
    recs = pd.DataFrame(
        {"user_id": np.repeat(users, 10), "rank": np.tile(np.arange(1, 11), len(users)), "item_id": ids.ravel()}
    )
    test_coo = test.tocoo()
    relevant = pd.DataFrame({"user_id": test_coo.row, "item_id": test_coo.col})
    ours = ranking_metrics(recs, relevant, k=10, n_catalog_items=train.shape[1])
    per_user = per_user_ranking(recs, relevant, k=10)

    assert theirs["ndcg"] > 0
    assert ours["ndcg@10"] == pytest.approx(theirs["ndcg"], rel=1e-9)
    assert ours["map@10"] == pytest.approx(theirs["map"], rel=1e-9)
    # implicit's "precision" is sum(hits) / sum(min(K, |rel|)); ours is the per-user mean of hits / K
    implicit_style = per_user["hits"].sum() / np.minimum(10, per_user["n_relevant"]).sum()
    assert implicit_style == pytest.approx(theirs["precision"], rel=1e-9)
    assert ours["precision@10"] == pytest.approx(per_user["hits"].sum() / (10 * len(per_user)), rel=1e-9)


def test_standard_error_of_the_mean_by_hand() -> None:
    # values 0, 1, 0, 1: sample variance 1/3, so the standard error is sqrt(1/3) / 2.
    assert standard_error_of_mean(np.array([0.0, 1.0, 0.0, 1.0])) == pytest.approx(math.sqrt(1 / 3) / 2)
    assert standard_error_of_mean(np.array([0.7])) == 0.0
