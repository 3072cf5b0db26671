"""A small, budgeted hyperparameter search, judged on the validation window only.

Each trial fits on ``ml.validation_train_user_item`` and is scored on
``ml.validation_holdout_interactions`` (the test window is never seen): ALS by NDCG@10 of the
warm users' lists on the items new to them (cold users get popularity whatever the parameters), SVD
by RMSE on the window's ratings. ALS is judged on new items because that is its job in the pipeline:
the items a user already touched come from their history (the repeat-aware model ranks them first,
and a factor model tuned to re-find them spends its capacity on what history already knows); where
no trial finds a single new item (every point scores 0), the same points are judged on every item.
The repeat-aware challenger is tuned after ALS, on the selected ALS fit: its knobs
(``repeat_weight``, ``half_life_days``, ``own_ranking``, ``own_cap``, ``related_weight``) only change
the scoring, so its trials cost no refit. Its trials are judged against a reference point on the
same users, paired: a point replaces the reference only when its lead exceeds the noise of the
per-user differences, counted for how many points were tried (``selected_trial``,
``reference_margin_for``). Lists are scored under the shop's repurchase policy
(``settings.repurchase_policy``: bought items excluded unless it is on), as evaluation and publishing
score them. Every trial is appended to
``ml.tuning_runs``; the best of each model is marked ``selected`` and becomes the defaults of the
next training run (``use_tuned`` in the model's Config), read from the warehouse so nobody copies
numbers by hand.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist

import duckdb
import numpy as np
import pandas as pd
from dagster import Config
from pydantic import Field

from recsys_dagster.evaluate.metrics import per_user_ranking, rmse, standard_error_of_mean
from recsys_dagster.models.als import AlsConfig, fit_als
from recsys_dagster.models.artifacts import FitArrays
from recsys_dagster.models.registry import LoadedModel, purchased_pairs
from recsys_dagster.models.repeat import OWN_FIRST_WITH_RELATED, RepeatAwareConfig, item_similarity, with_own_history
from recsys_dagster.models.svd import SvdConfig, fit_svd, predict_svd, validation_ratings
from recsys_dagster.models.validation import VALIDATION_HOLDOUT_TABLE, VALIDATION_TRAIN_TABLE
from recsys_dagster.relations import registered
from recsys_dagster.settings import repurchase_policy

TUNING_DDL = """
CREATE SCHEMA IF NOT EXISTS ml;
CREATE TABLE IF NOT EXISTS ml.tuning_runs (
    run_id VARCHAR, model VARCHAR, trial INTEGER, params_json VARCHAR, metric VARCHAR, value DOUBLE,
    selected BOOLEAN, tuned_at TIMESTAMP
);
"""

#: ``event_weights`` (view, addtocart, transaction, rating; ``AlsConfig``): None = the mart's strength
#: (dbt's 1, 3, 5, 1); every event alike (1, 1, 1, 1), for logs where a click says as much about taste
#: as a purchase and dbt's weights only add the noise of rare events; purchases first (0.5, 3, 15, 1),
#: for click-heavy logs (YooChoose, Taobao) where many views of one item would otherwise outweigh
#: the purchase that shows what the user wanted; views only as a tie-breaker (0.1, 2, 10, 1), intent
#: almost alone. No weight is 0: a pair of views only would leave the matrix, and its user the model.
#: The rating keeps dbt's weight 1 throughout (no option has a reason to move it), so on a ratings-only
#: log every option is the mart's strength, and on a purchases-only log one only rescales it, as
#: ``alpha`` does: the dimension matters where a log mixes event types.
ALS_GRID = {"factors": [32, 64, 128], "regularization": [0.01, 0.05, 0.5], "alpha": [1.0, 10.0, 40.0],
            "iterations": [15, 30], "weighting": ["none", "bm25", "tfidf"],
            "event_weights": [None, [1.0, 1.0, 1.0, 1.0], [0.5, 3.0, 15.0, 1.0], [0.1, 2.0, 10.0, 1.0]]}
SVD_GRID = {"n_factors": [50, 100, 200], "n_epochs": [40, 80], "lr_all": [0.005, 0.01], "reg_all": [0.05, 0.1]}
#: The repeat-aware knobs (models/repeat.py); a day is 1440 invoices on Online Retail's invoice clock.
REPEAT_GRID = {"repeat_weight": [0.3, 0.6, 0.9, 0.999], "half_life_days": [0.05, 1.0, 14.0],
               "own_ranking": ["intensity", "recency", "both", "sequence", "sequence_steep"], "own_cap": [0, 3, 10, 1000],
               "related_weight": [0.0, 0.25, 0.5, 0.75]}


def grid_size(grid: dict[str, list]) -> int:
    """How many points ``grid`` has: the most distinct trials a search can draw from it."""
    return math.prod(len(values) for values in grid.values())


class TuningConfig(Config):
    """The budget: how many grid points per model are tried (sampled with ``seed``, reproducibly)."""

    als_trials: int = Field(default=4, ge=1, le=grid_size(ALS_GRID))
    svd_trials: int = Field(default=4, ge=1, le=grid_size(SVD_GRID))
    repeat_trials: int = Field(default=12, ge=1, le=grid_size(REPEAT_GRID))
    seed: int = 42


def sampled_grid(grid: dict[str, list], trials: int, seed: int) -> list[dict[str, object]]:
    """``trials`` distinct points of the grid, the same ones for the same seed."""
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    chosen = np.random.default_rng(seed).choice(len(points), size=min(trials, len(points)), replace=False)
    return [points[i] for i in sorted(chosen)]


def warm_validation_ndcg(
    con: duckdb.DuckDBPyConnection, model: str, fit: FitArrays, repurchase: bool, new_items_only: bool = False
) -> np.ndarray:
    """NDCG@10 of each warm validation user's list of ``fit`` scored as ``model`` (owned items excluded
    unless ``repurchase``, as published), users in the window's order (the same for every trial);
    ``new_items_only``: only items new to the user count as relevant (users without one are left out)."""
    relevant = con.execute(
        f"SELECT user_id, item_id FROM {VALIDATION_HOLDOUT_TABLE} WHERE user_in_train AND NOT (seen_in_train AND $new)",
        {"new": new_items_only},
    ).df()
    if relevant.empty:
        return np.array([np.nan])
    exclude = None if repurchase else purchased_pairs(con, VALIDATION_TRAIN_TABLE)
    trial = LoadedModel(model, "trial", Path(), {}, _fits={"validation": fit})
    recs = trial.recommend(relevant["user_id"], 10, fit="validation", exclude=exclude)
    return per_user_ranking(recs, relevant, 10)["ndcg"].to_numpy()


def svd_validation_rmse(con: duckdb.DuckDBPyConnection, config: SvdConfig) -> np.ndarray:
    """[RMSE on the validation window's ratings]: one value, chosen strictly, without a noise margin."""
    rated = validation_ratings(con)
    if rated.empty:
        return np.array([np.nan])
    return np.array([rmse(rated["rating"], predict_svd(fit_svd(con, VALIDATION_TRAIN_TABLE, config), rated))])


@dataclass(frozen=True)
class Search:
    """One model's budgeted search: ``score(point)`` = the per-user values whose mean is the metric (one
    value when it has no per-user parts) for every sampled point of ``grid``, after the ``reference``
    point (trial 0) when there is one."""

    model: str
    metric: str
    higher_is_better: bool
    grid: dict[str, list]
    trials: int
    score: Callable[[dict[str, object]], np.ndarray]
    reference: dict[str, object] | None = None


def selected_trial(
    values: np.ndarray, errors: np.ndarray, higher_is_better: bool, reference_margin: float = 1.0
) -> int:
    """The first trial within one standard error (``errors`` of the best trial) of the best one (-1 if no
    trial gave a number); trial 0 (the reference) whenever the best leads it by no more than
    ``reference_margin`` standard errors.

    With a reference as trial 0 and ``errors`` the standard errors of each trial's per-user differences
    to it (``paired_errors``), a grid point must beat the reference by more than the noise of the
    window's users to replace it: a lead that small would not be there on another week's users.
    ``reference_margin`` (``reference_margin_for``) widens that bar by how many points were tried."""
    if not np.isfinite(values).any():
        return -1
    signed = values if higher_is_better else -values
    best = int(np.nanargmax(signed))
    if signed[best] - signed[0] <= reference_margin * errors[best] + 1e-12:
        return 0
    within_noise = np.flatnonzero(signed >= signed[best] - errors[best] - 1e-12)
    return int(within_noise[0])


#: The chance tuning may leave the reference although no grid point is better than it (the family-wise
#: error over all points tried, split evenly: Bonferroni).
REFERENCE_FALSE_SWITCH = 0.05


def reference_margin_for(n_challengers: int) -> float:
    """Standard errors the best of ``n_challengers`` points must lead the reference by (one-sided,
    Bonferroni at ``REFERENCE_FALSE_SWITCH``): 1.64 for one point, 2.85 for 23.

    The best of many noisy points beats the reference by chance: with 23 points whose true quality
    equals it, one leads by more than one standard error almost surely. Charging every point its
    share of the error keeps a lucky draw on the validation users from replacing a sound default."""
    return NormalDist().inv_cdf(1.0 - REFERENCE_FALSE_SWITCH / max(n_challengers, 1))


#: Fewer validation users than this and a standard error says little about the noise (the
#: rule-of-thumb for a mean's normal approximation): the reference is kept whatever the trials score.
MIN_PAIRED_USERS = 30


def paired_errors(per_user: list[np.ndarray]) -> np.ndarray:
    """Standard error of each trial's per-user differences to trial 0 (the reference; 0 for itself),
    infinite when fewer than ``MIN_PAIRED_USERS`` users judge them.

    The trials are judged on the same users, so the luck of which users fell into the window is
    shared: what is noise is how much the per-user differences vary, not how much the users do."""
    if len(per_user[0]) < MIN_PAIRED_USERS:
        return np.full(len(per_user), np.inf)
    return np.array([standard_error_of_mean(values - per_user[0]) for values in per_user])


def run_search(search: Search, run_id: str, seed: int) -> pd.DataFrame:
    """The search's trials as ``ml.tuning_runs`` rows, the chosen one ``selected`` (see ``selected_trial``)."""
    sampled = sampled_grid(search.grid, search.trials, seed)
    points = [search.reference, *(p for p in sampled if p != search.reference)] if search.reference else sampled
    per_user = [np.asarray(search.score(point), dtype=np.float64) for point in points]
    values = np.array([values.mean() for values in per_user])
    if search.reference:
        best = selected_trial(values, paired_errors(per_user), search.higher_is_better,
                              reference_margin_for(len(points) - 1))
    else:  # no reference: strictly the best
        best = selected_trial(values, np.zeros(len(points)), search.higher_is_better)
    return pd.DataFrame(
        {
            "run_id": run_id,
            "model": search.model,
            "trial": np.arange(len(points), dtype=np.int32),
            "params_json": [json.dumps(point, sort_keys=True) for point in points],
            "metric": search.metric,
            "value": values,
            "selected": np.arange(len(points)) == best,
            "tuned_at": datetime.now(UTC).replace(tzinfo=None),
        }
    )


def selected_point(trials: pd.DataFrame) -> dict[str, object]:
    """The selected trial's parameters ({} when no trial gave a number)."""
    chosen = trials.loc[trials["selected"], "params_json"]
    return json.loads(chosen.iloc[0]) if len(chosen) else {}


def repeat_search(
    con: duckdb.DuckDBPyConnection, als_point: dict[str, object], trials: int, repurchase: bool
) -> Search:
    """The repeat-aware knobs on top of the selected ALS parameters: one ALS fit and one item-item
    similarity, every trial rescores them. The reference is ``OWN_FIRST_WITH_RELATED`` (own items
    first, then ALS and co-occurrence weighed equally): the knobs must beat it beyond noise.
    Each trial's stored parameters are complete (ALS + knobs), so the next run takes them as they are."""
    als_fit = fit_als(con, VALIDATION_TRAIN_TABLE, AlsConfig(use_tuned=False, **als_point))
    similarity = item_similarity(con, VALIDATION_TRAIN_TABLE, als_fit)

    def score(point: dict[str, object]) -> np.ndarray:
        knobs = RepeatAwareConfig(use_tuned=False, **point)  # point = ALS choice + knobs
        fresh = FitArrays(als_fit.user_ids, als_fit.item_ids, dense=dict(als_fit.dense), stats=als_fit.stats)
        fit = with_own_history(con, VALIDATION_TRAIN_TABLE, fresh, knobs, similarity)
        return warm_validation_ndcg(con, "repeat_aware_model", fit, repurchase)

    grid = {**{name: [value] for name, value in als_point.items()}, **REPEAT_GRID}
    reference = {**als_point, **OWN_FIRST_WITH_RELATED}
    return Search("repeat_aware_model", "val_ndcg@10_warm", True, grid, trials, score, reference)


def als_search(con: duckdb.DuckDBPyConnection, trials: int, repurchase: bool, new_items_only: bool) -> Search:
    """ALS's search: warm validation users' NDCG@10 on the items new to them, or on every item."""
    return Search(
        "als_model", "val_ndcg@10_new_items_warm" if new_items_only else "val_ndcg@10_warm", True, ALS_GRID, trials,
        lambda point: warm_validation_ndcg(
            con, "als_model", fit_als(con, VALIDATION_TRAIN_TABLE, AlsConfig(use_tuned=False, **point)),
            repurchase, new_items_only,
        ),
    )


def als_search_trials(
    con: duckdb.DuckDBPyConnection, run_id: str, config: TuningConfig, repurchase: bool
) -> pd.DataFrame:
    """ALS's trials judged on new items; when no point finds a single one (the window's new items are
    unseen in train, so every point scores 0 and the choice would be arbitrary), the same points
    judged on every item instead."""
    trials = run_search(als_search(con, config.als_trials, repurchase, new_items_only=True), run_id, config.seed)
    if (trials["value"] > 0).any():
        return trials
    return run_search(als_search(con, config.als_trials, repurchase, new_items_only=False), run_id, config.seed)


def tune(con: duckdb.DuckDBPyConnection, run_id: str, config: TuningConfig) -> pd.DataFrame:
    """Run the budgeted searches (ALS, then repeat-aware on ALS's choice, then SVD), append every trial
    to ``ml.tuning_runs``, return the trials. Lists are scored under the shop's repurchase policy."""
    repurchase = repurchase_policy()
    svd = Search(
        "svd_model", "val_rmse", False, SVD_GRID, config.svd_trials,
        lambda point: svd_validation_rmse(con, SvdConfig(use_tuned=False, **point)),
    )
    als_trials = als_search_trials(con, run_id, config, repurchase)
    repeat = repeat_search(con, selected_point(als_trials), config.repeat_trials, repurchase)
    frames = [als_trials, run_search(repeat, run_id, config.seed), run_search(svd, run_id, config.seed)]
    trials_frame = pd.concat(frames, ignore_index=True)
    con.execute(TUNING_DDL)
    with registered(con, new_trials=trials_frame):
        con.execute("INSERT INTO ml.tuning_runs BY NAME SELECT * FROM new_trials")
    return trials_frame


def tuned_parameters(con: duckdb.DuckDBPyConnection, model: str) -> dict[str, object]:
    """The selected parameters of the latest tuning run of ``model`` ({} when never tuned)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ml' AND table_name = 'tuning_runs'"
    ).fetchone()[0]
    if not exists:
        return {}
    row = con.execute(
        "SELECT params_json FROM ml.tuning_runs WHERE model = ? AND selected ORDER BY tuned_at DESC LIMIT 1", [model]
    ).fetchone()
    return json.loads(row[0]) if row else {}


def with_tuned_defaults(con: duckdb.DuckDBPyConnection, model: str, config: Config) -> Config:
    """``config`` with the stored tuned parameters applied, when it asks for them (``use_tuned``)."""
    if not getattr(config, "use_tuned", False):
        return config
    return config.model_copy(update=tuned_parameters(con, model))
