"""The collapse check on the training mart: real Online Retail purchases pass, night after night.

Online Retail has one event type by nature (purchases): comparing with a fixed mix would fail it every
night, comparing with its own last passing profile never does. One real ``dbt build`` plus the check,
then the check alone as the next night's run; the rules themselves are tested on small mixes.
(The failing nights of a whole refresh run are in tests/faults/test_model_faults.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetCheckEvaluation, AssetSelection, ExecuteInProcessResult, materialize
from pydantic import ValidationError

from recsys_dagster.features.checks import (
    COLLAPSE_CHECK,
    TrainingDataCheckConfig,
    TrainingShape,
    collapse_problems,
    training_data_not_collapsed,
)
from recsys_dagster.features.dbt import recsys_dbt_assets

WarehouseRows = Callable[..., list[tuple]]
EVENT_TYPES = ["addtocart", "rating", "transaction", "view"]


def only_evaluation(result: ExecuteInProcessResult) -> AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.asset_check_key.name == COLLAPSE_CHECK]
    return evaluation


@pytest.fixture(scope="module")
def two_nights(
    online_retail_warehouse: Path, feature_resources: dict[str, object]
) -> tuple[ExecuteInProcessResult, ExecuteInProcessResult]:
    """Night 1 builds the marts and checks them; night 2 checks the same purchases-only data again."""
    assets = [recsys_dbt_assets, training_data_not_collapsed]
    first = materialize(assets, resources=feature_resources)
    check_only = AssetSelection.checks(training_data_not_collapsed)
    second = materialize(assets, resources=feature_resources, selection=check_only)
    return first, second


def test_a_purchases_only_shop_passes_against_its_own_history(
    two_nights: tuple[ExecuteInProcessResult, ExecuteInProcessResult],
    online_retail_warehouse: Path,
    warehouse_rows: WarehouseRows,
) -> None:
    first, second = (only_evaluation(result) for result in two_nights)
    assert first.passed and second.passed
    assert first.metadata["previous_mix"].value == "(no passing run yet)"
    assert second.metadata["previous_mix"].value == second.metadata["mix"].value == "transaction 100.0%"
    [(n_users, n_items, n_pairs)] = warehouse_rows(
        online_retail_warehouse,
        "SELECT count(DISTINCT user_id), count(DISTINCT item_id), count(*) FROM fct_train_user_item",
    )
    assert (second.metadata["users"].value, second.metadata["items"].value) == (n_users, n_items)
    assert second.metadata["pairs"].value == n_pairs and n_users >= 2 and n_items >= 2


def test_every_check_records_its_profile(
    two_nights: tuple[ExecuteInProcessResult, ExecuteInProcessResult],
    online_retail_warehouse: Path,
    warehouse_rows: WarehouseRows,
) -> None:
    rows = warehouse_rows(
        online_retail_warehouse,
        "SELECT run_id, event_type, share, passed FROM ml.training_data_profiles ORDER BY checked_at, event_type",
    )
    run_ids = [result.run_id for result in two_nights]
    expected = [(run_id, event_type, float(event_type == "transaction"), True)
                for run_id in run_ids for event_type in EVENT_TYPES]
    assert rows == expected


def shape(n_users: int, n_items: int, **n_events: int) -> TrainingShape:
    """A training mart's shape with the given events per type (the other types absent)."""
    counts = pd.Series({event_type: n_events.get(event_type, 0) for event_type in EVENT_TYPES})
    total = counts.sum()
    mix = pd.DataFrame({"event_type": counts.index, "n_events": counts.values,
                        "share": counts.values / total if total else 0.0})
    return TrainingShape(n_users, n_items, n_users * n_items, mix)


SHOP = shape(100, 500, view=9000, addtocart=700, transaction=292, rating=8)  # ratings: 0.08%


def test_a_healthy_night_has_no_problems() -> None:
    assert collapse_problems(SHOP, SHOP.mix, TrainingDataCheckConfig()) == []


def test_the_first_night_is_only_held_to_the_minimums() -> None:
    no_history = SHOP.mix.iloc[0:0]
    assert collapse_problems(shape(2, 2, view=3), no_history, TrainingDataCheckConfig()) == []
    assert collapse_problems(shape(1, 0), no_history, TrainingDataCheckConfig()) == [
        "only 1 distinct user(s) in fct_train_user_item (minimum 2)",
        "only 0 distinct item(s) in fct_train_user_item (minimum 2)",
    ]


def test_minimums_are_configurable() -> None:
    assert collapse_problems(SHOP, SHOP.mix, TrainingDataCheckConfig(min_users=101)) == [
        "only 100 distinct user(s) in fct_train_user_item (minimum 101)"
    ]


def test_a_vanished_event_type_that_mattered_fails() -> None:
    views_only = shape(100, 500, view=9000)
    [problem] = collapse_problems(views_only, SHOP.mix, TrainingDataCheckConfig())
    assert problem.startswith("event type(s) addtocart (7.0%), transaction (2.9%) of the last passing run's")
    assert "accept_event_type_changes: true" in problem


def test_a_vanished_event_type_below_the_share_threshold_is_noise() -> None:
    no_ratings = shape(100, 500, view=9000, addtocart=700, transaction=292)
    assert collapse_problems(no_ratings, SHOP.mix, TrainingDataCheckConfig()) == []
    [problem] = collapse_problems(no_ratings, SHOP.mix, TrainingDataCheckConfig(min_event_type_share=0.0001))
    assert "rating (0.1%)" in problem


def test_an_accepted_mix_change_still_needs_the_minimums() -> None:
    accept = TrainingDataCheckConfig(accept_event_type_changes=True)
    assert collapse_problems(shape(100, 500, view=9000), SHOP.mix, accept) == []
    assert collapse_problems(shape(1, 500, view=9000), SHOP.mix, accept) == [
        "only 1 distinct user(s) in fct_train_user_item (minimum 2)"
    ]


@pytest.mark.parametrize(
    "bad",
    [{"min_users": 0}, {"min_items": -1}, {"min_event_type_share": 0}, {"min_event_type_share": 1.5},
     {"min_users": "2; DROP TABLE ml.training_data_profiles"}, {"min_event_type_share": "nan"}],
)
def test_config_refuses_values_that_would_disable_or_break_the_check(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TrainingDataCheckConfig(**bad)
