"""Which files one ingestion run reads, and the facts about them that decide how to load them.

Kept apart from the format adapters: this module knows about directories, content hashes, text
encodings and why a file must be refused; ``formats`` knows about columns.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: File names the directory scan picks up (case-insensitive), each also with a ``.gz`` suffix.
DATA_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
CHUNK_BYTES = 1024 * 1024
#: Characters DuckDB's reader expands as a glob pattern even in a bound path parameter.
GLOB_CHARACTERS = frozenset("*?[]{}")


class FileRejectedError(Exception):
    """A file that cannot be loaded as it is. The message names the file and the problem.

    Subclasses also derive from the builtin error they refine (``ValueError``, ``EOFError``), so
    callers that catch those keep working.
    """


class FileOutsideAllowedDirsError(FileRejectedError, ValueError):
    """A configured or scanned file resolves to a location outside the input and inbox directories."""


class TruncatedFileError(FileRejectedError, EOFError):
    """A compressed file ends before its end-of-stream marker (cut during copy, or still being written)."""


class UnreadableFileError(FileRejectedError, ValueError):
    """A file that is recognised but cannot be read safely (bad name, bad bytes, a CSV error)."""


def is_data_file_name(name: str) -> bool:
    """True for ``*.csv``, ``*.txt``, ``*.tsv``, ``*.dat`` and their ``.gz`` variants."""
    lowered = name.lower().removesuffix(".gz")
    return not name.startswith(".") and lowered.endswith(DATA_SUFFIXES)


def scan_data_files(directories: Iterable[Path]) -> list[Path]:
    """Data files directly inside ``directories`` (not recursive), absolute but NOT resolved, sorted.

    Links are returned as links so that ``resolve_inside`` can refuse the ones pointing elsewhere.
    A missing directory contributes nothing: an empty inbox is a normal state.
    """
    found = {
        directory.resolve() / entry.name
        for directory in directories
        if directory.is_dir()
        for entry in directory.iterdir()
        if entry.is_file() and is_data_file_name(entry.name)
    }
    return sorted(found)


def resolve_inside(path: Path, allowed: tuple[Path, ...], shown_as: str | None = None) -> Path:
    """``path`` resolved (links followed), or ``FileOutsideAllowedDirsError`` when it lands outside
    every directory of ``allowed`` (already resolved)."""
    resolved = path.resolve()
    if not any(resolved.is_relative_to(directory) for directory in allowed):
        raise FileOutsideAllowedDirsError(
            f"Refusing to ingest {shown_as or str(path)!r}: it resolves to {resolved}, which is outside the input "
            f"dir {allowed[0]} and the inbox dir {allowed[-1]}."
        )
    return resolved


def resolve_requested_files(requested: Iterable[str], input_dir: Path, inbox_dir: Path) -> list[Path]:
    """Resolve configured file names, refusing any that lands outside the input or inbox dir.

    Relative names are taken relative to the inbox (where new files arrive). Resolution follows
    symlinks, so a link in the inbox that points elsewhere is refused too.
    """
    allowed = (input_dir.resolve(), inbox_dir.resolve())
    resolved: set[Path] = set()
    for name in requested:
        candidate = Path(name).expanduser()
        path = resolve_inside(candidate if candidate.is_absolute() else inbox_dir / candidate, allowed, name)
        if not path.is_file():
            raise FileNotFoundError(f"Configured input file {name!r} ({path}) does not exist or is not a file.")
        resolved.add(path)
    return sorted(resolved)


def check_readable_name(path: Path) -> None:
    """Refuse names DuckDB would read as a glob pattern (``a*.csv`` would also read ``abc.csv``)."""
    found = sorted(GLOB_CHARACTERS.intersection(path.name))
    if found:
        raise UnreadableFileError(
            f"{path}: the file name contains {''.join(found)!r}, which DuckDB's reader expands as a glob "
            "pattern (it could read other files); rename the file."
        )


def _chunks(handle) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK_BYTES):
        yield chunk


def sha256_of(path: Path) -> str:
    """Hex sha256 of the file's bytes as stored (a gzip copy of a file is a different content)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in _chunks(handle):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def gzip_errors_rejected(path: Path) -> Iterator[None]:
    """Turn the errors of reading a broken gzip stream into rejections naming the file."""
    try:
        yield
    except EOFError as error:
        raise TruncatedFileError(
            f"{path}: the gzip stream ends before its end marker (file truncated, or still being written)"
        ) from error
    except (gzip.BadGzipFile, zlib.error) as error:
        raise UnreadableFileError(f"{path}: corrupt gzip data ({error})") from error


def read_start(path: Path, n_bytes: int, compressed: bool) -> bytes:
    """The first ``n_bytes`` of the file's (decompressed) content."""
    opener = gzip.open if compressed else open
    with gzip_errors_rejected(path), opener(path, "rb") as handle:
        return handle.read(n_bytes)


def content_chunks(path: Path, compressed: bool) -> Iterator[bytes]:
    """The whole (decompressed) content in chunks of ``CHUNK_BYTES``; a broken gzip is a rejection."""
    opener = gzip.open if compressed else open
    with gzip_errors_rejected(path), opener(path, "rb") as handle:
        yield from _chunks(handle)


def text_encoding_of(path: Path, compressed: bool) -> str:
    """'utf-8' when the whole (decompressed) file is valid UTF-8, else 'latin-1'.

    DuckDB aborts on the first invalid UTF-8 byte, and Excel exports such as the original Online
    Retail CSV are latin-1, often only deep into the file: checking a sample is not enough. Reading
    the whole stream here also proves a gzip file complete before anything is written.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for chunk in content_chunks(path, compressed):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"
