"""The ingestion asset: every input file, recognised and mapped, into ``raw_events`` and ``raw_items``.

Files are tracked in ``main.ingested_files`` by the sha256 of their content, one row per file path
(its current content):

- a path whose recorded content is unchanged is skipped (re-running the pipeline loads nothing twice);
- a file whose content is already loaded under another path is recorded as ``duplicate_content``
  and loads no rows (the same export dropped twice, or renamed, never duplicates events);
- a path whose content changed has its old rows removed and the new content loaded.

All writes of one run happen in one transaction, so a failing file leaves every table as it was.
Rows of files that disappear from the directories are kept: the warehouse is the history.

Rejected files. A file that cannot be loaded as a whole -- empty (0 bytes), binary, of no known
shape, a truncated gzip, a name DuckDB would expand as a glob, a CSV error DuckDB cannot get past, or
a scanned link pointing outside the input/inbox dirs -- is handled so that it is noticed once and
blocks nothing afterwards:

- the first run that meets it FAILS, before writing any row (the good files of that run are not
  loaded either: a failed run leaves every table exactly as it was), with an error naming each
  rejected file and its problem -- a red run is what an on-call engineer sees;
- the rejection is recorded in ``main.rejected_files`` (file_path, file_name, sha256, size_bytes,
  error, rejected_at), committed even though the run fails;
- every later run (the retry, the next schedule, a sensor run) skips that path with that content,
  logs a warning with the recorded error and lists it in the ``files_rejected`` metadata and the
  ``files`` table (status ``rejected_earlier``), and loads everything else;
- the file is looked at again as soon as its content changes (a fixed export under the same
  name). To retry unchanged content, delete its row:
  ``DELETE FROM main.rejected_files WHERE file_name = '...'``.

A link is recorded with sha256 NULL: content outside the allowed dirs is never read, not even to
hash it. A configured path outside the allowed dirs (``IngestConfig.files``) is a configuration
error, not a file: it fails every run it is configured for and is not recorded. Files whose name
ends in ``.part``/``.tmp`` (still being written) are never scanned (see ``files.is_data_file_name``).

Partitions. Both assets are partitioned by input file (``INPUT_FILES``, dynamic partitions keyed by
file name): the file is the unit that arrives, is hashed, rejected and replaced, while event time is
only typed by validation and one file spans many days. A run for one or more partitions (the inbox
sensor, a re-run or a backfill over a range -- one run for the whole range) reads exactly those
files and replaces their rows even when the content is unchanged (a backfill after an adapter fix
re-reads them). A run without partition (``make run``, the nightly schedule, tests) applies the
content rule to the configured files or every scanned file and registers each newly loaded file as
a partition, so that every file with rows can be re-run or backfilled by name.
"""

# No `from __future__ import annotations` here: Dagster resolves the IngestConfig annotation at decoration time.
import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetSpec,
    BackfillPolicy,
    Config,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from recsys_dagster.ingest.files import (
    FileOutsideAllowedDirsError,
    FileRejectedError,
    UnreadableFileError,
    check_readable_name,
    resolve_inside,
    resolve_requested_files,
    scan_data_files,
    sha256_of,
    text_encoding_of,
)
from recsys_dagster.ingest.formats import (
    DetectedFile,
    check_quotes_closed,
    detect_format,
    events_select_sql,
    items_select_sql,
    read_csv_parameters,
)
from recsys_dagster.metadata import frame_preview, table_metadata, timed
from recsys_dagster.resources import WAREHOUSE_POOL, RecsysPaths, WarehouseResource

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
#: Created before any file is looked at: a rejection is recorded even when no row table exists yet.
REJECTED_FILES_DDL = """CREATE TABLE IF NOT EXISTS main.rejected_files (
    file_path VARCHAR, file_name VARCHAR, sha256 VARCHAR, size_bytes BIGINT, error VARCHAR, rejected_at TIMESTAMP)"""
#: Longest error text stored and shown per rejected file (DuckDB quotes whole lines, up to megabytes).
MAX_ERROR_CHARS = 600
#: Tables holding rows keyed by ``source_file`` (replaced together when a path's content changes).
ROW_TABLES = ("main.raw_events", "main.raw_items")

#: One partition per input file, keyed by file name (the sensor adds a key when a file arrives).
INPUT_FILES = DynamicPartitionsDefinition(name="input_files")
#: Substrings Dagster refuses in a partition key: such a file is loaded but not listed as a partition.
UNLISTABLE_KEY_PARTS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")

LOADED = "loaded"
DUPLICATE = "duplicate_content"
#: Run-only statuses (not stored): the path's rows were swapped for new content / nothing to do /
#: the path's content was rejected by an earlier run and is skipped.
REPLACED = "replaced"
UNCHANGED = "unchanged"
REJECTED_EARLIER = "rejected_earlier"


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
    detail: str = ""


@dataclass(frozen=True)
class Rejection:
    """A file refused as a whole: where, which content (None when never read) and why."""

    path: Path
    sha256: str | None
    size_bytes: int | None
    error: FileRejectedError

    @property
    def message(self) -> str:
        return short_error(self.error)


@dataclass(frozen=True)
class Inspection:
    """Every candidate file of a run sorted into: to load, rejected now, rejected by an earlier run."""

    files: list[InputFile]
    rejections: list[Rejection]
    skipped: list[FileOutcome]


def short_error(error: BaseException) -> str:
    """The error text cut to ``MAX_ERROR_CHARS`` (the start names the file and the problem)."""
    text = str(error)
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " [...]"


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ingestion tables with the columns fixed in docs/design.md, if missing."""
    for ddl in TABLE_DDL:
        con.execute(ddl)


def partition_files(keys: list[str], paths: RecsysPaths) -> list[Path]:
    """The file of each partition key: the file of that name in the inbox or the input dir.

    A key matching no file, or files in both dirs, fails the run: a re-run must read exactly one file.
    """
    files = []
    for key in keys:
        matches = [folder / key for folder in (paths.inbox_path(), paths.input_path()) if (folder / key).is_file()]
        if len(matches) != 1:
            found = ", ".join(map(str, matches)) or "no file"
            raise FileNotFoundError(f"partition {key!r} must name one file in the inbox or input dir, found: {found}")
        files.append(matches[0])
    return resolve_requested_files([str(path) for path in files], paths.input_path(), paths.inbox_path())


def partition_keys_of_run(context: AssetExecutionContext) -> list[str]:
    """The input files this run targets (a single key or a backfill range), empty when unpartitioned."""
    if context.has_partition_key or context.has_partition_key_range:
        return list(context.partition_keys)
    return []


def select_files(config: IngestConfig, paths: RecsysPaths, partition_keys: Sequence[str] = ()) -> list[Path]:
    """The partitions' files, else the configured files (checked to lie inside the input/inbox dirs),
    else the scan of both dirs."""
    if partition_keys:
        return partition_files(list(partition_keys), paths)
    if config.files:
        return resolve_requested_files(config.files, paths.input_path(), paths.inbox_path())
    return scan_data_files([paths.input_path(), paths.inbox_path()])


def earlier_rejection(con: duckdb.DuckDBPyConnection, path: Path, sha256: str | None) -> str | None:
    """The recorded error when this path with this content was rejected before, else None."""
    row = con.execute(
        "SELECT error FROM main.rejected_files WHERE file_path = ? AND sha256 IS NOT DISTINCT FROM ? "
        "ORDER BY rejected_at DESC LIMIT 1",
        [str(path), sha256],
    ).fetchone()
    return row[0] if row else None


def is_recorded(con: duckdb.DuckDBPyConnection, path: Path, sha256: str) -> bool:
    """True when the ledger already holds this path with this content (nothing will be read)."""
    sql = "SELECT count(*) FROM main.ingested_files WHERE file_path = ? AND sha256 = ?"
    return bool(con.execute(sql, [str(path), sha256]).fetchone()[0])


def recognise(con: duckdb.DuckDBPyConnection, path: Path, sha256: str) -> InputFile:
    """Recognise ``path``; content not yet in the ledger is also read in full (encoding, gzip end).

    Raises ``FileRejectedError`` for a file that cannot be loaded as it is.
    """
    check_readable_name(path)
    detected = detect_format(path)
    if not is_recorded(con, path, sha256):
        encoding = text_encoding_of(path, compressed=detected.compression == "gzip")
        detected = dataclasses.replace(detected, encoding=encoding)
        check_quotes_closed(detected)
    return InputFile(detected, sha256, path.stat().st_size)


def inspect_file(
    con: duckdb.DuckDBPyConnection, candidate: Path, allowed: tuple[Path, ...]
) -> InputFile | Rejection | FileOutcome:
    """One candidate: a file to load, a new rejection, or the skip of content rejected by an earlier run."""
    problem: FileRejectedError | None = None
    try:
        path = resolve_inside(candidate, allowed)
        sha256: str | None = sha256_of(path)
    except FileOutsideAllowedDirsError as error:
        path, sha256, problem = candidate, None, error  # never read: not even hashed
    recorded = earlier_rejection(con, path, sha256)
    if recorded is not None:
        return FileOutcome(str(path), "-", REJECTED_EARLIER, detail=recorded)
    if problem is None:
        try:
            return recognise(con, path, sha256)
        except FileRejectedError as error:
            problem = error
    return Rejection(path, sha256, None if sha256 is None else path.stat().st_size, problem)


def inspect_files(con: duckdb.DuckDBPyConnection, candidates: list[Path], allowed: tuple[Path, ...]) -> Inspection:
    """Resolve, hash and recognise every candidate before anything is written.

    New problems are collected for all files, so that one failed run names every bad file at once.
    A file reached twice (directly and through a link) is loaded once.
    """
    inspected = [inspect_file(con, candidate, allowed) for candidate in candidates]
    files = {item.path: item for item in reversed(inspected) if isinstance(item, InputFile)}
    return Inspection(
        sorted(files.values(), key=lambda file: file.path),
        [item for item in inspected if isinstance(item, Rejection)],
        [item for item in inspected if isinstance(item, FileOutcome)],
    )


def record_rejections(con: duckdb.DuckDBPyConnection, rejections: list[Rejection], rejected_at: datetime) -> None:
    """Remember rejected files (committed at once: it must outlive the failing run)."""
    con.executemany(
        "INSERT INTO main.rejected_files VALUES (?, ?, ?, ?, ?, ?)",
        [[str(r.path), r.path.name, r.sha256, r.size_bytes, r.message, rejected_at] for r in rejections],
    )


def rejection_error(rejections: list[Rejection]) -> FileRejectedError:
    """One error for the run: the first rejection's type, every rejected file and problem in the text."""
    lines = [f"{len(rejections)} input file(s) rejected, nothing was loaded by this run:"]
    lines += [f"- {r.message}" for r in rejections]
    lines.append("They are recorded in main.rejected_files; the next run skips them and loads the other files.")
    return type(rejections[0].error)("\n".join(lines))


def remove_stale_rows(
    con: duckdb.DuckDBPyConnection, files: list[InputFile], reload: bool = False
) -> tuple[set[Path], dict[str, int]]:
    """Delete rows and ledger entries of paths whose content changed (every given path when
    ``reload``: a partition re-run); returns those paths and the rows removed per table.

    Done for all files first, so that a file recorded as a duplicate of content that is being
    replaced in this very run is loaded in its own right.
    """
    removed = dict.fromkeys(ROW_TABLES, 0)
    stale_paths: set[Path] = set()
    for file in files:
        stale = con.execute(
            "SELECT count(*) FROM main.ingested_files WHERE file_path = ? AND (sha256 <> ? OR ?)",
            [str(file.path), file.sha256, reload],
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


def execute_read(con: duckdb.DuckDBPyConnection, detected: DetectedFile, sql: str, params: list) -> int:
    """Run an INSERT that reads the file; a CSV error DuckDB cannot get past rejects the file."""
    try:
        return int(con.execute(sql, params).fetchone()[0])
    except duckdb.InvalidInputException as error:
        summary = " ".join(str(error).splitlines()[:1] + _csv_error_hint(str(error)))
        raise UnreadableFileError(f"{detected.path}: DuckDB cannot read it as CSV: {summary}") from error


def _csv_error_hint(message: str) -> list[str]:
    """The line of a DuckDB CSV error that says what is wrong (it follows the quoted original line)."""
    lines = [line for line in message.splitlines() if line.strip()]
    after_original = [i + 1 for i, line in enumerate(lines) if line.startswith("Original Line:")]
    return [lines[after_original[0]][:200]] if after_original and after_original[0] < len(lines) else []


def insert_events(con: duckdb.DuckDBPyConnection, detected: DetectedFile, ingested_at: datetime) -> int:
    """Append every data row of the file to raw_events; returns the number of rows."""
    sql = (
        "INSERT INTO main.raw_events SELECT ?::VARCHAR, source_row, ?::VARCHAR, user_id, item_id, event_type, "
        f"rating, event_time, time_unit, transaction_id, ?::TIMESTAMP FROM ({events_select_sql(detected)})"
    )
    params = [str(detected.path), detected.format.name, ingested_at, *read_csv_parameters(detected)]
    return execute_read(con, detected, sql, params)


def insert_items(con: duckdb.DuckDBPyConnection, detected: DetectedFile) -> int:
    """Append one raw_items row per item of the file; returns the number of items."""
    sql = (
        "INSERT INTO main.raw_items SELECT item_id, name, category, brand, price, available, ?::VARCHAR, "
        f"?::VARCHAR, observed_at FROM ({items_select_sql(detected)})"
    )
    params = [str(detected.path), detected.format.name, *read_csv_parameters(detected)]
    return execute_read(con, detected, sql, params)


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

    The text encoding was established on the whole file by ``recognise``.
    """
    detected = file.detected
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
        """Files of this run with one of ``statuses``."""
        return sum(outcome.status in statuses for outcome in self.outcomes)

    def files_table(self) -> MetadataValue:
        frame = pd.DataFrame([dataclasses.asdict(outcome) for outcome in self.outcomes])
        return frame_preview(frame, limit=max(len(frame), 1))


def ingest_files(
    con: duckdb.DuckDBPyConnection, files: list[InputFile], ingested_at: datetime, reload: bool = False
) -> RunSummary:
    """Apply the content rule to every file in ONE transaction (all or nothing); ``reload`` first
    drops the files' rows so that they are read again (a partition re-run).

    A file DuckDB cannot read rolls everything back, is recorded as rejected and fails the run.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        stale_paths, removed = remove_stale_rows(con, files, reload)
        outcomes = []
        for file in files:
            try:
                outcomes.append(ingest_file(con, file, file.path in stale_paths, ingested_at))
            except FileRejectedError as error:
                con.execute("ROLLBACK")
                rejections = [Rejection(file.path, file.sha256, file.size_bytes, error)]
                record_rejections(con, rejections, ingested_at)
                raise rejection_error(rejections) from error
        con.execute("COMMIT")
    except FileRejectedError:
        raise
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
        "files_rejected": MetadataValue.int(summary.count(REJECTED_EARLIER)),
        "files": summary.files_table(),
    }


def is_listable_partition_key(file_name: str) -> bool:
    """True when Dagster accepts the file name as a partition key."""
    return not any(part in file_name for part in UNLISTABLE_KEY_PARTS)


def listable_partition_keys(outcomes: list[FileOutcome]) -> list[str]:
    """Partition keys (file names) of the files whose content this run added to the warehouse."""
    names = {Path(outcome.file).name for outcome in outcomes if outcome.status in (LOADED, REPLACED, DUPLICATE)}
    return sorted(filter(is_listable_partition_key, names))


def register_file_partitions(context: AssetExecutionContext, outcomes: list[FileOutcome]) -> None:
    """In a run without partition: list each newly loaded file as a partition.

    Without this, files loaded by ``make run`` or the schedule could not be re-run or backfilled by
    name. (Their rows came from a run without partition, so the partition bar shows them as not yet
    materialized by partition; the assets' latest materialization is the run's.)
    """
    context.instance.add_dynamic_partitions(INPUT_FILES.name, listable_partition_keys(outcomes))


@multi_asset(
    name="ingest",
    pool=WAREHOUSE_POOL,
    partitions_def=INPUT_FILES,
    backfill_policy=BackfillPolicy.single_run(),
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
    context: AssetExecutionContext, config: IngestConfig, warehouse: WarehouseResource, paths: RecsysPaths
) -> Iterator[MaterializeResult]:
    """Recognise, hash and load the input files into raw_events and raw_items."""
    partition_keys = partition_keys_of_run(context)
    with timed() as watch:
        candidates = select_files(config, paths, partition_keys)
        allowed = (paths.input_path().resolve(), paths.inbox_path().resolve())
        started = datetime.now(UTC).replace(tzinfo=None)
        # closing(): the resource only closes on success; a failed run must release the file lock too.
        with warehouse.get_connection() as con, closing(con):
            con.execute(TABLE_DDL[0])
            con.execute(REJECTED_FILES_DDL)
            inspection = inspect_files(con, candidates, allowed)
            for skipped in inspection.skipped:
                context.log.warning(f"{skipped.file}: skipped, rejected by an earlier run: {skipped.detail}")
            if inspection.rejections:
                record_rejections(con, inspection.rejections, started)
                raise rejection_error(inspection.rejections)
            listing = ", ".join(f"{file.path} [{file.detected.format.name}]" for file in inspection.files)
            context.log.info(f"{len(inspection.files)} input file(s): {listing}")
            ensure_tables(con)
            loaded = ingest_files(con, inspection.files, started, reload=bool(partition_keys))
            summary = RunSummary(loaded.outcomes + inspection.skipped, loaded.removed)
            for done in summary.outcomes:
                context.log.info(f"{done.file}: {done.status}, {done.events_rows} events, {done.items_rows} items")
            metadata = {table: output_metadata(con, table, summary, watch.seconds) for table in ROW_TABLES}
    if not partition_keys:
        register_file_partitions(context, summary.outcomes)
    yield MaterializeResult(asset_key="raw_events", metadata=metadata["main.raw_events"])
    yield MaterializeResult(asset_key="raw_items", metadata=metadata["main.raw_items"])
