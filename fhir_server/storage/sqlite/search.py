"""Run compiled search plans on a SQLite connection. OWNED BY THE SEARCH WORK (placeholder)."""

from __future__ import annotations

import sqlite3

from fhir_server.errors import NotImplementedOperation
from fhir_server.search.ast import SearchQuery
from fhir_server.storage.protocol import SearchPage


def execute_search(conn: sqlite3.Connection, query: SearchQuery) -> SearchPage:
    raise NotImplementedOperation("search is not available yet")


def search_ids(conn: sqlite3.Connection, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
    raise NotImplementedOperation("search is not available yet")
