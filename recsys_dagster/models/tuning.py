"""A small, budgeted hyperparameter search, judged on the validation window only.

Each trial fits on ``ml.validation_train_user_item`` and is scored on
``ml.validation_holdout_interactions`` (the test window is never seen): ALS by NDCG@10 of the
warm users' lists (cold users get popularity whatever the parameters), SVD by RMSE on the window's
ratings. Every trial is appended to ``ml.tuning_runs``; the best of each model is marked
``selected`` and becomes the defaults of the next training run (``use_tuned`` in the model's
Config), read from the warehouse so nobody copies numbers by hand.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from dagster import Config
from pydantic import Field

from recsys_dagster.evaluate.metrics import ranking_metrics, rmse
from recsys_dagster.models.als import AlsConfig, fit_als
from recsys_dagster.models.registry import LoadedModel, purchased_pairs
from recsys_dagster.models.svd import SvdConfig, fit_svd, predict_svd, validation_ratings
from recsys_dagster.models.validation import VALIDATION_HOLDOUT_TABLE, VALIDATION_TRAIN_TABLE

TUNING_DDL = """
CREATE SCHEMA IF NOT EXISTS ml;
CREATE TABLE IF NOT EXISTS ml.tuning_runs (
    run_id VARCHAR, model VARCHAR, trial INTEGER, params_json VARCHAR, metric VARCHAR, value DOUBLE,
    selected BOOLEAN, tuned_at TIMESTAMP
);
"""

ALS_GRID = {"factors": [32, 64, 128], "regularization": [0.01, 0.05, 0.1], "alpha": [1.0, 10.0, 40.0],
            "iterations": [15, 30]}
SVD_GRID = {"n_factors": [20, 50, 100], "n_epochs": [20, 40], "lr_all": [0.005, 0.01], "reg_all": [0.02, 0.1]}
#: Which tuned model's parameters a model takes (the repeat-aware challenger blends ALS).
TUNED_SOURCE = {"als_model": "als_model", "repeat_aware_model": "als_model", "svd_model": "svd_model"}


class TuningConfig(Config):
    """The budget: how many grid points per model are tried (sampled with ``seed``, reproducibly)."""

    als_trials: int = Field(default=4, ge=1, le=54)
    svd_trials: int = Field(default=4, ge=1, le=24)
    seed: int = 42


def sampled_grid(grid: dict[str, list], trials: int, seed: int) -> list[dict[str, object]]:
    """``trials`` distinct points of the grid, the same ones for the same seed."""
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    chosen = np.random.default_rng(seed).choice(len(points), size=min(trials, len(points)), replace=False)
    return [points[i] for i in sorted(chosen)]


def als_validation_ndcg(con: duckdb.DuckDBPyConnection, config: AlsConfig) -> float:
    """NDCG@10 of the warm validation users' ALS lists (owned items excluded, as published)."""
    fit = fit_als(con, VALIDATION_TRAIN_TABLE, config)
    relevant = con.execute(f"SELECT user_id, item_id FROM {VALIDATION_HOLDOUT_TABLE} WHERE user_in_train").df()
    if relevant.empty:
        return float("nan")
    trial = LoadedModel("als_model", "trial", Path(), {}, _fits={"validation": fit})
    recs = trial.recommend(relevant["user_id"], 10, fit="validation", exclude=purchased_pairs(con, VALIDATION_TRAIN_TABLE))
    return ranking_metrics(recs, relevant, 10, fit.n_items)["ndcg@10"]


def svd_validation_rmse(con: duckdb.DuckDBPyConnection, config: SvdConfig) -> float:
    rated = validation_ratings(con)
    if rated.empty:
        return float("nan")
    return rmse(rated["rating"], predict_svd(fit_svd(con, VALIDATION_TRAIN_TABLE, config), rated))


def tune(con: duckdb.DuckDBPyConnection, run_id: str, config: TuningConfig) -> pd.DataFrame:
    """Run the budgeted search, append every trial to ``ml.tuning_runs``, return the trials."""
    searches = [
        ("als_model", "val_ndcg@10_warm", True, AlsConfig, ALS_GRID, config.als_trials, als_validation_ndcg),
        ("svd_model", "val_rmse", False, SvdConfig, SVD_GRID, config.svd_trials, svd_validation_rmse),
    ]
    frames = []
    for model, metric, higher_is_better, config_class, grid, trials, score in searches:
        params = sampled_grid(grid, trials, config.seed)
        values = np.array([score(con, config_class(use_tuned=False, **point)) for point in params], dtype=np.float64)
        best = int(np.nanargmax(values) if higher_is_better else np.nanargmin(values)) if np.isfinite(values).any() else -1
        frames.append(
            pd.DataFrame(
                {
                    "run_id": run_id,
                    "model": model,
                    "trial": np.arange(len(params), dtype=np.int32),
                    "params_json": [json.dumps(point, sort_keys=True) for point in params],
                    "metric": metric,
                    "value": values,
                    "selected": np.arange(len(params)) == best,
                    "tuned_at": datetime.now(UTC).replace(tzinfo=None),
                }
            )
        )
    trials_frame = pd.concat(frames, ignore_index=True)
    con.execute(TUNING_DDL)
    con.register("new_trials", trials_frame)
    try:
        con.execute("INSERT INTO ml.tuning_runs BY NAME SELECT * FROM new_trials")
    finally:
        con.unregister("new_trials")
    return trials_frame


def tuned_parameters(con: duckdb.DuckDBPyConnection, model: str) -> dict[str, object]:
    """The selected parameters of the latest tuning run of ``model``'s source ({} when never tuned)."""
    source = TUNED_SOURCE.get(model)
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ml' AND table_name = 'tuning_runs'"
    ).fetchone()[0]
    if source is None or not exists:
        return {}
    row = con.execute(
        "SELECT params_json FROM ml.tuning_runs WHERE model = ? AND selected ORDER BY tuned_at DESC LIMIT 1", [source]
    ).fetchone()
    return json.loads(row[0]) if row else {}


def with_tuned_defaults(con: duckdb.DuckDBPyConnection, model: str, config: Config) -> Config:
    """``config`` with the stored tuned parameters applied, when it asks for them (``use_tuned``)."""
    if not getattr(config, "use_tuned", False):
        return config
    return config.model_copy(update=tuned_parameters(con, model))
