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


def isolate_pipeline(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every RECSYS_* path inside ``root``: input files go to ``root/input_dir``, the inbox is
    ``root/inbox_dir``, the warehouse and serving files are ``root/{warehouse,serving}.duckdb``."""
    for name in ENV_DEFAULTS:
        monkeypatch.setenv(name, str(root / name.removeprefix("RECSYS_").lower()))
    monkeypatch.setenv("RECSYS_DUCKDB_PATH", str(root / "warehouse.duckdb"))
    monkeypatch.setenv("RECSYS_SERVING_PATH", str(root / "serving.duckdb"))
    for folder in ("input_dir", "inbox_dir"):
        (root / folder).mkdir(exist_ok=True)
    return root


@pytest.fixture()
def pipeline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated pipeline setup for one test (see ``isolate_pipeline``)."""
    return isolate_pipeline(tmp_path, monkeypatch)
