"""SQLite layout of resources and versions. Index tables come from `index.py` (one per parameter type).

`resource` holds one row per (type, id) with a stable integer `rid` that every index table keys on, and
`seq` pointing at the current version. `version` holds every version (deletes as NULL body); its `seq` is
the global write order used by history and by keyset cursors.
"""

from __future__ import annotations

from fhir_server.storage.sqlite.index import index_ddl

RESOURCE_DDL = [
    """CREATE TABLE IF NOT EXISTS resource (
        rid INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        last_updated_us INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        UNIQUE (type, id)
    )""",
    """CREATE TABLE IF NOT EXISTS version (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        rid INTEGER NOT NULL,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        last_updated TEXT NOT NULL,
        last_updated_us INTEGER NOT NULL,
        method TEXT NOT NULL,
        body BLOB,
        UNIQUE (type, id, version)
    )""",
    "CREATE INDEX IF NOT EXISTS version_type_lu ON version (type, last_updated_us)",
    "CREATE INDEX IF NOT EXISTS version_lu ON version (last_updated_us)",
    "CREATE INDEX IF NOT EXISTS resource_type_live ON resource (type, deleted, rid)",
    # one row rewritten by `SqliteStore.sync()`: a durable commit needs something to commit
    "CREATE TABLE IF NOT EXISTS sync_point"
    " (id INTEGER PRIMARY KEY CHECK (id = 1), synced_us INTEGER NOT NULL)",
]


def schema_ddl() -> list[str]:
    return [*RESOURCE_DDL, *index_ddl()]
