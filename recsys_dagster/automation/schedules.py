"""The nightly full refresh and the weekly tuning (both created stopped: the operator switches them on)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from dagster import DefaultScheduleStatus, ScheduleDefinition

if TYPE_CHECKING:  # what define_asset_job returns; dagster does not export the name
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from recsys_dagster.automation.jobs import refresh_recommendations, tune_hyperparameters

NIGHTLY_CRON = "0 2 * * *"
#: Sunday 04:00, after that night's refresh has rebuilt the validation window.
WEEKLY_TUNING_CRON = "0 4 * * 0"


def stopped_schedule(name: str, job: UnresolvedAssetJobDefinition, cron: str, description: str) -> ScheduleDefinition:
    """A schedule in RECSYS_SCHEDULE_TIMEZONE (default UTC), stopped until switched on in the UI."""
    return ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone=os.environ.get("RECSYS_SCHEDULE_TIMEZONE", "UTC"),
        default_status=DefaultScheduleStatus.STOPPED,
        description=description,
    )


nightly_refresh = stopped_schedule(
    "nightly_refresh", refresh_recommendations, NIGHTLY_CRON,
    "Retrain and republish every night at 02:00 (RECSYS_SCHEDULE_TIMEZONE, default UTC).",
)
weekly_tuning = stopped_schedule(
    "weekly_tuning", tune_hyperparameters, WEEKLY_TUNING_CRON,
    "Re-tune ALS, repeat-aware and SVD every Sunday at 04:00; the following refreshes train with the result.",
)
