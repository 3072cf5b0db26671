"""The nightly full refresh."""

import os

from dagster import DefaultScheduleStatus, ScheduleDefinition

from recsys_dagster.automation.jobs import refresh_recommendations

NIGHTLY_CRON = "0 2 * * *"

nightly_refresh = ScheduleDefinition(
    name="nightly_refresh",
    job=refresh_recommendations,
    cron_schedule=NIGHTLY_CRON,
    execution_timezone=os.environ.get("RECSYS_SCHEDULE_TIMEZONE", "UTC"),
    default_status=DefaultScheduleStatus.STOPPED,
    description="Retrain and republish every night at 02:00 (RECSYS_SCHEDULE_TIMEZONE, default UTC).",
)
