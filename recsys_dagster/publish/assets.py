"""Publishing stage: the gate, then the champion scored for every known user, swapped in as a new serving file.

The ``champion_gate`` check (blocking, on ``model_evaluation``) stops the run before publishing when
the champion chosen on the validation window is worse than the last publication allows; the
publish step itself re-reads the same decision, so materializing it alone cannot bypass the gate.

The three public tables are one ``multi_asset`` because they are published together: one serving
file holds one consistent version of all three, checked against the invariants before the swap.
"""

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset_check,
    multi_asset,
)
from pydantic import Field

from recsys_dagster.evaluate.champion import ChampionDecision, latest_decision, record_publication
from recsys_dagster.metadata import frame_preview, timed
from recsys_dagster.models.fallback import (
    FallbackLists,
    popular_ranking,
    ranking_depth,
    users_served_the_model,
)
from recsys_dagster.models.matrix import FIT_TABLES
from recsys_dagster.models.registry import (
    LoadedModel,
    ensure_fit,
    load_latest,
    purchased_pairs,
    unavailable_items,
)
from recsys_dagster.models.scoring import ranks_within_rows
from recsys_dagster.publish.serving import (
    PUBLISH_MEMORY_LIMIT,
    RECOMMENDATIONS_PER_USER,
    Forbidden,
    PublishInvariantError,
    Query,
    export_parquet,
    publish_serving_file,
)
from recsys_dagster.relations import registered
from recsys_dagster.resources import WAREHOUSE_POOL, RecsysPaths, WarehouseResource


class PublishConfig(Config):
    """How much of each table to publish (20 recommendations per user is fixed by the SQL contract)."""

    similar_items_per_item: int = Field(default=20, ge=1, le=100)
    popular_items: int = Field(default=100, ge=RECOMMENDATIONS_PER_USER, le=10_000)
    fallback_recent_days: int = Field(
        default=30, ge=1, le=3650,
        description="Users with fewer than 2 items get the items most popular in this many last days of their "
        "category (then global popularity).",
    )
    candidate_share: float = Field(
        default=1.0, gt=0.0, le=1.0,
        description="Share of the catalog (most-interacted items first) the champion searches; 1.0 = exact. "
        "bench.compare reports recall@20 against exact scoring for a pruned catalog.",
    )


GATE_TAG = "recsys/publish_blocked"

CATEGORY_NEIGHBOURS_SQL = """
WITH cold AS (
    SELECT item_id, category FROM dim_items
    WHERE category IS NOT NULL AND item_id NOT IN (SELECT item_id FROM known_items)
),
candidates AS (  -- an item's top n of its category, itself left out, lies in the category's top n + 1
    SELECT item_id, category, n_users FROM dim_items
    WHERE category IS NOT NULL AND n_users > 0 AND item_id NOT IN (SELECT item_id FROM banned)
    QUALIFY row_number() OVER (PARTITION BY category ORDER BY n_users DESC, item_id) <= $n + 1
)
SELECT c.item_id, row_number() OVER (PARTITION BY c.item_id ORDER BY k.n_users DESC, k.item_id) AS rank,
       k.item_id AS similar_item_id, CAST(k.n_users AS DOUBLE) AS score
FROM cold c JOIN candidates k ON k.category = c.category AND k.item_id <> c.item_id
QUALIFY rank <= $n
ORDER BY c.item_id, rank
"""


def category_neighbours(
    con: duckdb.DuckDBPyConnection, known_items: pd.Series, banned: list[str], n: int
) -> pd.DataFrame:
    """similar_items for items no one has interacted with yet: the most popular items of their category.

    A content-based neighbour is the only evidence a brand-new item has; popularity within the
    category orders the neighbours. Unavailable items are never neighbours.
    """
    known = pd.DataFrame({"item_id": known_items.astype(str)})
    with registered(con, known_items=known, banned=pd.DataFrame({"item_id": pd.Series(banned, dtype=object)})):
        return con.execute(CATEGORY_NEIGHBOURS_SQL, {"n": n}).df()


def forbidden_items(con: duckdb.DuckDBPyConnection, repurchase: bool) -> Forbidden:
    """What the published lists must never contain, from the warehouse: the pairs the users own in the
    serving mart (none under the shop's repurchase policy, which lets bought items come back) and the
    items the catalog marks unavailable. The full and the incremental publish both build their lists
    without these and check the result against them (``check_invariants``)."""
    purchased = purchased_pairs(con, FIT_TABLES["serving"])
    return Forbidden(purchased.iloc[0:0] if repurchase else purchased, unavailable_items(con))


def candidate_items(con: duckdb.DuckDBPyConnection, share: float) -> list[str] | None:
    """The most-interacted ``share`` of the items (None = all: exact scoring)."""
    if share >= 1.0:
        return None
    return con.execute(
        """
        SELECT item_id FROM dim_items WHERE n_users > 0 ORDER BY n_users DESC, item_id
        LIMIT (SELECT CAST(ceil(count(*) * CAST($share AS DOUBLE)) AS BIGINT) FROM dim_items WHERE n_users > 0)
        """,
        {"share": share},
    ).df()["item_id"].tolist()


def model_rows(
    champion: LoadedModel, users: pd.Series, owned: pd.DataFrame, banned: list[str], candidates: list[str] | None
) -> pa.Table:
    """The champion's top 20 of ``users`` as an Arrow table [user_id, rank, item_id, score]; ids are
    dictionary-encoded over the scored users and the fit's items, so millions of rows cost no Python strings."""
    scored, rows, cols, scores = champion.top_items(
        users, RECOMMENDATIONS_PER_USER, fit="serving", exclude=owned, banned_items=banned, candidate_items=candidates
    )
    return pa.table(
        {
            "user_id": pa.DictionaryArray.from_arrays(pa.array(rows.astype(np.int32)), pa.array(scored.to_numpy(str))),
            "rank": pa.array(ranks_within_rows(rows).astype(np.int32)),
            "item_id": pa.DictionaryArray.from_arrays(
                pa.array(cols.astype(np.int32)), pa.array(champion.fit_arrays("serving").item_ids)
            ),
            "score": pa.array(scores),
        }
    )


def approved_champion(con: duckdb.DuckDBPyConnection) -> tuple[LoadedModel, ChampionDecision]:
    """The champion of the latest decision, refusing one the gate rejected or evaluation has not judged."""
    decision = latest_decision(con)
    if not decision.passed:
        raise Failure(description=f"publishing gated: {decision.reason}", metadata={"gate_reason": decision.reason})
    loaded = load_latest(con, decision.model)
    if loaded.model_version != decision.model_version:
        raise RuntimeError(
            f"{decision.model} {loaded.model_version} is newer than the evaluated champion {decision.model_version}: "
            "materialize model_evaluation before publishing"
        )
    return loaded, decision


@asset_check(asset="model_evaluation", blocking=True, description="The publishing gate (evaluate/champion.py).")
def champion_gate(context: AssetCheckExecutionContext, warehouse: WarehouseResource) -> AssetCheckResult:
    """Fails, and so blocks publishing, when the champion's validation NDCG@10 dropped more than the
    allowed share below the last publication on the same data window."""
    with warehouse.get_connection() as con:
        decision = latest_decision(con)
    if not decision.passed:
        context.instance.add_run_tags(context.run.run_id, {GATE_TAG: decision.reason[:250]})
    return AssetCheckResult(
        passed=decision.passed,
        description=decision.reason,
        metadata={
            "reason": MetadataValue.text(decision.reason),
            "champion": MetadataValue.text(decision.model),
            "model_version": MetadataValue.text(decision.model_version),
            decision.metric: MetadataValue.float(decision.value),
            "baseline_run_id": MetadataValue.text(decision.baseline_run_id or ""),
            "baseline_value": MetadataValue.float(decision.baseline_value if decision.baseline_value is not None else 0.0),
            "data_window": MetadataValue.text(decision.data_window),
        },
    )


def constant_strings(value: str, size: int) -> pa.DictionaryArray:
    """``size`` copies of ``value`` as one dictionary entry and zero indices: a constant column of
    millions of rows without millions of strings (DuckDB casts it to VARCHAR on insert)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(size, dtype=np.int32)), pa.array([value], pa.string()))


def user_recommendation_rows(recs: pa.Table, champion: LoadedModel, generated_at: datetime) -> pa.Table:
    """``recs`` (``FallbackLists``) in the contract's columns of recs.user_recommendations:
    the rows of an incremental publish (publish/incremental.py), few enough to hold in Arrow."""
    size = recs.num_rows
    return (
        recs.select(["user_id", "rank", "item_id", "score"])
        .append_column("model", constant_strings(champion.model, size))
        .append_column("model_version", constant_strings(champion.model_version, size))
        .append_column("generated_at", pa.array(np.full(size, np.datetime64(generated_at, "us"))))
    )


def user_recommendations_query(
    sql: str, params: dict[str, object], champion: LoadedModel, generated_at: datetime
) -> Query:
    """The published lists (``FallbackLists``) in the contract's columns of
    recs.user_recommendations, as a ``Query`` the serving file is filled from (the full publish;
    the incremental one writes its few rows with ``user_recommendation_rows``)."""
    return Query(
        "SELECT user_id, rank, item_id, score, $model AS model, $model_version AS model_version, "
        f"$generated_at AS generated_at FROM ({sql})",
        {**params, "model": champion.model, "model_version": champion.model_version, "generated_at": generated_at},
    )


def _contract_frames(
    user_recommendations: Query, similar: pd.DataFrame, popular: pd.DataFrame, items: pd.DataFrame,
    runs: pd.DataFrame, similar_version: str, generated_at: datetime,
) -> dict[str, pd.DataFrame | Query]:
    return {
        "recs.user_recommendations": user_recommendations,
        "recs.similar_items": similar.assign(model_version=similar_version, generated_at=generated_at),
        "recs.popular_items": popular.assign(generated_at=generated_at),
        "recs.items": items,
        "ml.evaluation_runs": runs,
    }


def published_summary(serving_path: Path) -> tuple[int, int, pd.DataFrame]:
    """(users listed, rows the fallback filled, the first 20 rows) of the live serving file: the
    published rows are never held in Python, so their metadata is read back from the file."""
    with duckdb.connect(str(serving_path), read_only=True) as con:
        users, backfilled = con.execute(
            "SELECT count(DISTINCT user_id), count(*) FILTER (WHERE score IS NULL) FROM recs.user_recommendations"
        ).fetchone()
        preview = con.execute("SELECT * FROM recs.user_recommendations LIMIT 20").df()
    return int(users), int(backfilled), preview


@multi_asset(
    pool=WAREHOUSE_POOL,
    check_specs=[
        AssetCheckSpec(
            "contract_invariants",
            asset="user_recommendations",
            blocking=True,
            description="The published tables honour the SQL contract (publish/serving.py INVARIANTS); "
            "on failure nothing is swapped in.",
        )
    ],
    specs=[
        AssetSpec(
            "user_recommendations",
            group_name="publish",
            deps=[AssetKey("model_evaluation"), AssetKey("dim_users"), AssetKey("fct_user_item_interactions")],
            description="recs.user_recommendations: the champion's top 20 per known user, "
            "never a purchased or unavailable item.",
        ),
        AssetSpec(
            "similar_items",
            group_name="publish",
            deps=[AssetKey("item_knn_model"), AssetKey("dim_items")],
            description="recs.similar_items: item-kNN neighbours of every item; items without interactions "
            "get the most popular items of their category.",
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
    generated_at = datetime.now(UTC).replace(tzinfo=None)
    with timed() as watch:
        with warehouse.get_connection() as con:
            con.execute(f"SET memory_limit = '{PUBLISH_MEMORY_LIMIT}'")  # a code constant, see its comment
            champion, decision = approved_champion(con)
            neighbours = load_latest(con, "item_knn_model")
            popularity = load_latest(con, "popularity_model")
            for loaded in (champion, neighbours, popularity):
                ensure_fit(con, loaded)  # the serving fit: only what is published pays for one
            # The shop's repurchase policy (recorded with the decision) decides whether bought items may
            # come back; with it on, the "never a purchased item" invariant has nothing to forbid.
            forbidden = forbidden_items(con, decision.repurchase)
            owned, banned = forbidden.purchased, forbidden.unavailable
            warm_users = users_served_the_model(con)
            items = con.execute("SELECT item_id, name, category, price FROM dim_items").df()
            runs = con.execute("SELECT * FROM ml.evaluation_runs").df()
            # A fallback list may skip the model's rows and the user's owned items before it has 20.
            depth = max(config.popular_items, ranking_depth(2 * RECOMMENDATIONS_PER_USER, owned))
            ranking = popular_ranking(popularity, depth, fit="serving", banned_items=banned)
            popular = ranking.head(config.popular_items)
            candidates = candidate_items(con, config.candidate_share)
            champion_rows = model_rows(champion, warm_users, owned, banned, candidates)
            champion.unload()  # its fits (~1 GiB at RetailRocket size) are not needed to write the file
            learnt = neighbours.similar_items(None, config.similar_items_per_item, fit="serving", banned_items=banned)
            cold = category_neighbours(
                con, pd.Series(neighbours.fit_arrays("serving").item_ids), banned, config.similar_items_per_item
            )
            similar = pd.concat([learnt, cold], ignore_index=True)
            lists = FallbackLists(champion_rows, ranking, owned, RECOMMENDATIONS_PER_USER, config.fallback_recent_days)
            with lists.query(con) as (sql, params):
                tables = _contract_frames(
                    user_recommendations_query(sql, params, champion, generated_at),
                    similar, popular, items, runs, neighbours.model_version, generated_at,
                )
                try:
                    counts = publish_serving_file(paths.serving_file(), tables, forbidden, source=con)
                except PublishInvariantError as error:
                    context.instance.add_run_tags(context.run.run_id, {GATE_TAG: str(error)[:250]})
                    yield AssetCheckResult(
                        asset_key="user_recommendations",
                        check_name="contract_invariants",
                        passed=False,
                        description=str(error),
                        metadata={"reason": MetadataValue.text(str(error))},
                    )
                    raise Failure(
                        description=f"{error}; previous tables kept", metadata={"reason": str(error)}
                    ) from error
        exported = export_parquet(paths.serving_file(), paths.published_path())
        users, backfilled, preview = published_summary(paths.serving_file())
        with warehouse.get_connection() as con:
            record_publication(con, decision)
    context.log.info("published %s from %s %s", counts, champion.model, champion.model_version)
    common = {"duration_s": MetadataValue.float(watch.seconds), "serving_file": MetadataValue.path(str(paths.serving_file()))}
    yield AssetCheckResult(
        asset_key="user_recommendations",
        check_name="contract_invariants",
        passed=True,
        metadata={"repurchase_policy": MetadataValue.bool(decision.repurchase), "banned_items": len(banned)},
    )
    yield MaterializeResult(
        asset_key="user_recommendations",
        metadata={
            **common,
            "dagster/row_count": MetadataValue.int(counts["recs.user_recommendations"]),
            "users": MetadataValue.int(users),
            "model_users": MetadataValue.int(len(champion_rows["user_id"].unique())),
            "backfilled_rows": MetadataValue.int(backfilled),
            "model": MetadataValue.text(champion.model),
            "model_version": MetadataValue.text(champion.model_version),
            "gate": MetadataValue.text(decision.reason),
            "parquet": MetadataValue.path(str(exported["recs.user_recommendations"])),
            "preview": frame_preview(preview, limit=20),
        },
    )
    yield MaterializeResult(
        asset_key="similar_items",
        metadata={
            **common,
            "dagster/row_count": MetadataValue.int(counts["recs.similar_items"]),
            "category_neighbour_items": MetadataValue.int(int(cold["item_id"].nunique())),
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
