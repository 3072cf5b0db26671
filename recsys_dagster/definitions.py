"""The one ``Definitions`` of recsys_dagster: every asset, check, job, schedule, sensor and resource.

Loaded by ``make dev`` (through workspace.yaml), ``make run`` (``dagster job execute``) and the tests.
Runs use the in-process executor: DuckDB allows one writer per file, so the steps of a run write the
warehouse one after another; separate runs are serialized by the run queue (see dagster.yaml).
"""

from dagster import Definitions, in_process_executor

from recsys_dagster.automation.jobs import refresh_recommendations
from recsys_dagster.automation.schedules import nightly_refresh
from recsys_dagster.automation.sensors import inbox_sensor
from recsys_dagster.evaluate.assets import model_evaluation
from recsys_dagster.features.dbt import recsys_dbt_assets
from recsys_dagster.ingest.assets import ingest
from recsys_dagster.models.assets import als_model, item_knn_model, popularity_model, svd_model
from recsys_dagster.publish.assets import publish_recommendations
from recsys_dagster.resources import build_resources
from recsys_dagster.validate.assets import validate_interactions

ASSETS = [
    ingest,
    validate_interactions,
    recsys_dbt_assets,
    als_model,
    svd_model,
    popularity_model,
    item_knn_model,
    model_evaluation,
    publish_recommendations,
]

defs = Definitions(
    assets=ASSETS,
    jobs=[refresh_recommendations],
    schedules=[nightly_refresh],
    sensors=[inbox_sensor],
    resources=build_resources(),
    executor=in_process_executor,
)
