"""The dbt project as Dagster sees it: one ``DbtProject`` shared by the assets and the resource."""

from __future__ import annotations

from dagster_dbt import DbtProject

from recsys_dagster import settings

settings.apply_env_defaults()

dbt_project = DbtProject(project_dir=settings.DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()
