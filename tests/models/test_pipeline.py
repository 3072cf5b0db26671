"""The four model assets and model_evaluation, materialized together on Online Retail."""

import duckdb
import pandas as pd
import pytest
from dagster import AssetKey, materialize

from recsys_dagster.evaluate.assets import model_evaluation
from recsys_dagster.evaluate.champion import select_champion
from recsys_dagster.models.assets import MODEL_ASSETS, item_knn_model, popularity_model
from recsys_dagster.models.registry import MODEL_NAMES, load_latest

RANKING = ["precision@10", "recall@10", "ndcg@10", "map@10", "hit_rate@10", "coverage@10"]


@pytest.fixture()
def evaluation(trained_retail, retail_con) -> pd.DataFrame:
    return retail_con.execute(
        "SELECT * FROM ml.evaluation_runs WHERE run_id = ?", [trained_retail["result"].run_id]
    ).df()


def metadata_of(trained_retail, asset: str) -> dict[str, object]:
    event = trained_retail["result"].asset_materializations_for_node(asset)[0]
    return {key: value.value for key, value in event.metadata.items()}


def test_one_row_per_model_and_metric_with_values_in_range(evaluation: pd.DataFrame, retail_con) -> None:
    expected = {(model, metric) for model in MODEL_NAMES for metric in RANKING} | {
        ("svd_model", "rmse"),
        ("svd_model", "mae"),
    }
    assert set(zip(evaluation["model"], evaluation["metric"])) == expected
    assert len(evaluation) == len(expected)
    ranking = evaluation[evaluation["metric"].isin(RANKING)]
    assert ranking["value"].between(0, 1).all()
    for model in MODEL_NAMES:
        versions = evaluation.loc[evaluation["model"] == model, "model_version"]
        assert versions.eq(load_latest(retail_con, model).model_version).all()
    svd_errors = evaluation.loc[evaluation["metric"].isin(["rmse", "mae"]), "value"]
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
    assert metadata["dagster/row_count"] == 26
    assert all(model in metadata["metrics"] for model in MODEL_NAMES)


def test_model_metadata_reports_sizes_version_and_params(trained_retail, retail_con) -> None:
    metadata = metadata_of(trained_retail, "als_model")
    n_users, n_items, nnz = retail_con.execute(
        "SELECT count(DISTINCT user_id), count(DISTINCT item_id), count(*) FROM fct_user_item_interactions"
    ).fetchone()
    assert (metadata["n_users"], metadata["n_items"], metadata["nnz"]) == (n_users, n_items, nnz)
    assert metadata["model_version"] == load_latest(retail_con, "als_model").model_version
    assert metadata["params"] == {
        "factors": 64, "regularization": 0.05, "alpha": 10.0, "iterations": 15, "random_state": 42
    }
    assert metadata["fit_seconds"] >= 0 and metadata["holdout_nnz"] < nnz


def test_model_assets_depend_on_the_dbt_marts() -> None:
    for asset in MODEL_ASSETS:
        marts = {AssetKey("fct_train_user_item"), AssetKey("fct_user_item_interactions")}
        assert set(asset.asset_deps[asset.key]) == marts
        assert asset.group_names_by_key[asset.key] == "models"
    assert set(model_evaluation.asset_deps[model_evaluation.key]) == {
        *(AssetKey(name) for name in MODEL_NAMES),
        AssetKey("fct_holdout_interactions"),
    }


def test_champion_is_the_best_ndcg_of_the_run(evaluation: pd.DataFrame, retail_con, trained_retail) -> None:
    ndcg = evaluation[evaluation["metric"] == "ndcg@10"].sort_values("value", ascending=False)
    model, version = select_champion(retail_con)
    assert select_champion(retail_con, trained_retail["result"].run_id) == (model, version)
    assert ndcg.iloc[0]["value"] == ndcg.loc[ndcg["model"] == model, "value"].iloc[0]
    assert version == load_latest(retail_con, model).model_version



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
    assert knn.params == {"similarity": "bm25", "neighbours": 5, "bm25_k1": 1.2, "bm25_b": 0.75}
    assert popularity.params == {"recent_days": 1}
    similarity = knn.fit_arrays("serving").sparse["similarity"]
    assert similarity.getnnz(axis=1).max() <= 5
    assert 0 < len(popularity.fit_arrays("serving").item_ids) < all_items
