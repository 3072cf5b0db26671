"""Paths and environment variables in one place.

Every entry point (``make run``, ``make test``, ``make dev``, the dbt profile) resolves the same
files from the same ``RECSYS_*`` variables, so dbt and Dagster can never disagree about which
warehouse they are writing. Defaults point at the bundled sample and at files under ``data/``.
"""

from __future__ import annotations

import os
import re
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

#: DuckDB's memory cap for every warehouse connection (Dagster steps and dbt). DuckDB's own default
#: is 80% of RAM, which a 2 GB ingest on a shared 2-core machine must not be allowed to take; above
#: the cap DuckDB spills sorts, joins and aggregates to the temp directory instead of growing.
MEMORY_LIMIT_ENV = "RECSYS_DUCKDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "4GB"
#: Where DuckDB spills (default: ``<warehouse>.tmp`` beside the warehouse file, same disk).
TEMP_DIR_ENV = "RECSYS_DUCKDB_TEMP_DIR"
#: A size as DuckDB accepts it ("4GB", "512 MiB", "1.5GiB") or a share of RAM ("50%"); nothing else
#: reaches a connection (dbt-duckdb writes profile settings into a SET statement).
_MEMORY_LIMIT_PATTERN = re.compile(r"\d+(\.\d+)?\s*((K|M|G|T)i?B|B|%)", re.IGNORECASE)
#: The shop's repurchase policy, one setting for tuning and evaluation (the champion decision records
#: it and publishing follows the decision): "true" lets bought items come back in the lists
#: (consumables, wholesale), "false" never recommends an item the user already bought.
REPURCHASE_ENV = "RECSYS_REPURCHASE"
DEFAULT_REPURCHASE = "false"
#: How many of each model's newest registered versions stay on disk (``models/retention.py``); versions
#: still in use (published, live, awaiting publication) are kept on top of these. At RetailRocket size a
#: version with its serving fit is hundreds of MB, and every nightly run writes one per model.
KEEP_MODEL_VERSIONS_ENV = "RECSYS_KEEP_MODEL_VERSIONS"
DEFAULT_KEEP_MODEL_VERSIONS = "3"
_BOOLEAN_WORDS = {**dict.fromkeys(("true", "1", "yes", "on"), True), **dict.fromkeys(("false", "0", "no", "off"), False)}


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
    os.environ[MEMORY_LIMIT_ENV] = duckdb_memory_limit()


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


def validated_memory_limit(value: str) -> str:
    """``value`` stripped, if it is a DuckDB memory size or percentage; ``ValueError`` otherwise."""
    text = value.strip()
    if not _MEMORY_LIMIT_PATTERN.fullmatch(text):
        raise ValueError(
            f"{MEMORY_LIMIT_ENV}={value!r} is not a memory size: use a number with B/KB/MB/GB/TB "
            "(or KiB/MiB/GiB/TiB), e.g. '4GB', or a share of RAM such as '50%'"
        )
    return text


def duckdb_memory_limit() -> str:
    """The validated DuckDB ``memory_limit`` of warehouse connections (``RECSYS_DUCKDB_MEMORY_LIMIT``)."""
    return validated_memory_limit(os.environ.get(MEMORY_LIMIT_ENV) or DEFAULT_MEMORY_LIMIT)


def repurchase_policy() -> bool:
    """The shop's repurchase policy (``RECSYS_REPURCHASE``: true/false, 1/0, yes/no, on/off)."""
    value = os.environ.get(REPURCHASE_ENV) or DEFAULT_REPURCHASE
    try:
        return _BOOLEAN_WORDS[value.strip().lower()]
    except KeyError:
        raise ValueError(f"{REPURCHASE_ENV}={value!r} is not a boolean: use true or false") from None


#: Fewest distinct items a user needs to be served the champion's list (fewer: the fallback list), one
#: setting for evaluation and publishing. 2 (the default) suits large shops of anonymous visitors, most of
#: them with one or two events (RetailRocket: 1.4M visitors), where one interaction says little and
#: skipping those users halves what a full refresh scores; 1 suits sessions and small B2B catalogs,
#: where the one item a user touched is the best evidence of what comes next.
MIN_ITEMS_ENV = "RECSYS_MIN_ITEMS_FOR_MODEL"
DEFAULT_MIN_ITEMS_FOR_MODEL = 2


def whole_number_at_least_one(setting: str, value: str | int) -> int:
    """``value`` of ``setting`` as an int, if it is a whole number >= 1; ``ValueError`` naming the setting
    otherwise (a typo must stop the run, not silently mean some default)."""
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{setting}={value!r} is not a whole number >= 1")
    return int(text)


def min_items_for_model() -> int:
    """``RECSYS_MIN_ITEMS_FOR_MODEL`` (default 2)."""
    return whole_number_at_least_one(MIN_ITEMS_ENV, os.environ.get(MIN_ITEMS_ENV) or DEFAULT_MIN_ITEMS_FOR_MODEL)


def validated_keep_model_versions(value: str | int) -> int:
    """``value`` as a count of versions to keep (zero is refused: the version a run has just trained is
    always one of the newest and must stay)."""
    return whole_number_at_least_one(KEEP_MODEL_VERSIONS_ENV, value)


def keep_model_versions() -> int:
    """The newest versions kept per model (``RECSYS_KEEP_MODEL_VERSIONS``, default 3)."""
    return validated_keep_model_versions(os.environ.get(KEEP_MODEL_VERSIONS_ENV) or DEFAULT_KEEP_MODEL_VERSIONS)


def duckdb_temp_dir(database: str | Path) -> Path:
    """DuckDB's spill directory for ``database``: ``RECSYS_DUCKDB_TEMP_DIR`` or ``<database>.tmp``."""
    configured = os.environ.get(TEMP_DIR_ENV)
    return Path(_resolve(configured)) if configured else Path(_resolve(f"{database}.tmp"))
