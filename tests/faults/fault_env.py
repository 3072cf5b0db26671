"""The fault suite's test environment: the bad-input corpus and a warehouse copy per test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import yaml
from dagster import DagsterInstance, RunConfig, materialize

from recsys_dagster.ingest.assets import INPUT_FILES, IngestConfig, ingest
from recsys_dagster.resources import RecsysPaths, WarehouseResource
from recsys_dagster.settings import PROJECT_ROOT
from recsys_dagster.validate.assets import validate_interactions

CORPUS_DIR = PROJECT_ROOT / "tests" / "data" / "bad"
SAMPLE = PROJECT_ROOT / "data" / "sample" / "online_retail.csv"
#: SQL that would break (or drop) a table if a value were pasted into SQL text instead of bound.
HOSTILE = "x'); DROP TABLE raw_events; --"
#: Tables a bad file must leave exactly as they were, and the columns that identify their content.
#: (quarantined_at is the time of the last validation, so it is left out of the comparison.)
TABLE_COLUMNS = {
    "raw_events": "*",
    "raw_items": "*",
    "ingested_files": "*",
    "validated_interactions": "*",
    "quarantined_events": "* EXCLUDE (quarantined_at)",
}


def load_manifest() -> list[dict]:
    with (CORPUS_DIR / "MANIFEST.yaml").open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@dataclass(frozen=True)
class Baseline:
    """A warehouse with the validated sample, read from ``input_dir`` (shared by every test)."""

    input_dir: Path
    warehouse: Path
    sample_path: str


@dataclass(frozen=True)
class FaultEnv:
    """One test's copy of the baseline warehouse, its own inbox and a directory outside both."""

    baseline: Baseline
    warehouse: Path
    inbox: Path
    outside: Path

    def resources(self) -> dict[str, object]:
        root = self.warehouse.parent
        return {
            "warehouse": WarehouseResource(database=str(self.warehouse)),
            "paths": RecsysPaths(
                input_dir=str(self.baseline.input_dir),
                inbox_dir=str(self.inbox),
                models_dir=str(root / "models"),
                serving_path=str(root / "serving.duckdb"),
                published_dir=str(root / "published"),
            ),
        }

    def run(self, files: list[str] | None = None):
        """Materialize ingest + validate as a real run; failures are returned, not raised."""
        config = RunConfig({"ingest": IngestConfig(files=files or [])})
        return materialize(
            [ingest, validate_interactions], resources=self.resources(), run_config=config, raise_on_error=False
        )

    def run_partition(self, partition_key: str):
        """Materialize ingest (of the file named ``partition_key``) + validate, as a re-run or backfill
        of that partition from the UI or the CLI would."""
        instance = DagsterInstance.ephemeral()
        instance.add_dynamic_partitions(INPUT_FILES.name, [partition_key])
        return materialize([ingest, validate_interactions], resources=self.resources(), instance=instance,
                           partition_key=partition_key, raise_on_error=False)

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with duckdb.connect(str(self.warehouse), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def fingerprints(self) -> dict[str, tuple]:
        """Row count and an order-independent content hash of every pipeline table."""
        return {
            table: self.query(
                f"SELECT count(*), md5(coalesce(string_agg(r::VARCHAR, '\n' ORDER BY r::VARCHAR), '')) "
                f"FROM (SELECT {columns} FROM main.{table}) r"
            )[0]
            for table, columns in TABLE_COLUMNS.items()
        }


def failure_text(result) -> str:
    """Every message of the failed steps' errors, causes included."""
    texts = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            texts.append(error.message)
            error = error.cause or error.context
    return "\n".join(texts)
