"""Which files one ingestion run reads, and the facts about them that decide how to load them.

Kept apart from the format adapters: this module knows about directories, content hashes and text
encodings, ``formats`` knows about columns.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

#: File names the directory scan picks up (case-insensitive), each also with a ``.gz`` suffix.
DATA_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
CHUNK_BYTES = 1024 * 1024


class FileOutsideAllowedDirsError(ValueError):
    """A configured file resolves to a location outside the input and inbox directories."""


def is_data_file_name(name: str) -> bool:
    """True for ``*.csv``, ``*.txt``, ``*.tsv``, ``*.dat`` and their ``.gz`` variants."""
    lowered = name.lower().removesuffix(".gz")
    return not name.startswith(".") and lowered.endswith(DATA_SUFFIXES)


def scan_data_files(directories: Iterable[Path]) -> list[Path]:
    """Data files directly inside ``directories`` (not recursive), resolved, sorted, de-duplicated.

    A missing directory contributes nothing: an empty inbox is a normal state.
    """
    found = {
        entry.resolve()
        for directory in directories
        if directory.is_dir()
        for entry in directory.iterdir()
        if entry.is_file() and is_data_file_name(entry.name)
    }
    return sorted(found)


def resolve_requested_files(requested: Iterable[str], input_dir: Path, inbox_dir: Path) -> list[Path]:
    """Resolve configured file names, refusing any that lands outside the input or inbox dir.

    Relative names are taken relative to the inbox (where new files arrive). Resolution follows
    symlinks, so a link in the inbox that points elsewhere is refused too.
    """
    allowed = (input_dir.resolve(), inbox_dir.resolve())
    resolved: set[Path] = set()
    for name in requested:
        candidate = Path(name).expanduser()
        path = (candidate if candidate.is_absolute() else inbox_dir / candidate).resolve()
        if not any(path.is_relative_to(directory) for directory in allowed):
            raise FileOutsideAllowedDirsError(
                f"Refusing to ingest {name!r}: it resolves to {path}, which is outside the input dir "
                f"{allowed[0]} and the inbox dir {allowed[1]}."
            )
        if not path.is_file():
            raise FileNotFoundError(f"Configured input file {name!r} ({path}) does not exist or is not a file.")
        resolved.add(path)
    return sorted(resolved)


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


def text_encoding_of(path: Path, compressed: bool) -> str:
    """'utf-8' when the whole (decompressed) file is valid UTF-8, else 'latin-1'.

    DuckDB aborts on the first invalid UTF-8 byte, and Excel exports such as the original Online
    Retail CSV are latin-1, often only deep into the file: checking a sample is not enough.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as handle:
            for chunk in _chunks(handle):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"
