"""The dbt project as Dagster sees it: one ``DbtProject`` shared by the assets and the resource.

Importing this module guarantees a current ``target/manifest.json``, because ``@dbt_assets`` reads
it at import time to define one asset per model.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import dbt.version
import yaml
from dagster_dbt import DbtCliResource, DbtProject
from packaging import version

from recsys_dagster import settings

settings.apply_env_defaults()

#: Files whose change alters the manifest (models, macros, tests, YAML docs, the project file).
_PROJECT_SOURCE_SUFFIXES = {".sql", ".yml", ".yaml", ".md"}


def find_dbt_executable() -> str:
    """The ``dbt`` on PATH, else the one installed next to the running interpreter.

    ``.venv/bin/pytest`` or ``.venv/bin/dagster`` run without an activated venv have no ``dbt`` on
    PATH, and ``DbtCliResource`` would refuse to start; the venv's own ``dbt`` is the right one.
    """
    return shutil.which("dbt") or str(Path(sys.executable).parent / "dbt")


DBT_EXECUTABLE = find_dbt_executable()


class InstalledDbtCliResource(DbtCliResource):
    """``DbtCliResource`` that takes the dbt version from the installed ``dbt-core`` package.

    dagster-dbt learns the version by running ``dbt --version`` once per resource instance, i.e.
    once per run, and that command asks PyPI for the latest releases (two HTTP requests with 1 s
    timeouts, plus dbt's own import): ~6 s of every dbt step, spent phoning the internet. The
    executable is the venv's (``find_dbt_executable``); dagster-dbt only uses the version to tell
    dbt-core (< 2) from the Fusion engine.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(dbt.version.__version__)


def read_var_defaults(project: DbtProject) -> dict[str, Any]:
    """The ``vars`` of ``dbt_project.yml``: the one place where the feature defaults are written."""
    project_yml = yaml.safe_load((project.project_dir / "dbt_project.yml").read_text())
    return project_yml["vars"]


def dbt_vars_json(dbt_vars: Mapping[str, Any]) -> str:
    """The ``--vars`` argument for ``dbt_vars``.

    dbt reuses its partial-parse state only when ``--vars`` is the same as at parse time, so the
    manifest is parsed and the default run is invoked with exactly this rendering of the defaults.
    """
    return json.dumps(dict(dbt_vars))


def _project_sources(project: DbtProject) -> list[Path]:
    generated = {project.project_dir / project.target_path, project.project_dir / "logs"}
    return [
        path
        for path in project.project_dir.rglob("*")
        if path.suffix in _PROJECT_SOURCE_SUFFIXES and not any(path.is_relative_to(g) for g in generated)
    ]


def _manifest_database(project: DbtProject) -> str | None:
    """The database (DuckDB catalog) the manifest's models were parsed for."""
    nodes = json.loads(project.manifest_path.read_text())["nodes"].values()
    return next((node["database"] for node in nodes if node["resource_type"] == "model"), None)


def manifest_is_stale(project: DbtProject) -> bool:
    """True when the manifest is missing, older than a project file, or made for another warehouse.

    dbt-duckdb names the database after the warehouse file's stem and bakes it into every
    ``relation_name`` of the manifest; dagster-dbt uses those names (row counts, table metadata),
    so a manifest parsed for ``warehouse.duckdb`` is wrong for ``RECSYS_DUCKDB_PATH=.../shop.duckdb``.
    """
    if not project.manifest_path.exists():
        return True
    manifest_time = project.manifest_path.stat().st_mtime
    if any(path.stat().st_mtime > manifest_time for path in _project_sources(project)):
        return True
    return _manifest_database(project) != settings.warehouse_path().stem


def ensure_manifest(project: DbtProject, var_defaults: Mapping[str, Any]) -> None:
    """Parse the project when its manifest is missing or stale.

    Replaces ``DbtProject.prepare_if_dev``, which re-parses only under ``dagster dev`` and calls a
    ``dbt`` that must be on PATH: without this, importing the dbt assets from a fresh clone (pytest,
    ``dagster job execute``) fails on a missing manifest, and after an edit the assets would be
    defined from the old models. ``dbt parse`` needs no warehouse connection.
    """
    if manifest_is_stale(project):
        parser = InstalledDbtCliResource(project_dir=project, dbt_executable=DBT_EXECUTABLE)
        parse_args = ["parse", "--quiet", "--vars", dbt_vars_json(var_defaults)]
        parser.cli(parse_args, target_path=project.target_path).wait()


def dbt_target_dir(warehouse: str | Path) -> Path:
    """dbt's target (and log) directory for the builds of ``warehouse``: ``<warehouse>.dbt``.

    One stable directory per warehouse keeps dbt's partial-parse state from run to run:
    dagster-dbt's default is a new directory per invocation, so every build parsed the whole
    project again (~10 s of a ~17 s fixed cost) and the directories piled up under ``target/``.
    It is keyed by the warehouse because the state is valid only for the profile it was parsed
    with (the warehouse path is part of the profile), and builds of one warehouse never overlap
    (dbt holds the file, and the warehouse pool runs one such step at a time).
    """
    return Path(f"{warehouse}.dbt")


dbt_project = DbtProject(project_dir=settings.DBT_PROJECT_DIR)
DBT_VAR_DEFAULTS = read_var_defaults(dbt_project)
ensure_manifest(dbt_project, DBT_VAR_DEFAULTS)
