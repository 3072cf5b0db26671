"""The nightly full refresh and the weekly tuning."""

import os

from dagster import DefaultScheduleStatus, ScheduleDefinition

from recsys_dagster.automation.jobs import refresh_recommendations, tune_hyperparameters

NIGHTLY_CRON = "0 2 * * *"
#: Sunday 04:00, after that night's refresh has rebuilt the validation window.
WEEKLY_TUNING_CRON = "0 4 * * 0"
SCHEDULE_TIMEZONE = os.environ.get("RECSYS_SCHEDULE_TIMEZONE", "UTC")

nightly_refresh = ScheduleDefinition(
    name="nightly_refresh",
    job=refresh_recommendations,
    cron_schedule=NIGHTLY_CRON,
    execution_timezone=SCHEDULE_TIMEZONE,
    default_status=DefaultScheduleStatus.STOPPED,
    description="Retrain and republish every night at 02:00 (RECSYS_SCHEDULE_TIMEZONE, default UTC).",
)

weekly_tuning = ScheduleDefinition(
    name="weekly_tuning",
    job=tune_hyperparameters,
    cron_schedule=WEEKLY_TUNING_CRON,
    execution_timezone=SCHEDULE_TIMEZONE,
    default_status=DefaultScheduleStatus.STOPPED,
    description="Re-tune ALS and SVD every Sunday at 04:00; the following refreshes train with the result.",
)
