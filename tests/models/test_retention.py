"""Model artifact retention (models/retention.py), materialized for real: the popularity and item-kNN
model assets trained again and again on Online Retail, with what the live serving file, the last
publication and the last champion decision name."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from dagster import AssetsDefinition, DagsterInstance, materialize

from recsys_dagster.evaluate.champion import DECISIONS_DDL, ChampionDecision, record_publication
from recsys_dagster.models.assets import item_knn_model, popularity_model
from recsys_dagster.models.marts import pipeline_resources
from recsys_dagster.resources import RecsysPaths
from recsys_dagster.settings import KEEP_MODEL_VERSIONS_ENV, keep_model_versions

MODEL = "popularity_model"
#: Named like a model version but never registered: what a run killed after saving leaves behind.
ORPHAN = "20000101T000000000000Z-0000dead"


def kept(paths: RecsysPaths, count: int) -> RecsysPaths:
    """``paths`` keeping ``count`` versions per model."""
    return RecsysPaths(**{**paths.model_dump(), "keep_model_versions": count})


class Shop:
    """A copy of the Online Retail warehouse before any model was trained, with its own models folder
    and serving file."""

    def __init__(self, root: Path, warehouse: Path, keep: int) -> None:
        self.root = root
        self.database = root / "warehouse.duckdb"
        self.database.write_bytes(warehouse.read_bytes())
        for table in ("ml.model_registry", "ml.champion_decisions", "ml.published_runs"):  # no model trained yet
            self.write(f"DROP TABLE IF EXISTS {table}")
        self.resources = pipeline_resources(self.database, root / "models")
        self.resources["paths"] = kept(self.resources["paths"], keep)
        self.instance = DagsterInstance.ephemeral()
        self.logs: list[str] = []

    @property
    def paths(self) -> RecsysPaths:
        return self.resources["paths"]

    def train(self, asset: AssetsDefinition = popularity_model) -> dict[str, object]:
        """Materialize ``asset`` once; its metadata back, its warnings appended to ``logs``."""
        result = materialize([asset], resources=self.resources, instance=self.instance)
        assert result.success
        entries = self.instance.all_logs(result.run_id)
        self.logs += [entry.user_message for entry in entries if entry.level >= logging.WARNING]
        [event] = result.asset_materializations_for_node(asset.key.path[-1])
        return {name: value.value for name, value in event.metadata.items()}

    def on_disk(self, model: str = MODEL) -> list[str]:
        return sorted(path.name for path in (self.paths.models_path() / model).iterdir())

    def registered(self, model: str = MODEL) -> list[str]:
        with duckdb.connect(str(self.database), read_only=True) as con:
            rows = con.execute("SELECT model_version FROM ml.model_registry WHERE model = ? ORDER BY 1", [model])
            return [version for (version,) in rows.fetchall()]

    def write(self, sql: str, params: list[object] | None = None) -> None:
        with duckdb.connect(str(self.database)) as con:
            con.execute(sql, params)


def tree_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@pytest.fixture()
def trained_db(trained_retail: dict[str, object]) -> Path:
    """The Online Retail warehouse with its validation split (what the model assets read)."""
    return trained_retail["database"]


@pytest.fixture()
def shop(trained_db: Path, tmp_path: Path) -> Shop:
    return Shop(tmp_path, trained_db, keep=2)


def test_only_the_newest_versions_stay_and_nothing_outside_them_is_touched(shop: Shop, tmp_path: Path) -> None:
    model_dir = shop.paths.models_path() / MODEL
    (model_dir / ORPHAN / "holdout").mkdir(parents=True)
    (model_dir / ORPHAN / "holdout" / "arrays.npz").write_bytes(b"x" * 1000)
    (model_dir / "notes").mkdir()
    (model_dir / "notes" / "why.txt").write_text("kept by hand")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "precious.npz").write_bytes(b"y" * 10)
    linked = "20000102T000000000000Z-0000beef"  # a symlink named like an old version, pointing outside
    (model_dir / linked).symlink_to(outside, target_is_directory=True)

    metadata, versions, sizes = [], [], {}
    for _ in range(4):
        metadata.append(shop.train())
        versions.append(metadata[-1]["model_version"])
        sizes[versions[-1]] = tree_bytes(model_dir / versions[-1])

    assert shop.on_disk() == sorted([versions[2], versions[3], "notes", linked])
    assert shop.registered() == sorted(versions[2:])
    assert (outside / "precious.npz").read_bytes() == b"y" * 10 and (model_dir / "notes" / "why.txt").is_file()
    removed = [(m["versions_removed"], m["bytes_freed"], m["versions_kept"], m["removal_failures"]) for m in metadata]
    assert removed == [(1, 1000, 1, 0), (0, 0, 2, 0), (1, sizes[versions[0]], 2, 0), (1, sizes[versions[1]], 2, 0)]


def published(shop: Shop, version: str) -> None:
    """Record ``version`` as the last publication, as the publish step does."""
    decision = ChampionDecision(
        "run", MODEL, version, "metric", 0.1, "window", False, None, None, True, "ok", datetime.now()
    )
    with duckdb.connect(str(shop.database)) as con:
        record_publication(con, decision)


def decided(shop: Shop, version: str) -> None:
    """A later champion decision naming ``version`` (what the publish step would load)."""
    shop.write(DECISIONS_DDL)
    shop.write(
        "INSERT INTO ml.champion_decisions (model, model_version, passed, decided_at) VALUES (?, ?, true, now())",
        [MODEL, version],
    )


def live_serving_file(shop: Shop, version: str, model: str = MODEL, similar_version: str = "other") -> None:
    """A serving file whose recommendations come from ``model`` ``version``, its similar items from
    item-kNN ``similar_version``."""
    with duckdb.connect(str(shop.paths.serving_file())) as con:
        con.execute("CREATE SCHEMA recs")
        con.execute("CREATE TABLE recs.user_recommendations AS SELECT 'u1' AS user_id, ? AS model, ? AS model_version",
                    [model, version])
        con.execute("CREATE TABLE recs.similar_items AS SELECT 'i1' AS item_id, ? AS model_version", [similar_version])


def live_similar_items(shop: Shop, version: str) -> None:
    live_serving_file(shop, "some-version", model="als_model", similar_version=version)


@pytest.mark.parametrize(
    ("asset", "reference"),
    [(popularity_model, published), (popularity_model, decided), (popularity_model, live_serving_file),
     (item_knn_model, live_similar_items)],
    ids=["published_runs", "champion_decisions", "live_recommendations", "live_similar_items"],
)
def test_a_version_in_use_survives_though_older_than_the_newest_kept(
    trained_db: Path, tmp_path: Path, asset: AssetsDefinition, reference: Callable[[Shop, str], None]
) -> None:
    shop = Shop(tmp_path, trained_db, keep=1)
    model = asset.key.path[-1]
    first = shop.train(asset)["model_version"]
    reference(shop, first)
    second = shop.train(asset)["model_version"]
    third = shop.train(asset)
    assert shop.on_disk(model) == [first, third["model_version"]] and second not in shop.registered(model)
    assert shop.registered(model) == [first, third["model_version"]]
    assert (third["versions_removed"], third["versions_kept"]) == (1, 2)


def test_an_unreadable_serving_file_stops_retention(trained_db: Path, tmp_path: Path) -> None:
    """What the live file uses cannot be known, so nothing may go."""
    shop = Shop(tmp_path, trained_db, keep=1)
    shop.paths.serving_file().write_bytes(b"not a duckdb file")
    versions = [shop.train()["model_version"] for _ in range(2)]
    assert shop.on_disk() == versions == shop.registered()
    assert any("retention skipped for popularity_model" in message for message in shop.logs)


@contextmanager
def undeletable(folder: Path) -> Iterator[None]:
    """Make ``folder`` impossible to delete for the test's user: read-only for others, immutable
    params.json for root (skips where the filesystem or container refuses ``chattr``)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    target = folder / "params.json"
    if subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here: cannot make a folder undeletable for root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)


def test_a_failed_deletion_is_logged_not_fatal_and_retried_next_run(trained_db: Path, tmp_path: Path) -> None:
    shop = Shop(tmp_path, trained_db, keep=2)
    first, second = (shop.train()["model_version"] for _ in range(2))
    stuck = shop.paths.models_path() / MODEL / first
    with undeletable(stuck):
        third = shop.train()
    assert (third["versions_removed"], third["removal_failures"]) == (0, 1)
    assert any(f"could not remove {stuck}" in message for message in shop.logs)
    assert first in shop.on_disk() and first not in shop.registered()  # unreachable until removed
    fourth = shop.train()
    assert (fourth["versions_removed"], fourth["removal_failures"]) == (2, 0)
    assert shop.on_disk() == shop.registered() == [third["model_version"], fourth["model_version"]]


@pytest.mark.parametrize(("value", "expected"), [(None, 3), ("5", 5), (" 1 ", 1)])
def test_the_kept_versions_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, value, expected) -> None:
    if value is None:
        monkeypatch.delenv(KEEP_MODEL_VERSIONS_ENV, raising=False)
    else:
        monkeypatch.setenv(KEEP_MODEL_VERSIONS_ENV, value)
    assert keep_model_versions() == expected
    paths = pipeline_resources(Path("warehouse.duckdb"), Path("models"))["paths"]
    assert paths.model_versions_kept() == expected


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_count_that_would_delete_the_new_version_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(KEEP_MODEL_VERSIONS_ENV, value)
    with pytest.raises(ValueError, match=f"{KEEP_MODEL_VERSIONS_ENV}='{value}' .* whole number >= 1"):
        keep_model_versions()


@pytest.mark.parametrize("count", [0, -2])
def test_the_resource_refuses_the_same_counts(count: int) -> None:
    paths = pipeline_resources(Path("warehouse.duckdb"), Path("models"))["paths"]
    with pytest.raises(ValueError, match="whole number >= 1"):
        kept(paths, count).model_versions_kept()
