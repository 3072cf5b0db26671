"""Recognise real-world shop export files and map them to the canonical raw columns.

Every supported shape is one row of the ``FORMATS`` table: which header names identify it (or, for
header-less originals such as Taobao's UserBehavior.csv, which value patterns), and the SQL
expressions that turn its columns into ``main.raw_events`` / ``main.raw_items`` columns. Adding a
shape means adding a table row, not a function.

Files are read by DuckDB's CSV reader with every column as VARCHAR, explicit dialect, null padding
and non-strict parsing, so a bad value or a short/long line never aborts a load: the row is kept and
validation quarantines it with a reason. ``WITH ORDINALITY`` numbers the records in file order,
which gives the exact 1-based ``source_row`` (blank lines are not records and are not counted).
Values are trimmed of every kind of blank (spaces, tabs, stray CR, no-break spaces, a BOM left in the
middle of concatenated exports) so that ``" view\t"`` and ``"view"`` are the same value.

A file is refused as a whole (``UnrecognisedFileError``) when it is empty (0 bytes: nothing proves
the export even ran; a header-only file is accepted as 0 rows), binary (NUL bytes: images,
spreadsheets, archives named ``.csv``), or matches no shape; the message names the file, what was
seen and, for a header, the closest format and its missing columns.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from recsys_dagster.ingest.files import FileRejectedError, content_chunks, read_start

#: Bytes of (decompressed) file start inspected to recognise the format.
SAMPLE_BYTES = 64 * 1024
#: Data rows (after the header, if any) whose values must fit a header-less signature.
SAMPLE_ROWS = 20
#: Share of the sample rows that must fit a header-less signature (the first row always must: a
#: header line never fits, which is what tells an unknown header from a header-less file). A few
#: bad rows in a real export are validation's business, not a reason to refuse the file.
HEADERLESS_MIN_SHARE = 0.8
DELIMITER_CANDIDATES = (",", "\t", ";", "|")
GZIP_MAGIC = b"\x1f\x8b"

#: raw_events columns produced by a format's ``events`` expressions (source_* and ingested_at are added).
EVENT_COLUMNS = ("user_id", "item_id", "event_type", "rating", "event_time", "time_unit", "transaction_id")
#: raw_items attribute columns produced by a format's ``items`` expressions.
ITEM_COLUMNS = ("item_id", "name", "category", "brand", "price", "available", "observed_at")

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_NUMERIC = r"'[+-]?[0-9]+(\.[0-9]*)?'"
#: Header-less value shapes: any signed decimal (a bad value is validation's business), or any id.
_NUMBER = r"[+-]?[0-9]+(\.[0-9]+)?"
_ID = r"\S+"
#: Blanks stripped from every value: space, tab, CR, LF, VT, FF, no-break space, BOM.
BLANKS = " \t\r\n\v\f\u00a0\ufeff"


class UnrecognisedFileError(FileRejectedError, ValueError):
    """An input file matches none of the known formats (the message says what was seen)."""


def trimmed_sql(expression: str) -> str:
    """SQL: ``expression`` with ``BLANKS`` stripped at both ends, '' -> NULL.

    Only a value whose first or last character is a blank goes through ``trim``: trimming with a
    character set costs ~0.75 s per million values and column, the first/last-character test a
    third of that, and almost no value needs trimming (it was most of the validation time).
    """
    blanks = f"'{BLANKS}'"
    needs_trim = f"contains({blanks}, {expression}[1]) OR contains({blanks}, {expression}[-1])"
    return f"nullif(CASE WHEN {needs_trim} THEN trim({expression}, {blanks}) ELSE {expression} END, '')"


class UnterminatedQuoteError(FileRejectedError, ValueError):
    """A quoted field is never closed: a CSV reader would take the rest of the file as its value."""


def normalise_header(name: str) -> str:
    """Header name as compared: BOM and case dropped, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", name.replace("\ufeff", "").strip().lower())


@dataclass(frozen=True)
class Column:
    """A logical column of a format: its SQL name and the header names that denote it.

    Header names are compared after ``normalise_header`` (lower case, letters and digits only), so
    ``UserId``, ``user_id`` and ``"User ID"`` are the same alias ``userid``.
    """

    name: str
    aliases: tuple[str, ...]
    required: bool = True

    def __post_init__(self) -> None:
        if not _IDENTIFIER.fullmatch(self.name):
            raise ValueError(f"column name {self.name!r} is not a plain SQL identifier")


@dataclass(frozen=True)
class SourceFormat:
    """One input shape: how to recognise it and how to map it (SQL over its logical columns).

    ``events`` / ``items`` map canonical columns to SQL expressions over ``columns``' names; a
    canonical column left out is NULL. ``event_type_map`` maps the (lower-cased) value of the
    ``events['event_type']`` expression; values not in the map pass through unchanged.
    ``headerless`` holds one full-match regex per column for files without a header line.
    """

    name: str
    columns: tuple[Column, ...]
    events: Mapping[str, str] | None = None
    items: Mapping[str, str] | None = None
    event_type_map: Mapping[str, str] = field(default_factory=dict)
    headerless: tuple[str, ...] | None = None


def _col(name: str, *aliases: str, required: bool = True) -> Column:
    return Column(name, tuple(normalise_header(a) for a in (name, *aliases)), required)


def _epoch_seconds_to_timestamp(column: str) -> str:
    """SQL: unix seconds text -> naive UTC TIMESTAMP, NULL when not numeric."""
    return f"make_timestamp(CAST(try_cast({column} AS DOUBLE) * 1000000 AS BIGINT))"


FORMATS: tuple[SourceFormat, ...] = (
    # Canonical files come first: on equal header matches they win over look-alike shapes.
    SourceFormat(
        name="canonical",
        columns=(
            _col("user_id"),
            _col("item_id"),
            _col("event_type"),
            _col("rating", required=False),
            _col("event_time", required=False),
            _col("event_time_ms", required=False),
            _col("transaction_id", required=False),
        ),
        events={
            "user_id": "user_id",
            "item_id": "item_id",
            "event_type": "event_type",
            "rating": "rating",
            "event_time": "coalesce(event_time_ms, event_time)",
            # Numeric epoch: seconds under `event_time`, milliseconds under `event_time_ms`.
            "time_unit": f"""CASE
                WHEN NOT regexp_full_match(coalesce(event_time_ms, event_time), {_NUMERIC}) THEN 'text'
                WHEN event_time_ms IS NOT NULL THEN 'ms' ELSE 's' END""",
            "transaction_id": "transaction_id",
        },
    ),
    SourceFormat(
        name="canonical_items",
        columns=(
            _col("item_id"),
            _col("name"),
            _col("category", required=False),
            _col("brand", required=False),
            _col("price", required=False),
            _col("available", required=False),
        ),
        items={
            "item_id": "item_id",
            "name": "name",
            "category": "category",
            "brand": "brand",
            "price": "try_cast(price AS DOUBLE)",
            "available": "try_cast(available AS BOOLEAN)",
        },
    ),
    SourceFormat(
        name="retailrocket",
        columns=(
            _col("timestamp"),
            _col("visitorid"),
            _col("event"),
            _col("itemid"),
            _col("transactionid", required=False),
        ),
        events={
            "user_id": "visitorid",
            "item_id": "itemid",
            "event_type": "event",
            "event_time": "timestamp",
            "time_unit": "'ms'",
            "transaction_id": "transactionid",
        },
    ),
    SourceFormat(
        name="amazon_ratings",
        columns=(
            _col("user_id", "user", "reviewerid"),
            _col("item_id", "item", "productid", "asin"),
            _col("rating", "overall", "score"),
            _col("timestamp", "unixreviewtime", "unixtime", "time"),
        ),
        events={
            "user_id": "user_id",
            "item_id": "item_id",
            "event_type": "'rating'",
            "rating": "rating",
            "event_time": "timestamp",
            "time_unit": "'s'",
        },
        # The original ratings_*.csv files have no header: user, ASIN, rating, unix seconds.
        headerless=(_ID, _ID, _NUMBER, _NUMBER),
    ),
    SourceFormat(
        name="online_retail",
        columns=(
            _col("invoiceno", "invoice"),
            _col("stockcode"),
            _col("description", required=False),
            _col("quantity"),
            # The 50k sample's exporter dropped InvoiceDate: such files load with event_time NULL.
            _col("invoicedate", required=False),
            _col("unitprice", "price"),
            _col("customerid"),
            _col("country", required=False),
        ),
        events={
            # The xlsx export stores CustomerID as a float ("17850.0"); the id is the integer part.
            "user_id": r"regexp_replace(customerid, '\.0+$', '')",
            "item_id": "stockcode",
            # "C" invoices are cancellations/returns; other non-positive (or unreadable) quantities
            # are stock adjustments. Neither is a purchase: validation quarantines both.
            "event_type": """CASE
                WHEN upper(invoiceno) LIKE 'C%' THEN 'return'
                WHEN try_cast(quantity AS DOUBLE) > 0 THEN 'transaction'
                ELSE 'adjustment' END""",
            "event_time": "invoicedate",
            "time_unit": "'text'",
            "transaction_id": "invoiceno",
        },
        items={
            "item_id": "stockcode",
            "name": "description",
            "price": "try_cast(unitprice AS DOUBLE)",
            "observed_at": "try_cast(invoicedate AS TIMESTAMP)",
        },
    ),
    SourceFormat(
        name="rees46",
        columns=(
            _col("event_time"),
            _col("event_type"),
            _col("product_id"),
            _col("category_id", required=False),
            _col("category_code", required=False),
            _col("brand", required=False),
            _col("price", required=False),
            _col("user_id"),
            _col("user_session", required=False),
        ),
        events={
            "user_id": "user_id",
            "item_id": "product_id",
            "event_type": "event_type",
            "event_time": "event_time",
            "time_unit": "'text'",
        },
        event_type_map={"view": "view", "cart": "addtocart", "purchase": "transaction"},
        items={
            "item_id": "product_id",
            "category": "coalesce(category_code, category_id)",
            "brand": "brand",
            "price": "try_cast(price AS DOUBLE)",
            # '2019-10-01 00:00:00 UTC' -> naive UTC timestamp.
            "observed_at": "timezone('UTC', try_cast(event_time AS TIMESTAMPTZ))",
        },
    ),
    SourceFormat(
        name="taobao",
        columns=(
            _col("user_id"),
            _col("item_id"),
            _col("category_id"),
            _col("behavior_type", "behavior", "behaviour"),
            _col("timestamp"),
        ),
        events={
            "user_id": "user_id",
            "item_id": "item_id",
            "event_type": "behavior_type",
            "event_time": "timestamp",
            "time_unit": "'s'",
        },
        # "fav" (add to favourites) is a wish-list signal of intent, like a cart add: it counts as
        # addtocart rather than being quarantined as an unknown event.
        event_type_map={"pv": "view", "cart": "addtocart", "fav": "addtocart", "buy": "transaction"},
        items={
            "item_id": "item_id",
            "category": "category_id",
            "observed_at": _epoch_seconds_to_timestamp("timestamp"),
        },
        headerless=(_ID, _ID, _ID, r"(?i)pv|cart|fav|buy", _NUMBER),
    ),
    SourceFormat(
        name="yoochoose",
        columns=(_col("sessionid"), _col("itemid"), _col("time")),
        # Click logs have no user ids: the session is the user.
        events={
            "user_id": "sessionid",
            "item_id": "itemid",
            "event_type": "'view'",
            "event_time": "time",
            "time_unit": "'s'",
        },
    ),
)


@dataclass(frozen=True)
class DetectedFile:
    """A recognised file and the dialect DuckDB must read it with."""

    path: Path
    format: SourceFormat
    delimiter: str
    has_header: bool
    n_columns: int
    #: logical column name -> 0-based position in the file
    positions: Mapping[str, int]
    compression: str  # 'gzip' | 'none'
    encoding: str  # 'utf-8' | 'latin-1'

    @property
    def has_events(self) -> bool:
        return self.format.events is not None

    @property
    def has_items(self) -> bool:
        return self.format.items is not None


def is_gzip(path: Path) -> bool:
    """True when the file content is gzip (recognised by its magic bytes, not by its name)."""
    with path.open("rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def read_sample_lines(path: Path, encoding: str) -> list[str]:
    """The complete lines in the first ``SAMPLE_BYTES`` (decompressed) bytes of the file."""
    raw = read_start(path, SAMPLE_BYTES + 1, is_gzip(path))
    text = raw[:SAMPLE_BYTES].decode(encoding, errors="replace").lstrip("\ufeff")
    lines = text.splitlines(keepends=True)
    if len(lines) > 1 and (len(raw) > SAMPLE_BYTES or not lines[-1].endswith(("\n", "\r"))):
        # The last line may be cut (sample end, or a file truncated / still being written): its
        # width would make a sound file look inconsistent. It is still loaded and validated.
        lines = lines[:-1]
    return [line for line in lines if line.strip()][: SAMPLE_ROWS + 1]


def sniff_delimiter(lines: list[str]) -> str:
    """The candidate delimiter that splits every sample line into the same, largest number of fields.

    Falls back to the one giving the widest first line when no candidate is consistent.
    """

    def widths(delimiter: str) -> set[int]:
        return {len(row) for row in csv.reader(lines, delimiter=delimiter)}

    consistent = [(max(w), d) for d in DELIMITER_CANDIDATES if len(w := widths(d)) == 1 and max(w) > 1]
    if consistent:
        return max(consistent, key=lambda pair: pair[0])[1]
    first = lines[:1]
    return max(DELIMITER_CANDIDATES, key=lambda d: len(next(csv.reader(first, delimiter=d), [])))


def match_header(header: list[str]) -> tuple[SourceFormat, dict[str, int]] | None:
    """The format whose required columns are all in ``header`` and that explains most of it.

    Returns the format and its logical column -> position map, or None. Ties go to the format
    listed first in ``FORMATS``.
    """
    names = [normalise_header(h) for h in header]
    best: tuple[SourceFormat, dict[str, int]] | None = None
    for fmt in FORMATS:
        positions = _positions_in_header(fmt, names)
        if positions is None:
            continue
        if best is None or len(positions) > len(best[1]):
            best = (fmt, positions)
    return best


def _positions_in_header(fmt: SourceFormat, names: list[str]) -> dict[str, int] | None:
    positions: dict[str, int] = {}
    for column in fmt.columns:
        found = next((i for i, n in enumerate(names) if n in column.aliases), None)
        if found is not None:
            positions[column.name] = found
        elif column.required:
            return None
    return positions


def match_headerless(rows: list[list[str]]) -> SourceFormat | None:
    """The header-less format whose value patterns the first sample row and most others match.

    Every sample row must have the signature's width: a different column count is another shape.
    """
    for fmt in FORMATS:
        if not fmt.headerless or not rows or any(len(row) != len(fmt.headerless) for row in rows):
            continue
        fitting = [_row_fits(fmt.headerless, row) for row in rows]
        if fitting[0] and sum(fitting) >= HEADERLESS_MIN_SHARE * len(rows):
            return fmt
    return None


def _row_fits(patterns: tuple[str, ...], row: list[str]) -> bool:
    return len(row) == len(patterns) and all(
        re.fullmatch(pattern, value.strip()) for pattern, value in zip(patterns, row, strict=True)
    )


def closest_format(header: list[str]) -> str:
    """The format whose required columns the header misses fewest of, and the missing ones."""
    names = {normalise_header(h) for h in header}

    def missing(fmt: SourceFormat) -> list[str]:
        return [c.name for c in fmt.columns if c.required and not names.intersection(c.aliases)]

    best = min(FORMATS, key=lambda fmt: len(missing(fmt)))
    return f"closest format {best.name!r} lacks required column(s) {', '.join(missing(best))}"


def check_is_text(path: Path) -> None:
    """Refuse empty and binary files before any attempt to recognise a CSV shape in them."""
    sample = read_start(path, SAMPLE_BYTES, is_gzip(path))
    if not sample:
        raise UnrecognisedFileError(
            f"{path}: the file is empty (0 bytes): no header and no rows, so nothing shows the export ran. "
            "A file with only a header line is accepted as 0 rows."
        )
    if b"\x00" in sample:
        raise UnrecognisedFileError(
            f"{path}: binary content (NUL bytes; starts with {sample[:8]!r}), not a text CSV file "
            "(an image, spreadsheet or archive under a .csv name?)"
        )


def detect_format(path: Path, encoding: str = "utf-8") -> DetectedFile:
    """Recognise ``path`` from its header or, without one, from its column count and value types.

    Raises ``UnrecognisedFileError`` naming the file, the delimiter and the first line seen.
    """
    check_is_text(path)
    lines = read_sample_lines(path, encoding)
    if not lines:
        raise UnrecognisedFileError(f"{path}: the file holds only blank lines, no header or data row to recognise")
    delimiter = sniff_delimiter(lines)
    rows = list(csv.reader(lines, delimiter=delimiter))
    compression = "gzip" if is_gzip(path) else "none"
    by_header = match_header(rows[0])
    if by_header is not None:
        fmt, positions = by_header
        return DetectedFile(path, fmt, delimiter, True, len(rows[0]), positions, compression, encoding)
    headerless = match_headerless(rows[:SAMPLE_ROWS])
    if headerless is not None:
        positions = {column.name: i for i, column in enumerate(headerless.columns)}
        return DetectedFile(path, headerless, delimiter, False, len(rows[0]), positions, compression, encoding)
    raise UnrecognisedFileError(
        f"{path}: unrecognised input file. Delimiter {delimiter!r}, first line {rows[0]!r} "
        f"(normalised header {[normalise_header(h) for h in rows[0]]!r}) matches no known header "
        f"({closest_format(rows[0])}) and no header-less shape. "
        f"Known formats: {', '.join(f.name for f in FORMATS)}."
    )


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _event_type_sql(fmt: SourceFormat, expression: str) -> str:
    """Map the event value through ``fmt.event_type_map``; unknown values pass through unchanged."""
    if not fmt.event_type_map:
        return expression
    cases = " ".join(
        f"WHEN {_sql_literal(source)} THEN {_sql_literal(target)}" for source, target in fmt.event_type_map.items()
    )
    return f"CASE lower({expression}) {cases} ELSE {expression} END"


def _named_rows_sql(detected: DetectedFile) -> str:
    """SQL of the file's rows with logical column names (trimmed, '' -> NULL) and ``source_row``.

    The single ``?`` placeholders are bound by ``read_csv_parameters`` in order.
    """
    selected = ["ordinality AS source_row"]
    for column in detected.format.columns:
        position = detected.positions.get(column.name)
        value = trimmed_sql(f"c{position}") if position is not None else "NULL::VARCHAR"
        selected.append(f'{value} AS "{column.name}"')
    return (
        f"SELECT {', '.join(selected)} FROM read_csv(?, auto_detect = false, header = ?, columns = ?, "
        "delim = ?, quote = '\"', escape = '\"', comment = '', null_padding = true, strict_mode = false, "
        "parallel = false, compression = ?, encoding = ?) WITH ORDINALITY"
    )


def read_csv_parameters(detected: DetectedFile) -> list[object]:
    """Bound values for the ``?`` placeholders of ``_named_rows_sql`` (path first)."""
    columns = {f"c{i}": "VARCHAR" for i in range(detected.n_columns)}
    return [
        str(detected.path),
        detected.has_header,
        columns,
        detected.delimiter,
        detected.compression,
        detected.encoding,
    ]


def events_select_sql(detected: DetectedFile) -> str:
    """SQL selecting ``source_row`` + ``EVENT_COLUMNS`` for every data row of the file.

    ``time_unit`` is NULL exactly when ``event_time`` is NULL (nothing to interpret).
    """
    mapping = detected.format.events
    if mapping is None:
        raise ValueError(f"{detected.path}: format {detected.format.name} carries no events")
    expressions = {name: mapping.get(name, "NULL") for name in EVENT_COLUMNS}
    expressions["event_type"] = _event_type_sql(detected.format, expressions["event_type"])
    mapped = ", ".join(f"CAST({expressions[name]} AS VARCHAR) AS {name}" for name in EVENT_COLUMNS)
    final = ", ".join(
        "CASE WHEN event_time IS NOT NULL THEN time_unit END AS time_unit" if name == "time_unit" else name
        for name in EVENT_COLUMNS
    )
    return (
        f"WITH named AS ({_named_rows_sql(detected)}), "
        f"mapped AS (SELECT source_row, {mapped} FROM named) "
        f"SELECT source_row, {final} FROM mapped"
    )


def items_select_sql(detected: DetectedFile) -> str:
    """SQL selecting one row per item of the file with its latest non-null attributes.

    "Latest" follows file order (``source_row``); ``observed_at`` is the latest time seen.
    """
    mapping = detected.format.items
    if mapping is None:
        raise ValueError(f"{detected.path}: format {detected.format.name} carries no catalog rows")
    typed = {"price": "DOUBLE", "available": "BOOLEAN", "observed_at": "TIMESTAMP"}
    mapped = ", ".join(
        f"CAST({mapping.get(name, 'NULL')} AS {typed.get(name, 'VARCHAR')}) AS {name}" for name in ITEM_COLUMNS
    )
    latest = ", ".join(
        f"arg_max({name}, source_row) FILTER (WHERE {name} IS NOT NULL) AS {name}"
        for name in ("name", "category", "brand", "price", "available")
    )
    return (
        f"WITH named AS ({_named_rows_sql(detected)}), "
        f"mapped AS (SELECT source_row, {mapped} FROM named) "
        f"SELECT item_id, {latest}, max(observed_at) AS observed_at FROM mapped "
        "WHERE item_id IS NOT NULL GROUP BY item_id"
    )


#: Longest field the unterminated-quote check follows before it calls the quote unterminated: DuckDB's
#: ``max_line_size`` (a longer line is refused by the reader anyway).
MAX_FIELD_CHARS = 2 * 1024 * 1024
#: A last line appended after the file's content: it comes back as a record of its own exactly when
#: every quote of the file was closed, and is swallowed into the open field otherwise.
_END_SENTINEL = "\x00end of file\x00"


def check_quotes_closed(detected: DetectedFile) -> None:
    """Reject a file with an unterminated quoted field, naming the line where the quote opened.

    DuckDB's reader (and Python's) treats a quote that opens a field and never closes as the start
    of one value running to the end of the file, silently swallowing every later row. Balanced
    quoting holds an even number of quote characters, so counting them (one fast pass over the
    bytes) clears almost every file; only a file with an odd count (an unterminated quote, or a
    stray inch mark inside an unquoted value, which both readers keep literally) is parsed to tell
    the two apart.
    """
    compressed = detected.compression == "gzip"
    if sum(chunk.count(b'"') for chunk in content_chunks(detected.path, compressed)) % 2 == 0:
        return
    opened_on_line = unclosed_quote_line(detected)
    if opened_on_line is not None:
        raise UnterminatedQuoteError(
            f"{detected.path}: unterminated quoted field: the quote opened in the record starting on line "
            f"{opened_on_line} is never closed, so the reader would take the rest of the file as one value "
            "(a cut or badly escaped export); fix the quoting or re-export the file"
        )


def unclosed_quote_line(detected: DetectedFile) -> int | None:
    """Line (1-based) where the record holding a never-closed quote starts; None when all quotes close."""
    opener = gzip.open if detected.compression == "gzip" else open
    previous_limit = csv.field_size_limit(MAX_FIELD_CHARS)
    next_record_start = record_start = 1
    try:
        with opener(detected.path, "rt", encoding=detected.encoding, errors="replace", newline="") as handle:
            reader = csv.reader(itertools.chain(handle, [_END_SENTINEL + "\n"]), delimiter=detected.delimiter)
            for row in reader:
                if row == [_END_SENTINEL]:
                    return None
                record_start, next_record_start = next_record_start, reader.line_num + 1
    except csv.Error:  # a field past MAX_FIELD_CHARS: only an open quote reads that far
        return next_record_start
    finally:
        csv.field_size_limit(previous_limit)
    return record_start
