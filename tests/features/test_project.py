"""When the dbt manifest that defines the Dagster assets must be parsed again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from dagster_dbt import DbtProject

from recsys_dagster.features.project import dbt_project, manifest_is_stale


@pytest.fixture
def project_copy(tmp_path: Path) -> DbtProject:
    """A copy of the dbt project with its current manifest, safe to touch."""
    copy = tmp_path / "dbt_project"
    shutil.copytree(dbt_project.project_dir, copy, ignore=shutil.ignore_patterns("recsys_dbt_assets-*", "logs"))
    os.utime(copy / dbt_project.target_path / "manifest.json")  # copytree keeps mtimes; make it the newest
    return DbtProject(project_dir=copy)


def test_the_imported_manifest_is_current() -> None:
    assert not manifest_is_stale(dbt_project)


def test_an_edited_model_makes_the_manifest_stale(project_copy: DbtProject) -> None:
    assert not manifest_is_stale(project_copy)
    model = project_copy.project_dir / "models" / "marts" / "dim_users.sql"
    later = project_copy.manifest_path.stat().st_mtime + 10
    os.utime(model, (later, later))
    assert manifest_is_stale(project_copy)


def test_another_warehouse_file_makes_the_manifest_stale(
    project_copy: DbtProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # dbt-duckdb names the database after the file stem and bakes it into the manifest.
    monkeypatch.setenv("RECSYS_DUCKDB_PATH", str(tmp_path / "shop.duckdb"))
    assert manifest_is_stale(project_copy)
    monkeypatch.setenv("RECSYS_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    assert not manifest_is_stale(project_copy)


def test_a_missing_manifest_is_stale(project_copy: DbtProject) -> None:
    project_copy.manifest_path.unlink()
    assert manifest_is_stale(project_copy)
