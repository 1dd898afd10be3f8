"""$reindex: re-extract the search index of current resources (after a custom SearchParameter is added,
or when extraction rules change). Works in batches, each in its own write section, so the server keeps
answering; every backend implements the `WriteTransaction.reindex(resource_type, id, entries)` primitive."""

from __future__ import annotations

from dataclasses import replace

from fhir_server.search.ast import SearchQuery
from fhir_server.search.extract import extract
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.protocol import ResourceStore


async def reindex(
    store: ResourceStore, registry: SearchRegistry, resource_types: list[str], *, batch: int = 500
) -> int:
    """Re-extract and rewrite the index of every current resource of `resource_types`; returns the count."""
    done = 0
    for rtype in resource_types:
        query = SearchQuery(rtype, (rtype,), count=batch)
        while True:
            page = await store.search(query)
            async with store.write() as tx:
                for version in page.resources:
                    if version.body is not None:
                        await tx.reindex(rtype, version.id, extract(version.body, registry))
                        done += 1
            if page.next_cursor is None:
                break
            query = replace(query, cursor=page.next_cursor)
    return done
