"""Patient/$everything: the patient and every resource in its compartment, one record across every tier.

One indexed query over all compartment types (parameter ids are type-scoped, so "any compartment
parameter of any type points at Patient/x" is a single criterion), keyset-paged like any search; the
patient itself leads the first page. `_since` filters on lastUpdated, `_type` narrows the types.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import InvalidSearch, NotFound
from fhir_server.interactions.search import compartment_filter, run_search, searchset
from fhir_server.model.definitions import resource_types
from fhir_server.search.ast import Criterion, ParamRef, RangeValue, SearchQuery
from fhir_server.search.compartments import compartment_params
from fhir_server.search.registry import SearchRegistry
from fhir_server.search.values import date_range
from fhir_server.storage.protocol import ResourceStore, SearchPage

JsonObject = dict[str, Any]
DEFAULT_COUNT = 1000
MAX_COUNT = 5000


def _everything_query(patient_id: str, params: list[tuple[str, str]]) -> SearchQuery:
    types = tuple(sorted(compartment_params("Patient")))
    filters = []
    applied: list[tuple[str, str]] = []
    count, cursor = DEFAULT_COUNT, None
    for key, value in params:
        if key == "_type":
            wanted = [t for t in value.split(",") if t]
            unknown = [t for t in wanted if t not in resource_types()]
            if unknown:
                raise InvalidSearch(f"Unknown resource type(s) in _type: {', '.join(unknown)}")
            types = tuple(t for t in types if t in wanted)
            applied.append((key, value))
        elif key == "_since":
            rng = date_range(value)
            if rng is None:
                raise InvalidSearch(f"_since={value!r} is not a valid instant")
            since = RangeValue("ge", float(rng[0]), float(rng[0] + 1), float(rng[0]))
            filters.append(Criterion(ParamRef("_lastUpdated", "date", ()), None, (since,)))
            applied.append((key, value))
        elif key == "_count":
            if not value.isdigit():
                raise InvalidSearch(f"_count must be a non-negative integer, got '{value}'")
            count = min(int(value), MAX_COUNT)
            applied.append((key, value))
        elif key == "_cursor":
            cursor = value
    if types:
        filters.insert(0, compartment_filter("Patient", patient_id, types))
    return SearchQuery(None, types, tuple(filters), count=count, cursor=cursor, applied=tuple(applied))


async def patient_everything(
    store: ResourceStore,
    registry: SearchRegistry,
    patient_id: str,
    params: list[tuple[str, str]],
    *,
    base_url: str,
) -> JsonObject:
    """GET/POST Patient/{id}/$everything → searchset Bundle (patient first, then its compartment)."""
    patient = await store.current("Patient", patient_id)
    if patient is None or patient.body is None:
        raise NotFound(f"Patient/{patient_id} not found")
    query = _everything_query(patient_id, params)
    leading = []
    if query.cursor is None and (
        "_type" not in dict(params) or "Patient" in dict(params)["_type"].split(",")
    ):
        since = next(
            (f for f in query.filters if isinstance(f, Criterion) and f.param.code == "_lastUpdated"), None
        )
        lu = date_range(patient.last_updated)
        if since is None or (
            lu is not None and isinstance(v := since.values[0], RangeValue) and lu[0] >= v.low
        ):
            leading.append(patient)
    path = f"{base_url}/Patient/{patient_id}/$everything"
    if not query.types:
        return searchset(query, SearchPage([], None, None), leading, [], base_url=base_url, path=path)
    return await run_search(store, registry, query, base_url=base_url, path=path, leading=leading)
