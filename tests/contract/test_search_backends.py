"""Every backend answers the same searches as the memory reference: same matches, same totals, pages
that walk forwards and backwards without gaps or repeats. Covers each parameter type, modifiers,
chains, _has, sort, _count, _total and paging, over data that has been updated and deleted since."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from fhir_server.search.extract import extract
from fhir_server.search.parse import parse_search
from fhir_server.storage.memory.store import MemoryStore
from fhir_server.storage.protocol import NewVersion, ResourceStore
from tests.contract.search_support import generated_resources, load, shared_registry

SEED = 7
Params = list[tuple[str, str]]

QUERIES: list[tuple[str, Params]] = [
    ("Patient", []),
    ("Patient", [("gender", "male")]),
    ("Patient", [("gender:not", "male")]),
    ("Patient", [("identifier", "urn:mrn|26")]),
    ("Patient", [("identifier", "26,3,17")]),
    ("Patient", [("identifier", "urn:cn-id|")]),
    ("Patient", [("_id", "gp7-0,gp7-5,nope")]),
    ("Patient", [("_id:not", "gp7-0")]),
    ("Patient", [("family", "o'b")]),
    ("Patient", [("name", "mu")]),
    ("Patient", [("family:exact", "Müller")]),
    ("Patient", [("family:exact", "müller")]),
    ("Patient", [("name:contains", "a")]),
    ("Patient", [("birthdate", "1957")]),
    ("Patient", [("birthdate", "ge1980")]),
    ("Patient", [("birthdate", "lt1970-06")]),
    ("Patient", [("birthdate", "sa1990"), ("gender", "female")]),
    ("Patient", [("birthdate", "ap1990-06-01")]),
    ("Patient", [("birthdate:missing", "true")]),
    ("Patient", [("telecom:missing", "false")]),
    ("Patient", [("organization", "Organization/org-1")]),
    ("Patient", [("organization", "org-2")]),
    ("Patient", [("organization.name", "town")]),
    ("Patient", [("organization:Organization.partof", "org-1")]),
    ("Patient", [("_has:Observation:subject:code", "8867-4")]),
    ("Patient", [("_has:Observation:subject:value-quantity", "gt150")]),
    ("Patient", [("_has:Encounter:subject:status", "finished"), ("gender", "female")]),
    ("Patient", [("_lastUpdated", "gt2026-01-01")]),
    ("Patient", [("_lastUpdated", "le2026-01-01T00:00:00Z")]),
    ("Observation", [("code", "http://loinc.org|8867-4")]),
    ("Observation", [("code", "|8480-6")]),
    ("Observation", [("code:text", "heart")]),
    ("Observation", [("value-quantity", "gt100")]),
    ("Observation", [("value-quantity", "le50|http://unitsofmeasure.org|mg/dL")]),
    ("Observation", [("value-quantity", "ap100")]),
    ("Observation", [("value-quantity", "110")]),
    ("Observation", [("value-quantity:missing", "true")]),
    ("Observation", [("value-string", "nég")]),
    ("Observation", [("subject", "Patient/gp7-3")]),
    ("Observation", [("subject:Patient", "gp7-3,gp7-4")]),
    ("Observation", [("subject:Patient.gender", "female")]),
    ("Observation", [("patient.organization.name", "town")]),
    ("Observation", [("encounter.status", "finished"), ("status", "final")]),
    ("Observation", [("date", "ge2000")]),
    ("Observation", [("date", "eq1976")]),
    ("Observation", [("date", "ne1976")]),
    ("Observation", [("code-value-quantity", "8480-6$gt100")]),
    ("Encounter", [("status", "finished"), ("class", "AMB")]),
    ("Encounter", [("date", "ge2000-01-01")]),
    ("Encounter", [("date", "eb1990")]),
    ("Encounter", [("subject:missing", "false")]),
    ("Encounter", [("service-provider.name:exact", "Township Centre")]),
]
SORTS: list[tuple[str, Params]] = [
    ("Patient", [("_sort", "_id")]),
    ("Patient", [("_sort", "-birthdate,_id")]),
    ("Patient", [("_sort", "birthdate,-_id")]),
    ("Patient", [("_sort", "family,_id"), ("gender:not", "other")]),
    ("Patient", [("_sort", "-_lastUpdated,_id")]),
    ("Observation", [("_sort", "-value-quantity,_id")]),
    ("Observation", [("_sort", "code,date,_id"), ("status", "final")]),
    ("Encounter", [("_sort", "-date,_id")]),
]


async def _prepare(store: ResourceStore) -> None:
    """Load, then change a few resources (new versions with other index entries, a delete)."""
    registry = shared_registry()
    data = generated_resources(SEED)
    await load(store, data, registry)
    by_key = {(r["resourceType"], r["id"]): r for r in data}
    async with store.write() as tx:
        for n, rid in enumerate(("gp7-1", "gp7-2", "gp7-3")):
            at = f"2026-02-0{n + 1}T00:00:00.000Z"
            body = {**by_key[("Patient", rid)], "gender": "unknown", "birthDate": "2001-02-03"}
            body["meta"] = {"versionId": "2", "lastUpdated": at}
            await tx.write_version(NewVersion("Patient", rid, 2, at, "PUT", body, extract(body, registry)))
        at = "2026-02-09T00:00:00.000Z"
        await tx.write_version(NewVersion("Patient", "gp7-4", 2, at, "DELETE", None, None))


async def _walk(store: ResourceStore, rtype: str, params: Params, count: int) -> tuple[list[str], int | None]:
    """All ids page by page via next cursors; then checks the previous cursors walk back the same way."""
    query = parse_search(
        rtype, [*params, ("_count", str(count)), ("_total", "accurate")], shared_registry(), strict=True
    )
    page = await store.search(query)
    total = page.total
    pages = [[v.id for v in page.resources]]
    assert page.previous_cursor is None
    while page.next_cursor:
        assert len(page.resources) == count
        page = await store.search(dataclasses.replace(query, cursor=page.next_cursor))
        pages.append([v.id for v in page.resources])
        assert page.total == total
    back = []
    while page.previous_cursor:
        page = await store.search(dataclasses.replace(query, cursor=page.previous_cursor))
        back.insert(0, [v.id for v in page.resources])
    assert back == pages[:-1], "previous cursors walk back over the same pages"
    ids = [i for p in pages for i in p]
    assert len(ids) == len(set(ids)), "no resource on two pages"
    return ids, total


@pytest.fixture
async def reference() -> MemoryStore:
    memory = MemoryStore()
    await _prepare(memory)
    return memory


async def test_searches_match_the_memory_reference(store: ResourceStore, reference: MemoryStore) -> None:
    await _prepare(store)
    differ: list[Any] = []
    nonempty = 0
    for rtype, params in QUERIES:
        want, want_total = await _walk(reference, rtype, params, 1000)
        nonempty += bool(want)
        got, got_total = await _walk(store, rtype, params, 7)
        if sorted(got) != sorted(want) or got_total != want_total or got_total != len(got):
            differ.append((rtype, params, sorted(set(got) - set(want))[:3], sorted(set(want) - set(got))[:3]))
    assert not differ, differ
    assert nonempty > len(QUERIES) * 3 // 4, "most queries must match something, or they prove little"


async def test_sorted_pages_match_the_memory_reference(store: ResourceStore, reference: MemoryStore) -> None:
    """Sorts that end in _id are total orders: every backend must return exactly the same sequence."""
    await _prepare(store)
    for rtype, params in SORTS:
        want, _ = await _walk(reference, rtype, params, 1000)
        for count in (2, 9):
            got, total = await _walk(store, rtype, params, count)
            assert got == want, (rtype, params, count)
            assert total == len(want)


async def test_summary_count_and_count_zero(store: ResourceStore) -> None:
    await _prepare(store)
    registry = shared_registry()
    query = parse_search("Observation", [("code", "8867-4"), ("_summary", "count")], registry, strict=True)
    page = await store.search(query)
    assert page.resources == [] and page.total is not None and page.total > 0
    zero = await store.search(parse_search("Patient", [("_count", "0")], registry, strict=True))
    assert zero.resources == [] and zero.next_cursor is None


async def test_search_ids_sees_the_sections_own_writes(store: ResourceStore) -> None:
    registry = shared_registry()
    query = parse_search("Patient", [("identifier", "urn:new|1")], registry, strict=True)
    body = {"resourceType": "Patient", "id": "n1", "identifier": [{"system": "urn:new", "value": "1"}]}
    async with store.write() as tx:
        assert await tx.search_ids(query, 2) == []
        await tx.write_version(
            NewVersion("Patient", "n1", 1, "2026-01-01T00:00:00Z", "POST", body, extract(body, registry))
        )
        assert await tx.search_ids(query, 2) == [("Patient", "n1")]
        await tx.write_version(NewVersion("Patient", "n1", 2, "2026-01-01T00:00:01Z", "DELETE", None, None))
        assert await tx.search_ids(query, 2) == []


async def test_a_resource_rewritten_within_a_section_keeps_only_its_last_index(store: ResourceStore) -> None:
    """SQLite buffers a section's index rows until a search or the section's end: rewrites of the same
    resource in between, a rolled-back section and a later section's update must each leave exactly the
    index of the version that stands."""
    registry = shared_registry()

    def query(value: str) -> Any:
        return parse_search("Patient", [("identifier", f"urn:re|{value}")], registry, strict=True)

    def version(n: int, value: str | None) -> NewVersion:
        if value is None:
            return NewVersion("Patient", "re1", n, f"2026-01-01T00:00:0{n}Z", "DELETE", None, None)
        body = {"resourceType": "Patient", "id": "re1", "identifier": [{"system": "urn:re", "value": value}]}
        return NewVersion(
            "Patient", "re1", n, f"2026-01-01T00:00:0{n}Z", "PUT", body, extract(body, registry)
        )

    async def found(value: str) -> list[str]:
        return [v.id for v in (await store.search(query(value))).resources]

    async with store.write() as tx:
        await tx.write_version(version(1, "a"))
        await tx.write_version(version(2, "b"))
        await tx.write_version(version(3, "c"))
    assert (await found("a"), await found("b"), await found("c")) == ([], [], ["re1"])

    with pytest.raises(RuntimeError):
        async with store.write() as tx:
            await tx.write_version(version(4, "d"))
            raise RuntimeError("the section fails after its write")
    assert (await found("c"), await found("d")) == (["re1"], [])

    async with store.write() as tx:
        await tx.write_version(version(4, "e"))
        await tx.write_version(version(5, None))
        await tx.write_version(version(6, "f"))
        assert await tx.search_ids(query("f"), 2) == [("Patient", "re1")]
        await tx.write_version(version(7, "g"))
    assert (await found("c"), await found("e"), await found("f"), await found("g")) == ([], [], [], ["re1"])

    async with store.write() as tx:
        await tx.write_version(version(8, "h"))
        await tx.write_version(version(9, None))
    assert (await found("g"), await found("h")) == ([], [])


async def test_conditional_create_is_race_free(store: ResourceStore) -> None:
    """Concurrent search-then-create sections for the same identifier create exactly one resource."""
    registry = shared_registry()
    query = parse_search("Patient", [("identifier", "urn:race|x")], registry, strict=True)

    async def create_once(n: int) -> bool:
        async with store.write() as tx:
            if await tx.search_ids(query, 2):
                return False
            await asyncio.sleep(0)
            body = {
                "resourceType": "Patient",
                "id": f"r{n}",
                "identifier": [{"system": "urn:race", "value": "x"}],
            }
            await tx.write_version(
                NewVersion(
                    "Patient", f"r{n}", 1, "2026-01-01T00:00:00Z", "POST", body, extract(body, registry)
                )
            )
            return True

    created = await asyncio.gather(*(create_once(n) for n in range(10)))
    assert sum(created) == 1
    page = await store.search(
        parse_search("Patient", [("identifier", "urn:race|x"), ("_total", "accurate")], registry, strict=True)
    )
    assert page.total == 1
