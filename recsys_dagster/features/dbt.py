"""The dbt feature layer as Dagster assets: one asset per dbt model, one asset check per dbt test.

``dbt build`` (not ``run``) so that each model's tests run right after it and a failing test stops
its downstream models; dagster-dbt turns those tests into asset checks. The run-time knobs
(event weights, holdout fraction) travel as ``--vars`` and are validated by the dbt macros in
``dbt_project/macros/recsys_vars.sql``, which stop the run on a bad value.
"""

# No `from __future__ import annotations`: Dagster reads the `config: DbtBuildConfig` annotation at
# decoration time and cannot resolve it from a string.
from collections.abc import Iterator, Mapping
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    Config,
    MetadataValue,
    Output,
)
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from pydantic import Field

from recsys_dagster.automation.retries import STEP_RETRY_POLICY
from recsys_dagster.features.project import DBT_VAR_DEFAULTS, dbt_project, dbt_target_dir, dbt_vars_json
from recsys_dagster.metadata import count_rows
from recsys_dagster.resources import WAREHOUSE_POOL, WarehouseResource

FEATURES_GROUP = "features"

#: What ``DbtCliInvocation.stream()`` yields inside ``@dbt_assets``.
DbtEvent = Output | AssetMaterialization | AssetObservation | AssetCheckResult | AssetCheckEvaluation


class DbtBuildConfig(Config):
    """Run config of the dbt assets; defaults are the vars of ``dbt_project.yml``."""

    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DBT_VAR_DEFAULTS["event_weights"]),
        description="Weight of each event type (view, addtocart, transaction, rating) in strength; all >= 0.",
    )
    holdout_fraction: float = Field(
        default=DBT_VAR_DEFAULTS["holdout_fraction"],
        description="Share of the latest events (by event_time) held out for evaluation, in (0, 1).",
    )

    def dbt_vars_json(self) -> str:
        """The ``--vars`` argument of the dbt invocation."""
        return dbt_vars_json({"event_weights": self.event_weights, "holdout_fraction": self.holdout_fraction})


class RecsysDbtTranslator(DagsterDbtTranslator):
    """Models become assets named exactly like the model (the warehouse table), in group ``features``.

    Sources keep dagster-dbt's default key, i.e. the ``meta.dagster.asset_key`` of the sources YAML,
    which points at the upstream Python assets (validated_interactions, raw_items).
    """

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return AssetKey(dbt_resource_props["name"])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return FEATURES_GROUP


@dbt_assets(
    manifest=dbt_project.manifest_path,
    dagster_dbt_translator=RecsysDbtTranslator(),
    project=dbt_project,
    pool=WAREHOUSE_POOL,
    retry_policy=STEP_RETRY_POLICY,  # dbt opens the warehouse itself: a held lock fails it at once
)
def recsys_dbt_assets(
    context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource, config: DbtBuildConfig
) -> Iterator[DbtEvent]:
    """Build the selected models and run their tests, reporting each model's row count.

    The events are held until dbt exits: while it runs, dbt holds the warehouse file, and the row
    counts can only be read afterwards. (dagster-dbt's ``fetch_row_counts`` waits the same way for
    DuckDB, but polls its thread pool in a busy loop that takes a whole core from dbt meanwhile.)
    A failed build still reports the models and checks that completed, then raises dbt's error.
    """
    target_dir = dbt_target_dir(warehouse.database)
    (target_dir / "run_results.json").unlink(missing_ok=True)  # never report an earlier build's results
    invocation = dbt.cli(
        ["build", "--vars", config.dbt_vars_json()], context=context, raise_on_error=False, target_path=target_dir
    )
    events = list(invocation.stream())
    yield from with_row_counts(context, events, warehouse)
    error = invocation.get_error()
    if error is not None:
        raise error


def with_row_counts(
    context: AssetExecutionContext, events: list[DbtEvent], warehouse: WarehouseResource
) -> Iterator[DbtEvent]:
    """``events`` with ``dagster/row_count`` added to each model output (table == asset name)."""
    tables = {
        event.output_name: context.asset_key_for_output(event.output_name).path[-1]
        for event in events
        if isinstance(event, Output)
    }
    with warehouse.get_connection() as con:
        row_counts = {output: count_rows(con, f"main.{table}") for output, table in tables.items()}
    for event in events:
        if isinstance(event, Output):
            row_count = MetadataValue.int(row_counts[event.output_name])
            yield event.with_metadata({**event.metadata, "dagster/row_count": row_count})
        else:
            yield event
