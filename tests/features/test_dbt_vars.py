"""The run config of the dbt assets: event weights and holdout fraction reach dbt and are validated.

Real REES46 clickstream (views, carts, purchases) plus real Amazon ratings, so every term of the
strength formula is exercised; raw_items is left empty, as ingest leaves it for catalog-less inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import ExecuteInProcessResult, RunConfig, materialize
from dagster_dbt import DagsterDbtCliRuntimeError, DbtCliResource

from recsys_dagster.features.dbt import DbtBuildConfig, recsys_dbt_assets

WEIGHTS = {"view": 0.5, "addtocart": 2.0, "transaction": 7.0, "rating": 1.5}
DEFAULT_WEIGHTS = DbtBuildConfig().event_weights

WarehouseRows = Callable[..., list[tuple]]


def materialize_with(
    config: DbtBuildConfig, resources: dict[str, object], **kwargs: object
) -> ExecuteInProcessResult:
    run_config = RunConfig(ops={recsys_dbt_assets.op.name: config})
    return materialize([recsys_dbt_assets], resources=resources, run_config=run_config, **kwargs)


@pytest.fixture(scope="module")
def weighted_build(multi_event_warehouse: Path, feature_resources: dict[str, object]) -> ExecuteInProcessResult:
    return materialize_with(DbtBuildConfig(event_weights=WEIGHTS, holdout_fraction=0.3), feature_resources)


def test_config_defaults_are_the_dbt_project_vars() -> None:
    config = DbtBuildConfig()
    assert config.event_weights == {"view": 1, "addtocart": 3, "transaction": 5, "rating": 1}
    assert config.holdout_fraction == 0.2


@pytest.mark.parametrize(
    ("user_id", "item_id", "expected"),
    [
        # REES46, 2019-10-01 02:25-02:40: 6 views, 3 carts, 1 purchase -> 0.5*6 + 2*3 + 7*1 = 16
        ("550443776", "1004562", (6, 3, 1, 0, None, 16.0)),
        # Amazon Electronics: one rating of 1.0 -> 1.5 * 1.0
        ("A2NWSAGRHCP8N5", "0439886341", (0, 0, 0, 1, 1.0, 1.5)),
        ("AKM1MP6P0OYPR", "0132793040", (0, 0, 0, 1, 5.0, 7.5)),
    ],
)
def test_strength_of_hand_checked_pairs_uses_the_configured_weights(
    weighted_build: ExecuteInProcessResult,
    multi_event_warehouse: Path,
    warehouse_rows: WarehouseRows,
    user_id: str,
    item_id: str,
    expected: tuple,
) -> None:
    rows = warehouse_rows(
        multi_event_warehouse,
        "select n_views, n_addtocarts, n_transactions, n_ratings, last_rating, strength "
        "from fct_user_item_interactions where user_id = $user_id and item_id = $item_id",
        {"user_id": user_id, "item_id": item_id},
    )
    assert rows == [expected]


def test_every_event_is_counted_once_per_type(
    weighted_build: ExecuteInProcessResult, multi_event_warehouse: Path, warehouse_rows: WarehouseRows
) -> None:
    [counts] = warehouse_rows(
        multi_event_warehouse,
        "select sum(n_views), sum(n_addtocarts), sum(n_transactions), sum(n_ratings) from fct_user_item_interactions",
    )
    assert counts == (17_045, 165, 214, 2_000)  # REES46 mix (PROVENANCE.md) + 2,000 Amazon ratings


def test_holdout_fraction_moves_the_cutoff(
    weighted_build: ExecuteInProcessResult, multi_event_warehouse: Path, warehouse_rows: WarehouseRows
) -> None:
    [(train_share,)] = warehouse_rows(
        multi_event_warehouse,
        "select avg(cast(event_time < (select cutoff_time from int_holdout_cutoff) as double)) "
        "from validated_interactions",
    )
    assert 0.65 < train_share < 0.7


def test_without_a_catalog_every_item_still_gets_a_dim_row(
    weighted_build: ExecuteInProcessResult, multi_event_warehouse: Path, warehouse_rows: WarehouseRows
) -> None:
    [(items, distinct_items, in_catalog, named)] = warehouse_rows(
        multi_event_warehouse,
        """
        select
            count(*),
            (select count(distinct item_id) from validated_interactions),
            count(*) filter (where in_catalog),
            count(name)
        from dim_items
        """,
    )
    assert (items, in_catalog, named) == (distinct_items, 0, 0)


def test_a_negative_weight_fails_the_dagster_run_before_any_model_is_built(
    multi_event_warehouse: Path, feature_resources: dict[str, object]
) -> None:
    config = DbtBuildConfig(event_weights={**DEFAULT_WEIGHTS, "view": -1.0})
    result = materialize_with(config, feature_resources, raise_on_error=False)
    assert not result.success
    assert result.get_asset_materialization_events() == []
    [failure] = result.get_step_failure_events()
    assert "var event_weights['view'] must be a number >= 0, got: -1.0" in str(failure.step_failure_data.error)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (DbtBuildConfig(event_weights={**DEFAULT_WEIGHTS, "click": 1.0}), "unknown event types ['click']"),
        (DbtBuildConfig(event_weights={"view": 1.0}), "missing a weight for ['addtocart', 'transaction', 'rating']"),
        (DbtBuildConfig(holdout_fraction=1.0), "holdout_fraction must be a number strictly between 0 and 1"),
    ],
    ids=["unknown-event-type", "missing-weight", "holdout-fraction-1"],
)
def test_bad_vars_are_compilation_errors(
    tmp_path: Path, dbt_resource: DbtCliResource, config: DbtBuildConfig, message: str
) -> None:
    # `dbt parse` renders every model, so it stops on the same error as the build, without Dagster.
    parse = dbt_resource.cli(["parse", "--vars", config.dbt_vars_json()], target_path=tmp_path)
    with pytest.raises(DagsterDbtCliRuntimeError, match=re.escape(message)):
        parse.wait()
