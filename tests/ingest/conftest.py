"""Fixtures of the ingestion tests: slices of the real shared datasets written into tmp_path."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest

from recsys_dagster.resources import RecsysPaths, WarehouseResource


def write_head(source: Path, target: Path, n_lines: int | None = None, skip: int = 0) -> Path:
    """Copy lines ``skip`` .. ``skip + n_lines`` of ``source`` (all when None) to ``target``.

    A ``.gz`` target is written gzip-compressed.
    """
    with source.open("rb") as handle:
        lines = handle.readlines()[skip : None if n_lines is None else skip + n_lines]
    target.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if target.name.endswith(".gz") else open
    with opener(target, "wb") as out:
        out.writelines(lines)
    return target


@pytest.fixture
def head() -> Callable[..., Path]:
    return write_head


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    """Empty input and inbox directories plus the warehouse file of one test."""
    layout = {"input": tmp_path / "input", "inbox": tmp_path / "inbox", "warehouse": tmp_path / "warehouse.duckdb"}
    layout["input"].mkdir()
    layout["inbox"].mkdir()
    return layout


@pytest.fixture
def resources(dirs: dict[str, Path], tmp_path: Path) -> dict[str, object]:
    """Real resources pointing at the test's directories and DuckDB file."""
    return {
        "warehouse": WarehouseResource(database=str(dirs["warehouse"])),
        "paths": RecsysPaths(
            input_dir=str(dirs["input"]),
            inbox_dir=str(dirs["inbox"]),
            models_dir=str(tmp_path / "models"),
            serving_path=str(tmp_path / "serving.duckdb"),
            published_dir=str(tmp_path / "published"),
        ),
    }
