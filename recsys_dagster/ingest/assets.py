"""The ingestion asset: every input file, recognised and mapped, into ``raw_events`` and ``raw_items``.

Files are tracked in ``main.ingested_files`` by the sha256 of their content, one row per file path
(its current content):

- a path whose recorded content is unchanged is skipped (re-running the pipeline loads nothing twice);
- a file whose content is already loaded under another path is recorded as ``duplicate_content``
  and loads no rows (the same export dropped twice, or renamed, never duplicates events);
- a path whose content changed has its old rows removed and the new content loaded.

All writes of one run happen in one transaction, so a failing file leaves every table as it was.
Rows of files that disappear from the directories are kept: the warehouse is the history.
"""

# No `from __future__ import annotations` here: Dagster resolves the IngestConfig annotation at decoration time.
import dataclasses
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
from dagster import AssetExecutionContext, AssetSpec, Config, MaterializeResult, MetadataValue, multi_asset
from dagster_duckdb import DuckDBResource

from recsys_dagster.ingest.files import (
    resolve_requested_files,
    scan_data_files,
    sha256_of,
    text_encoding_of,
)
from recsys_dagster.ingest.formats import (
    DetectedFile,
    detect_format,
    events_select_sql,
    items_select_sql,
    read_csv_parameters,
)
from recsys_dagster.metadata import frame_preview, table_metadata, timed
from recsys_dagster.resources import RecsysPaths

TABLE_DDL = (
    """CREATE TABLE IF NOT EXISTS main.ingested_files (
        file_path VARCHAR, file_name VARCHAR, sha256 VARCHAR, size_bytes BIGINT, source_format VARCHAR,
        n_rows BIGINT, status VARCHAR, ingested_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS main.raw_events (
        source_file VARCHAR, source_row BIGINT, source_format VARCHAR, user_id VARCHAR, item_id VARCHAR,
        event_type VARCHAR, rating VARCHAR, event_time VARCHAR, time_unit VARCHAR, transaction_id VARCHAR,
        ingested_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS main.raw_items (
        item_id VARCHAR, name VARCHAR, category VARCHAR, brand VARCHAR, price DOUBLE, available BOOLEAN,
        source_file VARCHAR, source_format VARCHAR, observed_at TIMESTAMP)""",
)
#: Tables holding rows keyed by ``source_file`` (replaced together when a path's content changes).
ROW_TABLES = ("main.raw_events", "main.raw_items")

LOADED = "loaded"
DUPLICATE = "duplicate_content"
#: Run-only statuses (not stored): the path's rows were swapped for new content / nothing to do.
REPLACED = "replaced"
UNCHANGED = "unchanged"


class IngestConfig(Config):
    """Which files to ingest: empty means every data file directly in the input and inbox dirs."""

    files: list[str] = []


@dataclass(frozen=True)
class InputFile:
    """A file of this run, recognised and hashed before any write."""

    detected: DetectedFile
    sha256: str
    size_bytes: int

    @property
    def path(self) -> Path:
        return self.detected.path


@dataclass(frozen=True)
class FileOutcome:
    """What one run did with one file (one line of the metadata table)."""

    file: str
    format: str
    status: str
    events_rows: int = 0
    items_rows: int = 0


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ingestion tables with the columns fixed in docs/design.md, if missing."""
    for ddl in TABLE_DDL:
        con.execute(ddl)


def select_files(config: IngestConfig, paths: RecsysPaths) -> list[Path]:
    """The configured files (checked to lie inside the input/inbox dirs) or the scan of both dirs."""
    if config.files:
        return resolve_requested_files(config.files, paths.input_path(), paths.inbox_path())
    return scan_data_files([paths.input_path(), paths.inbox_path()])


def inspect_file(path: Path) -> InputFile:
    """Recognise and hash ``path``; raises for unrecognised files before anything is written."""
    return InputFile(detect_format(path), sha256_of(path), path.stat().st_size)


def remove_stale_rows(
    con: duckdb.DuckDBPyConnection, files: list[InputFile]
) -> tuple[set[Path], dict[str, int]]:
    """Delete rows and ledger entries of paths whose content changed; returns those paths and
    the rows removed per table.

    Done for all files first, so that a file recorded as a duplicate of content that is being
    replaced in this very run is loaded in its own right.
    """
    removed = dict.fromkeys(ROW_TABLES, 0)
    stale_paths: set[Path] = set()
    for file in files:
        stale = con.execute(
            "SELECT count(*) FROM main.ingested_files WHERE file_path = ? AND sha256 <> ?",
            [str(file.path), file.sha256],
        ).fetchone()[0]
        if not stale:
            continue
        for table in ROW_TABLES:
            removed[table] += con.execute(f"DELETE FROM {table} WHERE source_file = ?", [str(file.path)]).fetchone()[0]
        con.execute("DELETE FROM main.ingested_files WHERE file_path = ?", [str(file.path)])
        stale_paths.add(file.path)
    return stale_paths, removed


def content_loaded_elsewhere(con: duckdb.DuckDBPyConnection, file: InputFile) -> bool:
    """True when the same content is already loaded under another path."""
    return bool(
        con.execute(
            "SELECT count(*) FROM main.ingested_files WHERE sha256 = ? AND status = ? AND file_path <> ?",
            [file.sha256, LOADED, str(file.path)],
        ).fetchone()[0]
    )


def recorded_status(con: duckdb.DuckDBPyConnection, file: InputFile) -> str | None:
    """The ledger status of this path with this content, or None when not recorded."""
    row = con.execute(
        "SELECT status FROM main.ingested_files WHERE file_path = ? AND sha256 = ?",
        [str(file.path), file.sha256],
    ).fetchone()
    return row[0] if row else None


def insert_events(con: duckdb.DuckDBPyConnection, detected: DetectedFile, ingested_at: datetime) -> int:
    """Append every data row of the file to raw_events; returns the number of rows."""
    sql = (
        "INSERT INTO main.raw_events SELECT ?::VARCHAR, source_row, ?::VARCHAR, user_id, item_id, event_type, "
        f"rating, event_time, time_unit, transaction_id, ?::TIMESTAMP FROM ({events_select_sql(detected)})"
    )
    params = [str(detected.path), detected.format.name, ingested_at, *read_csv_parameters(detected)]
    return int(con.execute(sql, params).fetchone()[0])


def insert_items(con: duckdb.DuckDBPyConnection, detected: DetectedFile) -> int:
    """Append one raw_items row per item of the file; returns the number of items."""
    sql = (
        "INSERT INTO main.raw_items SELECT item_id, name, category, brand, price, available, ?::VARCHAR, "
        f"?::VARCHAR, observed_at FROM ({items_select_sql(detected)})"
    )
    params = [str(detected.path), detected.format.name, *read_csv_parameters(detected)]
    return int(con.execute(sql, params).fetchone()[0])


def record_file(
    con: duckdb.DuckDBPyConnection, file: InputFile, n_rows: int, status: str, ingested_at: datetime
) -> None:
    """Write the ledger row of one path (its current content and what was done with it)."""
    con.execute(
        "INSERT INTO main.ingested_files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [str(file.path), file.path.name, file.sha256, file.size_bytes, file.detected.format.name, n_rows, status,
         ingested_at],
    )


def load_file(con: duckdb.DuckDBPyConnection, file: InputFile, ingested_at: datetime) -> tuple[int, int]:
    """Load the file's events and catalog rows and record it; returns (events rows, items rows).

    The text encoding is checked on the whole file only here, for files that are actually read.
    """
    encoding = text_encoding_of(file.path, compressed=file.detected.compression == "gzip")
    detected = dataclasses.replace(file.detected, encoding=encoding)
    events = insert_events(con, detected, ingested_at) if detected.has_events else 0
    items = insert_items(con, detected) if detected.has_items else 0
    record_file(con, file, events if detected.has_events else items, LOADED, ingested_at)
    return events, items


def ingest_file(
    con: duckdb.DuckDBPyConnection, file: InputFile, replaced: bool, ingested_at: datetime
) -> FileOutcome:
    """Apply the content rule to one file (see the module docstring)."""
    name, fmt = str(file.path), file.detected.format.name
    status = recorded_status(con, file)
    elsewhere = content_loaded_elsewhere(con, file)
    if status == LOADED or (status == DUPLICATE and elsewhere):
        return FileOutcome(name, fmt, UNCHANGED)
    if elsewhere:
        record_file(con, file, 0, DUPLICATE, ingested_at)
        return FileOutcome(name, fmt, DUPLICATE)
    if status == DUPLICATE:  # the content it duplicated is gone: this copy now carries it
        con.execute("DELETE FROM main.ingested_files WHERE file_path = ?", [str(file.path)])
    events, items = load_file(con, file, ingested_at)
    return FileOutcome(name, fmt, REPLACED if replaced else LOADED, events, items)


@dataclass(frozen=True)
class RunSummary:
    """What one ingestion run changed, for the materialization metadata."""

    outcomes: list[FileOutcome]
    removed: dict[str, int]

    def added(self, table: str) -> int:
        column = "events_rows" if table == "main.raw_events" else "items_rows"
        return sum(getattr(outcome, column) for outcome in self.outcomes)

    def count(self, *statuses: str) -> int:
        return sum(outcome.status in statuses for outcome in self.outcomes)

    def files_table(self) -> MetadataValue:
        frame = pd.DataFrame([dataclasses.asdict(outcome) for outcome in self.outcomes])
        return frame_preview(frame, limit=max(len(frame), 1))


def ingest_files(con: duckdb.DuckDBPyConnection, files: list[InputFile], ingested_at: datetime) -> RunSummary:
    """Apply the content rule to every file in ONE transaction (all or nothing)."""
    con.execute("BEGIN TRANSACTION")
    try:
        stale_paths, removed = remove_stale_rows(con, files)
        outcomes = [ingest_file(con, file, file.path in stale_paths, ingested_at) for file in files]
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return RunSummary(outcomes, removed)


def output_metadata(con: duckdb.DuckDBPyConnection, table: str, summary: RunSummary, seconds: float) -> dict:
    """Standard table metadata plus what this run added, removed and skipped."""
    return {
        **table_metadata(con, table, seconds),
        "rows_added": MetadataValue.int(summary.added(table)),
        "rows_removed_replaced": MetadataValue.int(summary.removed[table]),
        "files_loaded": MetadataValue.int(summary.count(LOADED, REPLACED)),
        "files_skipped_duplicate": MetadataValue.int(summary.count(DUPLICATE)),
        "files_unchanged": MetadataValue.int(summary.count(UNCHANGED)),
        "files": summary.files_table(),
    }


@multi_asset(
    name="ingest",
    specs=[
        AssetSpec(
            "raw_events",
            group_name="ingest",
            kinds={"duckdb"},
            description="One row per data row of every ingested file, mapped to canonical columns, values as text.",
        ),
        AssetSpec(
            "raw_items",
            group_name="ingest",
            kinds={"duckdb"},
            description="Catalog attributes found in the files, one row per (source_file, item_id).",
        ),
    ],
    can_subset=False,
)
def ingest(
    context: AssetExecutionContext, config: IngestConfig, warehouse: DuckDBResource, paths: RecsysPaths
) -> Iterator[MaterializeResult]:
    """Recognise, hash and load the input files into raw_events and raw_items."""
    with timed() as watch:
        files = [inspect_file(path) for path in select_files(config, paths)]
        listing = ", ".join(f"{file.path} [{file.detected.format.name}]" for file in files)
        context.log.info(f"{len(files)} input file(s): {listing}")
        # closing(): the resource only closes on success; a failed run must release the file lock too.
        with warehouse.get_connection() as con, closing(con):
            ensure_tables(con)
            summary = ingest_files(con, files, datetime.now(UTC).replace(tzinfo=None))
            for done in summary.outcomes:
                context.log.info(f"{done.file}: {done.status}, {done.events_rows} events, {done.items_rows} items")
            metadata = {table: output_metadata(con, table, summary, watch.seconds) for table in ROW_TABLES}
    yield MaterializeResult(asset_key="raw_events", metadata=metadata["main.raw_events"])
    yield MaterializeResult(asset_key="raw_items", metadata=metadata["main.raw_items"])
