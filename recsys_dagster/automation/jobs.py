"""Jobs: the full refresh (everything from raw files to published tables)."""

from dagster import AssetSelection, define_asset_job

REFRESH_JOB_NAME = "refresh_recommendations"

#: Every asset and check, raw files to published tables. The schedule and the inbox sensor run it.
refresh_recommendations = define_asset_job(
    name=REFRESH_JOB_NAME,
    selection=AssetSelection.all(),
    description="Ingest new files, validate, rebuild dbt features, retrain, evaluate and republish.",
    tags={"recsys/writes": "warehouse"},
)
