"""``model_evaluation``: every registered model's holdout fit, judged on the events after the cutoff.

Protocol (mirrors what gets published, so the numbers describe the published lists):
- every user with a holdout event gets a top-10 list from the model's holdout fit, excluding
  what they already own in train (``purchased_pairs``);
- users the model does not know (absent from train: "cold") get the popularity list instead, and
  short lists are completed from it, by the same ``top_up_from_popularity`` that publishing uses;
  the cold users' count is reported (without a registered popularity model there is no top-up);
- relevant = every item the user touched after the cutoff (any event type);
- SVD is also scored on rating error over holdout pairs with a rating (given or derived).
"""


from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetKey, Failure, MaterializeResult, MetadataValue, asset

from recsys_dagster.evaluate.metrics import mae, ranking_metrics, rmse
from recsys_dagster.metadata import frame_preview, timed
from recsys_dagster.models.fallback import popular_ranking, ranking_depth, top_up_from_popularity
from recsys_dagster.models.registry import (
    MODEL_NAMES,
    LoadedModel,
    load_latest,
    purchased_pairs,
    registered_models,
)
from recsys_dagster.models.svd import holdout_ratings
from recsys_dagster.resources import WAREHOUSE_POOL, WarehouseResource

EVAL_K = 10
TRAIN_TABLE = "fct_train_user_item"
FALLBACK_MODEL = "popularity_model"

EVALUATION_DDL = """
CREATE SCHEMA IF NOT EXISTS ml;
CREATE TABLE IF NOT EXISTS ml.evaluation_runs (
    run_id VARCHAR, model VARCHAR, model_version VARCHAR, metric VARCHAR, value DOUBLE, evaluated_at TIMESTAMP
);
"""


def holdout_pairs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    pairs = con.execute("SELECT user_id, item_id FROM fct_holdout_interactions").df()
    if pairs.empty:
        raise Failure(
            description="fct_holdout_interactions is empty: no events after the holdout cutoff to evaluate on. "
            "Load more history or raise the dbt var holdout_fraction; no evaluation rows were written."
        )
    return pairs


def holdout_cutoff(con: duckdb.DuckDBPyConnection) -> str:
    """The cutoff from ``int_holdout_cutoff`` (or the first holdout event when that model is absent)."""
    has_cutoff_table = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'int_holdout_cutoff'"
    ).fetchone()[0]
    sql = (
        "SELECT max(cutoff_time) FROM int_holdout_cutoff"
        if has_cutoff_table
        else "SELECT min(first_event_time) FROM fct_holdout_interactions"
    )
    return str(con.execute(sql).fetchone()[0])


def recommendations_with_fallback(
    loaded: LoadedModel, fallback: LoadedModel | None, users: np.ndarray, exclude: pd.DataFrame
) -> pd.DataFrame:
    """The model's holdout top-K, completed from popularity exactly as publishing completes it."""
    recs = loaded.recommend(users, EVAL_K, fit="holdout", exclude=exclude)
    if fallback is None:
        return recs
    popular = popular_ranking(fallback, ranking_depth(EVAL_K, exclude), fit="holdout")
    return top_up_from_popularity(recs, pd.Series(users), popular, exclude, EVAL_K)


def model_scores(
    con: duckdb.DuckDBPyConnection,
    loaded: LoadedModel,
    fallback: LoadedModel | None,
    holdout: pd.DataFrame,
    exclude: pd.DataFrame,
    n_catalog_items: int,
) -> dict[str, float]:
    users = holdout["user_id"].unique().astype(str)
    recs = recommendations_with_fallback(loaded, fallback, users, exclude)
    scores = ranking_metrics(recs, holdout, EVAL_K, n_catalog_items)
    if loaded.model == "svd_model":
        rated = holdout_ratings(con)
        if len(rated):
            predicted = loaded.predict_ratings(rated, fit="holdout")
            scores |= {"rmse": rmse(rated["rating"], predicted), "mae": mae(rated["rating"], predicted)}
    return scores


def evaluation_rows(run_id: str, versions: dict[str, str], scores: dict[str, dict[str, float]]) -> pd.DataFrame:
    evaluated_at = datetime.now(UTC).replace(tzinfo=None)
    return pd.DataFrame(
        [
            {
                "run_id": run_id,
                "model": model,
                "model_version": versions[model],
                "metric": metric,
                "value": value,
                "evaluated_at": evaluated_at,
            }
            for model, metrics in scores.items()
            for metric, value in metrics.items()
        ]
    )


def append_evaluation_rows(con: duckdb.DuckDBPyConnection, rows: pd.DataFrame) -> None:
    con.execute(EVALUATION_DDL)
    con.register("new_evaluation_rows", rows)
    try:
        con.execute("INSERT INTO ml.evaluation_runs BY NAME SELECT * FROM new_evaluation_rows")
    finally:
        con.unregister("new_evaluation_rows")


@asset(
    group_name="evaluate",
    deps=[*(AssetKey(name) for name in MODEL_NAMES), AssetKey("fct_holdout_interactions")],
    kinds={"python", "duckdb"},
    pool=WAREHOUSE_POOL,
)
def model_evaluation(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    """Precision/recall/NDCG/MAP/hit rate/coverage @10 per model (+ RMSE/MAE for SVD), appended to
    ``ml.evaluation_runs`` under this run's id."""
    with timed() as watch, warehouse.get_connection() as con:
        holdout = holdout_pairs(con)
        models = {name: load_latest(con, name) for name in registered_models(con)}
        if not models:
            raise Failure(description="no model in ml.model_registry: materialize the model assets first")
        exclude = purchased_pairs(con, TRAIN_TABLE)
        train_users = con.execute(f"SELECT DISTINCT user_id FROM {TRAIN_TABLE}").df()["user_id"]
        n_catalog_items = int(con.execute(f"SELECT count(DISTINCT item_id) FROM {TRAIN_TABLE}").fetchone()[0])
        fallback = models.get(FALLBACK_MODEL)
        scores = {
            name: model_scores(con, loaded, fallback, holdout, exclude, n_catalog_items)
            for name, loaded in models.items()
        }
        rows = evaluation_rows(context.run.run_id, {name: m.model_version for name, m in models.items()}, scores)
        append_evaluation_rows(con, rows)
        cutoff = holdout_cutoff(con)
    holdout_users = holdout["user_id"].unique()
    table = rows.pivot(index="model", columns="metric", values="value").round(4)
    table = table.astype(object).where(table.notna(), "").reset_index()  # rmse/mae exist for svd only
    return MaterializeResult(
        metadata={
            "dagster/row_count": MetadataValue.int(len(rows)),
            "metrics": frame_preview(table, limit=len(table)),
            "n_holdout_users": MetadataValue.int(len(holdout_users)),
            "n_cold_users": MetadataValue.int(int((~np.isin(holdout_users, train_users.to_numpy())).sum())),
            "cutoff": MetadataValue.text(cutoff),
            "duration_s": MetadataValue.float(watch.seconds),
        }
    )
