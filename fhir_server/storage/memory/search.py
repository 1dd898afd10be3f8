"""Run search plans over in-memory resources. OWNED BY THE SEARCH WORK (placeholder)."""

from __future__ import annotations

from collections.abc import Iterable

from fhir_server.errors import NotImplementedOperation
from fhir_server.search.ast import SearchQuery
from fhir_server.search.index import IndexEntries
from fhir_server.storage.protocol import SearchPage, StoredVersion

Live = Iterable[tuple[StoredVersion, IndexEntries | None]]


def execute_search(live: Live, query: SearchQuery) -> SearchPage:
    raise NotImplementedOperation("search is not available yet")


def search_ids(live: Live, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
    raise NotImplementedOperation("search is not available yet")
