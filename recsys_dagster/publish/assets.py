"""Publishing stage: score the champion for every known user and swap in a new serving file.

The three public tables are one ``multi_asset`` because they are published together: one serving
file holds one consistent version of all three, checked against the invariants before the swap.
"""

from datetime import UTC, datetime

import duckdb
import pandas as pd
from dagster import AssetExecutionContext, AssetKey, AssetSpec, Config, MaterializeResult, MetadataValue, multi_asset
from pydantic import Field

from recsys_dagster.evaluate.champion import select_champion
from recsys_dagster.metadata import frame_preview, timed
from recsys_dagster.models.fallback import popular_ranking, ranking_depth, top_up_from_popularity
from recsys_dagster.models.registry import LoadedModel, load_latest, purchased_pairs
from recsys_dagster.publish.serving import RECOMMENDATIONS_PER_USER, export_parquet, publish_serving_file
from recsys_dagster.resources import WAREHOUSE_POOL, RecsysPaths, WarehouseResource

class PublishConfig(Config):
    """How much of each table to publish (20 recommendations per user is fixed by the SQL contract)."""

    similar_items_per_item: int = Field(default=20, ge=1, le=100)
    popular_items: int = Field(default=100, ge=RECOMMENDATIONS_PER_USER, le=10_000)


def champion_model(con: duckdb.DuckDBPyConnection) -> LoadedModel:
    """The champion of the latest evaluation, refusing an artifact that evaluation has not judged."""
    model, evaluated_version = select_champion(con)
    loaded = load_latest(con, model)
    if loaded.model_version != evaluated_version:
        raise RuntimeError(
            f"{model} {loaded.model_version} is newer than the evaluated champion {evaluated_version}: "
            "materialize model_evaluation before publishing"
        )
    return loaded


def _contract_frames(
    recs: pd.DataFrame, similar: pd.DataFrame, popular: pd.DataFrame, items: pd.DataFrame,
    runs: pd.DataFrame, champion: LoadedModel, similar_version: str,
) -> dict[str, pd.DataFrame]:
    generated_at = datetime.now(UTC).replace(tzinfo=None)
    return {
        "recs.user_recommendations": recs.assign(
            model=champion.model, model_version=champion.model_version, generated_at=generated_at
        ),
        "recs.similar_items": similar.assign(model_version=similar_version, generated_at=generated_at),
        "recs.popular_items": popular.assign(generated_at=generated_at),
        "recs.items": items,
        "ml.evaluation_runs": runs,
    }


@multi_asset(
    pool=WAREHOUSE_POOL,
    specs=[
        AssetSpec(
            "user_recommendations",
            group_name="publish",
            deps=[AssetKey("model_evaluation"), AssetKey("dim_users"), AssetKey("fct_user_item_interactions")],
            description="recs.user_recommendations: the champion's top 20 per known user, never a purchased item.",
        ),
        AssetSpec(
            "similar_items",
            group_name="publish",
            deps=[AssetKey("item_knn_model"), AssetKey("dim_items")],
            description="recs.similar_items: item-kNN neighbours of every item.",
        ),
        AssetSpec(
            "popular_items",
            group_name="publish",
            deps=[AssetKey("popularity_model")],
            description="recs.popular_items: the cold-start fallback ranking.",
        ),
    ],
)
def publish_recommendations(
    context: AssetExecutionContext, config: PublishConfig, warehouse: WarehouseResource, paths: RecsysPaths
):
    """Score, check and atomically publish the three recommendation tables (+ Parquet copies)."""
    with timed() as watch:
        with warehouse.get_connection() as con:
            champion = champion_model(con)
            neighbours = load_latest(con, "item_knn_model")
            popularity = load_latest(con, "popularity_model")
            purchased = purchased_pairs(con, "fct_user_item_interactions")
            users = con.execute("SELECT user_id FROM dim_users ORDER BY user_id").df()
            items = con.execute("SELECT item_id, name, category, price FROM dim_items").df()
            runs = con.execute("SELECT * FROM ml.evaluation_runs").df()
        depth = max(config.popular_items, ranking_depth(RECOMMENDATIONS_PER_USER, purchased))
        ranking = popular_ranking(popularity, depth, fit="serving")
        popular = ranking.head(config.popular_items)
        model_recs = champion.recommend(users["user_id"], RECOMMENDATIONS_PER_USER, fit="serving", exclude=purchased)
        recs = top_up_from_popularity(model_recs, users["user_id"], ranking, purchased, RECOMMENDATIONS_PER_USER)
        similar = neighbours.similar_items(None, config.similar_items_per_item, fit="serving")
        tables = _contract_frames(
            recs.drop(columns="tier"), similar, popular, items, runs, champion, neighbours.model_version
        )
        counts = publish_serving_file(paths.serving_file(), tables, purchased)
        exported = export_parquet(paths.serving_file(), paths.published_path())
    context.log.info("published %s from %s %s", counts, champion.model, champion.model_version)
    common = {"duration_s": MetadataValue.float(watch.seconds), "serving_file": MetadataValue.path(str(paths.serving_file()))}
    yield MaterializeResult(
        asset_key="user_recommendations",
        metadata={
            **common,
            "dagster/row_count": MetadataValue.int(counts["recs.user_recommendations"]),
            "users": MetadataValue.int(int(recs["user_id"].nunique())),
            "backfilled_rows": MetadataValue.int(int((recs["tier"] == 1).sum())),
            "model": MetadataValue.text(champion.model),
            "model_version": MetadataValue.text(champion.model_version),
            "parquet": MetadataValue.path(str(exported["recs.user_recommendations"])),
            "preview": frame_preview(tables["recs.user_recommendations"], limit=20),
        },
    )
    yield MaterializeResult(
        asset_key="similar_items",
        metadata={
            **common,
            "dagster/row_count": MetadataValue.int(counts["recs.similar_items"]),
            "model_version": MetadataValue.text(neighbours.model_version),
            "preview": frame_preview(similar, limit=20),
        },
    )
    yield MaterializeResult(
        asset_key="popular_items",
        metadata={
            **common,
            "dagster/row_count": MetadataValue.int(counts["recs.popular_items"]),
            "model_version": MetadataValue.text(popularity.model_version),
            "preview": frame_preview(popular, limit=20),
        },
    )
