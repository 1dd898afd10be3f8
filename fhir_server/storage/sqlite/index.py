"""Search index tables for SQLite, one per parameter type, keyed by resource.rid.

Each table is WITHOUT ROWID with a primary key that starts with (param, value...) and ends with rid:
the lookup a search makes is a prefix range of the clustered key, and for one value the rids come out
in order, so the first page of a large match streams without a sort. A secondary (rid, param) index
serves deletes, EXISTS probes of the other filters, sort keys and includes.
"""

from __future__ import annotations

import functools
import sqlite3

from fhir_server.search.index import IndexEntries

# table -> (columns in key order, the IndexEntries attribute)
TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "idx_string": (("param", "value", "raw", "rid"), "strings"),
    "idx_token": (("param", "code", "system", "text", "rid"), "tokens"),
    "idx_reference": (("param", "target_id", "target_type", "url", "rid"), "references"),
    "idx_date": (("param", "low", "high", "rid"), "dates"),
    "idx_number": (("param", "low", "high", "rid"), "numbers"),
    "idx_quantity": (("param", "code", "system", "low", "high", "rid"), "quantities"),
    "idx_uri": (("param", "value", "rid"), "uris"),
    "idx_composite": (("param", "code", "system", "key", "low", "high", "rid"), "composites"),
}
# order of the row tuples in IndexEntries (after pid) -> table column names
ROW_COLUMNS: dict[str, tuple[str, ...]] = {
    "idx_string": ("param", "value", "raw"),
    "idx_token": ("param", "system", "code", "text"),
    "idx_reference": ("param", "target_type", "target_id", "url"),
    "idx_date": ("param", "low", "high"),
    "idx_number": ("param", "low", "high"),
    "idx_quantity": ("param", "system", "code", "low", "high"),
    "idx_uri": ("param", "value"),
    "idx_composite": ("param", "system", "code", "key", "low", "high"),
}


# declared types matter: an index is only used when the comparison affinity matches the column's
COLUMN_TYPES = {"param": "INTEGER", "rid": "INTEGER", "low": "REAL", "high": "REAL"}
DATE_COLUMN_TYPES = {**COLUMN_TYPES, "low": "INTEGER", "high": "INTEGER"}


def index_ddl() -> list[str]:
    ddl: list[str] = []
    for table, (key, _attr) in TABLES.items():
        types = DATE_COLUMN_TYPES if table == "idx_date" else COLUMN_TYPES
        cols = ", ".join(f"{c} {types.get(c, 'TEXT')} NOT NULL" for c in key)
        ddl.append(
            f"CREATE TABLE IF NOT EXISTS {table} ({cols}, PRIMARY KEY ({', '.join(key)})) WITHOUT ROWID"
        )
        ddl.append(f"CREATE INDEX IF NOT EXISTS {table}_rid ON {table} (rid, param)")
    ddl.append(
        "CREATE INDEX IF NOT EXISTS idx_reference_url ON idx_reference (param, url, rid) WHERE url != ''"
    )
    ddl.append("CREATE INDEX IF NOT EXISTS idx_date_high ON idx_date (param, high, low, rid)")
    # _lastUpdated as a driving filter (the resource table is the lead's; this index serves search)
    ddl.append("CREATE INDEX IF NOT EXISTS resource_type_lu ON resource (type, last_updated_us)")
    for table in ("idx_number", "idx_quantity"):
        ddl.append(f"CREATE INDEX IF NOT EXISTS {table}_low ON {table} (param, low, rid)")
        ddl.append(f"CREATE INDEX IF NOT EXISTS {table}_high ON {table} (param, high, rid)")
    return ddl


Statement = tuple[str, list[object]]
"""SQL text and its flat parameters."""

MAX_CHUNK = 1024
"""Most rows per INSERT, fewer where the library's parameter limit (`SQLITE_MAX_VARIABLE_NUMBER`, 32,766
since SQLite 3.32 but 999 in older builds) demands it."""
DEFAULT_MAX_PARAMS = 32766
PAD_BELOW = 16


@functools.cache
def _bulk_insert_sql(table: str, rows: int) -> str:
    columns = (*ROW_COLUMNS[table], "rid")
    one = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([one] * rows)


def bulk_inserts(
    table: str, rows: list[tuple[object, ...]], max_params: int = DEFAULT_MAX_PARAMS
) -> list[Statement]:
    """Multi-row INSERTs of `rows` (each ending with its rid): a handful per table.

    Why not `executemany`: it binds and steps row by row, holding the GIL between rows. A multi-row
    INSERT is one step, during which SQLite releases the GIL, so the commit thread can insert a round's
    index rows on the other core while the event loop goes on (`SqliteStore._commit_sync`); it is also
    less work than `executemany` where it does run on the loop.

    Rows go out in power-of-two chunks, largest first, and the last few (under `PAD_BELOW`) are padded
    up to a power of two by repeating the last row, which `OR IGNORE` drops (every column is in the
    key): the writer's statement cache then holds a dozen texts per table rather than one per row
    count, and at most `PAD_BELOW - 1` padding rows cost a key lookup each.
    """
    width = len(ROW_COLUMNS[table]) + 1
    largest = MAX_CHUNK
    while largest > 1 and largest * width > max_params:
        largest //= 2
    statements: list[Statement] = []
    start, left = 0, len(rows)
    while left:
        size = min(largest, 1 << (left.bit_length() - 1))
        if left < PAD_BELOW:
            size = min(largest, 1 << (left - 1).bit_length())
        chunk = rows[start : start + size]
        params = [v for row in chunk for v in row]
        params.extend(list(chunk[-1]) * (size - len(chunk)))
        statements.append((_bulk_insert_sql(table, size), params))
        start += len(chunk)
        left -= len(chunk)
    return statements


class SectionIndex:
    """The index rows a write section has produced, inserted together when a search needs them or
    the section ends.

    Why: a busy section (an HL7 round writes ~70 resources, a transaction Bundle as many as it holds)
    otherwise pays one statement per table per resource, and that per-call cost was most of the index
    insert time; a few multi-row INSERTs per table per section are left (`bulk_inserts`). Nothing reads
    the index tables between two writes except a search, which flushes first, so no reader sees the
    difference.
    """

    def __init__(self, max_params: int = DEFAULT_MAX_PARAMS) -> None:
        self._max_params = max_params
        self._rows: dict[int, IndexEntries] = {}
        self._bare: set[int] = set()  # rids with no index rows in the database (new or cleared here)

    def put(self, conn: sqlite3.Connection, rid: int, entries: IndexEntries | None, *, new: bool) -> None:
        """Make `entries` the index of `rid` (None: no rows, as for a delete)."""
        self._rows.pop(rid, None)
        if not new and rid not in self._bare:
            delete_index(conn, rid)
        self._bare.add(rid)
        if entries is not None:
            self._rows[rid] = entries

    def rows(self) -> int:
        """How many index rows are buffered."""
        return sum(
            len(getattr(entries, attr)) for entries in self._rows.values() for _k, attr in TABLES.values()
        )

    def take(self) -> list[Statement]:
        """The INSERTs of every buffered row, which leave the buffer: the caller runs them."""
        statements: list[Statement] = []
        for table, (_key, attr) in TABLES.items():
            rows = [(*row, rid) for rid, entries in self._rows.items() for row in getattr(entries, attr)]
            if rows:
                statements.extend(bulk_inserts(table, rows, self._max_params))
        self._rows.clear()
        self._bare.clear()
        return statements

    def flush(self, conn: sqlite3.Connection) -> None:
        """Insert every buffered row now (before a search)."""
        run_statements(conn, self.take())


def run_statements(conn: sqlite3.Connection, statements: list[Statement]) -> None:
    for sql, params in statements:
        conn.execute(sql, params)


def write_index(conn: sqlite3.Connection, rid: int, entries: IndexEntries) -> None:
    """Insert the index rows of `rid` (inside the write transaction; the store deletes old rows first)."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    for table, (_key, attr) in TABLES.items():
        rows = getattr(entries, attr)
        if rows:
            run_statements(conn, bulk_inserts(table, [(*row, rid) for row in rows], limit))


def delete_index(conn: sqlite3.Connection, rid: int) -> None:
    """Remove every index row of `rid` (resource deleted or about to be re-indexed)."""
    for table in TABLES:
        conn.execute(f"DELETE FROM {table} WHERE rid = ?", (rid,))


def rewrite_index(
    conn: sqlite3.Connection, resource_type: str, resource_id: str, entries: IndexEntries
) -> bool:
    """Replace the index rows of a current resource ($reindex); False if it does not exist."""
    row = conn.execute(
        "SELECT rid FROM resource WHERE type = ? AND id = ? AND deleted = 0", (resource_type, resource_id)
    ).fetchone()
    if row is None:
        return False
    delete_index(conn, row[0])
    write_index(conn, row[0], entries)
    return True
