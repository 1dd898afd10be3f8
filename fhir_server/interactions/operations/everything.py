"""Patient/$everything: the person's record, one record across every tier.

A person may have several Patient resources: one per member (each keyed by its own MRN), the record a
merge replaced, the hub's master. `Patient.link` joins them, and every R4 link type (`replaced-by`,
`replaces`, `refer`, `seealso`) says the other resource is about the same person, so the operation
follows links from the requested Patient (transitively, up to `MAX_LINKED` records) and returns the
union of their compartments: a township's source id shows the county's reports and images too.

One indexed query over all compartment types (parameter ids are type-scoped, so "any compartment
parameter of any type points at one of these Patients" is a single criterion, and a resource pointing
at two of them is found once), keyset-paged like any search; the patients lead the first page (the
requested one first). `_since` filters on lastUpdated, `_type` narrows the types.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import InvalidSearch, NotFound
from fhir_server.interactions.member_view import MemberView
from fhir_server.interactions.search import compartment_filter, run_search, searchset
from fhir_server.model.definitions import resource_types
from fhir_server.model.references import RELATIVE_REFERENCE
from fhir_server.search.ast import Criterion, ParamRef, RangeValue, SearchQuery
from fhir_server.search.compartments import compartment_params
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchRegistry
from fhir_server.search.values import date_range
from fhir_server.storage.protocol import ResourceStore, SearchPage, StoredVersion

JsonObject = dict[str, Any]
DEFAULT_COUNT = 1000
MAX_COUNT = 5000
MAX_LINKED = 100
"""At most this many Patients make one person's record: a bound on a link graph gone wrong."""


def _everything_query(
    patient_id: str, params: list[tuple[str, str]], linked: tuple[str, ...] = ()
) -> SearchQuery:
    # The person's Patients lead the page (see `linked_patients`); the compartment's other Patients
    # are those linking to them, which the closure has already found, so Patient is not searched.
    types = tuple(sorted(t for t in compartment_params("Patient") if t != "Patient"))
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
        filters.insert(0, compartment_filter("Patient", patient_id, types, *linked))
    return SearchQuery(None, types, tuple(filters), count=count, cursor=cursor, applied=tuple(applied))


async def patient_everything(
    store: ResourceStore,
    registry: SearchRegistry,
    patient_id: str,
    params: list[tuple[str, str]],
    *,
    base_url: str,
    view: MemberView | None = None,
) -> JsonObject:
    """GET/POST Patient/{id}/$everything → searchset Bundle (patients first, then their compartments).
    `view`: a member's, which must see the patient (else 404, as if absent) and sees what it sees."""
    patient = await store.current("Patient", patient_id)
    if patient is None or patient.body is None or (view and not await view.sees(store, registry, patient)):
        raise NotFound(f"Patient/{patient_id} not found")
    others = await linked_patients(store, registry, patient)
    query = _everything_query(patient_id, params, tuple(p.id for p in others))
    leading = []
    if query.cursor is None and (
        "_type" not in dict(params) or "Patient" in dict(params)["_type"].split(",")
    ):
        since = next(
            (f for f in query.filters if isinstance(f, Criterion) and f.param.code == "_lastUpdated"), None
        )
        for person in (patient, *others):
            lu = date_range(person.last_updated)
            if since is None or (
                lu is not None and isinstance(v := since.values[0], RangeValue) and lu[0] >= v.low
            ):
                leading.append(person)
    path = f"{base_url}/Patient/{patient_id}/$everything"
    if not query.types:
        if view is not None:
            leading = await view.visible(store, registry, leading)
        return searchset(query, SearchPage([], None, None), leading, [], base_url=base_url, path=path)
    return await run_search(store, registry, query, base_url=base_url, path=path, leading=leading, view=view)


async def linked_patients(
    store: ResourceStore, registry: SearchRegistry, patient: StoredVersion
) -> list[StoredVersion]:
    """The other current Patients of `patient`'s person: those it links to and those linking to it,
    transitively (a source → its master → the master's other sources), sorted by id."""
    seen = {patient.id}
    found: list[StoredVersion] = []
    frontier = [patient]
    while frontier and len(seen) < MAX_LINKED:
        outgoing = sorted({pid for p in frontier for pid in _link_targets(p.body)} - seen)
        step = [p for p in await store.current_many([("Patient", pid) for pid in outgoing]) if p.body]
        linking = [("link", ",".join(f"Patient/{p.id}" for p in frontier)), ("_count", str(MAX_LINKED))]
        step += (await store.search(parse_search("Patient", linking, registry, strict=True))).resources
        frontier = []
        for person in sorted(step, key=lambda p: p.id):
            if person.id not in seen and len(seen) < MAX_LINKED:
                seen.add(person.id)
                frontier.append(person)
        found.extend(frontier)
    return sorted(found, key=lambda p: p.id)


def _link_targets(body: JsonObject | None) -> list[str]:
    """Ids of the Patients in `body.link[].other` (relative references: this server's resources)."""
    out = []
    for link in (body or {}).get("link") or []:
        match = RELATIVE_REFERENCE.match(((link or {}).get("other") or {}).get("reference") or "")
        if match and match.group(1) == "Patient":
            out.append(match.group(2))
    return out
