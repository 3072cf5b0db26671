"""Python data made visible to DuckDB SQL for one block.

DuckDB reads a pandas frame or Arrow table registered under a name as if it were a view. A name left
registered shadows a table of that name for the rest of the connection's life, so every stage that
hands rows to SQL does it through ``registered``: the names are removed when the block ends, also on
an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, **relations: object) -> Iterator[None]:
    """Register each ``name=frame`` on ``con`` for the block, unregister them all after it."""
    for name, relation in relations.items():
        con.register(name, relation)
    try:
        yield
    finally:
        for name in relations:
            con.unregister(name)
