"""Retention of model artifacts: each model keeps its newest versions and those in use, the rest go.

Every training run writes a new ``<models_dir>/<model>/<version>/`` per model (the version names
its training time, so equal parameters on equal data still get a new folder); at RetailRocket size
a version with its serving fit is hundreds of MB. So after a model asset registers its new version,
``prune_versions`` removes that model's other versions except:

- the newest ``keep`` registered ones (``RecsysPaths.model_versions_kept``:
  ``RECSYS_KEEP_MODEL_VERSIONS``, default 3), the one just trained among them even if a clock step
  back made it sort older;
- every version in use (``in_use_versions``): the champion of the live serving file (the incremental
  refresh re-scores with its serving fit, ``publish/incremental.py``) and the model its
  ``recs.similar_items`` came from, the last publication of record (``ml.published_runs``) and the
  champion of the last decision (``ml.champion_decisions``: what the publish step loads).

Nothing else loads an older version: evaluation, publishing and fit reuse read each model's newest
registered version, and the step runs in the warehouse pool, which admits one run at a time
(dagster.yaml, granularity "run"), so no other run is using a version while it prunes. The registry
rows of removed versions are deleted first, then the folders: a folder whose deletion fails is
already unreachable and is retried by the next run's retention, as is a folder a killed run left
unregistered.

Only real directories (never symlinks) named like a version (``VERSION_NAME``) directly inside a
model folder that is itself no symlink are candidates, so nothing outside the models folder is ever
touched (``shutil.rmtree`` unlinks symlinks inside a folder without following them). A failed
deletion is logged and counted in the step's metadata; it never fails the run.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
from dagster import DagsterLogManager, MetadataValue

from recsys_dagster.models.artifacts import VERSION_NAME
from recsys_dagster.models.registry import NEWEST_FIRST
from recsys_dagster.publish.serving import live_rows
from recsys_dagster.resources import RecsysPaths, table_exists

#: The (model, version) pairs the live serving file names: its champion, and the model
#: ``recs.similar_items`` is published from (``item_knn_model``, publish/assets.py).
LIVE_VERSIONS_SQL = """
SELECT * FROM (SELECT model, model_version FROM recs.user_recommendations LIMIT 1)
UNION ALL
SELECT * FROM (SELECT 'item_knn_model', model_version FROM recs.similar_items LIMIT 1)
"""
#: Warehouse records whose last row names a version in use -> the column that orders them.
IN_USE_RECORDS = {"ml.published_runs": "published_at", "ml.champion_decisions": "decided_at"}
LAST_RECORD_SQL = "SELECT model, model_version FROM {table} ORDER BY {ordered_by} DESC LIMIT 1"


@dataclass(frozen=True)
class Pruned:
    """What retention did to one model's folder."""

    kept: tuple[str, ...]
    removed: tuple[str, ...] = ()
    bytes_freed: int = 0
    #: Versions whose folder could not be deleted (logged; retried by the next run).
    failed: tuple[str, ...] = ()

    def metadata(self) -> dict[str, MetadataValue]:
        return {
            "versions_kept": MetadataValue.int(len(self.kept)),
            "versions_removed": MetadataValue.int(len(self.removed)),
            "bytes_freed": MetadataValue.int(self.bytes_freed),
            "removal_failures": MetadataValue.int(len(self.failed)),
        }


def in_use_versions(con: duckdb.DuckDBPyConnection, serving_path: Path) -> set[tuple[str, str]] | None:
    """The (model, version) pairs something still loads (module docstring); None when the serving
    file exists but cannot be read, so what it uses is unknown."""
    try:
        live = live_rows(serving_path, LIVE_VERSIONS_SQL)
    except duckdb.Error:
        return None
    recorded = [
        row
        for table, ordered_by in IN_USE_RECORDS.items()
        if table_exists(con, table)
        for row in con.execute(LAST_RECORD_SQL.format(table=table, ordered_by=ordered_by)).fetchall()
    ]
    return {(model, version) for model, version in [*live, *recorded]}


def newest_registered(con: duckdb.DuckDBPyConnection, model: str, count: int) -> list[str]:
    """``model``'s ``count`` newest registered versions, in ``load_latest``'s order."""
    return [
        version
        for (version,) in con.execute(
            f"SELECT model_version FROM ml.model_registry WHERE model = ? {NEWEST_FIRST} LIMIT ?",
            [model, count],
        ).fetchall()
    ]


def version_folders(model_dir: Path) -> list[Path]:
    """The version folders of one model, oldest first: real directories named like a version.
    A symlinked model folder, symlinks and anything named otherwise are never candidates."""
    if model_dir.is_symlink() or not model_dir.is_dir():
        return []
    found = [path for path in model_dir.iterdir() if VERSION_NAME.fullmatch(path.name)]
    return sorted(path for path in found if not path.is_symlink() and path.is_dir())


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder``, symlinks counted as links and never followed."""
    return sum(os.lstat(os.path.join(root, name)).st_size for root, _, names in os.walk(folder) for name in names)


def remove_folders(folders: list[Path], log: DagsterLogManager) -> tuple[list[str], int, list[str]]:
    """Delete ``folders``: (removed names, bytes freed, names that failed, each logged as a warning)."""
    removed, freed, failed = [], 0, []
    for folder in folders:
        try:
            size = folder_bytes(folder)
            shutil.rmtree(folder)
        except OSError as error:
            log.warning(f"retention could not remove {folder} (retried next run): {error}")
            failed.append(folder.name)
        else:
            removed.append(folder.name)
            freed += size
    return removed, freed, failed


def prune_versions(
    con: duckdb.DuckDBPyConnection, paths: RecsysPaths, model: str, current: str, log: DagsterLogManager
) -> Pruned:
    """Remove ``model``'s versions that are neither among its newest kept, nor ``current`` (the
    version this step registered), nor in use: registry rows first, then the folders."""
    folders = version_folders(paths.models_path() / model)
    in_use = in_use_versions(con, paths.serving_file())
    if in_use is None:
        log.warning(f"retention skipped for {model}: the serving file {paths.serving_file()} cannot be read")
        return Pruned(kept=tuple(folder.name for folder in folders))
    keep = {current, *newest_registered(con, model, paths.model_versions_kept())}
    keep |= {version for name, version in in_use if name == model}
    con.execute(
        "DELETE FROM ml.model_registry WHERE model = ? AND NOT list_contains(?, model_version)", [model, sorted(keep)]
    )
    removed, freed, failed = remove_folders([folder for folder in folders if folder.name not in keep], log)
    if removed:
        log.info(f"{model}: removed {len(removed)} old versions ({freed / 2**20:.1f} MiB): {', '.join(removed)}")
    return Pruned(
        kept=tuple(folder.name for folder in folders if folder.name in keep),
        removed=tuple(removed),
        bytes_freed=freed,
        failed=tuple(failed),
    )
