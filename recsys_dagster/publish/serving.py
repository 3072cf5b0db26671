"""Build the serving DuckDB file beside the live one, check it, then swap it in atomically.

Readers (BI, services) open the serving file, never the warehouse. A new version is written to a
temporary file in the same directory, checked against the published invariants, checkpointed,
closed and moved over the old file with ``os.replace``: a reader that holds the old file keeps a
complete old version (same inode), a new reader sees the complete new one, nobody sees a mix, and
the pipeline never waits for readers. If anything fails before the swap the old file stays.
A publish killed outright (SIGKILL, OOM) leaves only its staging file, which the next publish deletes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from recsys_dagster.relations import registered
from recsys_dagster.settings import duckdb_temp_dir

RECOMMENDATIONS_PER_USER = 20


@dataclass(frozen=True)
class Query:
    """A table to publish as a SELECT run on the connection that writes the new serving file
    (``publish_serving_file``'s ``source``): its rows stream from the warehouse into the file and
    are never held in Python memory (28M recommendation rows at RetailRocket size)."""

    sql: str
    params: dict[str, object]


#: A table to publish: pandas for the small ones, Arrow for rows built in Python, a ``Query`` for
#: rows the warehouse builds.
Frame = pd.DataFrame | pa.Table | Query

#: The published tables: table -> ordered (column, type). All but ``recs.items`` (display attributes) are the
#: fixed SQL contract of the README; changing any of them needs a README migration note.
SERVING_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "recs.user_recommendations": (
        ("user_id", "VARCHAR"), ("rank", "INTEGER"), ("item_id", "VARCHAR"), ("score", "DOUBLE"),
        ("model", "VARCHAR"), ("model_version", "VARCHAR"), ("generated_at", "TIMESTAMP"),
    ),
    "recs.similar_items": (
        ("item_id", "VARCHAR"), ("rank", "INTEGER"), ("similar_item_id", "VARCHAR"), ("score", "DOUBLE"),
        ("model_version", "VARCHAR"), ("generated_at", "TIMESTAMP"),
    ),
    "recs.popular_items": (
        ("rank", "INTEGER"), ("item_id", "VARCHAR"), ("score", "DOUBLE"), ("generated_at", "TIMESTAMP"),
    ),
    "recs.items": (
        ("item_id", "VARCHAR"), ("name", "VARCHAR"), ("category", "VARCHAR"), ("price", "DOUBLE"),
    ),
    "ml.evaluation_runs": (
        ("run_id", "VARCHAR"), ("model", "VARCHAR"), ("model_version", "VARCHAR"), ("metric", "VARCHAR"),
        ("value", "DOUBLE"), ("evaluated_at", "TIMESTAMP"),
    ),
}

#: DuckDB memory of the publish step's connections (the warehouse one, which assembles every
#: user's list and streams it into the attached new serving file, and the one checking that file):
#: they run while the step's Python side holds the fits and the tables (~1.5-3 GiB at RetailRocket
#: size), so they get less than a warehouse connection's default and spill beyond it. Measured on
#: the 28M-row assembly at 2.76M events: 4GB -> DuckDB took 3.3 GiB; 1500MB -> 1.7 GiB, not slower.
PUBLISH_MEMORY_LIMIT = "1500MB"

#: Tables exported as Parquet beside the serving file (file name = table name).
PARQUET_EXPORTS = ("recs.user_recommendations", "recs.similar_items", "recs.popular_items")


class PublishInvariantError(RuntimeError):
    """A table about to be published breaks the SQL contract; nothing was published."""


@dataclass(frozen=True)
class InvariantViolation:
    name: str
    offending_rows: int


@dataclass(frozen=True)
class Forbidden:
    """What no published list may contain: the (user_id, item_id) pairs in ``purchased`` (never
    recommended to that user; empty under the shop's repurchase policy) and the ``unavailable`` items
    (never recommended to anyone). The lists are built without them; the invariants check it again."""

    purchased: pd.DataFrame
    unavailable: Sequence[str]

    def relations(self) -> dict[str, pd.DataFrame | pa.Table]:
        """name -> relation the ``INVARIANTS`` SQL reads (registered only while they run): small
        next to the tables, so each check is a hash join whose table is built from them."""
        return {
            "purchased": self.purchased[["user_id", "item_id"]],
            "unavailable": pa.table({"item_id": pa.array(list(self.unavailable), pa.string())}),
        }


#: name -> SQL counting rows that break it (run inside the new serving file, before the swap).
INVARIANTS: dict[str, str] = {
    "ranks_without_gaps": """
        SELECT count(*) FROM (
            SELECT user_id FROM recs.user_recommendations GROUP BY user_id
            HAVING min(rank) <> 1 OR max(rank) <> count(*) OR count(DISTINCT rank) <> count(*)
        )""",
    "at_most_20_per_user": f"""
        SELECT count(*) FROM recs.user_recommendations WHERE rank > {RECOMMENDATIONS_PER_USER}""",
    "no_duplicate_items_per_user": """
        SELECT count(*) FROM (
            SELECT user_id, item_id FROM recs.user_recommendations GROUP BY ALL HAVING count(*) > 1
        )""",
    "no_null_ids": """
        SELECT count(*) FROM recs.user_recommendations WHERE user_id IS NULL OR item_id IS NULL""",
    "single_model_version": """
        SELECT greatest(count(DISTINCT model_version) - 1, 0) FROM recs.user_recommendations""",
    "never_a_purchased_item": """
        SELECT count(*) FROM recs.user_recommendations r
        JOIN purchased p USING (user_id, item_id)""",
    # What is recommended: a list's items, a neighbour, a popular item. similar_items.item_id is the
    # item whose page shows the neighbours, and an unavailable item may still have one.
    "never_an_unavailable_item": """
        SELECT (SELECT count(*) FROM recs.user_recommendations SEMI JOIN unavailable USING (item_id))
             + (SELECT count(*) FROM recs.similar_items s SEMI JOIN unavailable u ON s.similar_item_id = u.item_id)
             + (SELECT count(*) FROM recs.popular_items SEMI JOIN unavailable USING (item_id))""",
    "finite_scores": """
        SELECT (SELECT count(*) FROM recs.user_recommendations WHERE isnan(score) OR isinf(score))
             + (SELECT count(*) FROM recs.similar_items WHERE isnan(score) OR isinf(score))
             + (SELECT count(*) FROM recs.popular_items WHERE isnan(score) OR isinf(score))""",
    "similar_items_not_self": """
        SELECT count(*) FROM recs.similar_items WHERE item_id = similar_item_id""",
    "popular_ranks_without_gaps": """
        SELECT CASE WHEN count(*) = 0 OR (min(rank) = 1 AND max(rank) = count(*)) THEN 0 ELSE 1 END
        FROM recs.popular_items""",
}


def _column_names(con: duckdb.DuckDBPyConnection, frame: Frame) -> list[str]:
    if isinstance(frame, Query):
        return [column[0] for column in con.execute(f"SELECT * FROM ({frame.sql}) LIMIT 0", frame.params).description]
    return frame.column_names if isinstance(frame, pa.Table) else list(frame.columns)


def _create_table(con: duckdb.DuckDBPyConnection, target: str, frame: Frame) -> None:
    """Create ``target`` (``<catalog>.<contract table>``) with the contract's column types and fill
    it from ``frame``."""
    table = target.split(".", 1)[1]
    columns = SERVING_TABLES[table]
    missing = [name for name, _ in columns if name not in _column_names(con, frame)]
    if missing:
        raise PublishInvariantError(f"{table}: missing columns {missing}")
    con.execute(f"CREATE TABLE {target} ({', '.join(f'{name} {kind}' for name, kind in columns)})")
    select = f"SELECT {', '.join(f'CAST({name} AS {kind})' for name, kind in columns)}"
    if isinstance(frame, Query):
        con.execute(f"INSERT INTO {target} {select} FROM ({frame.sql})", frame.params)
        return
    with registered(con, incoming=frame):
        con.execute(f"INSERT INTO {target} {select} FROM incoming")


def check_invariants(con: duckdb.DuckDBPyConnection, forbidden: Forbidden) -> list[InvariantViolation]:
    """Every published invariant that the tables in ``con`` break (empty list = publishable)."""
    with registered(con, **forbidden.relations()):
        counts = {name: con.execute(sql).fetchall()[0][0] for name, sql in INVARIANTS.items()}
    return [InvariantViolation(name, int(count)) for name, count in counts.items() if count]


def _staging_pattern(target: Path) -> str:
    """Glob of the temporary files ``_staging_file`` makes for ``target`` (and their DuckDB WALs)."""
    return f".{target.name}.*.tmp*"


def remove_leftover_staging_files(target: Path) -> list[Path]:
    """Delete temporary files of earlier publishes of ``target`` that were killed before cleaning up.

    A killed process (SIGKILL, OOM, power loss) never runs ``_staging_file``'s cleanup, and every
    publish uses a new name, so without this each crash would leave a serving-sized file behind.
    Safe because publishing steps run one at a time (the ``duckdb_warehouse`` pool): a staging file
    present when a publish starts belongs to no live publish. Returns the files removed.
    """
    leftovers = sorted(target.parent.glob(_staging_pattern(target)))
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return leftovers


@contextmanager
def _staging_file(target: Path) -> Iterator[Path]:
    """A fresh temporary path beside ``target`` (same filesystem, so ``os.replace`` is atomic)."""
    remove_leftover_staging_files(target)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield staging
    finally:
        for leftover in (staging, staging.with_name(staging.name + ".wal")):
            leftover.unlink(missing_ok=True)


def serving_config(serving_path: Path) -> dict[str, str]:
    """Connection settings of a serving-file writer: bounded memory, spilling beside the serving file."""
    return {"memory_limit": PUBLISH_MEMORY_LIMIT, "temp_directory": str(duckdb_temp_dir(serving_path))}


#: The name a new serving file is attached under on the ``source`` connection that writes it.
STAGING_CATALOG = "staging_serving"


@contextmanager
def _attached(
    staging: Path, serving_path: Path, source: duckdb.DuckDBPyConnection | None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection with the new file attached as ``STAGING_CATALOG``: ``source`` (so ``Query``
    tables read its tables and registered views), else an in-memory one of its own."""
    with ExitStack() as stack:
        con = source if source is not None else stack.enter_context(duckdb.connect(config=serving_config(serving_path)))
        con.execute(f"ATTACH $path AS {STAGING_CATALOG}", {"path": str(staging)})
        try:
            yield con
            con.execute(f"CHECKPOINT {STAGING_CATALOG}")
        finally:
            con.execute(f"DETACH {STAGING_CATALOG}")


def _write_tables(
    staging: Path, serving_path: Path, tables: dict[str, Frame], source: duckdb.DuckDBPyConnection | None
) -> None:
    with _attached(staging, serving_path, source) as con:
        for schema in sorted({table.split(".")[0] for table in SERVING_TABLES}):
            con.execute(f"CREATE SCHEMA {STAGING_CATALOG}.{schema}")
        for table in SERVING_TABLES:
            _create_table(con, f"{STAGING_CATALOG}.{table}", tables[table])


def publish_serving_file(
    serving_path: Path,
    tables: dict[str, Frame],
    forbidden: Forbidden,
    source: duckdb.DuckDBPyConnection | None = None,
) -> dict[str, int]:
    """Write ``tables`` into a new serving file, check the invariants, swap it in; row counts back.

    ``forbidden`` is what the lists must never contain (purchased pairs, unavailable items).
    ``source`` is the connection ``Query`` tables run on (the warehouse): the new file is attached to
    it while written, then checked on a connection of its own. Raises ``PublishInvariantError`` (leaving the
    live file untouched) when a check fails.
    """
    serving_path.parent.mkdir(parents=True, exist_ok=True)
    with _staging_file(serving_path) as staging:
        _write_tables(staging, serving_path, tables, source)
        with duckdb.connect(str(staging), config=serving_config(serving_path)) as con:
            violations = check_invariants(con, forbidden)
            if violations:
                raise PublishInvariantError(
                    "not published, invariants broken: "
                    + ", ".join(f"{v.name} ({v.offending_rows} rows)" for v in violations)
                )
            counts = {table: con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] for table in SERVING_TABLES}
            con.execute("CHECKPOINT")
        os.replace(staging, serving_path)
    return counts


def export_parquet(
    serving_path: Path, published_dir: Path, tables: tuple[str, ...] = PARQUET_EXPORTS
) -> dict[str, Path]:
    """Export the public ``tables`` of the live serving file as Parquet, each file replaced atomically."""
    published_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    with duckdb.connect(str(serving_path), read_only=True) as con:
        for table in tables:
            target = published_dir / f"{table.split('.')[1]}.parquet"
            with _staging_file(target) as staging:
                con.execute(f"COPY (SELECT * FROM {table}) TO $path (FORMAT parquet)", {"path": str(staging)})
                os.replace(staging, target)
            written[table] = target
    return written


def live_rows(serving_path: Path, sql: str) -> list[tuple]:
    """The rows of ``sql`` on the live serving file; none when nothing is published (no file, or no
    table ``sql`` reads). Any other ``duckdb.Error`` is raised: a file that is not a readable DuckDB
    database, a table without the contract's columns or a lock held by a writer is a fault to report,
    not "nothing published".

    Safe to call from the sensor and from any step while runs publish: the live file is never
    written in place (a new version is built beside it and renamed over it), so a read-only open
    never waits for a writer.
    """
    if not serving_path.is_file():
        return []
    try:
        with duckdb.connect(str(serving_path), read_only=True) as con:
            return con.execute(sql).fetchall()
    except duckdb.CatalogException:
        return []
