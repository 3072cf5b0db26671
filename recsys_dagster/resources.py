"""Resources shared by every stage: the warehouse connection, dbt, and the configured paths.

All three are configured through ``EnvVar`` so that ``make run``, ``make dev`` and the tests point
Dagster and dbt at the same files by setting ``RECSYS_*`` variables (see ``settings``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster import ConfigurableResource, EnvVar
from dagster_duckdb import DuckDBResource

from recsys_dagster import settings
from recsys_dagster.features.project import DBT_EXECUTABLE, InstalledDbtCliResource, dbt_project


#: Dagster concurrency pool of every step that writes the warehouse. DuckDB allows one writing
#: process per file, so the instance limits this pool to one step at a time across all runs
#: (dagster.yaml), whether a run comes from the schedule, the sensor or the UI.
WAREHOUSE_POOL = "duckdb_warehouse"


class WarehouseResource(DuckDBResource):
    """The warehouse DuckDB file: ``DuckDBResource`` plus the guarantees the pipeline relies on.

    The connection is closed even when the asset body raises (the base class leaks it, and a leaked
    connection keeps the file locked for the next step and for dbt), every session works in UTC so
    that ``TIMESTAMPTZ`` values are converted the same way on every machine, and memory is bounded:
    ``memory_limit`` / ``temp_directory`` (default: ``RECSYS_DUCKDB_MEMORY_LIMIT``, 4GB, and
    ``RECSYS_DUCKDB_TEMP_DIR``, ``<warehouse>.tmp``) make DuckDB spill to disk instead of growing.
    They are passed as connection configuration, i.e. as values, never as SQL text.
    """

    memory_limit: str | None = None
    temp_directory: str | None = None

    def duckdb_config(self) -> dict[str, str]:
        """The validated memory settings of this warehouse's connections."""
        memory_limit = (
            settings.validated_memory_limit(self.memory_limit) if self.memory_limit else settings.duckdb_memory_limit()
        )
        temp_directory = self.temp_directory or str(settings.duckdb_temp_dir(self.database))
        return {"memory_limit": memory_limit, "temp_directory": temp_directory}

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        configured = self.model_copy(update={"connection_config": {**self.duckdb_config(), **self.connection_config}})
        with DuckDBResource.get_connection(configured) as con:
            try:
                con.execute("SET TimeZone = 'UTC'")
                yield con
            finally:
                con.close()


class RecsysPaths(ConfigurableResource):
    """Where input files are read from and where artifacts and published files are written, and how
    many model versions the models folder keeps (``keep_model_versions``, default:
    ``RECSYS_KEEP_MODEL_VERSIONS``, 3; see ``models/retention.py``)."""

    input_dir: str
    inbox_dir: str
    models_dir: str
    serving_path: str
    published_dir: str
    keep_model_versions: int | None = None

    def model_versions_kept(self) -> int:
        """The validated number of newest versions kept per model."""
        if self.keep_model_versions is None:
            return settings.keep_model_versions()
        return settings.validated_keep_model_versions(self.keep_model_versions)

    def input_path(self) -> Path:
        return Path(self.input_dir)

    def inbox_path(self) -> Path:
        return Path(self.inbox_dir)

    def models_path(self) -> Path:
        return Path(self.models_dir)

    def serving_file(self) -> Path:
        return Path(self.serving_path)

    def published_path(self) -> Path:
        return Path(self.published_dir)


def build_resources() -> dict[str, object]:
    """The resources of the one ``Definitions``, every path read from the environment."""
    settings.apply_env_defaults()
    return {
        "warehouse": WarehouseResource(database=EnvVar("RECSYS_DUCKDB_PATH")),
        "dbt": InstalledDbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE),
        "paths": RecsysPaths(
            input_dir=EnvVar("RECSYS_INPUT_DIR"),
            inbox_dir=EnvVar("RECSYS_INBOX_DIR"),
            models_dir=EnvVar("RECSYS_MODELS_DIR"),
            serving_path=EnvVar("RECSYS_SERVING_PATH"),
            published_dir=EnvVar("RECSYS_PUBLISHED_DIR"),
        ),
    }


def table_exists(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    """Whether ``schema.table`` (``main`` when unqualified) exists: the stages create their own tables
    on first use, so reading code asks before it reads."""
    schema, _, name = qualified.rpartition(".")
    sql = "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?"
    return bool(con.execute(sql, [schema or "main", name]).fetchone()[0])
