"""The rows one write section has produced and not yet handed to SQLite: resource rows, versions and
index rows, turned into a few multi-row statements when a read needs them, when enough have gathered
for the writer thread, or when the section ends.

Why buffer: a busy section (an HL7 round writes ~600 resources, a transaction Bundle as many as it
holds) otherwise pays three statements per resource and one per index table, and each statement run on
the event loop holds the GIL for its whole SQLite step. A few multi-row statements instead can run on
the writer thread (`writer.py`), where SQLite works without the GIL, while the loop validates and
indexes the next resources. Nothing reads what the buffer holds without `take()` first
(`SqliteWriteTransaction._quiet`), so no reader sees the difference.
"""

from __future__ import annotations

from itertools import chain

from fhir_server.search.index import IndexEntries
from fhir_server.storage.sqlite.index import (
    DEFAULT_MAX_PARAMS,
    TABLES,
    Statement,
    bulk_inserts,
    flat_rows,
    index_deletes,
    multi_row_inserts,
)

_RESOURCE_COLUMNS = ("rid", "type", "id", "version", "seq", "last_updated_us", "deleted")
_RESOURCE_HEAD = f"INSERT INTO resource ({', '.join(_RESOURCE_COLUMNS)})"
_RESOURCE_TAIL = (
    " ON CONFLICT (rid) DO UPDATE SET version = excluded.version, seq = excluded.seq,"
    " last_updated_us = excluded.last_updated_us, deleted = excluded.deleted"
)
_VERSION_COLUMNS = (
    "seq", "rid", "type", "id", "version", "last_updated", "last_updated_us", "method", "body"
)  # fmt: skip
_VERSION_HEAD = f"INSERT INTO version ({', '.join(_VERSION_COLUMNS)})"

ResourceRow = tuple[int, str, str, int, int, int, int]
"""rid, type, id, version, seq, last_updated_us, deleted."""
VersionRow = tuple[int, int, str, str, int, str, int, str, bytes | None]
"""seq, rid, type, id, version, last_updated, last_updated_us, method, body."""


class SectionWrites:
    """Buffered writes of one section, in an order that `take()` keeps: a resource's old index rows go
    before its new ones; a resource written twice keeps its last row and index."""

    def __init__(self, max_params: int = DEFAULT_MAX_PARAMS) -> None:
        self._max_params = max_params
        self._resources: dict[int, ResourceRow] = {}
        self._versions: list[VersionRow] = []
        self._rows: dict[int, IndexEntries] = {}
        self._stale: list[int] = []  # rids whose index rows in the database must go first
        self._bare: set[int] = set()  # rids with no index rows in the database (new or cleared here)
        self._index_rows = 0

    def write(
        self, resource: ResourceRow, version: VersionRow, entries: IndexEntries | None, *, new: bool
    ) -> None:
        """Buffer one version of a resource; `entries` becomes its index (None: no rows, a delete)."""
        rid = resource[0]
        self._resources[rid] = resource
        self._versions.append(version)
        self._index(rid, entries, new=new)

    def _index(self, rid: int, entries: IndexEntries | None, *, new: bool) -> None:
        old = self._rows.pop(rid, None)
        if old is not None:
            self._index_rows -= _count(old)
        if not new and rid not in self._bare:
            self._stale.append(rid)
        self._bare.add(rid)
        if entries is not None:
            self._rows[rid] = entries
            self._index_rows += _count(entries)

    def index_rows(self) -> int:
        """How many index rows are buffered."""
        return self._index_rows

    def __bool__(self) -> bool:
        return bool(self._versions or self._stale or self._rows)

    def take(self) -> list[Statement]:
        """The statements of everything buffered, which leaves the buffer: the caller runs them in order."""
        limit = self._max_params
        statements = index_deletes(self._stale, limit)
        resources: list[object] = list(chain.from_iterable(self._resources.values()))
        width = len(_RESOURCE_COLUMNS)
        statements += multi_row_inserts(_RESOURCE_HEAD, resources, width, limit, tail=_RESOURCE_TAIL)
        versions: list[object] = list(chain.from_iterable(self._versions))
        statements += multi_row_inserts(_VERSION_HEAD, versions, len(_VERSION_COLUMNS), limit)
        for table, (_key, attr) in TABLES.items():
            flat = flat_rows((rid, getattr(entries, attr)) for rid, entries in self._rows.items())
            if flat:
                statements += bulk_inserts(table, flat, limit)
        self._resources.clear()
        self._versions.clear()
        self._rows.clear()
        self._stale.clear()
        self._bare.clear()
        self._index_rows = 0
        return statements


def _count(entries: IndexEntries) -> int:
    return sum(len(getattr(entries, attr)) for _key, attr in TABLES.values())
