"""Validation stage: route every raw row to ``validated_interactions`` or ``quarantined_events``.

The routing (``routing.py``) is DuckDB SQL built from ``suite.RULES`` (typed candidates, the first
broken rule as the reason, duplicates after that; of identical events the one ingested first is
kept, so a file sent again never turns rows validated yesterday into duplicates), run only on the
raw batches not routed yet and written in one transaction so a failure leaves the previous tables in
place. The same step then proves the result: a blocking row-accounting check (every raw row in
exactly one output) and one asset check per GX expectation on the rows this run validated (the
whole table after a full rebuild; the new rows and every row sharing their event key otherwise --
the rows validated earlier were proven by the run that validated them and are not changed since).
"""

import duckdb
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from pydantic import Field

from recsys_dagster.metadata import count_rows, frame_preview, table_metadata, timed
from recsys_dagster.resources import WAREHOUSE_POOL, WarehouseResource
from recsys_dagster.validate.gx_duckdb import duckdb_table_batch, ephemeral_context
from recsys_dagster.validate.routing import QUARANTINED, VALIDATED, RoutingRun, route_raw_rows
from recsys_dagster.validate.suite import (
    DUPLICATE_REASON,
    EVENT_KEY_COLUMN,
    EVENT_KEY_SQL,
    RULES,
    Bounds,
    ExpectationOutcome,
    run_suite,
)

ROW_ACCOUNTING_CHECK = "row_accounting"
#: Temporary view GX reads: the checked rows plus their event key (``suite.EVENT_KEY_SQL``).
GX_CHECKED_ROWS = "gx_checked_rows"


class ValidationConfig(Config):
    """Bounds of a plausible event time (rows outside are quarantined with a reason)."""

    min_event_time: str = Field(default="1995-01-01", description="ISO date; earlier events are quarantined.")
    max_future_hours: int = Field(default=24, ge=0, description="Events later than now + this are quarantined.")


def row_accounting(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Counts that prove every raw row landed in exactly one output table."""
    raw, validated, quarantined = con.execute(
        f"SELECT (SELECT count(*) FROM raw_events), (SELECT count(*) FROM {VALIDATED}),"
        f" (SELECT count(*) FROM {QUARANTINED})"
    ).fetchone()
    (twice,) = con.execute(
        f"""
        SELECT count(*) FROM (
            SELECT source_file, source_row FROM (
                SELECT source_file, source_row FROM {VALIDATED}
                UNION ALL SELECT source_file, source_row FROM {QUARANTINED}
            ) GROUP BY source_file, source_row HAVING count(*) > 1
        )
        """
    ).fetchone()
    return {"raw": raw, "validated": validated, "quarantined": quarantined, "rows_in_both": twice}


def suite_outcomes(
    con: duckdb.DuckDBPyConnection, bounds: Bounds, relation: str = VALIDATED
) -> list[ExpectationOutcome]:
    """The GX suite's verdicts on ``relation`` (the validated table, or the rows an incremental run
    added with every row sharing their event key), computed by GX's SQL engine inside DuckDB on
    ``con`` (a few aggregate queries over the table; see ``gx_duckdb``), through a view that adds
    the event key the uniqueness expectation checks."""
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {GX_CHECKED_ROWS} AS SELECT *, {EVENT_KEY_SQL} AS {EVENT_KEY_COLUMN} FROM {relation}"
    )
    try:
        context = ephemeral_context()
        with duckdb_table_batch(context, con, GX_CHECKED_ROWS) as batch:
            return run_suite(context, batch, bounds, count_rows(con, relation))
    finally:
        con.execute(f"DROP VIEW {GX_CHECKED_ROWS}")


def routing_metadata(routing: RoutingRun, gx_rows: int) -> dict[str, MetadataValue]:
    """How much this run routed and proved (a full rebuild, or only the batches ingested since)."""
    return {
        "validation_mode": MetadataValue.text(routing.mode),
        "raw_rows_routed": MetadataValue.int(routing.rows_routed),
        "raw_batches_routed": MetadataValue.int(routing.batches_routed),
        "gx_rows_checked": MetadataValue.int(gx_rows),
    }


def quarantine_summary(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Quarantined rows per reason and file, most frequent first."""
    return con.execute(
        f"""
        SELECT reason, source_file, count(*) AS n_rows
        FROM {QUARANTINED} GROUP BY ALL ORDER BY n_rows DESC, reason, source_file
        """
    ).df()


def _accounting_result(counts: dict[str, int]) -> AssetCheckResult:
    balanced = counts["raw"] == counts["validated"] + counts["quarantined"] and counts["rows_in_both"] == 0
    return AssetCheckResult(
        asset_key=VALIDATED,
        check_name=ROW_ACCOUNTING_CHECK,
        passed=balanced,
        severity=AssetCheckSeverity.ERROR,
        metadata={name: MetadataValue.int(value) for name, value in counts.items()},
        description="raw_events rows = validated_interactions + quarantined_events, none in both",
    )


def _expectation_result(outcome: ExpectationOutcome) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=VALIDATED,
        check_name=gx_check_name(outcome.reason),
        passed=outcome.success,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "expectation": MetadataValue.text(outcome.expectation_type),
            "unexpected_count": MetadataValue.int(outcome.unexpected_count),
            "element_count": MetadataValue.int(outcome.element_count),
        },
    )


def gx_check_name(reason: str) -> str:
    return f"gx_{reason}"


def _check_specs() -> list[AssetCheckSpec]:
    accounting = AssetCheckSpec(
        ROW_ACCOUNTING_CHECK,
        asset=VALIDATED,
        blocking=True,
        description="Every raw row is in exactly one of validated_interactions / quarantined_events.",
    )
    expectations = [
        AssetCheckSpec(
            gx_check_name(rule.reason), asset=VALIDATED, blocking=True, description=f"GX: no row with {rule.description}"
        )
        for rule in RULES
        if rule.expectation is not None
    ]
    duplicates = AssetCheckSpec(
        gx_check_name(DUPLICATE_REASON), asset=VALIDATED, blocking=True, description="GX: no event appears twice"
    )
    return [accounting, *expectations, duplicates]


@multi_asset(
    pool=WAREHOUSE_POOL,
    specs=[
        AssetSpec(VALIDATED, deps=[AssetKey("raw_events")], group_name="validate",
                  description="Typed interactions that passed every data-quality rule."),
        AssetSpec(QUARANTINED, deps=[AssetKey("raw_events")], group_name="validate",
                  description="Raw rows that broke a rule, unchanged, with the reason."),
    ],
    check_specs=_check_specs(),
)
def validate_interactions(context: AssetExecutionContext, config: ValidationConfig, warehouse: WarehouseResource):
    """Split raw events into validated and quarantined rows, then prove the split with GX."""
    bounds = Bounds.from_config(config.min_event_time, config.max_future_hours)
    with timed() as watch, warehouse.get_connection() as con:
        routing = route_raw_rows(con, bounds)
        counts = row_accounting(con)
        summary = quarantine_summary(con)
        outcomes = suite_outcomes(con, bounds, routing.gx_relation)
        gx_rows = count_rows(con, routing.gx_relation)
        validated_meta = table_metadata(con, VALIDATED, watch.seconds)
        quarantined_meta = table_metadata(con, QUARANTINED, watch.seconds)
    context.log.info("row accounting: %s; quarantined by reason: %s", counts,
                     summary.groupby("reason")["n_rows"].sum().to_dict())
    yield MaterializeResult(
        asset_key=VALIDATED,
        metadata={**validated_meta, "duration_s": MetadataValue.float(watch.seconds),
                  "gx_expectations_passed": MetadataValue.int(sum(o.success for o in outcomes)),
                  "gx_expectations_total": MetadataValue.int(len(outcomes)),
                  **routing_metadata(routing, gx_rows)},
    )
    yield MaterializeResult(
        asset_key=QUARANTINED,
        metadata={**quarantined_meta, "duration_s": MetadataValue.float(watch.seconds),
                  "by_reason": frame_preview(summary, limit=50)},
    )
    yield _accounting_result(counts)
    for outcome in outcomes:
        yield _expectation_result(outcome)
