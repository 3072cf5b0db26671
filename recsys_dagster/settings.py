"""Paths and environment variables in one place.

Every entry point (``make run``, ``make test``, ``make dev``, the dbt profile) resolves the same
files from the same ``RECSYS_*`` variables, so dbt and Dagster can never disagree about which
warehouse they are writing. Defaults point at the bundled sample and at files under ``data/``.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"

#: Environment variable -> default value (relative paths are relative to the project root).
ENV_DEFAULTS: dict[str, str] = {
    "RECSYS_INPUT_DIR": str(DATA_DIR / "sample"),
    "RECSYS_DUCKDB_PATH": str(DATA_DIR / "warehouse.duckdb"),
    "RECSYS_SERVING_PATH": str(DATA_DIR / "serving.duckdb"),
    "RECSYS_INBOX_DIR": str(DATA_DIR / "inbox"),
    "RECSYS_MODELS_DIR": str(DATA_DIR / "models"),
    "RECSYS_PUBLISHED_DIR": str(DATA_DIR / "published"),
}


def _resolve(value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (PROJECT_ROOT / path))


def apply_env_defaults() -> None:
    """Fill unset ``RECSYS_*`` variables with their defaults (as absolute paths).

    Dagster's ``EnvVar`` and dbt's ``env_var()`` both read the process environment; setting the
    defaults there once means the resources, the dbt subprocess and the sensors all agree.
    """
    for name, default in ENV_DEFAULTS.items():
        os.environ[name] = _resolve(os.environ.get(name) or default)


def env_path(name: str) -> Path:
    """The path configured in environment variable ``name`` (or its default)."""
    return Path(_resolve(os.environ.get(name) or ENV_DEFAULTS[name]))


def input_dir() -> Path:
    return env_path("RECSYS_INPUT_DIR")


def warehouse_path() -> Path:
    return env_path("RECSYS_DUCKDB_PATH")


def serving_path() -> Path:
    return env_path("RECSYS_SERVING_PATH")


def inbox_dir() -> Path:
    return env_path("RECSYS_INBOX_DIR")


def models_dir() -> Path:
    return env_path("RECSYS_MODELS_DIR")


def published_dir() -> Path:
    return env_path("RECSYS_PUBLISHED_DIR")
