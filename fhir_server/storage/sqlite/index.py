"""Search index tables for SQLite, one per parameter type, keyed by resource.rid.

OWNED BY THE SEARCH WORK: placeholder with the functions the store calls.
"""

from __future__ import annotations

import sqlite3

from fhir_server.search.index import IndexEntries


def index_ddl() -> list[str]:
    return []


def write_index(conn: sqlite3.Connection, rid: int, entries: IndexEntries) -> None:
    """Replace the index rows of `rid` with `entries` (called inside the write transaction)."""


def delete_index(conn: sqlite3.Connection, rid: int) -> None:
    """Remove every index row of `rid` (resource deleted)."""
