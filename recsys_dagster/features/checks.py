"""Blocking checks on the training mart: collapsed training data stops the run before any model.

A nightly export can break upstream without breaking a single row rule: it sends one user's events,
one item's, or suddenly only page views. Every row validates, dbt builds, the models fit something,
and without a check the pipeline would publish recommendations learned from a shop that no longer
looks like the shop. ``training_data_not_collapsed`` catches that on ``fct_train_user_item``:

- fewer than ``min_users`` distinct users or ``min_items`` distinct items in the training pairs;
- an event type that made up at least ``min_event_type_share`` of the last *passing* run's training
  events is absent now (the export that only sends views).

The event-type mix is compared with the shop's own history, never with a fixed mix: Amazon ratings or
Online Retail (purchases only) have one type by nature and pass every night. Each check writes its
profile (one row per event type) to ``ml.training_data_profiles``; the latest passing profile is the
baseline of the next check. After a genuine change (the shop stopped tracking carts), an operator
runs the check once with ``accept_event_type_changes: true``: that profile passes and becomes the
new baseline.

The check is blocking: when it fails, Dagster skips every asset downstream of the mart in the same
run (validation split, models, evaluation, publish), so the serving file keeps the last good version.
Checking the train mart is enough for the all-events mart too: its events are a superset of the
train events, so it has at least as many users, items and event types.
"""

# No `from __future__ import annotations`: Dagster reads the `config` annotation at decoration time.
from dataclasses import dataclass

import duckdb
import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    Config,
    MetadataValue,
    asset_check,
)
from pydantic import Field

from recsys_dagster.metadata import frame_preview
from recsys_dagster.relations import registered
from recsys_dagster.resources import WAREHOUSE_POOL, WarehouseResource

TRAINING_MART = "fct_train_user_item"
COLLAPSE_CHECK = "training_data_not_collapsed"

PROFILES_DDL = """
CREATE SCHEMA IF NOT EXISTS ml;
CREATE TABLE IF NOT EXISTS ml.training_data_profiles (
    run_id VARCHAR, checked_at TIMESTAMP, event_type VARCHAR, n_events BIGINT, share DOUBLE, passed BOOLEAN
);
"""

#: Users, items and (user, item) pairs of the training mart.
SHAPE_SQL = f"SELECT count(DISTINCT user_id), count(DISTINCT item_id), count(*) FROM main.{TRAINING_MART}"

#: Training events per event type (every type, also the absent ones) and each type's share.
MIX_SQL = f"""
WITH totals AS (
    SELECT coalesce(sum(n_views), 0) AS view, coalesce(sum(n_addtocarts), 0) AS addtocart,
           coalesce(sum(n_transactions), 0) AS transaction, coalesce(sum(n_ratings), 0) AS rating
    FROM main.{TRAINING_MART}
),
mix AS (UNPIVOT totals ON view, addtocart, transaction, rating INTO NAME event_type VALUE n_events)
SELECT event_type, n_events::BIGINT AS n_events,
       coalesce(n_events / nullif(sum(n_events) OVER (), 0), 0) AS share
FROM mix ORDER BY event_type
"""

#: The profile of the latest run whose check passed (empty before the first passing run).
PREVIOUS_MIX_SQL = """
SELECT event_type, n_events, share FROM ml.training_data_profiles
WHERE run_id = (SELECT run_id FROM ml.training_data_profiles WHERE passed ORDER BY checked_at DESC LIMIT 1)
ORDER BY event_type
"""


class TrainingDataCheckConfig(Config):
    """Thresholds of ``training_data_not_collapsed``; the defaults suit every shop size."""

    min_users: int = Field(default=2, ge=1, description="Fewest distinct users the training data may have.")
    min_items: int = Field(default=2, ge=1, description="Fewest distinct items the training data may have.")
    min_event_type_share: float = Field(
        default=0.01,
        gt=0,
        le=1,
        description="An event type with at least this share of the last passing run's training events "
        "must not be absent now.",
    )
    accept_event_type_changes: bool = Field(
        default=False,
        description="Accept a changed event-type mix once (a genuine change upstream): the profile passes "
        "and becomes the baseline of later runs. The user and item minimums still apply.",
    )


@dataclass(frozen=True)
class TrainingShape:
    """What the training mart holds: distinct users and items, pairs, and events per type."""

    n_users: int
    n_items: int
    n_pairs: int
    mix: pd.DataFrame  # event_type, n_events, share


def training_shape(con: duckdb.DuckDBPyConnection) -> TrainingShape:
    n_users, n_items, n_pairs = con.execute(SHAPE_SQL).fetchone()
    return TrainingShape(n_users, n_items, n_pairs, con.execute(MIX_SQL).df())


def previous_passing_mix(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    con.execute(PROFILES_DDL)
    return con.execute(PREVIOUS_MIX_SQL).df()


def vanished_event_types(current: pd.DataFrame, previous: pd.DataFrame, min_share: float) -> pd.DataFrame:
    """Event types with at least ``min_share`` of the previous passing mix and no events now."""
    absent_now = set(current.loc[current["n_events"] == 0, "event_type"])
    return previous[(previous["share"] >= min_share) & previous["event_type"].isin(absent_now)]


def collapse_problems(
    shape: TrainingShape, previous: pd.DataFrame, config: TrainingDataCheckConfig
) -> list[str]:
    """One sentence per way the training data collapsed; empty when it is healthy."""
    problems = []
    if shape.n_users < config.min_users:
        problems.append(f"only {shape.n_users} distinct user(s) in {TRAINING_MART} (minimum {config.min_users})")
    if shape.n_items < config.min_items:
        problems.append(f"only {shape.n_items} distinct item(s) in {TRAINING_MART} (minimum {config.min_items})")
    vanished = vanished_event_types(shape.mix, previous, config.min_event_type_share)
    if len(vanished) and not config.accept_event_type_changes:
        lost = ", ".join(f"{row.event_type} ({row.share:.1%})" for row in vanished.itertuples())
        problems.append(
            f"event type(s) {lost} of the last passing run's training events are absent now; if this change "
            "is genuine, run the check once with accept_event_type_changes: true"
        )
    return problems


def record_profile(con: duckdb.DuckDBPyConnection, run_id: str, mix: pd.DataFrame, passed: bool) -> None:
    """Append this check's mix to ``ml.training_data_profiles`` (the next check's baseline if passed)."""
    with registered(con, checked_mix=mix):
        con.execute(
            """
            INSERT INTO ml.training_data_profiles
            SELECT $run_id, now()::TIMESTAMP, event_type, n_events, share, $passed FROM checked_mix
            """,
            {"run_id": run_id, "passed": passed},
        )


def mix_summary(mix: pd.DataFrame) -> str:
    """``view 80.0%, transaction 20.0%``: the event types present, largest share first."""
    present = mix[mix["n_events"] > 0].sort_values("share", ascending=False)
    return ", ".join(f"{row.event_type} {row.share:.1%}" for row in present.itertuples()) or "(no events)"


@asset_check(
    asset=AssetKey(TRAINING_MART),
    name=COLLAPSE_CHECK,
    blocking=True,
    pool=WAREHOUSE_POOL,
    description="The training data has enough users and items, and no event type that mattered in the "
    "last passing run vanished. Blocking: a failure stops models, evaluation and publish.",
)
def training_data_not_collapsed(
    context: AssetCheckExecutionContext, config: TrainingDataCheckConfig, warehouse: WarehouseResource
) -> AssetCheckResult:
    """Profile the training mart, compare it with the last passing profile and record it."""
    with warehouse.get_connection() as con:
        shape = training_shape(con)
        previous = previous_passing_mix(con)
        problems = collapse_problems(shape, previous, config)
        record_profile(con, context.run.run_id, shape.mix, passed=not problems)
    description = "; ".join(problems) if problems else "training data is not collapsed"
    if problems:
        context.log.error("training data collapsed: %s", description)
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "users": MetadataValue.int(shape.n_users),
            "items": MetadataValue.int(shape.n_items),
            "pairs": MetadataValue.int(shape.n_pairs),
            "mix": MetadataValue.text(mix_summary(shape.mix)),
            "previous_mix": MetadataValue.text(mix_summary(previous) if len(previous) else "(no passing run yet)"),
            "mix_table": frame_preview(shape.mix),
        },
    )
