"""Fixtures shared by the whole suite: where the real datasets are, and an isolated pipeline setup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recsys_dagster.settings import ENV_DEFAULTS, PROJECT_ROOT


def shared_datasets_dir() -> Path:
    """../shared/datasets beside the checkout (override with RECSYS_SHARED_DATASETS)."""
    return Path(os.environ.get("RECSYS_SHARED_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    path = shared_datasets_dir()
    if not path.is_dir():
        pytest.fail(f"real datasets not found at {path}: set RECSYS_SHARED_DATASETS")
    return path


@pytest.fixture()
def pipeline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every RECSYS_* path inside ``tmp_path`` (input files go to ``tmp_path/input``)."""
    for name in ENV_DEFAULTS:
        folder = name.removeprefix("RECSYS_").lower()
        monkeypatch.setenv(name, str(tmp_path / folder))
    monkeypatch.setenv("RECSYS_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("RECSYS_SERVING_PATH", str(tmp_path / "serving.duckdb"))
    for folder in ("input_dir", "inbox_dir"):
        (tmp_path / folder).mkdir()
    return tmp_path
