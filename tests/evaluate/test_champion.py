"""Champion choice on validation NDCG@10 of the served users and the gate's verdict, on hand-written rows."""

from datetime import datetime
from pathlib import Path

import duckdb
import pytest

import numpy as np
import pandas as pd

from recsys_dagster.evaluate.assets import EVALUATION_DDL, MIN_SERVED_USERS, judged_population, served_scores
from recsys_dagster.evaluate.champion import (
    CHAMPION_CANDIDATES,
    ChampionChoice,
    gate_verdict,
    select_champion,
)
from recsys_dagster.models.registry import MODEL_NAMES
from recsys_dagster.settings import MIN_ITEMS_ENV, REPURCHASE_ENV, min_items_for_model, repurchase_policy

ROWS = [
    # run_id, model, model_version, metric, value, evaluated_at
    ("old", "als_model", "v-als-1", "val_ndcg@10_served", 0.40, datetime(2024, 1, 1)),
    ("old", "popularity_model", "v-pop-1", "val_ndcg@10_served", 0.10, datetime(2024, 1, 1)),
    ("new", "als_model", "v-als-2", "val_ndcg@10_served", 0.20, datetime(2024, 2, 1)),
    ("new", "als_model", "v-als-2", "ndcg@10", 0.90, datetime(2024, 2, 1)),  # test window: never chooses
    ("new", "svd_model", "v-svd-2", "val_ndcg@10_served", 0.25, datetime(2024, 2, 1)),
    ("new", "svd_model", "v-svd-2", "precision@10", 0.90, datetime(2024, 2, 1)),
    ("new", "item_knn_model", "v-knn-2", "val_ndcg@10_served", 0.25, datetime(2024, 2, 1)),
    ("new", "some_experiment", "v-x", "val_ndcg@10_served", 0.99, datetime(2024, 2, 1)),
    ("tie", "popularity_model", "v-pop-3", "val_ndcg@10_served", 0.30, datetime(2023, 1, 1)),
    ("tie", "als_model", "v-als-3", "val_ndcg@10_served", 0.30, datetime(2023, 1, 1)),
    ("no-ndcg", "als_model", "v-als-4", "recall@10", 0.30, datetime(2022, 1, 1)),
    # popularity leads by 0.03, less than its standard error 0.04: noise; a lead of 0.13 is not.
    ("noisy", "repeat_aware_model", "v-rep-5", "val_ndcg@10_served", 0.30, datetime(2021, 1, 1)),
    ("noisy", "repeat_aware_model", "v-rep-5", "val_ndcg@10_served_se", 0.02, datetime(2021, 1, 1)),
    ("noisy", "popularity_model", "v-pop-5", "val_ndcg@10_served", 0.33, datetime(2021, 1, 1)),
    ("noisy", "popularity_model", "v-pop-5", "val_ndcg@10_served_se", 0.04, datetime(2021, 1, 1)),
    ("clear", "repeat_aware_model", "v-rep-6", "val_ndcg@10_served", 0.20, datetime(2020, 1, 1)),
    ("clear", "popularity_model", "v-pop-6", "val_ndcg@10_served", 0.33, datetime(2020, 1, 1)),
    ("clear", "popularity_model", "v-pop-6", "val_ndcg@10_served_se", 0.04, datetime(2020, 1, 1)),
    # SVD leads popularity by 0.03 < its standard error 0.04: noise; by 0.05 it is not.
    ("svd-noisy", "svd_model", "v-svd-7", "val_ndcg@10_served", 0.33, datetime(2019, 1, 1)),
    ("svd-noisy", "svd_model", "v-svd-7", "val_ndcg@10_served_se", 0.04, datetime(2019, 1, 1)),
    ("svd-noisy", "popularity_model", "v-pop-7", "val_ndcg@10_served", 0.30, datetime(2019, 1, 1)),
    ("svd-clear", "svd_model", "v-svd-8", "val_ndcg@10_served", 0.35, datetime(2018, 1, 1)),
    ("svd-clear", "svd_model", "v-svd-8", "val_ndcg@10_served_se", 0.04, datetime(2018, 1, 1)),
    ("svd-clear", "popularity_model", "v-pop-8", "val_ndcg@10_served", 0.30, datetime(2018, 1, 1)),
]


@pytest.fixture()
def con(tmp_path: Path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        connection.execute(EVALUATION_DDL)
        connection.executemany("INSERT INTO ml.evaluation_runs VALUES (?, ?, ?, ?, ?, ?)", ROWS)
        yield connection


def test_latest_run_best_validation_ndcg_among_the_candidates(con) -> None:
    # svd and item_knn tie at 0.25 in the latest run: item_knn comes first in the candidate order;
    # the experiment's 0.99 is not a candidate, test-window and precision rows do not count.
    assert select_champion(con) == ChampionChoice("new", "item_knn_model", "v-knn-2", 0.25)


def test_a_given_run_and_a_restricted_candidate_list(con) -> None:
    assert select_champion(con, "old").model_version == "v-als-1"
    assert select_champion(con, "tie").model == "als_model"
    assert select_champion(con, "new", candidates=["als_model", "popularity_model"]).model_version == "v-als-2"


def test_a_lead_within_one_standard_error_does_not_win(con) -> None:
    assert select_champion(con, "noisy") == ChampionChoice("noisy", "repeat_aware_model", "v-rep-5", 0.30)
    assert select_champion(con, "noisy", noise_se=0.0).model == "popularity_model"  # strictly the best
    assert select_champion(con, "noisy", noise_se=2.0).model == "repeat_aware_model"
    assert select_champion(con, "clear").model == "popularity_model"  # 0.20 < 0.33 - 0.04


def test_svd_wins_only_by_a_lead_beyond_noise(con) -> None:
    """SVD comes after every other candidate, the popularity baselines too: a tie or a lead within noise loses."""
    assert CHAMPION_CANDIDATES[-1] == "svd_model"
    assert select_champion(con, "new", candidates=["svd_model", "popularity_model", "item_knn_model"]).model == (
        "item_knn_model"
    )
    assert select_champion(con, "svd-noisy") == ChampionChoice("svd-noisy", "popularity_model", "v-pop-7", 0.30)
    assert select_champion(con, "svd-noisy", noise_se=0.0).model == "svd_model"  # strictly the best
    assert select_champion(con, "svd-clear") == ChampionChoice("svd-clear", "svd_model", "v-svd-8", 0.35)


def test_every_trained_model_is_a_candidate() -> None:
    assert set(CHAMPION_CANDIDATES) == set(MODEL_NAMES)


def test_clear_errors_without_a_usable_run(con, tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="val_ndcg@10"):
        select_champion(con, "no-ndcg")
    with pytest.raises(LookupError, match="val_ndcg@10"):
        select_champion(con, "never-ran")
    with duckdb.connect(str(tmp_path / "empty.duckdb")) as empty, pytest.raises(LookupError, match="model_evaluation"):
        select_champion(empty)


@pytest.mark.parametrize(
    ("value", "baseline", "passed"),
    [
        (0.05, None, True),  # nothing published on this window yet
        (0.081, ("run-1", 0.10), True),  # 19% below: allowed
        (0.080, ("run-1", 0.10), True),  # exactly 20% below: allowed
        (0.079, ("run-1", 0.10), False),  # 21% below: refused
        (0.50, ("run-1", 0.10), True),
        (0.0, ("run-1", 0.0), True),
    ],
)
def test_gate_allows_at_most_a_20_percent_drop(value: float, baseline, passed: bool) -> None:
    verdict, reason = gate_verdict(ChampionChoice("run-2", "als_model", "v", value), baseline, 0.2)
    assert verdict is passed
    assert ("below the last published run run-1" in reason) is (not passed)


@pytest.mark.parametrize(("value", "policy"), [(None, False), ("", False), ("true", True), (" Yes ", True),
                                               ("1", True), ("off", False), ("FALSE", False)])
def test_one_repurchase_policy_per_shop(value: str | None, policy: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tuning and evaluation read the same setting; unset means bought items never come back."""
    if value is None:
        monkeypatch.delenv(REPURCHASE_ENV, raising=False)
    else:
        monkeypatch.setenv(REPURCHASE_ENV, value)
    assert repurchase_policy() is policy


def test_a_misspelt_repurchase_policy_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REPURCHASE_ENV, "sometimes")
    with pytest.raises(ValueError, match="RECSYS_REPURCHASE='sometimes' is not a boolean"):
        repurchase_policy()


def per_user_ndcg(n_served: int) -> tuple[pd.DataFrame, np.ndarray]:
    """``n_served`` served users scoring 1.0 and 0.5 in turn, beside 10 newcomers scoring 0 and 0.25 in
    turn (they get the fallback list whoever is champion)."""
    served = [f"s{i}" for i in range(n_served)]
    per_user = pd.DataFrame({
        "user_id": served + [f"new{i}" for i in range(10)],
        "ndcg": [1.0 - 0.5 * (i % 2) for i in range(n_served)] + [0.25 * (i % 2) for i in range(10)],
    })
    return per_user, np.array([*served, "never-in-the-window"])


def test_the_champion_metric_counts_the_users_served_the_models_list() -> None:
    per_user, served_users = per_user_ndcg(MIN_SERVED_USERS)  # 30 served: 15 x 1.0, 15 x 0.5
    served = served_scores(per_user, served_users, "val_")
    assert served == pytest.approx({
        "val_ndcg@10_served": 0.75, "val_ndcg@10_served_se": np.sqrt(30 * 0.0625 / 29 / 30),
        "val_n_served_users": 30, "val_n_judged_users": 30,
    })
    assert judged_population(served).startswith("served users: 30 with at least 2 items")


@pytest.mark.parametrize(("n_served", "mean_of_everyone"), [
    (MIN_SERVED_USERS - 1, (15 * 1.0 + 14 * 0.5 + 5 * 0.25) / 39),
    (1, (1.0 + 5 * 0.25) / 11),  # the bundled sample's case: one user would decide alone, with a standard error of 0
    (0, 5 * 0.25 / 10),
])
def test_too_few_served_users_judge_every_user(n_served: int, mean_of_everyone: float) -> None:
    per_user, served_users = per_user_ndcg(n_served)
    everyone = served_scores(per_user, served_users, "val_")
    n_users = n_served + 10
    assert everyone == pytest.approx({
        "val_ndcg@10_served": mean_of_everyone,
        "val_ndcg@10_served_se": per_user["ndcg"].std(ddof=1) / np.sqrt(n_users),
        "val_n_served_users": n_served, "val_n_judged_users": n_users,
    })
    assert everyone["val_ndcg@10_served_se"] > 0
    assert judged_population(everyone) == (
        f"all {n_users} validation users: only {n_served} served, fewer than MIN_SERVED_USERS=30"
    )


@pytest.mark.parametrize(("value", "expected"), [(None, 2), ("", 2), ("1", 1), (" 3 ", 3), ("0", None), ("-1", None),
                                                 ("two", None), ("1.5", None)])
def test_one_minimum_of_items_for_the_models_list_per_shop(
    value: str | None, expected: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluation and publishing read the same setting; a value that is not a whole number >= 1 is refused."""
    if value is None:
        monkeypatch.delenv(MIN_ITEMS_ENV, raising=False)
    else:
        monkeypatch.setenv(MIN_ITEMS_ENV, value)
    if expected is None:
        with pytest.raises(ValueError, match=MIN_ITEMS_ENV):
            min_items_for_model()
    else:
        assert min_items_for_model() == expected
