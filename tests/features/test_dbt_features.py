"""The dbt feature layer built by Dagster on real Online Retail purchases (default event weights).

One real ``dbt build`` per module (through ``materialize``, as the pipeline runs it); the tests
then check the tables it wrote and the asset checks it reported.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from dagster import AssetKey, ExecuteInProcessResult, materialize

from recsys_dagster.features.dbt import recsys_dbt_assets

MODELS = {
    "stg_interactions",
    "int_holdout_cutoff",
    "fct_user_item_interactions",
    "fct_train_user_item",
    "fct_holdout_interactions",
    "dim_items",
    "dim_users",
}

WarehouseRows = Callable[..., list[tuple]]


@pytest.fixture(scope="module")
def build(online_retail_warehouse: Path, feature_resources: dict[str, object]) -> ExecuteInProcessResult:
    return materialize([recsys_dbt_assets], resources=feature_resources)


def test_every_model_is_an_asset_in_group_features_downstream_of_the_python_assets() -> None:
    assert {key.to_user_string() for key in recsys_dbt_assets.keys} == MODELS
    assert set(recsys_dbt_assets.group_names_by_key.values()) == {"features"}
    upstream = recsys_dbt_assets.dependency_keys - recsys_dbt_assets.keys
    assert upstream == {AssetKey("validated_interactions"), AssetKey("raw_items")}


def test_build_materializes_every_model_with_table_row_counts(
    build: ExecuteInProcessResult, online_retail_warehouse: Path, warehouse_rows: WarehouseRows
) -> None:
    materializations = {m.asset_key.to_user_string(): m for m in build.asset_materializations_for_node("recsys_dbt_assets")}
    assert set(materializations) == MODELS
    [(n_pairs,)] = warehouse_rows(online_retail_warehouse, "select count(*) from fct_user_item_interactions")
    assert materializations["fct_user_item_interactions"].metadata["dagster/row_count"].value == n_pairs
    assert materializations["int_holdout_cutoff"].metadata["dagster/row_count"].value == 1


def test_every_dbt_test_arrives_as_a_passing_asset_check(build: ExecuteInProcessResult) -> None:
    evaluations = build.get_asset_check_evaluations()
    assert {evaluation.asset_check_key for evaluation in evaluations} == set(recsys_dbt_assets.check_keys)
    assert [e.asset_check_key.name for e in evaluations if not e.passed] == []
    checked = {(e.asset_key.to_user_string(), e.asset_check_key.name) for e in evaluations}
    assert ("fct_holdout_interactions", "assert_train_and_holdout_do_not_overlap") in checked
    assert ("int_holdout_cutoff", "exactly_one_row_int_holdout_cutoff_") in checked


def test_one_fact_row_per_distinct_user_item_pair(
    build: ExecuteInProcessResult, online_retail_warehouse: Path, warehouse_rows: WarehouseRows
) -> None:
    [(facts, distinct_pairs, events, transactions)] = warehouse_rows(
        online_retail_warehouse,
        """
        select
            (select count(*) from fct_user_item_interactions),
            (select count(distinct (user_id, item_id)) from validated_interactions),
            (select count(*) from validated_interactions),
            (select sum(n_transactions) from fct_user_item_interactions)
        """,
    )
    assert facts == distinct_pairs == 6_897
    assert transactions == events == 7_609


def test_strength_of_a_hand_checked_pair_uses_the_default_weights(
    build: ExecuteInProcessResult, online_retail_warehouse: Path, warehouse_rows: WarehouseRows
) -> None:
    # Customer 17850 bought 85123A (WHITE HANGING HEART T-LIGHT HOLDER) on 17 invoice lines
    # between 2010-12-01 08:26 and 2010-12-02 15:26 (grep of the CSV); transaction weight 5.
    rows = warehouse_rows(
        online_retail_warehouse,
        "select n_views, n_addtocarts, n_transactions, n_ratings, last_rating, first_event_time, "
        "last_event_time, strength from fct_user_item_interactions where user_id = '17850' and item_id = '85123A'",
    )
    assert rows == [(0, 0, 17, 0, None, datetime(2010, 12, 1, 8, 26), datetime(2010, 12, 2, 15, 26), 85.0)]


def test_train_and_holdout_split_at_the_cutoff_without_overlap(
    build: ExecuteInProcessResult, online_retail_warehouse: Path, warehouse_rows: WarehouseRows
) -> None:
    [(cutoff, min_time, max_time)] = warehouse_rows(online_retail_warehouse, "select * from int_holdout_cutoff")
    assert (min_time, max_time) == (datetime(2010, 12, 1, 8, 26), datetime(2010, 12, 5, 16, 24))
    [(last_train, first_holdout, train_events, holdout_events, events_before, all_events)] = warehouse_rows(
        online_retail_warehouse,
        """
        select
            (select max(last_event_time) from fct_train_user_item),
            (select min(first_event_time) from fct_holdout_interactions),
            (select sum(n_transactions) from fct_train_user_item),
            (select sum(n_events) from fct_holdout_interactions),
            (select count(*) from validated_interactions where event_time < $cutoff),
            (select count(*) from validated_interactions)
        """,
        {"cutoff": cutoff},
    )
    assert last_train < cutoff <= first_holdout
    assert first_holdout == cutoff  # the cutoff is an observed event time, the first of the holdout
    assert train_events == events_before and train_events + holdout_events == all_events
    assert 0.75 < train_events / all_events < 0.8  # the 0.8 quantile, less what ties push to holdout


def test_holdout_flags_match_the_training_pairs(
    build: ExecuteInProcessResult, online_retail_warehouse: Path, warehouse_rows: WarehouseRows
) -> None:
    [(wrong_seen, wrong_user, seen, cold_users)] = warehouse_rows(
        online_retail_warehouse,
        """
        select
            count(*) filter (where h.seen_in_train <> (t.user_id is not null)),
            count(*) filter (where h.user_in_train <> (h.user_id in (select user_id from fct_train_user_item))),
            count(*) filter (where h.seen_in_train),
            count(*) filter (where not h.user_in_train)
        from fct_holdout_interactions as h
        left join fct_train_user_item as t using (user_id, item_id)
        """,
    )
    assert (wrong_seen, wrong_user) == (0, 0)
    assert seen > 0 and cold_users > 0  # both cases occur in this slice, so the flags are exercised


def test_dim_items_carries_catalog_attributes_and_event_only_items(
    build: ExecuteInProcessResult, online_retail_warehouse: Path, warehouse_rows: WarehouseRows
) -> None:
    rows = warehouse_rows(
        online_retail_warehouse,
        "select item_id, name, price, in_catalog, n_users, n_events from dim_items "
        "where item_id in ('85123A', '71053') order by item_id",
    )
    # 71053 is left out of raw_items by the fixture: it keeps its events, without attributes.
    # 85123A: name from the file; price from the later, price-only observation (2.95).
    assert rows == [
        ("71053", None, None, False, 2, 18),
        ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 2.95, True, 33, 52),
    ]
    [(items, union_items, named)] = warehouse_rows(
        online_retail_warehouse,
        """
        select
            (select count(*) from dim_items),
            (select count(*) from (select item_id from validated_interactions union select item_id from raw_items)),
            (select count(name) from dim_items)
        """,
    )
    assert items == union_items and named > 0.95 * items


def test_dim_users_counts_match_the_events(
    build: ExecuteInProcessResult, online_retail_warehouse: Path, warehouse_rows: WarehouseRows
) -> None:
    rows = warehouse_rows(
        online_retail_warehouse,
        "select n_items, n_events, n_transactions, (select count(*) from dim_users) from dim_users where user_id = '17850'",
    )
    [(n_items, n_events)] = warehouse_rows(
        online_retail_warehouse,
        "select count(distinct item_id), count(*) from validated_interactions where user_id = '17850'",
    )
    assert rows == [(n_items, n_events, n_events, 303)]
