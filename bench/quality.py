"""Recommendation quality on real shop logs: every model and baseline side by side, per dataset.

Usage: ``python -m bench.quality [--datasets a,b] [--out bench/results/quality.md]`` (datasets:
online_retail, yoochoose, taobao, amazon, movielens, movielens_implicit; default all, ~15 min on 2 shared cores).

Each implicit dataset is turned into the warehouse marts (the dbt definitions, as the model tests
build them), then the real assets run in-process: ``validation_split``, every model asset and
``model_evaluation`` (champion on the validation window; the test window only reports). On top,
this script adds what the asset does not publish: a bootstrap 95% interval of NDCG@10 over the
test users, the same over the warm users only (history before the cutoff; cold users get popularity
from every model, which dilutes every ratio alike) with paired intervals of the repeat-aware model
against the plain list and ALS, and the plain "own items first, then ALS" list (the fixed
``PLAIN_OWN_FIRST`` knobs on the ALS the budget finds best on all items, ``plain_list_als_point``)
that the champion must not fall below. ``model_tuning`` runs first (budget ``TUNING_BUDGET``), so
the models take tuned parameters as in production.
Explicit ratings: Amazon (test-window RMSE of the pipeline's ``svd_model`` as evaluated, of ``SvdConfig()``
defaults, of surprise's BaselineOnly and of the global mean, on the pipeline's time split) and
MovieLens-100k 5-fold CV (the official u1..u5 splits, read from ../shared, never copied); MovieLens
as implicit feedback (rating >= 4, per-user time split): tuned ALS vs popularity of unseen items.
The MovieLens sections are also written to ``<out>.json``; a run without them reuses them from there,
so ``--datasets online_retail,yoochoose,taobao,amazon`` still writes a complete report.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from dagster import materialize
from surprise import SVD, BaselineOnly, Dataset, Reader
from surprise import accuracy

from recsys_dagster.evaluate.assets import (
    EVAL_KS,
    FALLBACK_MODEL,
    MIN_SERVED_USERS,
    WINDOWS,
    WindowData,
    load_window,
    model_evaluation,
    recommendations_with_fallback,
    window_scores,
)
from recsys_dagster.evaluate.metrics import per_user_ranking, ranking_metrics, rmse
from recsys_dagster.models.als import AlsConfig, fit_als
from recsys_dagster.models.artifacts import FitArrays
from recsys_dagster.models.assets import MODEL_ASSETS, model_tuning, validation_split
from recsys_dagster.models.marts import QUANTILE_CUTOFF, build_marts, pipeline_resources
from recsys_dagster.models.registry import LoadedModel, load_latest, registered_models
from recsys_dagster.models.repeat import PLAIN_OWN_FIRST, RepeatAwareConfig, item_similarity, with_own_history
from recsys_dagster.models.svd import RATING_SCALE, SvdConfig, fit_svd, holdout_ratings, predict_svd, training_ratings
from recsys_dagster.models.tuning import ALS_GRID, SVD_GRID, TuningConfig, sampled_grid, warm_validation_ndcg
from recsys_dagster.models.validation import VALIDATION_TRAIN_TABLE
from recsys_dagster.settings import DEFAULT_MIN_ITEMS_FOR_MODEL, MIN_ITEMS_ENV, PROJECT_ROOT, REPURCHASE_ENV

SHARED = Path(os.environ.get("RECSYS_SHARED_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))
BOOTSTRAP_SAMPLES = 1000
SEED = 42
#: The plain "own recent items first, then ALS" list the champion must not fall below (ALS: ``plain_list_als_point``).
PLAIN_LIST = RepeatAwareConfig(use_tuned=False, **PLAIN_OWN_FIRST)
PLAIN_NAME = "plain_repeat_list (own items, then ALS)"
UNSEEN_SHARE = "new-item holdout pairs whose item is unseen in train"
#: The tuning asset's budget here (the nightly default is smaller): ALS points, repeat-aware knob points, SVD points.
TUNING_BUDGET = {"als_trials": 8, "repeat_trials": 24, "svd_trials": 4}
TABLE_METRICS = ("val_ndcg@10_served", "val_ndcg@10", "ndcg@10", "ndcg@10_new_items", "ndcg@20", "precision@10",
                 "recall@10", "map@10", "hit_rate@10", "coverage@10")
#: Every test-window metric model_evaluation writes, for the per-dataset "all metrics" table: both
#: relevance definitions, K = 10 and 20, and the rating errors (SVD only).
ALL_TEST_METRICS = (
    *(f"{name}@{k}{suffix}" for suffix in ("", "_new_items") for k in (10, 20)
      for name in ("precision", "recall", "ndcg", "map", "hit_rate", "coverage")),
    "rmse", "mae",
)
#: Test-window NDCG@10 over the warm users only (history before the cutoff): cold users get popularity from
#: every model, so they dilute every ratio alike; these columns show the models' own difference.
WARM_COLUMNS = ("ndcg@10 95% CI", "warm ndcg@10", "warm ndcg@10 95% CI", "warm ndcg@10_new_items")
#: Paired differences of warm users' NDCG@10 whose bootstrap interval is reported: (model, minus model).
WARM_COMPARISONS = (("repeat_aware_model", PLAIN_NAME), (PLAIN_NAME, "als_model"), ("repeat_aware_model", "als_model"))


@dataclass(frozen=True)
class ImplicitDataset:
    name: str
    source: Path
    events_sql: str
    split: str
    repurchase: bool
    cutoff_sql: str = QUANTILE_CUTOFF
    #: The shop's ``RECSYS_MIN_ITEMS_FOR_MODEL``: below it a user is served the fallback list, in the
    #: test figures as in publishing.
    min_items_for_model: int = DEFAULT_MIN_ITEMS_FOR_MODEL
    notes: list[str] = field(default_factory=list)


ONLINE_RETAIL = ImplicitDataset(
    name="Online Retail 50k (purchases)",
    source=SHARED / "online_retail" / "online_retail_head50k_nodate.csv",
    # The file has no InvoiceDate; invoice numbers increase with time, so the invoice's rank is its clock.
    events_sql="""
        SELECT CAST(CAST(CAST(CustomerID AS DOUBLE) AS BIGINT) AS VARCHAR) AS user_id, trim(StockCode) AS item_id,
               'transaction' AS event_type, CAST(NULL AS DOUBLE) AS rating,
               TIMESTAMP '2010-12-01' + to_minutes(CAST(dense_rank() OVER (ORDER BY CAST(InvoiceNo AS BIGINT)) AS BIGINT))
                   AS event_time
        FROM read_csv($path, header = true, all_varchar = true)
        WHERE CustomerID IS NOT NULL AND NOT starts_with(InvoiceNo, 'C') AND CAST(Quantity AS INTEGER) > 0
    """,
    split="no dates in this file: events ordered by InvoiceNo (invoice rank = minutes after 2010-12-01); "
    "test = last 20% of purchases, validation = last 20% of the rest",
    repurchase=True,
    min_items_for_model=1,
    notes=["repurchase policy ON (wholesale shop): bought items may be recommended again",
           "RECSYS_MIN_ITEMS_FOR_MODEL=1 (a small B2B shop): a customer with one earlier purchase is served the "
           "model's list"],
)

YOOCHOOSE = ImplicitDataset(
    name="YooChoose clicks (sessions as users)",
    source=SHARED / "yoochoose_rsc15_sample",
    # Its own split: train_full sessions are history; each test session's first half (by time) is
    # known when recommending, its second half is the holdout. The validation window must look like
    # that test window, else tuning and the champion choice judge something else: the sessions that
    # start in train_full's last 20% are split the same way, first halves before second halves. In
    # order, just before the test: the test sessions' first halves, the late train sessions' first
    # halves, their second halves (the validation window: about the events the time quantile puts
    # after the validation cutoff); each block keeps every session's click order.
    events_sql="""
        WITH train AS (SELECT *, min(CAST(Time AS DOUBLE)) OVER (PARTITION BY SessionId) AS start,
                              row_number() OVER (PARTITION BY SessionId ORDER BY CAST(Time AS DOUBLE)) AS position,
                              count(*) OVER (PARTITION BY SessionId) AS length
                       FROM read_csv($path || '/yoochoose-clicks-100k_train_full.txt', delim = '\t',
                                     header = true, all_varchar = true)),
             late AS (SELECT quantile_disc(start, 0.8) AS start FROM train),
             test AS (SELECT *, row_number() OVER (PARTITION BY SessionId ORDER BY CAST(Time AS DOUBLE)) AS position,
                             count(*) OVER (PARTITION BY SessionId) AS length
                      FROM read_csv($path || '/yoochoose-clicks-100k_test.txt', delim = '\t', header = true,
                                    all_varchar = true)),
             t0 AS (SELECT to_timestamp(min(CAST(Time AS DOUBLE)))::TIMESTAMP AS cutoff FROM test)
        SELECT 'train-' || SessionId AS user_id, ItemId AS item_id, 'view' AS event_type, CAST(NULL AS DOUBLE) AS rating,
               CASE WHEN start < (SELECT start FROM late) OR length < 2
                    THEN to_timestamp(CAST(Time AS DOUBLE))::TIMESTAMP
                    WHEN position <= length // 2
                    THEN (SELECT cutoff FROM t0) - to_milliseconds(CAST(2000000 - position AS BIGINT))
                    ELSE (SELECT cutoff FROM t0) - to_milliseconds(CAST(1000000 - position AS BIGINT)) END AS event_time
        FROM train
        UNION ALL
        SELECT 'test-' || SessionId, ItemId, 'view', NULL,
               CASE WHEN position <= length // 2
                    THEN (SELECT cutoff FROM t0) - to_milliseconds(CAST(3000000 - position AS BIGINT))
                    ELSE to_timestamp(CAST(Time AS DOUBLE))::TIMESTAMP + INTERVAL 1 DAY END
        FROM test WHERE length >= 2
    """,
    # The first second-half click: test second halves were moved one day later, past every known click.
    cutoff_sql="(SELECT min(event_time) FROM events WHERE event_time > "
    "(SELECT max(event_time) FROM events WHERE user_id LIKE 'train-%') + INTERVAL 12 HOUR)",
    split="its own train/test split (train_full vs test sessions, 2014-04-07); each test session's first half of "
    "clicks is the known history, the second half the holdout; validation: the sessions starting in train_full's "
    "last 20% split the same way (their first halves before their second halves, the window)",
    repurchase=True,
    min_items_for_model=1,
    notes=["views only, so nothing is 'purchased': the repurchase policy changes nothing here",
           "RECSYS_MIN_ITEMS_FOR_MODEL=1 (sessions): a session's one click so far is what its list is made from"],
)

TAOBAO = ImplicitDataset(
    name="Taobao UserBehavior (9-day histories, 114 users)",
    source=SHARED / "taobao_userbehavior" / "UserBehavior_tail10k_114users_fullhistory.csv",
    events_sql="""
        SELECT column0 AS user_id, column1 AS item_id,
               CASE column3 WHEN 'pv' THEN 'view' WHEN 'buy' THEN 'transaction' ELSE 'addtocart' END AS event_type,
               CAST(NULL AS DOUBLE) AS rating, to_timestamp(CAST(column4 AS BIGINT))::TIMESTAMP AS event_time
        FROM read_csv($path, header = false, all_varchar = true)
    """,
    split="event-time quantile: test = last 20% of events, validation = last 20% of the rest",
    repurchase=False,
)

AMAZON = ImplicitDataset(
    name="Amazon Electronics ratings (users with >= 2 ratings)",
    source=SHARED / "amazon_electronics_ratings" / "ratings_Electronics_head.csv",
    events_sql="""
        SELECT UserId AS user_id, ItemId AS item_id, 'rating' AS event_type, CAST(rating AS DOUBLE) AS rating,
               to_timestamp(CAST("timestamp" AS BIGINT))::TIMESTAMP AS event_time
        FROM read_csv($path, header = true, all_varchar = true)
        QUALIFY count(*) OVER (PARTITION BY UserId) >= 2
    """,
    split="event-time quantile: test = last 20% of ratings, validation = last 20% of the rest",
    repurchase=False,
)


@dataclass
class DatasetResult:
    dataset: ImplicitDataset
    table: pd.DataFrame
    champion: str
    facts: dict[str, object]
    params: dict[str, dict]
    seconds: float
    comparisons: list[str]
    #: repeat_aware_model minus the plain list on the warm users: (mean, 95% low, 95% high), paired bootstrap.
    blend_gain: tuple[float, float, float]


def bootstrap_interval(values: np.ndarray, seed: int = SEED) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` over ``BOOTSTRAP_SAMPLES`` user resamples."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP_SAMPLES, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def plain_list_als_point(con: duckdb.DuckDBPyConnection, repurchase: bool) -> dict[str, object]:
    """Of the ALS points the tuning budget samples, the best on the warm validation users' NDCG@10 over
    every item they touch (ALS's objective before it was judged on new items only).

    The plain list orders a user's own items by ALS's scores where their own scores tie, so an ALS
    tuned for new items would make it a lower bar; this keeps the bar where the issue set it."""
    points = sampled_grid(ALS_GRID, TUNING_BUDGET["als_trials"], TuningConfig().seed)
    scores = [
        warm_validation_ndcg(con, "als_model", fit_als(con, VALIDATION_TRAIN_TABLE, AlsConfig(use_tuned=False, **p)),
                             repurchase).mean()
        for p in points
    ]
    return points[int(np.nanargmax(scores))]


def plain_repeat_list(con: duckdb.DuckDBPyConnection, repeat: LoadedModel, repurchase: bool) -> LoadedModel:
    """The fixed ``PLAIN_LIST`` policy on ALS fits of ``plain_list_als_point``: the repeat-aware model's
    own ALS fits when it uses that point (a paired comparison: the lists differ by the policy only),
    else fitted here, one per window."""
    point = plain_list_als_point(con, repurchase)
    same_als = all(repeat.params.get(name) == value for name, value in point.items())
    fits = {}
    for window in WINDOWS:
        if same_als:
            arrays = repeat.fit_arrays(window.fit)
            als = FitArrays(arrays.user_ids, arrays.item_ids, dense=dict(arrays.dense))  # the original stays untouched
        else:
            als = fit_als(con, window.train_table, AlsConfig(use_tuned=False, **point))
        similarity = item_similarity(con, window.train_table, als)
        fits[window.fit] = with_own_history(con, window.train_table, als, PLAIN_LIST, similarity)
    return LoadedModel("repeat_aware_model", "plain", Path(), {**point, **PLAIN_OWN_FIRST}, _fits=fits)


def test_ndcg_by_user(
    con: duckdb.DuckDBPyConnection, loaded: LoadedModel, fallback: LoadedModel, data: WindowData
) -> pd.DataFrame:
    """Per test user (index): NDCG@10 on every touched item (``all``), on items new to the user (``new``,
    NaN without one), and ``warm`` (history before the cutoff), from the lists the evaluation scores (made
    as deep as it makes them, so a model's own list and the popularity top-up split as they do there)."""
    users = data.relevant["user_id"].unique().astype(str)
    recs = recommendations_with_fallback(con, loaded, fallback, users, data, max(EVAL_KS))
    new_items = data.relevant[~data.relevant["seen_in_train"].astype(bool)]
    frame = pd.DataFrame({"all": per_user_ranking(recs, data.relevant, 10).set_index("user_id")["ndcg"],
                          "new": per_user_ranking(recs, new_items, 10).set_index("user_id")["ndcg"]})
    # sorted: the bootstrap draws positions, so the users' order must not depend on DuckDB's thread timing
    return frame.assign(warm=frame.index.isin(data.train_users)).sort_index()


def interval_text(values: np.ndarray) -> str:
    low, high = bootstrap_interval(values)
    return f"[{low:.3f}, {high:.3f}]"


def warm_columns(by_user: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``WARM_COLUMNS`` per model: the all-users interval, and NDCG@10 over the warm users only."""
    rows = {}
    for name, frame in by_user.items():
        warm = frame[frame["warm"]]
        rows[name] = {"ndcg@10 95% CI": interval_text(frame["all"].to_numpy()),
                      "warm ndcg@10": warm["all"].mean(), "warm ndcg@10 95% CI": interval_text(warm["all"].to_numpy()),
                      "warm ndcg@10_new_items": warm["new"].mean()}
    return pd.DataFrame.from_dict(rows, orient="index")


def warm_difference(by_user: dict[str, pd.DataFrame], model: str, baseline: str) -> np.ndarray:
    """Per warm user, ``model``'s NDCG@10 minus ``baseline``'s (the same users, so the pair is compared, not the users)."""
    return (by_user[model]["all"] - by_user[baseline]["all"])[by_user[model]["warm"]].to_numpy()


def warm_comparison(by_user: dict[str, pd.DataFrame], model: str, baseline: str) -> str:
    """``model`` minus ``baseline`` on the warm users' NDCG@10, with its paired bootstrap 95% interval, in words."""
    difference = warm_difference(by_user, model, baseline)
    low, high = bootstrap_interval(difference)
    if not difference.any():
        meaning = "the same NDCG@10 for every warm user"
    elif low > 0:
        meaning = "better beyond noise"
    elif high < 0:
        meaning = "worse beyond noise"
    else:
        meaning = "no difference beyond noise (the interval contains 0)"
    return (f"warm users, {model} minus {baseline}: {difference.mean():+.4f} "
            f"[{low:+.4f}, {high:+.4f}] (paired bootstrap 95%): {meaning}")


def warehouse_path(scratch: Path, dataset: ImplicitDataset) -> Path:
    """The dataset's scratch warehouse: ``run_implicit`` builds and evaluates it, ``amazon_rating_errors``
    reads the same one, so the RMSE table and the ranking table share data, split and run."""
    return scratch / dataset.name.split()[0].lower() / "warehouse.duckdb"


def run_implicit(dataset: ImplicitDataset, scratch: Path) -> DatasetResult:
    started = time.perf_counter()
    database = warehouse_path(scratch, dataset)
    folder = database.parent
    folder.mkdir(parents=True, exist_ok=True)
    database = build_marts(database, dataset.events_sql, dataset.source, dataset.cutoff_sql)
    resources = pipeline_resources(database, folder / "models")
    os.environ[REPURCHASE_ENV] = str(dataset.repurchase).lower()  # the shop's one policy, for tuning and evaluation
    os.environ[MIN_ITEMS_ENV] = str(dataset.min_items_for_model)  # who is served the model's list, as published
    tuning_config = {"ops": {"model_tuning": {"config": TUNING_BUDGET}}}
    assert materialize([validation_split, model_tuning], resources=resources, run_config=tuning_config).success
    result = materialize([*MODEL_ASSETS, model_evaluation], resources=resources)
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("model_evaluation")[0].metadata.items()}
    with duckdb.connect(str(database)) as con:
        rows = con.execute("SELECT model, metric, value FROM ml.evaluation_runs WHERE run_id = ?", [result.run_id]).df()
        models = {name: load_latest(con, name) for name in registered_models(con)}
        fallback = models[FALLBACK_MODEL]
        plain = plain_repeat_list(con, models["repeat_aware_model"], dataset.repurchase)
        windows = [load_window(con, window, dataset.repurchase) for window in WINDOWS]
        plain_scores = {k: v for data in windows for k, v in window_scores(con, plain, fallback, data).items()}
        table = rows.pivot(index="model", columns="metric", values="value")
        table.loc[PLAIN_NAME] = pd.Series(plain_scores)
        by_user = {name: test_ndcg_by_user(con, m, fallback, windows[1]) for name, m in {**models, PLAIN_NAME: plain}.items()}
        facts = con.execute(
            """SELECT (SELECT count(*) FROM stg_interactions) AS n_events,
                      (SELECT count(DISTINCT user_id) FROM stg_interactions) AS n_users,
                      (SELECT count(DISTINCT item_id) FROM stg_interactions) AS n_items,
                      (SELECT CAST(cutoff_time AS VARCHAR) FROM int_holdout_cutoff) AS test_cutoff,
                      (SELECT CAST(validation_cutoff AS VARCHAR) FROM ml.validation_cutoff) AS validation_cutoff""",
        ).df().iloc[0].to_dict()
        facts |= {
            "holdout items already in the user's train history": con.execute(
                "SELECT avg(CAST(seen_in_train AS DOUBLE)) FROM fct_holdout_interactions WHERE user_in_train"
            ).fetchone()[0],
            UNSEEN_SHARE: con.execute(
                "SELECT avg(CAST(item_id NOT IN (SELECT item_id FROM fct_train_user_item) AS DOUBLE))"
                " FROM fct_holdout_interactions WHERE NOT seen_in_train"
            ).fetchone()[0],
        }
    table = table.join(warm_columns(by_user))
    facts |= {k: metadata[k] for k in ("n_holdout_users", "n_cold_users", "n_validation_users", "gate_reason")}
    facts["n_warm_users"] = int(by_user[FALLBACK_MODEL]["warm"].sum())
    return DatasetResult(
        dataset=dataset,
        table=table,
        champion=metadata["champion"],
        facts=facts,
        params={name: m.params for name, m in {**models, PLAIN_NAME: plain}.items()},
        seconds=time.perf_counter() - started,
        comparisons=[warm_comparison(by_user, model, baseline) for model, baseline in WARM_COMPARISONS],
        blend_gain=(warm_difference(by_user, "repeat_aware_model", PLAIN_NAME).mean(),
                    *bootstrap_interval(warm_difference(by_user, "repeat_aware_model", PLAIN_NAME))),
    )


@dataclass(frozen=True)
class RatingErrors:
    """Test-window RMSE of each rating model, labelled with what it is and its parameters, in table order."""

    rmse: dict[str, float]
    #: The evaluated ``svd_model``'s RMSE minus BaselineOnly's (negative: SVD is better).
    svd_minus_baseline: float
    n_test_ratings: int
    #: Shares of the test ratings whose user / item has no train rating: SVD has no factors for them.
    unseen_user_share: float
    unseen_item_share: float


#: The RMSE table's BaselineOnly row (surprise's default ``bsl_options``).
BASELINE_ONLY = "surprise BaselineOnly (its defaults: ALS, 10 epochs, reg_u=15, reg_i=10)"


def parameter_text(params: dict[str, object]) -> str:
    """``key=value`` pairs, sorted: the parameters a row of the RMSE table was fitted with."""
    return ", ".join(f"{key}={value}" for key, value in sorted(params.items()))


def baseline_only_predictions(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Surprise's BaselineOnly (its defaults) fitted on ``train``, its estimate of every ``test`` pair."""
    reader = Reader(rating_scale=RATING_SCALE)
    trainset = Dataset.load_from_df(train[["user_id", "item_id", "rating"]], reader).build_full_trainset()
    algo = BaselineOnly(verbose=False).fit(trainset)
    return np.array([algo.predict(user, item).est for user, item in zip(test["user_id"], test["item_id"])])


def amazon_rating_errors(result: DatasetResult, scratch: Path) -> RatingErrors:
    """RMSE on the Amazon test window of ``result``'s warehouse and run: the ranked ``svd_model`` as
    ``model_evaluation`` scored it (its tuned parameters), ``SvdConfig()`` defaults, surprise's
    BaselineOnly and the global mean. The last three are fitted on the same train ratings (those
    ``fit_svd`` trains on) and scored on the same ``holdout_ratings`` as the evaluation."""
    defaults = SvdConfig(use_tuned=False)
    with duckdb.connect(str(warehouse_path(scratch, result.dataset)), read_only=True) as con:
        # the rows fit_svd trains on
        train = training_ratings(con, "fct_train_user_item", defaults.max_ratings, defaults.random_state)
        test, default_fit = holdout_ratings(con), fit_svd(con, "fct_train_user_item", defaults)
    tuned = {k: v for k, v in result.params["svd_model"].items() if k not in ("use_tuned", "max_ratings")}
    default_params = defaults.model_dump(exclude={"use_tuned", "max_ratings"})
    predictions = {
        f"SvdConfig() defaults ({parameter_text(default_params)})": predict_svd(default_fit, test),
        BASELINE_ONLY: baseline_only_predictions(train, test),
        f"global mean of the train ratings ({train['rating'].mean():.4f})": np.full(len(test), train["rating"].mean()),
    }
    evaluated = float(result.table.loc["svd_model", "rmse"])
    errors = {f"svd_model as evaluated (tuned: {parameter_text(tuned)})": evaluated}
    errors |= {label: rmse(test["rating"], predicted) for label, predicted in predictions.items()}
    return RatingErrors(errors, evaluated - errors[BASELINE_ONLY], len(test),
                        float((~test["user_id"].isin(train["user_id"])).mean()),
                        float((~test["item_id"].isin(train["item_id"])).mean()))


def movielens_folds() -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    folder = SHARED / "movielens_100k"
    read = lambda name: pd.read_csv(folder / name, sep="\t", names=["user", "item", "rating", "ts"])  # noqa: E731
    return [(read(f"u{i}.base"), read(f"u{i}.test")) for i in range(1, 6)]


def svd_rmse(train: pd.DataFrame, test: pd.DataFrame, params: dict) -> float:
    reader = Reader(rating_scale=(1, 5))
    trainset = Dataset.load_from_df(train[["user", "item", "rating"]], reader).build_full_trainset()
    model = SVD(random_state=SEED, **params).fit(trainset)
    return accuracy.rmse(model.test(list(test[["user", "item", "rating"]].itertuples(index=False, name=None))),
                         verbose=False)


def inner_split(train: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tuning inside a training fold: a random 20% of its ratings (seeded) validate, as the outer
    u1..u5 folds are random splits too."""
    validate = np.random.default_rng(SEED).random(len(train)) < 0.2
    return train[~validate], train[validate]


def movielens_cv(trials: int) -> dict[str, object]:
    """5-fold CV RMSE of default SVD, and of SVD tuned inside each training fold on the tuning asset's grid."""
    grid = sampled_grid(SVD_GRID, trials, SEED)
    default, tuned, chosen = [], [], []
    for train, test in movielens_folds():
        default.append(svd_rmse(train, test, {}))
        fit_part, validate_part = inner_split(train)
        scores = [svd_rmse(fit_part, validate_part, point) for point in grid]
        best = grid[int(np.argmin(scores))]
        chosen.append(best)
        tuned.append(svd_rmse(train, test, best))
    return {"default": default, "tuned": tuned, "chosen": chosen, "grid": grid}


#: MovieLens as implicit feedback: a rating >= 4 is a positive; each user's newest 20% of positives are
#: held out (and, inside the rest, the newest 20% validate the ALS grid).
IMPLICIT_POSITIVE = 4
PER_USER_HOLDOUT = 0.2
#: Per-user time split: 1 = held out (newest), 0 = kept; users need two positives to have both.
PER_USER_SPLIT_SQL = """
SELECT user_id, item_id, CAST(1.0 AS DOUBLE) AS strength,
       row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, item_id)
           <= ceil(CAST($share AS DOUBLE) * count(*) OVER (PARTITION BY user_id)) AS held_out
FROM {source}
QUALIFY count(*) OVER (PARTITION BY user_id) >= 2
"""


def per_user_split(con: duckdb.DuckDBPyConnection, source: str, kept: str, held_out: str) -> None:
    """``kept`` / ``held_out`` tables from ``source`` (user_id, item_id, ts) by each user's newest share."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE split AS {PER_USER_SPLIT_SQL.format(source=source)}",
                {"share": PER_USER_HOLDOUT})
    con.execute(f"CREATE OR REPLACE TABLE {kept} AS SELECT user_id, item_id, ts, strength FROM split NATURAL JOIN "
                f"{source} WHERE NOT held_out")
    con.execute(f"CREATE OR REPLACE TABLE {held_out} AS SELECT user_id, item_id FROM split WHERE held_out")


def unseen_top10_ndcg(con: duckdb.DuckDBPyConnection, fit: FitArrays, table: str, relevant: str) -> float:
    """NDCG@10 of ``fit``'s lists (scored as ALS: user factors . item factors), the user's ``table`` items excluded."""
    model = LoadedModel("als_model", "bench", Path(), {}, _fits={"holdout": fit})
    truth = con.execute(f"SELECT user_id, item_id FROM {relevant}").df()
    recs = model.recommend(truth["user_id"], 10, fit="holdout", exclude=con.execute(
        f"SELECT user_id, item_id FROM {table}").df())
    return ranking_metrics(recs, truth, 10, fit.n_items)["ndcg@10"]


def popularity_fit(als: FitArrays, con: duckdb.DuckDBPyConnection, table: str) -> FitArrays:
    """Popularity (distinct users in ``table``) as a rank-1 factor model over ``als``'s ids: every user's
    score of an item is its user count, so the same excluding ``recommend`` ranks unseen popular items."""
    counts = con.execute(f"SELECT item_id, count(*) AS n FROM {table} GROUP BY item_id").df()
    users = np.zeros(als.n_items)
    users[als.item_index.get_indexer(counts["item_id"].astype(str))] = counts["n"].to_numpy()
    return FitArrays(als.user_ids, als.item_ids, dense={"user_factors": np.ones((len(als.user_ids), 1), np.float32),
                                                       "item_factors": users[:, None].astype(np.float32)})


#: ALS_GRID for a table of positive ratings only (no event counts to weigh): the mart's strength alone.
RATINGS_ONLY_ALS_GRID = {**ALS_GRID, "event_weights": [None]}


def movielens_implicit(trials: int) -> dict[str, object]:
    """MovieLens-100k as implicit feedback: ALS tuned on a per-user time validation split
    (``RATINGS_ONLY_ALS_GRID``, ``trials`` points) vs popularity of items the user has not seen,
    NDCG@10 on each user's newest positives."""
    with duckdb.connect() as con:
        con.execute("CREATE SCHEMA ml")
        con.execute(
            "CREATE TABLE positives AS SELECT CAST(column0 AS VARCHAR) AS user_id, CAST(column1 AS VARCHAR) AS item_id,"
            " column3 AS ts FROM read_csv($path, delim = '\t', header = false) WHERE column2 >= $positive",
            {"path": str(SHARED / "movielens_100k" / "u.data"), "positive": IMPLICIT_POSITIVE},
        )
        per_user_split(con, "positives", "fct_train_user_item", "test_pairs")
        per_user_split(con, "fct_train_user_item", "ml.validation_train_user_item", "validation_pairs")
        grid = sampled_grid(RATINGS_ONLY_ALS_GRID, trials, SEED)
        validation = [unseen_top10_ndcg(con, fit_als(con, "ml.validation_train_user_item", AlsConfig(**point)),
                                        "ml.validation_train_user_item", "validation_pairs") for point in grid]
        best = grid[int(np.argmax(validation))]
        als = fit_als(con, "fct_train_user_item", AlsConfig(**best))
        return {
            "als": unseen_top10_ndcg(con, als, "fct_train_user_item", "test_pairs"),
            "popularity": unseen_top10_ndcg(con, popularity_fit(als, con, "fct_train_user_item"),
                                            "fct_train_user_item", "test_pairs"),
            "chosen": best, "validation_best": max(validation), "n_trials": len(grid),
            "n_test_users": con.execute("SELECT count(DISTINCT user_id) FROM test_pairs").fetchone()[0],
        }


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def better_popularity(table: pd.DataFrame, column: str) -> float:
    return table.loc[["popularity_model", "popularity_recent_model"], column].max()


#: The issue's ratio targets and the ratio it says the plain "own items, then ALS" list reached, per dataset.
RATIO_TARGETS: dict[str, tuple[float, float]] = {"Online Retail": (2.0, 2.3), "YooChoose": (8.0, 9.4)}
ALL_USERS, WARM_USERS = 0, 1


def ratio_cells(table: pd.DataFrame, model: str, populations: tuple) -> tuple[list[str], list[float]]:
    """``model``'s NDCG@10 over the better popularity's, per population (all users, warm users): cells and ratios."""
    ratios = [table.loc[model, col] / better_popularity(table, col) for col, _, _ in populations]
    cells = [f"{table.loc[model, col]:.4f} / {better_popularity(table, col):.4f} = {ratio:.2f}x ({n} users)"
             for (col, _, n), ratio in zip(populations, ratios)]
    return cells, ratios


def dataset_target_rows(result: DatasetResult) -> list[str]:
    """A dataset's target rows: | target | all evaluated users | warm users only | judged on | met |.

    The ratio to popularity is judged on the warm users: the issue's reference for it (the plain list
    at 2.3x / 9.4x, with its NDCG@10 0.26 and popularity 0.11 on Online Retail) is what that list scores
    on users with history before the cutoff; over all users, cold ones included, the same list stays
    below the 2x the issue says it clears (the reference row shows both). Every other row is judged on
    all evaluated users, except the blend's paired difference, which only warm users can have.
    """
    short = result.dataset.name.split(" (")[0].replace(" 50k", "")
    table, champion, facts = result.table, result.champion, result.facts
    target, reference = next((ratios for prefix, ratios in RATIO_TARGETS.items() if short.startswith(prefix)),
                             (None, None))
    populations = (("ndcg@10", "ndcg@10_new_items", facts["n_holdout_users"]),
                   ("warm ndcg@10", "warm ndcg@10_new_items", facts["n_warm_users"]))
    rows = []
    if target is not None:
        plain_cells, _ = ratio_cells(table, PLAIN_NAME, populations)
        rows.append((f"{short}: the issue's reference, the plain list at {reference}x the better popularity",
                     plain_cells, WARM_USERS, None))
        cells, ratios = ratio_cells(table, champion, populations)
        rows.append((f"{short}: champion >= {target:.0f}x the better popularity (ndcg@10)",
                     [f"{champion} {cell}" for cell in cells], WARM_USERS, ratios[WARM_USERS] >= target))
        pairs = [(table.loc["als_model", new], table.loc["item_knn_bm25_model", new]) for _, new, _ in populations]
        rows.append((f"{short}: tuned ALS >= item-kNN BM25 on new items (ndcg@10_new_items)",
                     [f"{als:.4f} vs {bm25:.4f}" for als, bm25 in pairs], ALL_USERS, pairs[0][0] >= pairs[0][1]))
    pairs = [(table.loc[champion, col], table.loc[PLAIN_NAME, col]) for col, _, _ in populations]
    rows.append((f"{short}: champion never below the plain repeat list (ndcg@10)",
                 [f"{champion} {value:.4f} vs {plain:.4f}" for value, plain in pairs], ALL_USERS,
                 pairs[0][0] >= pairs[0][1]))
    gain, low, high = result.blend_gain
    wanted_gain = target is not None  # the issue asks the blend to add value where it sets ratios
    rows.append((f"{short}: repeat-aware blend adds value over the plain list (paired 95% CI "
                 f"{'above' if wanted_gain else 'never below'} 0)",
                 ["", f"{gain:+.4f} [{low:+.4f}, {high:+.4f}] ({facts['n_warm_users']} users)"], WARM_USERS,
                 low > 0 if wanted_gain else high >= 0))
    lines = [f"| {name} | {cells[0]} | {cells[1]} | {('all', 'warm')[judged]} | "
             f"{'shown' if ok is None else verdict(ok)} |" for name, cells, judged, ok in rows]
    personalised = table.drop(index=["popularity_model", "popularity_recent_model"])["ndcg@10_new_items"]
    if (personalised.fillna(0) == 0).all():
        lines.append(f"| {short}: say so where every model scores zero on new items | every personalised model "
                     f"0 on ndcg@10_new_items ({facts[UNSEEN_SHARE]:.0%} of new-item pairs are items unseen in train) "
                     "| | all | said |")
    return lines


def targets_section(results: list[DatasetResult], amazon: RatingErrors | None, movielens: dict | None,
                    implicit: dict | None) -> list[str]:
    """The issue's targets next to what this run measured (computed, so a rerun cannot go stale)."""
    lines = ["## The issue's targets, measured", "",
             "Each row says which test users it is judged on. Cold users (no history before the cutoff) get the "
             "popularity list from every model, so over all users (what `model_evaluation`'s ndcg@10 reports and "
             "the shop serves) a model's ratio to popularity is diluted by the cold share. The issue's ratio "
             "targets are set against the plain list's ratio on users with history (its reference row shows that "
             "list on both populations), so they are judged on the warm users; the other rows on all users, except "
             "the blend's paired difference, which only warm users have.", "",
             "| target | all evaluated users | warm users only | judged on | met |", "|---|---|---|---|---|"]
    for result in results:
        lines += dataset_target_rows(result)
    if amazon:
        lines.append(f"| Amazon: report SVD vs BaselineOnly vs global mean RMSE | svd_model as evaluated minus "
                     f"BaselineOnly {amazon.svd_minus_baseline:+.4f} | | all | reported |")
    if movielens:
        default, tuned = float(np.mean(movielens["default"])), float(np.mean(movielens["tuned"]))
        lines.append(f"| MovieLens: default SVD within 0.01 of 0.934 | {default:.4f} | | all | {verdict(abs(default - 0.934) <= 0.01)} |")
        lines.append(f"| MovieLens: tuned SVD <= 0.912 (tuned inside training folds) | {tuned:.4f} | | all | {verdict(tuned <= 0.912)} |")
    if implicit:
        ratio = implicit["als"] / implicit["popularity"]
        lines.append(f"| MovieLens as implicit feedback: tuned ALS >= 1.6x unseen-item popularity (ndcg@10) | "
                     f"{implicit['als']:.4f} / {implicit['popularity']:.4f} = {ratio:.2f}x | every test user is warm "
                     f"(per-user split) | all | {verdict(ratio >= 1.6)} |")
    return [*lines, ""]


def all_metrics_table(table: pd.DataFrame) -> str:
    """``ALL_TEST_METRICS`` (those present) as rows, one column per model, best validation choice first."""
    present = [metric for metric in ALL_TEST_METRICS if metric in table.columns]
    ordered = table.sort_values("val_ndcg@10_served", ascending=False)[present].T
    return ordered.round(4).astype(object).where(ordered.notna(), "").to_markdown()


def markdown(results: list[DatasetResult], amazon: RatingErrors | None, movielens: dict | None, implicit: dict | None,
             reused: list[str]) -> str:
    lines = ["# Recommendation quality on real shop logs", "",
             "Generated by `python -m bench.quality`. Every model runs through the real assets "
             "(validation_split, model assets, model_evaluation); seeds: ALS/SVD random_state 42, bootstrap seed 42 "
             f"({BOOTSTRAP_SAMPLES} user resamples). Champion = best val_ndcg@10_served (validation window, users with "
             "at least the shop's RECSYS_MIN_ITEMS_FOR_MODEL items before it: those publishing serves the champion's "
             f"list to; every validation user when fewer than {MIN_SERVED_USERS} are) under the "
             "one-standard-error rule (champion.py); every column without `val_` is the TEST window, whose lists are "
             "made as publishing serves them (users below RECSYS_MIN_ITEMS_FOR_MODEL items get the fallback list). "
             "`_new_items`: only items new to the user count as relevant.", ""]
    if reused:
        lines += [f"Not recomputed by this run, taken from an earlier run's `quality.json`: {', '.join(reused)} "
                  "(their code and data are independent of the shop datasets).", ""]
    for result in results:
        d = result.dataset
        table = result.table.reindex(columns=[*TABLE_METRICS, *WARM_COLUMNS])
        table = table.sort_values("val_ndcg@10_served", ascending=False)
        popularity = better_popularity(table, "ndcg@10")
        champion_ndcg = table.loc[result.champion, "ndcg@10"]
        plain = table.loc[PLAIN_NAME, "ndcg@10"]
        lines += [f"## {d.name}", "", f"- split: {d.split}", f"- RECSYS_MIN_ITEMS_FOR_MODEL: {d.min_items_for_model}"]
        lines += [f"- {note}" for note in d.notes]
        lines += [f"- {key}: {value:.3f}" if isinstance(value, float) else f"- {key}: {value}"
                  for key, value in result.facts.items()]
        lines += [f"- champion (validation): **{result.champion}**; test ndcg@10 {champion_ndcg:.4f} = "
                  f"{champion_ndcg / popularity:.2f}x the better popularity ({popularity:.4f}); plain repeat list "
                  f"{plain:.4f} (champion {'>=' if champion_ndcg >= plain else '<'} plain list)",
                  f"- test users: {result.facts['n_holdout_users']} evaluated, {result.facts['n_warm_users']} warm "
                  f"(history before the cutoff), {result.facts['n_cold_users']} cold (popularity from every model); "
                  "`warm` columns: the warm users only",
                  *(f"- {comparison}" for comparison in result.comparisons),
                  f"- wall time {result.seconds:.0f} s", "",
                  table.round(4).astype(object).where(table.notna(), "").to_markdown(), "",
                  "<details><summary>every test metric: K = 10 and 20, every item / only items new to the user "
                  "(rows), every model (columns)</summary>", "", all_metrics_table(result.table), "", "</details>", "",
                  "<details><summary>parameters</summary>", "", "```json",
                  json.dumps(result.params, indent=1, sort_keys=True), "```", "</details>", ""]
    lines += targets_section(results, amazon, movielens, implicit)
    if amazon:
        lines += ["## Amazon Electronics: rating error on the same time split", "",
                  "| model | RMSE |", "|---|---|"]
        lines += [f"| {label} | {value:.4f} |" for label, value in amazon.rmse.items()]
        lines += ["", f"{amazon.n_test_ratings} test ratings; {amazon.unseen_user_share:.0%} have a user and "
                  f"{amazon.unseen_item_share:.0%} an item without a train rating, where SVD has no factors and "
                  "falls back to its biases or the mean. The ranked svd_model (as `model_evaluation` scored it, "
                  f"tuned parameters) minus BaselineOnly: {amazon.svd_minus_baseline:+.4f} RMSE. The champion is chosen on "
                  "validation NDCG@10, never on these RMSE differences, and SVD is last in the champion rule's preference order (CHAMPION_CANDIDATES), "
                  "so it becomes champion only by a lead beyond noise over every other model.", ""]
    if movielens:
        lines += ["## MovieLens-100k: 5-fold CV RMSE (official u1..u5 splits, read from ../shared)", "",
                  "| fold | default SVD | tuned SVD | chosen params (tuned inside the training fold) |", "|---|---|---|---|"]
        for i, (a, b, c) in enumerate(zip(movielens["default"], movielens["tuned"], movielens["chosen"]), start=1):
            lines.append(f"| u{i} | {a:.4f} | {b:.4f} | `{json.dumps(c, sort_keys=True)}` |")
        lines += [f"| **mean** | **{np.mean(movielens['default']):.4f}** | **{np.mean(movielens['tuned']):.4f}** | |",
                  "", f"Grid: {len(movielens['grid'])} points (seed 42) of the tuning asset's SVD_GRID; inside each "
                  "training fold a random 20% of its ratings (seed 42) pick the point, which is then refitted on the "
                  "whole fold. Published reference: default SVD 0.934, SVD++ 0.919.", ""]
    if implicit:
        lines += ["## MovieLens-100k as implicit feedback", "",
                  f"Rating >= {IMPLICIT_POSITIVE} is a positive; per-user time split: each user's newest "
                  f"{PER_USER_HOLDOUT:.0%} of positives are the test, the newest {PER_USER_HOLDOUT:.0%} of the rest "
                  f"validate {implicit['n_trials']} ALS_GRID points without event weights (seed 42); {implicit['n_test_users']} test users; "
                  "both lists exclude the user's train items.", "",
                  "| model | NDCG@10 |", "|---|---|",
                  f"| tuned ALS `{json.dumps(implicit['chosen'], sort_keys=True)}` (validation {implicit['validation_best']:.4f}) "
                  f"| {implicit['als']:.4f} |",
                  f"| popularity of unseen items | {implicit['popularity']:.4f} |", ""]
    return "\n".join(lines)


DATASETS: dict[str, ImplicitDataset] = {"online_retail": ONLINE_RETAIL, "yoochoose": YOOCHOOSE, "taobao": TAOBAO,
                                        "amazon": AMAZON}


def stored_sections(out: Path, fresh: dict[str, dict | None]) -> dict[str, dict | None]:
    """``fresh`` with the sections this run skipped taken from the last run's ``<out>.json`` (the
    MovieLens sections take most of a full run and do not depend on the shop datasets), which is then
    rewritten, so a subset rerun still writes a complete report."""
    sidecar = out.with_suffix(".json")
    stored = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    merged = {name: section if section is not None else stored.get(name) for name, section in fresh.items()}
    sidecar.write_text(json.dumps(merged, indent=1, sort_keys=True, default=float) + "\n")
    return merged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="online_retail,yoochoose,taobao,amazon,movielens,movielens_implicit",
                        help="a subset to run, comma-separated")
    parser.add_argument("--svd-trials", type=int, default=len(sampled_grid(SVD_GRID, 10**6, SEED)),
                        help="SVD grid points tried inside each MovieLens training fold (default: the whole grid)")
    # 30 of the 162 ratings-only points: the share of the grid (about 1/5) the earlier default of 20 drew
    # from its 108 points, before TF-IDF joined the weightings.
    parser.add_argument("--implicit-als-trials", type=int, default=30,
                        help="ALS grid points tried on MovieLens-as-implicit's validation split")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "quality.md")
    args = parser.parse_args(argv)
    chosen = args.datasets.split(",")
    with tempfile.TemporaryDirectory(prefix="recsys-quality-") as scratch:
        results = [run_implicit(DATASETS[name], Path(scratch)) for name in chosen if name in DATASETS]
        amazon = next((amazon_rating_errors(result, Path(scratch)) for result in results if result.dataset is AMAZON),
                      None)
    sections = stored_sections(args.out, {
        "movielens": movielens_cv(args.svd_trials) if "movielens" in chosen else None,
        "movielens_implicit": movielens_implicit(args.implicit_als_trials) if "movielens_implicit" in chosen else None,
    })
    reused = [name for name in sections if name not in chosen and sections[name] is not None]
    args.out.write_text(markdown(results, amazon, sections["movielens"], sections["movielens_implicit"], reused))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
