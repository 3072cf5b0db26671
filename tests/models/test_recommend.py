"""The scoring API on artifacts trained by a real materialization on Online Retail."""

import json
import re

import duckdb
import numpy as np
import pandas as pd
import pytest
from implicit.cpu.als import AlternatingLeastSquares
from implicit._nearest_neighbours import NearestNeighboursScorer
from implicit.nearest_neighbours import ItemItemRecommender

from recsys_dagster.models.baselines import PopularityConfig, fit_popularity
from recsys_dagster.models.matrix import pairs_matrix
from recsys_dagster.models.scoring import top_n
from recsys_dagster.models.registry import (
    MODEL_NAMES,
    LoadedModel,
    dense_top_items,
    ensure_fit,
    load_latest,
    purchased_pairs,
)

UNKNOWN_USER = "no-such-customer"


def assert_well_formed(recs: pd.DataFrame, key: str, item: str, n: int) -> None:
    assert list(recs.columns) == [key, "rank", item, "score"]
    assert not recs.duplicated([key, item]).any()
    ranks = recs.groupby(key)["rank"].agg(["min", "max", "count"])
    assert (ranks["min"] == 1).all() and (ranks["max"] == ranks["count"]).all() and (ranks["count"] <= n).all()
    scores = recs.sort_values([key, "rank"]).groupby(key)["score"]
    assert scores.apply(lambda s: bool(np.all(np.diff(s.to_numpy()) <= 1e-9))).all(), "scores must not rise with rank"


@pytest.fixture(autouse=True)
def serving_fits(retail_con: duckdb.DuckDBPyConnection) -> None:
    """Training makes the validation and holdout fits; the serving fit is made on demand (publishing)."""
    for model in MODEL_NAMES:
        ensure_fit(retail_con, load_latest(retail_con, model))


@pytest.fixture()
def requested_users(retail_con: duckdb.DuckDBPyConnection) -> list[str]:
    users = retail_con.execute("SELECT user_id FROM dim_users ORDER BY n_items DESC, user_id LIMIT 40").df()
    return [*users["user_id"], UNKNOWN_USER]


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("fit", ["holdout", "serving"])
def test_recommend_invariants(model: str, fit: str, retail_con, requested_users: list[str]) -> None:
    loaded = load_latest(retail_con, model)
    table = "fct_train_user_item" if fit == "holdout" else "fct_user_item_interactions"
    exclude = purchased_pairs(retail_con, table)

    recs = loaded.recommend(requested_users, 10, fit=fit, exclude=exclude)

    assert_well_formed(recs, "user_id", "item_id", 10)
    assert set(recs["item_id"]) <= set(loaded.fit_arrays(fit).item_ids)
    assert recs.merge(exclude, on=["user_id", "item_id"]).empty, "an excluded pair was recommended"
    known = set(requested_users) & set(loaded.fit_arrays(fit).user_ids)
    user_agnostic = model in ("popularity_model", "popularity_recent_model")
    expected_users = set(requested_users) if user_agnostic else known
    assert set(recs["user_id"]) <= expected_users and UNKNOWN_USER not in known
    assert (UNKNOWN_USER in set(recs["user_id"])) == user_agnostic
    assert recs["user_id"].nunique() >= 0.9 * len(expected_users)


def test_recommend_without_exclusions_returns_full_lists(retail_con, requested_users: list[str]) -> None:
    recs = load_latest(retail_con, "als_model").recommend(requested_users, 7, fit="serving")
    assert recs.groupby("user_id").size().eq(7).all()
    assert recs["user_id"].nunique() == len(requested_users) - 1


def test_popularity_is_one_ranking_minus_each_users_exclusions(retail_con, requested_users: list[str]) -> None:
    loaded = load_latest(retail_con, "popularity_model")
    exclude = purchased_pairs(retail_con, "fct_user_item_interactions")
    ranking = list(loaded.fit_arrays("serving").item_ids)

    recs = loaded.recommend(requested_users, 10, fit="serving", exclude=exclude)

    for user in [requested_users[0], requested_users[5], UNKNOWN_USER]:
        owned = set(exclude.loc[exclude["user_id"] == user, "item_id"])
        expected = [item for item in ranking if item not in owned][:10]
        assert recs.loc[recs["user_id"] == user].sort_values("rank")["item_id"].tolist() == expected


def test_popularity_scores_are_distinct_users_and_the_window_narrows_them(retail_con) -> None:
    loaded = load_latest(retail_con, "popularity_model")
    top = loaded.recommend(["anyone"], 5, fit="serving")
    counts = retail_con.execute(
        "SELECT item_id, count(DISTINCT user_id) AS n FROM fct_user_item_interactions GROUP BY item_id"
    ).df().set_index("item_id")["n"]
    assert top["score"].tolist() == counts.loc[top["item_id"]].astype(float).tolist()
    assert top["score"].iloc[0] == counts.max()

    everything = fit_popularity(retail_con, "fct_user_item_interactions", PopularityConfig())
    last_day = fit_popularity(retail_con, "fct_user_item_interactions", PopularityConfig(recent_days=1))
    expected_last_day = retail_con.execute(
        """
        SELECT count(DISTINCT item_id), count(DISTINCT user_id) FROM fct_user_item_interactions
        WHERE last_event_time >= (SELECT max(last_event_time) FROM fct_user_item_interactions) - INTERVAL 1 DAY
        """
    ).fetchone()
    assert (last_day.n_items, last_day.stats["n_users"]) == expected_last_day
    assert last_day.n_items < everything.n_items
    with pytest.raises(ValueError, match="recent_days"):
        fit_popularity(retail_con, "fct_user_item_interactions", PopularityConfig(recent_days=0))


def test_als_ranking_equals_implicits_own_recommend(retail_con, requested_users: list[str]) -> None:
    loaded = load_latest(retail_con, "als_model")
    arrays = loaded.fit_arrays("serving")
    exclude = purchased_pairs(retail_con, "fct_user_item_interactions")
    users = [u for u in requested_users if u != UNKNOWN_USER]

    ours = loaded.recommend(users, 10, fit="serving", exclude=exclude)

    reference = AlternatingLeastSquares(factors=arrays.dense["user_factors"].shape[1])
    reference.user_factors, reference.item_factors = arrays.dense["user_factors"], arrays.dense["item_factors"]
    excluded = pairs_matrix(exclude, pd.Index(users), arrays.item_index).astype(np.float32).tocsr()
    ids, scores = reference.recommend(arrays.user_index.get_indexer(users), excluded, N=10)
    for position, user in enumerate(users):
        mine = ours.loc[ours["user_id"] == user].sort_values("rank")
        assert mine["item_id"].tolist() == arrays.item_ids[ids[position]].tolist()
        np.testing.assert_allclose(mine["score"], scores[position], rtol=1e-5)


def test_item_knn_scores_equal_implicits_item_item_recommend(retail_con, requested_users: list[str]) -> None:
    loaded = load_latest(retail_con, "item_knn_model")
    arrays = loaded.fit_arrays("holdout")
    reference = ItemItemRecommender(K=loaded.params["neighbours"])
    reference.similarity = arrays.sparse["similarity"]
    reference.scorer = NearestNeighboursScorer(reference.similarity)
    users = [u for u in requested_users if u in set(arrays.user_ids)][:10]

    ours = loaded.recommend(users, 10, fit="holdout")

    rows = arrays.user_index.get_indexer(users)
    ids, scores = reference.recommend(rows, arrays.sparse["user_items"][rows], N=10, filter_already_liked_items=False)
    for position, user in enumerate(users):
        mine = ours.loc[ours["user_id"] == user].sort_values("rank")
        theirs = pd.Series(scores[position], index=arrays.item_ids[ids[position]])
        theirs = theirs[theirs > 0]
        np.testing.assert_allclose(mine["score"], theirs.to_numpy()[: len(mine)], rtol=1e-9)
        shared = mine[mine["item_id"].isin(theirs.index)]
        np.testing.assert_allclose(shared["score"], theirs.loc[shared["item_id"]], rtol=1e-9)
        assert set(theirs[theirs > mine["score"].min() + 1e-9].index) <= set(mine["item_id"])


@pytest.mark.parametrize("model", ["als_model", "item_knn_model"])
def test_similar_items_never_return_the_item_itself(model: str, retail_con) -> None:
    loaded = load_latest(retail_con, model)
    arrays = loaded.fit_arrays("serving")

    everything = loaded.similar_items(None, 5, fit="serving")
    some = loaded.similar_items([arrays.item_ids[0], arrays.item_ids[3], "not-an-item"], 5, fit="serving")

    assert_well_formed(everything, "item_id", "similar_item_id", 5)
    assert (everything["item_id"] != everything["similar_item_id"]).all()
    assert everything["item_id"].nunique() >= 0.9 * len(arrays.item_ids)
    assert set(some["item_id"]) <= {arrays.item_ids[0], arrays.item_ids[3]}
    pd.testing.assert_frame_equal(
        some.reset_index(drop=True),
        everything[everything["item_id"].isin(some["item_id"].unique())].reset_index(drop=True),
    )


def test_similar_items_and_ratings_are_refused_where_undefined(retail_con) -> None:
    with pytest.raises(NotImplementedError, match="similar_items"):
        load_latest(retail_con, "svd_model").similar_items(None, 5, fit="serving")
    with pytest.raises(NotImplementedError, match="svd_model only"):
        pairs = pd.DataFrame({"user_id": ["1"], "item_id": ["2"]})
        load_latest(retail_con, "als_model").predict_ratings(pairs, "serving")
    with pytest.raises(ValueError, match="fit must be"):
        load_latest(retail_con, "als_model").recommend(["1"], 5, fit="train")


def test_artifacts_are_versioned_numpy_files_with_params(retail_con, trained_retail) -> None:
    registry = retail_con.execute("SELECT * FROM ml.model_registry ORDER BY model").df()
    assert sorted(registry["model"]) == sorted(MODEL_NAMES)
    assert (registry["run_id"] == trained_retail["result"].run_id).all()
    for row in registry.itertuples():
        loaded = load_latest(retail_con, row.model)
        assert isinstance(loaded, LoadedModel) and loaded.model_version == row.model_version
        assert re.fullmatch(r"\d{8}T\d{12}Z-[0-9a-f]{8}", row.model_version)
        assert loaded.artifact_dir == trained_retail["models_dir"] / row.model / row.model_version
        params = json.loads((loaded.artifact_dir / "params.json").read_text())
        assert params["model_version"] == row.model_version and params["hyperparameters"] == loaded.params
        holdout = params["fits"]["holdout"]
        assert (holdout["n_users"], holdout["n_items"]) == (row.n_users, row.n_items)
        assert params["fits"]["holdout"]["nnz"] < params["fits"]["serving"]["nnz"]
        assert set(params["fingerprints"]) == {"validation", "holdout", "serving"}
        files = {p.suffix for p in loaded.artifact_dir.rglob("*") if p.is_file()}
        assert files == {".json", ".npz"}


def test_load_latest_errors_clearly(tmp_path, retail_con) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        load_latest(retail_con, "deep_model")
    with duckdb.connect(str(tmp_path / "empty.duckdb")) as con:
        with pytest.raises(LookupError, match="materialize the als_model"):
            load_latest(con, "als_model")


@pytest.mark.parametrize("model", ["als_model", "repeat_aware_model", "svd_model"])
def test_factor_rankings_equal_dense_scoring_of_every_item(model: str, retail_con) -> None:
    """The implicit top-k paths (no dense users x items rows) return exactly the dense ranking."""
    loaded = load_latest(retail_con, model)
    arrays = loaded.fit_arrays("holdout")
    exclude = purchased_pairs(retail_con, "fct_train_user_item")
    users = arrays.user_ids[:: max(1, len(arrays.user_ids) // 300)]
    user_rows = arrays.user_index.get_indexer(users)
    user_vectors, item_vectors, _ = loaded.spec.factor_ranking.vectors(arrays)
    # The items most often a user's best dot product: banning them moves the top of the row, which
    # must still set the full row's min-max scale (repeat-aware) although they are never returned.
    banned_columns = np.argsort(-np.bincount((user_vectors[user_rows] @ item_vectors.T).argmax(axis=1)))[:3]

    _, rows, cols, scores = loaded.top_items(
        users, 20, fit="holdout", exclude=exclude, banned_items=list(arrays.item_ids[banned_columns])
    )

    excluded = pairs_matrix(exclude, pd.Index(users), arrays.item_index)
    dense_rows, dense_cols, dense_scores = dense_top_items(
        loaded.spec.score, arrays, user_rows, excluded, banned_columns, 20
    )
    np.testing.assert_array_equal(rows, dense_rows)
    np.testing.assert_allclose(scores, dense_scores, rtol=1e-5, atol=1e-6)
    assert (cols == dense_cols).mean() > 0.99, "only float32 near-ties may swap places"
    assert len(rows) == 20 * len(users)


def test_candidate_items_prune_the_catalog_but_keep_own_items(retail_con) -> None:
    loaded = load_latest(retail_con, "repeat_aware_model")
    arrays = loaded.fit_arrays("holdout")
    popular = retail_con.execute(
        "SELECT item_id FROM fct_train_user_item GROUP BY item_id ORDER BY count(*) DESC, item_id LIMIT 200"
    ).df()["item_id"]
    users = arrays.user_ids[:100]
    own = set(zip(*arrays.sparse["history"][arrays.user_index.get_indexer(users)].nonzero()))

    recs = loaded.recommend(users, 20, fit="holdout", candidate_items=popular)

    positions = zip(arrays.user_index.get_indexer(recs["user_id"]), arrays.item_index.get_indexer(recs["item_id"]))
    outside = [pair for item, pair in zip(recs["item_id"], positions) if item not in set(popular)]
    assert outside and all(pair in own for pair in outside), "only own items may come from outside the candidates"
    assert recs.groupby("user_id").size().eq(20).all()


def test_item_knn_similar_items_from_sparse_cells_equal_the_dense_rows(retail_con) -> None:
    loaded = load_latest(retail_con, "item_knn_model")
    arrays = loaded.fit_arrays("holdout")
    rows = np.arange(0, arrays.n_items, 7)
    banned = list(arrays.item_ids[:5])

    sparse = loaded.similar_items(arrays.item_ids[rows], 10, fit="holdout", banned_items=banned)

    dense = loaded.spec.similar(arrays, rows)
    dense[np.arange(len(rows)), rows] = -np.inf
    dense[:, :5] = -np.inf
    dense_rows, cols, best = top_n(dense, 10)
    assert sparse["similar_item_id"].tolist() == arrays.item_ids[cols].tolist()
    assert sparse["item_id"].tolist() == arrays.item_ids[rows[dense_rows]].tolist()
    np.testing.assert_allclose(sparse["score"], best)
