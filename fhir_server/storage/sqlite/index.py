"""Search index tables for SQLite, one per parameter type, keyed by resource.rid.

Each table is WITHOUT ROWID with a primary key that starts with (param, value...) and ends with rid:
the lookup a search makes is a prefix range of the clustered key, and for one value the rids come out
in order, so the first page of a large match streams without a sort. A secondary (rid, param) index
serves deletes, EXISTS probes of the other filters, sort keys and includes.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable

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


@functools.cache
def _multi_row_sql(head: str, width: int, rows: int, tail: str) -> str:
    one = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES " + ", ".join([one] * rows) + tail


def multi_row_inserts(
    head: str,
    params: list[object],
    width: int,
    max_params: int = DEFAULT_MAX_PARAMS,
    *,
    tail: str = "",
    pad: bool = False,
) -> list[Statement]:
    """`head VALUES (...), (...) tail` for rows of `width` values laid end to end in `params`: a
    handful of statements, whatever the number of rows.

    Why not `executemany`: it binds and steps row by row, holding the GIL between rows. A multi-row
    INSERT is one step, during which SQLite releases the GIL, so the writer thread (`writer.py`) inserts
    a section's rows on the other core while the event loop goes on; it is also less work where it
    does run on the loop. Why flat: the rows are laid out once, and chunks are list slices.

    Rows go out in power-of-two chunks, largest first, so the writer's statement cache holds a dozen
    texts per head rather than one per row count. With `pad` (an `INSERT OR IGNORE` whose key is every
    column) the rows after the last full chunk go in one chunk, padded up to a power of two by repeating
    the last row, which the insert drops: one statement per table and hand-over, at the cost of a key
    lookup per padding row. Without it they go in one chunk per set bit of their number.
    """
    count = len(params) // width
    largest = MAX_CHUNK
    while largest > 1 and largest * width > max_params:
        largest //= 2
    statements: list[Statement] = []
    start, left = 0, count
    while left:
        size = min(largest, 1 << ((left - 1).bit_length() if pad else left.bit_length() - 1))
        rows = min(size, left)
        chunk = params[start * width : (start + rows) * width]
        if rows < size:
            chunk += chunk[-width:] * (size - rows)
        statements.append((_multi_row_sql(head, width, size, tail), chunk))
        start += rows
        left -= rows
    return statements


@functools.cache
def _index_insert_head(table: str) -> str:
    return f"INSERT OR IGNORE INTO {table} ({', '.join((*ROW_COLUMNS[table], 'rid'))})"


def bulk_inserts(table: str, params: list[object], max_params: int = DEFAULT_MAX_PARAMS) -> list[Statement]:
    """Multi-row INSERTs into index `table` of rows laid end to end in `params`, each ending with its
    rid (`ROW_COLUMNS[table]` and rid)."""
    width = len(ROW_COLUMNS[table]) + 1
    return multi_row_inserts(_index_insert_head(table), params, width, max_params, pad=True)


def index_deletes(rids: list[int], max_params: int = DEFAULT_MAX_PARAMS) -> list[Statement]:
    """DELETEs of every index row of `rids` (resources deleted or about to be re-indexed)."""
    statements: list[Statement] = []
    step = min(max_params, MAX_CHUNK)
    for start in range(0, len(rids), step):
        chunk: list[object] = list(rids[start : start + step])
        marks = ", ".join("?" * len(chunk))
        statements.extend((f"DELETE FROM {table} WHERE rid IN ({marks})", chunk) for table in TABLES)
    return statements


def flat_rows(rows_of: Iterable[tuple[int, list[tuple[object, ...]]]]) -> list[object]:
    """Index rows of several resources, each followed by its rid, laid end to end."""
    flat: list[object] = []
    extend, append = flat.extend, flat.append
    for rid, rows in rows_of:
        for row in rows:
            extend(row)
            append(rid)
    return flat


def run_statements(conn: sqlite3.Connection, statements: list[Statement]) -> None:
    for sql, params in statements:
        conn.execute(sql, params)


def write_index(conn: sqlite3.Connection, rid: int, entries: IndexEntries) -> None:
    """Insert the index rows of `rid` (inside the write transaction; the store deletes old rows first)."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    for table, (_key, attr) in TABLES.items():
        rows = getattr(entries, attr)
        if rows:
            run_statements(conn, bulk_inserts(table, flat_rows([(rid, rows)]), limit))


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
