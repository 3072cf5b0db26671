"""The full-refresh speed levers give the answers of the slow paths they replace (Online Retail fits)."""

import duckdb
import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

from recsys_dagster.models.als import AlsConfig, carried_factors, fit_als
from recsys_dagster.models.artifacts import FitArrays
from recsys_dagster.models.registry import load_latest
from recsys_dagster.models.repeat import (
    RepeatAwareConfig,
    item_similarity,
    related_evidence,
    score_repeat_aware,
    with_own_history,
)
from recsys_dagster.models.scoring import NormHead, factor_top_n, pruned_factor_extremes, pruned_factor_top_n
from recsys_dagster.models.svd import SvdConfig, fit_svd, training_ratings


def cells(found: tuple[np.ndarray, np.ndarray, np.ndarray]) -> set[tuple[int, int]]:
    return set(zip(found[0].tolist(), found[1].tolist(), strict=True))


def test_norm_pruned_top_and_extremes_equal_the_full_search(retail_con: duckdb.DuckDBPyConnection) -> None:
    fit = load_latest(retail_con, "als_model").fit_arrays("holdout")
    users, items = fit.dense["user_factors"], fit.dense["item_factors"]
    rng = np.random.default_rng(0)
    rows = rng.choice(len(users), size=min(300, len(users)), replace=False)
    exclude = csr_matrix(
        (np.ones(900, dtype=bool), (rng.integers(0, len(rows), 900), rng.integers(0, len(items), 900))),
        shape=(len(rows), len(items)),
    )
    banned = np.array([0, 7, 11])
    for depth in (32, 256):  # a short head leaves users to the full search, a longer one settles most
        head = NormHead.of(items, depth=depth)
        assert head.bound > 0
        pruned = pruned_factor_top_n(users[rows], items, head, 20, exclude, banned)
        full = factor_top_n(users[rows], items, 20, exclude, banned)
        assert cells(pruned) == cells(full)
        assert np.array_equal(pruned[0], np.sort(pruned[0]))  # rows grouped in order, as factor_top_n
        lowest, highest = pruned_factor_extremes(users[rows], items, head)
        assert np.array_equal(lowest, np.argmin(users[rows] @ items.T, axis=1))
        assert np.array_equal(highest, np.argmax(users[rows] @ items.T, axis=1))


def test_repeat_aware_leaves_out_co_occurrence_only_where_it_cannot_move_a_score(
    retail_con: duckdb.DuckDBPyConnection,
) -> None:
    """With related_weight 0 the fit keeps no co-occurrence (history = own items: fewer candidates to
    score), and the scores equal those of a fit that kept it."""
    table = "fct_train_user_item"
    fit = with_own_history(
        retail_con, table, load_latest(retail_con, "als_model").fit_arrays("holdout"), RepeatAwareConfig(), None
    )
    own, similarity = fit.sparse["own"], item_similarity(retail_con, table, fit)
    assert fit.sparse["related"].nnz == 0
    assert (fit.sparse["history"] != own.astype(bool)).nnz == 0
    with_related = FitArrays(
        user_ids=fit.user_ids, item_ids=fit.item_ids, dense=fit.dense,
        sparse={**fit.sparse, "related": related_evidence(own, similarity)},
    )
    assert with_related.sparse["related"].nnz > 0
    rows = np.arange(0, len(fit.user_ids), 7)
    np.testing.assert_array_equal(score_repeat_aware(fit, rows), score_repeat_aware(with_related, rows))


def test_carried_factors_keep_known_rows_and_start_new_ones_small() -> None:
    start = np.arange(6, dtype=np.float32).reshape(3, 2)
    factors = carried_factors(pd.Index(["a", "b", "c"]), start, np.array(["c", "new", "a"]), np.random.default_rng(0))
    np.testing.assert_array_equal(factors[[0, 2]], start[[2, 0]])
    assert factors.dtype == np.float32 and np.all((factors[1] >= 0) & (factors[1] < 0.01))


def test_warm_started_holdout_fit_ranks_like_a_cold_fit(retail_con: duckdb.DuckDBPyConnection) -> None:
    """A warm fit agrees with a cold fit as much as two cold fits of other seeds agree with each other."""
    config = AlsConfig(factors=16, iterations=15, warm_start_iterations=5, random_state=3)
    earlier = fit_als(retail_con, "ml.validation_train_user_item", config)
    warm = fit_als(retail_con, "fct_train_user_item", config, start=earlier)
    cold = fit_als(retail_con, "fct_train_user_item", config)
    other_seed = fit_als(retail_con, "fct_train_user_item", config.model_copy(update={"random_state": 4}))
    assert list(warm.user_ids) == list(cold.user_ids) and list(warm.item_ids) == list(cold.item_ids)
    sample = np.arange(0, len(warm.user_ids), max(1, len(warm.user_ids) // 200))

    def top10(fit) -> set[tuple[int, int]]:
        return cells(factor_top_n(fit.dense["user_factors"][sample], fit.dense["item_factors"], 10, None, np.array([], int)))

    def overlap(one, other) -> float:
        return len(top10(one) & top10(other)) / len(top10(other))

    assert overlap(warm, cold) >= 0.9 * overlap(other_seed, cold), (overlap(warm, cold), overlap(other_seed, cold))


def test_svd_trains_on_a_fixed_sample_of_at_most_max_ratings_rows(amazon_db) -> None:
    with duckdb.connect(str(amazon_db), read_only=True) as con:
        everything = training_ratings(con, "fct_train_user_item")
        config = SvdConfig(n_factors=8, n_epochs=3, max_ratings=len(everything) // 2)
        first, again = fit_svd(con, "fct_train_user_item", config), fit_svd(con, "fct_train_user_item", config)
        sample = training_ratings(con, "fct_train_user_item", config.max_ratings, config.random_state)
    assert first.stats["nnz"] == len(sample) == len(everything) // 2
    assert sample.merge(everything, on=["user_id", "item_id", "rating"]).shape[0] == len(sample)
    np.testing.assert_array_equal(first.dense["pu"], again.dense["pu"])
