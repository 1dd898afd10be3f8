"""Format a parsed search back into URL query text (self / next / previous links)."""

from __future__ import annotations

from urllib.parse import urlencode

from fhir_server.search.ast import SearchQuery


def query_string(query: SearchQuery, cursor: str | None = None) -> str:
    """The applied parameters (unknown ones already dropped), plus a paging cursor if given."""
    pairs = list(query.applied)
    if cursor is not None:
        pairs.append(("_cursor", cursor))
    return urlencode(pairs, safe=":|,/$*")


def search_url(base: str, query: SearchQuery, cursor: str | None = None) -> str:
    qs = query_string(query, cursor)
    return f"{base}?{qs}" if qs else base
