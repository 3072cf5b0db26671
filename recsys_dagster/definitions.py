"""The one ``Definitions`` of recsys_dagster: every asset, check, job, schedule, sensor and resource.

Loaded by ``make dev`` (through workspace.yaml), ``make run`` (``dagster job execute``) and the tests.
Each stage module defines its assets and checks; this module only collects them, so adding an asset
to a stage needs no edit here. Runs use the in-process executor: DuckDB allows one writer per file,
so the steps of a run write the warehouse one after another; steps of concurrent runs queue on the
``duckdb_warehouse`` pool (see dagster.yaml). The published tables carry the 26-hour freshness
policy (automation/freshness.py).
"""

from dagster import Definitions, in_process_executor, load_asset_checks_from_modules, load_assets_from_modules

from recsys_dagster.automation.failures import pipeline_failure_sensor
from recsys_dagster.automation.freshness import apply_published_freshness
from recsys_dagster.automation.jobs import incremental_refresh, refresh_recommendations, tune_hyperparameters
from recsys_dagster.automation.schedules import nightly_refresh, weekly_tuning
from recsys_dagster.automation.sensors import inbox_sensor
from recsys_dagster.evaluate import assets as evaluate_assets
from recsys_dagster.features import checks as feature_checks
from recsys_dagster.features import dbt as feature_assets
from recsys_dagster.ingest import assets as ingest_assets
from recsys_dagster.models import assets as model_assets
from recsys_dagster.publish import assets as publish_assets
from recsys_dagster.publish import incremental as incremental_assets
from recsys_dagster.resources import build_resources
from recsys_dagster.validate import assets as validate_assets

STAGE_MODULES = [
    ingest_assets, validate_assets, feature_assets, feature_checks, model_assets, evaluate_assets, publish_assets,
    incremental_assets,
]

defs = Definitions(
    assets=apply_published_freshness(load_assets_from_modules(STAGE_MODULES)),
    asset_checks=load_asset_checks_from_modules(STAGE_MODULES),
    jobs=[refresh_recommendations, incremental_refresh, tune_hyperparameters],
    schedules=[nightly_refresh, weekly_tuning],
    sensors=[inbox_sensor, pipeline_failure_sensor],
    resources=build_resources(),
    executor=in_process_executor,
)
