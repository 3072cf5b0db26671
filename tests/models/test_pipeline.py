"""The validation split, every model asset and model_evaluation, materialized together on Online Retail."""

import json

import duckdb
import pandas as pd
import pytest
from dagster import AssetKey, materialize

from recsys_dagster.evaluate.assets import MIN_SERVED_USERS, model_evaluation
from recsys_dagster.evaluate.champion import CHAMPION_CANDIDATES, select_champion
from recsys_dagster.models.assets import MODEL_ASSETS, item_knn_model, popularity_model
from recsys_dagster.models.registry import MODEL_NAMES, ensure_fit, load_latest

RANKING_NAMES = ["precision", "recall", "ndcg", "map", "hit_rate", "coverage"]
#: Every ranking metric name: both windows (val_ = validation), K = 10 and 20, both relevance definitions.
RANKING = [
    f"{window}{metric}@{k}{relevance}"
    for window in ("val_", "")
    for metric in RANKING_NAMES
    for k in (10, 20)
    for relevance in ("", "_new_items")
]
COUNTS = [f"{window}{count}{relevance}" for window in ("val_", "") for count in ("n_eval_users", "n_cold_users")
          for relevance in ("", "_new_items")] + [f"{window}{count}" for window in ("val_", "")
                                                 for count in ("n_window_users", "n_served_users", "n_judged_users")]
#: Standard errors of NDCG@10 over users (the served users' one is what the champion rule reads).
STANDARD_ERRORS = [
    f"{window}ndcg@10{relevance}_se" for window in ("val_", "") for relevance in ("", "_new_items", "_served")
]
#: NDCG@10 over the users publishing serves the model's list to: the champion metric on the validation window.
SERVED = ["val_ndcg@10_served", "ndcg@10_served"]


@pytest.fixture()
def evaluation(trained_retail, retail_con) -> pd.DataFrame:
    return retail_con.execute(
        "SELECT * FROM ml.evaluation_runs WHERE run_id = ?", [trained_retail["result"].run_id]
    ).df()


def metadata_of(trained_retail, asset: str) -> dict[str, object]:
    event = trained_retail["result"].asset_materializations_for_node(asset)[0]
    return {key: value.value for key, value in event.metadata.items()}


def test_one_row_per_model_and_metric_with_values_in_range(evaluation: pd.DataFrame, retail_con) -> None:
    expected = {(model, metric) for model in MODEL_NAMES for metric in RANKING + COUNTS + STANDARD_ERRORS + SERVED} | {
        ("svd_model", metric) for metric in ("rmse", "mae", "val_rmse", "val_mae")
    }
    assert set(zip(evaluation["model"], evaluation["metric"])) == expected
    assert len(evaluation) == len(expected)
    ranking = evaluation[evaluation["metric"].isin(RANKING + SERVED)]
    assert ranking["value"].between(0, 1).all()
    assert evaluation.loc[evaluation["metric"].isin(STANDARD_ERRORS), "value"].between(0, 0.5).all()
    for model in MODEL_NAMES:
        versions = evaluation.loc[evaluation["model"] == model, "model_version"]
        assert versions.eq(load_latest(retail_con, model).model_version).all()
    svd_errors = evaluation.loc[evaluation["metric"].str.contains("rmse|mae"), "value"]
    assert (svd_errors >= 0).all() and (svd_errors < 4).all()


def test_als_and_popularity_find_real_holdout_purchases(evaluation: pd.DataFrame) -> None:
    scores = evaluation.set_index(["model", "metric"])["value"]
    for model in ["als_model", "popularity_model"]:
        assert scores[(model, "ndcg@10")] > 0 and scores[(model, "hit_rate@10")] > 0
        assert scores[(model, "precision@10")] <= scores[(model, "hit_rate@10")]
    assert scores[("popularity_model", "coverage@10")] < scores[("als_model", "coverage@10")]


def test_evaluation_metadata_counts_holdout_and_cold_users(trained_retail, retail_con) -> None:
    metadata = metadata_of(trained_retail, "model_evaluation")
    n_users, n_cold, cutoff = retail_con.execute(
        """
        SELECT count(DISTINCT user_id), count(DISTINCT user_id) FILTER (NOT user_in_train),
               (SELECT cutoff_time FROM int_holdout_cutoff)
        FROM fct_holdout_interactions
        """
    ).fetchone()
    assert metadata["n_holdout_users"] == n_users and metadata["n_cold_users"] == n_cold > 0
    assert metadata["cutoff"] == str(cutoff)
    per_model = len(RANKING) + len(COUNTS) + len(STANDARD_ERRORS) + len(SERVED)
    assert metadata["dagster/row_count"] == len(MODEL_NAMES) * per_model + 4
    counts = retail_con.execute(
        "SELECT metric, value FROM ml.evaluation_runs WHERE model = 'als_model' AND metric LIKE '%n_%users%'"
    ).fetchall()
    assert dict(counts)["n_eval_users"] == dict(counts)["n_window_users"] == n_users
    assert dict(counts)["n_cold_users"] == n_cold
    n_served = retail_con.execute(
        "SELECT count(*) FROM (SELECT user_id FROM fct_train_user_item GROUP BY user_id HAVING count(*) >= 2)"
        " WHERE user_id IN (SELECT user_id FROM fct_holdout_interactions)"
    ).fetchone()[0]
    assert dict(counts)["n_served_users"] == n_served > 0
    val_users = retail_con.execute("SELECT count(DISTINCT user_id) FROM ml.validation_holdout_interactions").fetchone()
    assert dict(counts)["val_n_eval_users"] == metadata["n_validation_users"] == val_users[0]
    assert "data:image/png;base64," in metadata["ndcg_history"]
    assert all(model in metadata["metrics"] for model in MODEL_NAMES)


def test_model_metadata_reports_sizes_version_and_params(trained_retail, retail_con) -> None:
    metadata = metadata_of(trained_retail, "als_model")
    n_users, n_items, nnz = retail_con.execute(
        "SELECT count(DISTINCT user_id), count(DISTINCT item_id), count(*) FROM fct_train_user_item WHERE strength > 0"
    ).fetchone()
    assert (metadata["n_users"], metadata["n_items"], metadata["nnz"]) == (n_users, n_items, nnz)
    assert metadata["model_version"] == load_latest(retail_con, "als_model").model_version
    assert metadata["params"] == {
        "factors": 64, "regularization": 0.05, "alpha": 10.0, "iterations": 15, "weighting": "none", "event_weights": None,
        "random_state": 42, "use_tuned": True, "warm_start_iterations": 5,
    }
    assert metadata["fit_seconds"] >= 0 and 0 < metadata["validation_nnz"] < nnz


def test_model_assets_depend_on_the_dbt_marts() -> None:
    marts = {AssetKey("validation_split"), AssetKey("fct_train_user_item"), AssetKey("fct_user_item_interactions")}
    reused = {"repeat_aware_model": {AssetKey("als_model")}}  # loads als_model's fits instead of refitting
    for asset in MODEL_ASSETS:
        assert set(asset.asset_deps[asset.key]) == marts | reused.get(asset.key.path[-1], set())
        assert asset.group_names_by_key[asset.key] == "models"
    assert set(model_evaluation.asset_deps[model_evaluation.key]) == {
        *(AssetKey(name) for name in MODEL_NAMES),
        AssetKey("fct_holdout_interactions"),
        AssetKey("validation_split"),
        AssetKey("dim_items"),
    }


def test_champion_is_the_first_candidate_within_one_standard_error_of_the_best(
    evaluation: pd.DataFrame, retail_con, trained_retail
) -> None:
    scores = evaluation.set_index(["model", "metric"])["value"]
    ndcg = {model: scores[(model, "val_ndcg@10_served")] for model in CHAMPION_CANDIDATES}
    best = max(ndcg, key=ndcg.get)
    floor = ndcg[best] - scores[(best, "val_ndcg@10_served_se")]
    # the bundled sample's validation window has a single served user: too few, every user is judged
    assert scores[(best, "val_n_served_users")] < MIN_SERVED_USERS
    assert scores[(best, "val_n_judged_users")] == scores[(best, "val_n_eval_users")] > 1
    champion = select_champion(retail_con)
    assert select_champion(retail_con, trained_retail["result"].run_id) == champion
    assert champion.model == next(model for model in CHAMPION_CANDIDATES if ndcg[model] >= floor)
    assert champion.value == ndcg[champion.model]
    assert champion.model_version == load_latest(retail_con, champion.model).model_version
    metadata = metadata_of(trained_retail, "model_evaluation")
    assert (metadata["champion"], metadata["gate_passed"]) == (champion.model, True)
    assert metadata["n_champion_judged_users"] == scores[(best, "val_n_eval_users")]
    assert metadata["champion_judged_on"].startswith(f"all {metadata['n_champion_judged_users']} validation users")



def test_hyperparameters_come_from_run_config(retail_db, make_resources, tmp_path) -> None:
    database = tmp_path / "warehouse.duckdb"
    database.write_bytes(retail_db.read_bytes())
    run_config = {
        "ops": {
            "item_knn_model": {"config": {"similarity": "bm25", "neighbours": 5}},
            "popularity_model": {"config": {"recent_days": 1}},
        }
    }

    result = materialize(
        [item_knn_model, popularity_model],
        resources=make_resources(database, tmp_path / "models"),
        run_config=run_config,
    )

    assert result.success
    with duckdb.connect(str(database), read_only=True) as con:
        knn, popularity = load_latest(con, "item_knn_model"), load_latest(con, "popularity_model")
        all_items = con.execute("SELECT count(DISTINCT item_id) FROM fct_user_item_interactions").fetchone()[0]
        fits = {path.name for path in knn.artifact_dir.iterdir() if path.is_dir()}
        ensure_fit(con, knn), ensure_fit(con, popularity)
    assert knn.params == {"similarity": "bm25", "neighbours": 5, "bm25_k1": 1.2, "bm25_b": 0.75}
    assert fits == {"validation", "holdout"}, "training makes no serving fit: publishing makes the champion's"
    assert json.loads((knn.artifact_dir / "params.json").read_text())["fits"]["serving"]["nnz"] > 0
    assert popularity.params == {"recent_days": 1}
    similarity = knn.fit_arrays("serving").sparse["similarity"]
    assert similarity.getnnz(axis=1).max() <= 5
    assert 0 < len(popularity.fit_arrays("serving").item_ids) < all_items
