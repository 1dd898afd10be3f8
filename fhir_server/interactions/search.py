"""Searchset Bundles: run a parsed search on the store, add _include/_revinclude, shape and link.

Links: `self` shows the parameters that were applied (lenient handling drops unknown ones, reported in an
OperationOutcome entry), `next`/`previous` carry the store's keyset cursors, so paging stays correct
while other clients write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from fhir_server.errors import InvalidSearch, Issue
from fhir_server.interactions.member_view import MemberView
from fhir_server.model.outcomes import operation_outcome
from fhir_server.model.references import iter_reference_holders
from fhir_server.search.ast import Criterion, Filter, Include, ParamRef, ReferenceValue, SearchQuery
from fhir_server.search.compartments import compartment_params
from fhir_server.search.extract import reference_value
from fhir_server.search.format import search_url
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchRegistry, param_id
from fhir_server.search.summary import apply_summary
from fhir_server.storage.protocol import ResourceStore, SearchPage, StoredVersion

JsonObject = dict[str, Any]
MAX_INCLUDED = 1000
REVINCLUDE_CHUNK = 200
MAX_ITERATIONS = 10


async def search_bundle(
    store: ResourceStore,
    registry: SearchRegistry,
    resource_type: str | None,
    params: list[tuple[str, str]],
    *,
    base_url: str,
    strict: bool,
    view: MemberView | None = None,
) -> JsonObject:
    """GET/POST [type]?..., [type]/_search and system search (`resource_type=None`, `_type=`).
    `view`: a member client's, whose filter the query gets (`member_view.py`)."""
    query = parse_search(resource_type, params, registry, strict=strict)
    if view is not None:
        query = view.restrict(registry, query)
    path = f"{base_url}/{resource_type}" if resource_type else base_url
    return await run_search(store, registry, query, base_url=base_url, path=path, view=view, restricted=True)


def compartment_filter(
    compartment: str,
    compartment_id: str,
    types: tuple[str, ...],
    *also: str,
    more: Mapping[str, tuple[str, ...]] | None = None,
) -> Criterion:
    """One criterion: any compartment parameter of each type points at `compartment/compartment_id`
    (or at one of the ids in `also`: the union of several compartments, e.g. one person's linked
    Patients). Parameter ids are type-scoped, so one OR over all (type, param) ids is exact. `more`:
    parameters counted as the compartment's beyond R4's definition (type → codes)."""
    params = {**compartment_params(compartment), **(more or {})}
    pids = tuple(param_id(t, code) for t in types for code in params.get(t, ()))
    if not pids:
        raise InvalidSearch(f"{', '.join(types)} is not part of the {compartment} compartment")
    return Criterion(
        ParamRef("_compartment", "reference", pids),
        None,
        tuple(ReferenceValue(compartment, cid) for cid in (compartment_id, *also)),
    )


async def compartment_search(
    store: ResourceStore,
    registry: SearchRegistry,
    compartment: str,
    compartment_id: str,
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    base_url: str,
    strict: bool,
    view: MemberView | None = None,
) -> JsonObject:
    """GET [base]/Patient/{id}/{type}?...: a type search restricted to the compartment."""
    query = parse_search(resource_type, params, registry, strict=strict)
    query = with_filters(query, compartment_filter(compartment, compartment_id, query.types))
    if view is not None:
        query = view.restrict(registry, query)
    path = f"{base_url}/{compartment}/{compartment_id}/{resource_type}"
    return await run_search(store, registry, query, base_url=base_url, path=path, view=view, restricted=True)


def with_filters(query: SearchQuery, *filters: Filter) -> SearchQuery:
    return replace(query, filters=(*filters, *query.filters))


async def run_search(
    store: ResourceStore,
    registry: SearchRegistry,
    query: SearchQuery,
    *,
    base_url: str,
    path: str,
    leading: list[StoredVersion] | None = None,
    view: MemberView | None = None,
    restricted: bool = False,
) -> JsonObject:
    """Execute `query` and build the searchset Bundle; `leading` resources are put first as matches.

    `view`: a member's. What includes add is checked here. So are the matches, unless the query carries
    the member's filter (`restricted`, `MemberView.restrict`): a system query like `$everything`'s
    reaches types the filter cannot be written for, and its matches are checked one by one."""
    page = await store.search(query)
    matches = [*(leading or []), *page.resources]
    included = await resolve_includes(store, registry, query.includes, matches) if query.includes else []
    if view is not None:
        if not restricted:
            matches = await view.visible(store, registry, matches)
        included = await view.visible(store, registry, included)
    return searchset(query, page, matches, included, base_url=base_url, path=path)


def searchset(
    query: SearchQuery,
    page: SearchPage,
    matches: list[StoredVersion],
    included: list[StoredVersion],
    *,
    base_url: str,
    path: str,
) -> JsonObject:
    links = [{"relation": "self", "url": search_url(path, query)}]
    if page.next_cursor:
        links.append({"relation": "next", "url": search_url(path, query, page.next_cursor)})
    if page.previous_cursor:
        links.append({"relation": "previous", "url": search_url(path, query, page.previous_cursor)})
    bundle: JsonObject = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    elif not query.cursor and not page.next_cursor:
        bundle["total"] = len(matches)  # the whole result is on this page: the total is free
    bundle["link"] = links
    entries = [_entry(v, "match", query, base_url) for v in matches]
    entries.extend(_entry(v, "include", query, base_url) for v in included)
    if query.ignored:
        outcome = operation_outcome_warning(query.ignored)
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    if query.summary != "count":
        bundle["entry"] = entries
    return bundle


def operation_outcome_warning(ignored: tuple[str, ...]) -> JsonObject:
    issues = [Issue("warning", "not-supported", f"Search parameter '{name}' was ignored") for name in ignored]
    return operation_outcome(issues)


def _entry(version: StoredVersion, mode: str, query: SearchQuery, base_url: str) -> JsonObject:
    assert version.body is not None
    resource = apply_summary(version.body, query.summary, query.elements) if mode == "match" else version.body
    return {
        "fullUrl": f"{base_url}/{version.resource_type}/{version.id}",
        "resource": resource,
        "search": {"mode": mode},
    }


def _references(registry: SearchRegistry, include: Include, version: StoredVersion) -> list[tuple[str, str]]:
    body = version.body
    if body is None or (include.source_type and version.resource_type != include.source_type):
        return []
    refs: list[tuple[str, str, str] | None] = []
    if include.param == "*":
        refs = [reference_value(holder) for holder in iter_reference_holders(body)]
    else:
        for cp in registry.compiled(version.resource_type):
            if cp.param.code == include.param and cp.param.type == "reference":
                refs = [reference_value(node[0]) for node in cp.extract(body)]
    out = []
    for ref in refs:
        wanted_type = include.target_type is None or (ref is not None and ref[0] == include.target_type)
        if ref is not None and ref[0] and ref[1] and not ref[2] and wanted_type:
            out.append((ref[0], ref[1]))
    return out


async def _revincluded(
    store: ResourceStore, registry: SearchRegistry, include: Include, sources: list[StoredVersion]
) -> list[StoredVersion]:
    if include.source_type is None:
        return []  # `_revinclude=*` is not defined by R4
    targets = [
        ReferenceValue(v.resource_type, v.id)
        for v in sources
        if include.target_type is None or v.resource_type == include.target_type
    ]
    pids = (param_id(include.source_type, include.param),)
    found: list[StoredVersion] = []
    for start in range(0, len(targets), REVINCLUDE_CHUNK):
        chunk = tuple(targets[start : start + REVINCLUDE_CHUNK])
        criterion = Criterion(ParamRef(include.param, "reference", pids), None, chunk)
        query = SearchQuery(include.source_type, (include.source_type,), (criterion,), count=MAX_INCLUDED)
        page = await store.search(query)
        found.extend(page.resources)
    return found


async def resolve_includes(
    store: ResourceStore,
    registry: SearchRegistry,
    includes: tuple[Include, ...],
    matches: list[StoredVersion],
) -> list[StoredVersion]:
    """_include/_revinclude over the matches, then :iterate ones over what they add until nothing new
    appears (cycles end because each resource is added once)."""
    seen = {(v.resource_type, v.id) for v in matches}
    out: list[StoredVersion] = []
    frontier = matches
    for round_no in range(MAX_ITERATIONS):
        new: list[StoredVersion] = []
        for inc in includes:
            if round_no > 0 and not inc.iterate:
                continue
            if inc.reverse:
                found = await _revincluded(store, registry, inc, frontier)
            else:
                refs = [r for v in frontier for r in _references(registry, inc, v)]
                wanted = list(dict.fromkeys(r for r in refs if r not in seen))
                found = await store.current_many(wanted) if wanted else []
            for v in found:
                key = (v.resource_type, v.id)
                if key not in seen and v.body is not None:
                    seen.add(key)
                    new.append(v)
        out.extend(new)
        if not new or len(out) >= MAX_INCLUDED:
            break
        frontier = new
    return out[:MAX_INCLUDED]
