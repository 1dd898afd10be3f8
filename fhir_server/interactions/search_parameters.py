"""Custom SearchParameter resources: checked before they are stored, registered after commit, and
reloaded from the store at startup. Existing data is indexed for them by `operations/reindex.py`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from functools import cache

from fhir_server.interactions.events import Handler, ResourceChanged
from fhir_server.model.definitions import search_parameter_bundle
from fhir_server.search.ast import SearchQuery
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.protocol import ResourceStore

LOGGER = logging.getLogger(__name__)


@cache
def _core_urls() -> frozenset[str]:
    return frozenset(
        str(e["resource"].get("url")) for e in search_parameter_bundle().get("entry", []) if "resource" in e
    )


def takes_effect(resource: Mapping[str, object]) -> bool:
    """Whether storing this SearchParameter changes what the server indexes.

    Only an active parameter that is not one of R4's own definitions does: a client may store the
    official definitions (or drafts) as content without redefining the built-in parameters.
    """
    return resource.get("status") == "active" and str(resource.get("url")) not in _core_urls()


def check_search_parameter(registry: SearchRegistry, resource: dict[str, object]) -> None:
    """Raise Unprocessable when an effective SearchParameter cannot be indexed (call in validation)."""
    if takes_effect(resource):
        registry.check(resource)


def registry_updater(registry: SearchRegistry) -> Handler:
    """An event handler that keeps the registry in step with stored SearchParameter resources."""

    async def on_change(change: ResourceChanged) -> None:
        if change.resource_type != "SearchParameter":
            return
        if change.resource is not None and not takes_effect(change.resource):
            return
        if change.resource is None:
            for param in list(registry.by_url.values()):
                if param.url.endswith(f"/SearchParameter/{change.id}"):
                    registry.remove(param.url)
            return
        registry.add(change.resource)
        LOGGER.info(
            "search parameter %s registered for %s", change.resource.get("code"), change.resource.get("base")
        )

    return on_change


async def load_stored(store: ResourceStore, registry: SearchRegistry) -> int:
    """Register every stored SearchParameter (startup). Returns how many were loaded."""
    query = SearchQuery("SearchParameter", ("SearchParameter",), count=500)
    loaded = 0
    while True:
        page = await store.search(query)
        for version in page.resources:
            if version.body is not None and version.body.get("expression") and takes_effect(version.body):
                registry.add(version.body)
                loaded += 1
        if page.next_cursor is None:
            return loaded
        query = replace(query, cursor=page.next_cursor)
