"""``model_evaluation``: every registered model judged on two time windows, two relevance definitions.

Protocol (mirrors what gets published, so the numbers describe the published lists):
- two leak-free time windows: VALIDATION (fit on events before the validation cutoff, judged on
  the events between it and the test cutoff; chooses the champion, metrics prefixed ``val_``) and
  TEST (fit on events before the test cutoff, judged on the events after it; reports only);
- every user with an event in the window gets a top-20 list from the model's fit of that window,
  excluding what they already own in its train period (unless the shop's repurchase policy,
  ``settings.repurchase_policy`` / ``RECSYS_REPURCHASE``, is on) and items the catalog marks
  unavailable;
- users the model does not know ("cold") get the fallback list instead, and short lists are
  completed from it, by the same ``FallbackLists`` SQL that publishing runs (recent
  popularity in the category the user browsed last before the window, then global popularity);
  on the TEST window, as publishing serves them, users with fewer than ``min_items_for_model()``
  items (``RECSYS_MIN_ITEMS_FOR_MODEL``) get the fallback list too, so its figures are those of
  the lists the shop would show; on the VALIDATION window every user the model knows gets its list;
- relevant = every item the user touched in the window, and (suffix ``_new_items``) only items
  the user had not touched in the train period;
- metrics at K = 10 and 20, plus ``n_eval_users`` / ``n_cold_users`` and the standard error of
  NDCG@10 over users (``ndcg@10_se``) as metric rows; ``ndcg@10_served`` (+ ``_se``,
  ``n_served_users``, ``n_judged_users``) is NDCG@10 over the users publishing serves the model's list
  to (at least ``settings.min_items_for_model()`` items before the window; all users when fewer than
  ``MIN_SERVED_USERS`` have), which the champion rule reads; the rating
  model (SVD) is also scored on RMSE/MAE over window pairs with a rating (given or derived).
Metric names: ``[val_]<metric>@<K>[_new_items]``, e.g. ``val_ndcg@10``, ``ndcg@20_new_items``.
"""


from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetKey, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from recsys_dagster.evaluate.champion import (
    CHAMPION_CANDIDATES,
    CHAMPION_K,
    CHAMPION_METRIC,
    DEFAULT_MAX_NDCG_DROP,
    DEFAULT_NOISE_SE,
    decide_champion,
    last_publication,
)
from recsys_dagster.evaluate.metrics import mae, per_user_ranking, ranking_metrics, rmse, standard_error_of_mean
from recsys_dagster.evaluate.plots import history_markdown
from recsys_dagster.metadata import frame_preview, timed
from recsys_dagster.models.fallback import (
    DEFAULT_FALLBACK_RECENT_DAYS,
    FallbackLists,
    popular_ranking,
    ranking_depth,
)
from recsys_dagster.models.matrix import Fit
from recsys_dagster.models.registry import (
    MODEL_NAMES,
    LoadedModel,
    load_latest,
    load_registered,
    purchased_pairs,
    registered_models,
    unavailable_items,
)
from recsys_dagster.models.svd import holdout_ratings, validation_ratings
from recsys_dagster.models.validation import VALIDATION_HOLDOUT_TABLE, VALIDATION_TRAIN_TABLE
from recsys_dagster.relations import registered
from recsys_dagster.resources import WAREHOUSE_POOL, WarehouseResource
from recsys_dagster.settings import min_items_for_model, repurchase_policy

EVAL_KS = (10, 20)
FALLBACK_MODEL = "popularity_model"
RATING_MODELS = ("svd_model",)
#: Columns of the metadata table (the full set is in ml.evaluation_runs).
SUMMARY_METRICS = (
    CHAMPION_METRIC, "val_ndcg@10", "val_ndcg@10_new_items", "ndcg@10", "ndcg@10_new_items", "ndcg@20", "precision@10",
    "recall@10", "map@10", "hit_rate@10", "coverage@10", "rmse", "mae",
)

EVALUATION_DDL = """
CREATE SCHEMA IF NOT EXISTS ml;
CREATE TABLE IF NOT EXISTS ml.evaluation_runs (
    run_id VARCHAR, model VARCHAR, model_version VARCHAR, metric VARCHAR, value DOUBLE, evaluated_at TIMESTAMP
);
"""


@dataclass(frozen=True)
class Window:
    """One evaluation window: the fit judged, its train table and the window's relevant pairs."""

    prefix: str
    fit: Fit
    train_table: str
    relevant_table: str
    ratings: Callable[[duckdb.DuckDBPyConnection], pd.DataFrame]
    #: True: users below ``min_items_for_model()`` get the fallback list, as publishing serves them (the
    #: test window reports what the shop would show). False: every user the model knows gets its list
    #: (the validation window judges the models; the champion rule then reads the served users).
    as_published: bool


WINDOWS = (
    Window("val_", "validation", VALIDATION_TRAIN_TABLE, VALIDATION_HOLDOUT_TABLE, validation_ratings, False),
    Window("", "holdout", "fct_train_user_item", "fct_holdout_interactions", holdout_ratings, True),
)


@dataclass
class WindowData:
    """What every model of one window is judged against (loaded once per window)."""

    window: Window
    relevant: pd.DataFrame  # user_id, item_id, seen_in_train
    n_window_users: int  # users with an event in the window, before the evaluation cap
    exclude: pd.DataFrame
    train_users: np.ndarray
    served_users: np.ndarray  # users with at least min_items_for_model() items: served the model's list
    n_catalog_items: int
    banned: list[str]


DEFAULT_MAX_EVAL_USERS = 20_000


class EvaluationConfig(Config):
    """The champion rules (recorded with every decision, with the shop's repurchase policy)."""

    champion_candidates: list[str] = Field(
        default_factory=lambda: list(CHAMPION_CANDIDATES), description="Models that may become the champion."
    )
    max_ndcg_drop: float = Field(
        default=DEFAULT_MAX_NDCG_DROP,
        ge=0.0,
        le=1.0,
        description="The gate refuses a champion whose validation NDCG@10 is more than this share below "
        "the last published run's on the same data window.",
    )
    max_eval_users: int = Field(
        default=DEFAULT_MAX_EVAL_USERS,
        ge=100,
        description="Users evaluated per window at most: a stable hash-chosen subset, the same for every model "
        "and night (n_window_users reports how many the window had).",
    )
    noise_se: float = Field(
        default=DEFAULT_NOISE_SE,
        ge=0.0,
        description="One-standard-error rule: a candidate earlier in the preference order within this many "
        "standard errors of the best validation NDCG@10 becomes the champion instead (0 = strictly the best).",
    )
    fallback_recent_days: int = Field(
        default=DEFAULT_FALLBACK_RECENT_DAYS,
        ge=1,
        le=3650,
        description="Cold users and short lists are completed as published: the items most popular in this many "
        "last days of the category the user browsed last, then global popularity (publish's fallback_recent_days).",
    )


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


def owned_pairs(con: duckdb.DuckDBPyConnection, table: str, repurchase: bool) -> pd.DataFrame:
    """What must not be recommended: purchases (and ratings) of the train period, unless repurchase is on."""
    owned = purchased_pairs(con, table)
    return owned.iloc[0:0] if repurchase else owned


#: The window's users kept for evaluation: a stable pseudo-random subset (the smallest hashes of the
#: user id), the same users for every model and every night on the same data.
SAMPLED_RELEVANT_SQL = """
WITH sampled AS (
    SELECT user_id FROM (SELECT DISTINCT user_id FROM {table}) ORDER BY hash(user_id), user_id LIMIT $max_users
)
SELECT user_id, item_id, seen_in_train FROM {table} WHERE user_id IN (SELECT user_id FROM sampled)
"""


def load_window(
    con: duckdb.DuckDBPyConnection, window: Window, repurchase: bool, max_users: int = 2**62
) -> WindowData:
    """The window's relevant pairs of at most ``max_users`` users, with what the lists must exclude.

    Why a cap: metrics of tens of thousands of users are as decisive as of all of them (the standard
    error of NDCG@10 is reported beside it), while scoring every model for every user of a
    multi-million-event window costs most of the nightly run.
    """
    return WindowData(
        window=window,
        relevant=con.execute(SAMPLED_RELEVANT_SQL.format(table=window.relevant_table), {"max_users": max_users}).df(),
        n_window_users=int(
            con.execute(f"SELECT count(DISTINCT user_id) FROM {window.relevant_table}").fetchone()[0]
        ),
        exclude=owned_pairs(con, window.train_table, repurchase),
        train_users=con.execute(f"SELECT DISTINCT user_id FROM {window.train_table}").df()["user_id"].to_numpy(),
        served_users=con.execute(
            f"SELECT user_id FROM {window.train_table} GROUP BY user_id HAVING count(*) >= ?", [min_items_for_model()]
        ).df()["user_id"].to_numpy(),
        n_catalog_items=int(con.execute(f"SELECT count(DISTINCT item_id) FROM {window.train_table}").fetchone()[0]),
        banned=unavailable_items(con),
    )


def recommendations_with_fallback(
    con: duckdb.DuckDBPyConnection,
    loaded: LoadedModel,
    fallback: LoadedModel | None,
    users: np.ndarray,
    data: WindowData,
    n: int,
    recent_days: int = DEFAULT_FALLBACK_RECENT_DAYS,
) -> pd.DataFrame:
    """The model's top-``n`` of the window's fit, completed as publishing completes it (``FallbackLists``
    over the window's users and train table); in a window ``as_published`` only the served users (at
    least ``min_items_for_model()`` items) get the model's rows, everyone else the fallback list."""
    fit = data.window.fit
    # a hash lookup: numpy's isin on string (object) arrays compares pairwise in Python, minutes at 2.76M
    served = users[pd.Index(users).isin(data.served_users)] if data.window.as_published else users
    recs = loaded.recommend(served, n, fit=fit, exclude=data.exclude, banned_items=data.banned)
    if fallback is None:
        return recs
    popular = popular_ranking(fallback, ranking_depth(2 * n, data.exclude), fit=fit, banned_items=data.banned)
    lists = FallbackLists(
        recs, popular, data.exclude, n, recent_days, interactions=data.window.train_table, users=pd.Series(users)
    )
    return lists.arrow(con).to_pandas()


def window_scores(
    con: duckdb.DuckDBPyConnection,
    loaded: LoadedModel,
    fallback: LoadedModel | None,
    data: WindowData,
    recent_days: int = DEFAULT_FALLBACK_RECENT_DAYS,
) -> dict[str, float]:
    """Every metric of one model on one window, named ``<prefix><metric>@<K><suffix>``."""
    prefix = data.window.prefix
    users = data.relevant["user_id"].unique().astype(str)
    recs = recommendations_with_fallback(con, loaded, fallback, users, data, max(EVAL_KS), recent_days)
    relevant_sets = {"": data.relevant, "_new_items": data.relevant[~data.relevant["seen_in_train"].astype(bool)]}
    scores: dict[str, float] = {f"{prefix}n_window_users": float(data.n_window_users)}
    for suffix, relevant in relevant_sets.items():
        evaluated = relevant["user_id"].unique()
        scores[f"{prefix}n_eval_users{suffix}"] = float(len(evaluated))
        scores[f"{prefix}n_cold_users{suffix}"] = float((pd.Index(data.train_users).get_indexer(evaluated) < 0).sum())
        if relevant.empty:
            continue
        for k in EVAL_KS:
            for name, value in ranking_metrics(recs, relevant, k, data.n_catalog_items).items():
                scores[f"{prefix}{name}{suffix}"] = value
        per_user = per_user_ranking(recs, relevant, CHAMPION_K)
        scores[f"{prefix}ndcg@{CHAMPION_K}{suffix}_se"] = standard_error_of_mean(per_user["ndcg"].to_numpy())
        if not suffix:
            scores |= served_scores(per_user, data.served_users, prefix)
    if loaded.model in RATING_MODELS:
        rated = data.window.ratings(con)
        if len(rated):
            predicted = loaded.predict_ratings(rated, fit=data.window.fit)
            scores[f"{prefix}rmse"] = rmse(rated["rating"], predicted)
            scores[f"{prefix}mae"] = mae(rated["rating"], predicted)
    return scores


#: Fewest served users whose NDCG@10 may stand for the window. Below it the standard error the
#: champion rule reads means nothing (one user: 0, so no lead is ever "within noise") and a handful
#: of users decide the champion by who happened to buy in the window; every evaluated user is judged
#: instead, as when nobody is served. Small shops and short windows hit this (the bundled sample: 1).
MIN_SERVED_USERS = 30


def served_scores(per_user: pd.DataFrame, served_users: np.ndarray, prefix: str) -> dict[str, float]:
    """NDCG@10 (+ its standard error) over the users served the model's list, or over every user when
    fewer than ``MIN_SERVED_USERS`` are (a window of newcomers must still choose a champion).
    ``n_served_users`` counts the served users, ``n_judged_users`` the users the NDCG averages over."""
    served = per_user["ndcg"].to_numpy()[per_user["user_id"].isin(served_users).to_numpy()]
    values = served if len(served) >= MIN_SERVED_USERS else per_user["ndcg"].to_numpy()
    return {
        f"{prefix}ndcg@{CHAMPION_K}_served": float(values.mean()),
        f"{prefix}ndcg@{CHAMPION_K}_served_se": standard_error_of_mean(values),
        f"{prefix}n_served_users": float(len(served)),
        f"{prefix}n_judged_users": float(len(values)),
    }


def incumbent_baseline(
    con: duckdb.DuckDBPyConnection,
    models: dict[str, LoadedModel],
    scores: dict[str, dict[str, float]],
    fallback: LoadedModel | None,
    validation: WindowData,
    recent_days: int,
) -> tuple[str, float] | None:
    """(run id, value): the last published champion's ``CHAMPION_METRIC`` on THIS run's validation
    window, what the gate compares the new champion with ("the same data window").

    Tonight's score when its artifact is tonight's (nothing retrained), else its registered artifact
    scored again on this window: its validation fit was trained before its own, earlier cutoff, so
    it sees nothing of this window. None before the first publication, or when that artifact is gone.
    """
    published = last_publication(con)
    if published is None:
        return None
    current = models.get(published.model)
    if current is not None and current.model_version == published.model_version:
        value = scores[published.model].get(CHAMPION_METRIC)
    else:
        incumbent = load_registered(con, published.model, published.model_version)
        if incumbent is None:
            return None
        value = window_scores(con, incumbent, fallback, validation, recent_days).get(CHAMPION_METRIC)
        incumbent.unload()
    return None if value is None else (published.run_id, value)


def judged_population(scores: dict[str, float]) -> str:
    """Which validation users the champion metric averaged over, in words: a reader of the metadata
    must see when the champion was judged on every user because too few were served."""
    served, judged = int(scores["val_n_served_users"]), int(scores["val_n_judged_users"])
    if served >= MIN_SERVED_USERS:
        return f"served users: {judged} with at least {min_items_for_model()} items before the validation window"
    return f"all {judged} validation users: only {served} served, fewer than MIN_SERVED_USERS={MIN_SERVED_USERS}"


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
    with registered(con, new_evaluation_rows=rows):
        con.execute("INSERT INTO ml.evaluation_runs BY NAME SELECT * FROM new_evaluation_rows")


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """models x SUMMARY_METRICS, best validation NDCG first, blanks where a metric does not apply."""
    table = rows.pivot(index="model", columns="metric", values="value").reindex(columns=list(SUMMARY_METRICS))
    table = table.sort_values(CHAMPION_METRIC, ascending=False).round(4)
    return table.astype(object).where(table.notna(), "").reset_index()


@asset(
    group_name="evaluate",
    deps=[
        *(AssetKey(name) for name in MODEL_NAMES),
        AssetKey("fct_holdout_interactions"),
        AssetKey("validation_split"),
        AssetKey("dim_items"),
    ],
    kinds={"python", "duckdb"},
    pool=WAREHOUSE_POOL,
)
def model_evaluation(
    context: AssetExecutionContext, config: EvaluationConfig, warehouse: WarehouseResource
) -> MaterializeResult:
    """Every model on the validation and test windows, both relevance definitions, K=10 and 20, appended
    to ``ml.evaluation_runs``; then the champion (best validation NDCG@10) and the gate's verdict,
    appended to ``ml.champion_decisions`` (the ``champion_gate`` check reports it)."""
    with timed() as watch, warehouse.get_connection() as con:
        holdout_pairs(con)
        models = {name: load_latest(con, name) for name in registered_models(con)}
        if not models:
            raise Failure(description="no model in ml.model_registry: materialize the model assets first")
        fallback = models.get(FALLBACK_MODEL)
        repurchase = repurchase_policy()
        windows = [load_window(con, window, repurchase, config.max_eval_users) for window in WINDOWS]
        scores = {
            name: {
                metric: value
                for data in windows
                for metric, value in window_scores(con, loaded, fallback, data, config.fallback_recent_days).items()
            }
            for name, loaded in models.items()
        }
        rows = evaluation_rows(context.run.run_id, {name: m.model_version for name, m in models.items()}, scores)
        append_evaluation_rows(con, rows)
        baseline = incumbent_baseline(con, models, scores, fallback, windows[0], config.fallback_recent_days)
        decision = decide_champion(
            con, context.run.run_id, config.champion_candidates, config.max_ndcg_drop, repurchase, baseline,
            config.noise_se,
        )
        cutoff = holdout_cutoff(con)
        plot = history_markdown(con, "ndcg@10")
    counts = next(iter(scores.values()))
    return MaterializeResult(
        metadata={
            "dagster/row_count": MetadataValue.int(len(rows)),
            "metrics": frame_preview(summary_table(rows), limit=len(models)),
            "ndcg_history": MetadataValue.md(plot),
            "champion": MetadataValue.text(decision.model),
            "champion_model_version": MetadataValue.text(decision.model_version),
            "champion_metric": MetadataValue.float(decision.value),
            "gate_passed": MetadataValue.bool(decision.passed),
            "gate_reason": MetadataValue.text(decision.reason),
            "repurchase_policy": MetadataValue.bool(decision.repurchase),
            "n_holdout_users": MetadataValue.int(int(counts["n_eval_users"])),
            "n_cold_users": MetadataValue.int(int(counts["n_cold_users"])),
            "n_validation_users": MetadataValue.int(int(counts["val_n_eval_users"])),
            "n_holdout_window_users": MetadataValue.int(int(counts["n_window_users"])),
            "n_validation_window_users": MetadataValue.int(int(counts["val_n_window_users"])),
            "n_validation_served_users": MetadataValue.int(int(counts["val_n_served_users"])),
            "n_champion_judged_users": MetadataValue.int(int(counts["val_n_judged_users"])),
            "champion_judged_on": MetadataValue.text(judged_population(counts)),
            "cutoff": MetadataValue.text(cutoff),
            "duration_s": MetadataValue.float(watch.seconds),
        }
    )
