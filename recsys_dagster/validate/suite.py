"""The data-quality rules, kept as code: one list drives both the SQL routing and the GX suite.

Each ``Rule`` pairs a quarantine reason with (a) a SQL predicate over the typed candidate columns
that says a raw row breaks the rule and (b) the Great Expectations expectation that the validated
table must then satisfy. DuckDB applies the predicates to route every raw row to exactly one of
``validated_interactions`` / ``quarantined_events`` (fast, at any size); GX independently checks the
result against the suite, and its verdicts appear in the Dagster UI as asset checks. Keeping both
halves in one object means a rule cannot be added to one side and forgotten on the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.core.batch_definition import BatchDefinition
from great_expectations.expectations.row_conditions import Column

from recsys_dagster.ingest.formats import trimmed_sql

EVENT_TYPES: tuple[str, ...] = ("view", "addtocart", "transaction", "rating")
#: Texts that exporters write for "no value" (SQL dumps, ORMs); as an id or a time they mean missing.
#: ('nan' is not one: as a rating it is a number out of range.)
NULL_TOKENS: tuple[str, ...] = ("null", "\\n", "none")
RATING_MIN, RATING_MAX = 1.0, 5.0
SUITE_NAME = "validated_interactions_suite"


@dataclass(frozen=True)
class Bounds:
    """Plausible event-time window; rows outside it are quarantined, not silently clipped."""

    min_event_time: datetime
    max_event_time: datetime
    #: The configured allowance behind ``max_event_time`` (part of what the validated rows were checked against).
    max_future_hours: int

    @classmethod
    def from_config(cls, min_event_time: str, max_future_hours: int) -> Bounds:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        return cls(datetime.fromisoformat(min_event_time), now + timedelta(hours=max_future_hours), max_future_hours)


@dataclass(frozen=True)
class Rule:
    """A quarantine reason, the SQL that detects a violating candidate row, and its GX expectation.

    ``violation_sql`` may reference the typed candidate columns (``v_*``, ``*_text`` = the raw text
    trimmed, NULL when blank or a ``NULL_TOKENS`` word), the raw text columns and the bound
    parameters ``$min_time`` / ``$max_time``. ``expectation`` is ``None`` for rules about
    raw text that has no column left to check after typing (its consequence is checked by another
    rule's expectation, e.g. an unparseable time leaves ``event_time`` NULL).
    """

    reason: str
    description: str
    violation_sql: str
    expectation: Callable[[Bounds], gxe.Expectation] | None


RULES: tuple[Rule, ...] = (
    Rule(
        "missing_user_id",
        "user_id is empty or missing",
        "v_user_id IS NULL",
        lambda b: gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
    ),
    Rule(
        "missing_item_id",
        "item_id is empty or missing",
        "v_item_id IS NULL",
        lambda b: gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
    ),
    Rule(
        "unknown_event_type",
        "event_type is not one of view/addtocart/transaction/rating (e.g. returns, removals)",
        f"v_event_type IS NULL OR v_event_type NOT IN {EVENT_TYPES!r}",
        lambda b: gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
    ),
    Rule(
        "missing_event_time",
        "event_time is empty or the file has no time column",
        "event_time_text IS NULL",
        lambda b: gxe.ExpectColumnValuesToNotBeNull(column="event_time"),
    ),
    Rule(
        "unparseable_event_time",
        "event_time is neither an epoch number nor a recognised date-time text",
        "v_event_time IS NULL AND v_time_number IS NULL",
        None,
    ),
    Rule(
        "event_time_in_milliseconds",
        "a seconds column holds a millisecond epoch (the value / 1000 is a plausible time)",
        "time_unit = 's' AND v_time_number / 1000 BETWEEN epoch($min_time) AND epoch($max_time)",
        None,
    ),
    Rule(
        "event_time_out_of_range",
        "event_time is before the configured minimum or in the future",
        "v_event_time IS NULL OR v_event_time < $min_time OR v_event_time > $max_time",
        lambda b: gxe.ExpectColumnValuesToBeBetween(
            column="event_time", min_value=b.min_event_time, max_value=b.max_event_time
        ),
    ),
    Rule(
        "missing_rating",
        "a rating event without a rating value",
        "v_event_type = 'rating' AND rating_text IS NULL",
        lambda b: gxe.ExpectColumnValuesToNotBeNull(column="rating", row_condition=Column("event_type") == "rating"),
    ),
    Rule(
        "unparseable_rating",
        "rating is not a number",
        "rating_text IS NOT NULL AND v_rating IS NULL",
        None,
    ),
    Rule(
        "rating_out_of_range",
        f"rating outside {RATING_MIN:g}..{RATING_MAX:g} (or not finite)",
        f"v_rating IS NOT NULL AND NOT (v_rating BETWEEN {RATING_MIN} AND {RATING_MAX})",
        lambda b: gxe.ExpectColumnValuesToBeBetween(column="rating", min_value=RATING_MIN, max_value=RATING_MAX),
    ),
    Rule(
        "rating_on_non_rating_event",
        "a rating value on a view/addtocart/transaction row",
        "v_rating IS NOT NULL AND v_event_type <> 'rating'",
        lambda b: gxe.ExpectColumnValuesToBeNull(column="rating", row_condition=Column("event_type") != "rating"),
    ),
    Rule(
        "transaction_id_on_non_transaction",
        "a transaction id on a row that is not a transaction",
        "v_transaction_id IS NOT NULL AND v_event_type <> 'transaction'",
        lambda b: gxe.ExpectColumnValuesToBeNull(
            column="transaction_id", row_condition=Column("event_type") != "transaction"
        ),
    ),
)

#: Rows identical on these typed columns are one event seen twice; the first (by file, row) is kept.
DUPLICATE_KEY: tuple[str, ...] = ("user_id", "item_id", "event_type", "event_time", "rating", "transaction_id")
DUPLICATE_REASON = "duplicate_event"
#: The column GX checks for uniqueness: the ``DUPLICATE_KEY`` values of a row as one DuckDB struct
#: (``EVENT_KEY_SQL``). GX's SQL compound-uniqueness metric joins rows on ``a = b`` per column, so a
#: row with a NULL in any key column (every view has rating and transaction_id NULL) would never be
#: compared; DuckDB compares NULL fields inside a struct as equal, as the routing's duplicate rule does.
EVENT_KEY_COLUMN = "event_key"
EVENT_KEY_SQL = f"struct_pack({', '.join(DUPLICATE_KEY)})"

#: Reasons whose rule reads ``$max_time`` ("now" + allowance): a row quarantined for one of them
#: may pass on a later day, so incremental validation routes such rows again every run.
TIME_DEPENDENT_REASONS: tuple[str, ...] = tuple(rule.reason for rule in RULES if "$max_time" in rule.violation_sql)


def present_sql(column: str) -> str:
    """SQL: the raw text of ``column`` trimmed of blanks; NULL when blank or a ``NULL_TOKENS`` word."""
    text = trimmed_sql(column)
    tokens = ", ".join(f"'{token}'" for token in NULL_TOKENS)
    return f"CASE WHEN lower({text}) IN ({tokens}) THEN NULL ELSE {text} END"


def first_violation_sql() -> str:
    """A SQL ``CASE`` naming the first rule a candidate row breaks (NULL when it breaks none)."""
    branches = "\n".join(f"    WHEN {rule.violation_sql} THEN '{rule.reason}'" for rule in RULES)
    return f"CASE\n{branches}\n  END"


def build_suite(bounds: Bounds) -> gx.ExpectationSuite:
    """The GX suite every row of ``validated_interactions`` must satisfy."""
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    for rule in RULES:
        if rule.expectation is not None:
            expectation = rule.expectation(bounds)
            expectation.meta = {"reason": rule.reason, "description": rule.description}
            suite.add_expectation(expectation)
    duplicates = gxe.ExpectColumnValuesToBeUnique(column=EVENT_KEY_COLUMN)
    duplicates.meta = {"reason": DUPLICATE_REASON, "description": "the same event appears twice"}
    suite.add_expectation(duplicates)
    return suite


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict on the validated table, keyed by the quarantine reason it guards."""

    reason: str
    expectation_type: str
    success: bool
    unexpected_count: int
    element_count: int


def run_suite(
    context: Any, batch: BatchDefinition, bounds: Bounds, n_rows: int, batch_parameters: dict | None = None
) -> list[ExpectationOutcome]:
    """Validate ``batch`` (of ``n_rows`` rows) against the suite within ``context``, one verdict per
    expectation (``n_rows`` is the element count when GX reports none)."""
    suite = context.suites.add(build_suite(bounds))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="validated_interactions", data=batch, suite=suite)
    )
    result = definition.run(batch_parameters=batch_parameters, result_format="SUMMARY")
    return [
        ExpectationOutcome(
            reason=outcome.expectation_config.meta["reason"],
            expectation_type=outcome.expectation_config.type,
            success=bool(outcome.success),
            unexpected_count=int(_or_default(outcome.result.get("unexpected_count"), 0)),
            element_count=int(_or_default(outcome.result.get("element_count"), n_rows)),
        )
        for outcome in result.results
    ]


def _or_default(value: int | None, default: int) -> int:
    """``value`` unless GX left it out; a count of 0 is a count (``or`` would replace it)."""
    return default if value is None else value
