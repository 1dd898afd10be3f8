"""Compartment search, Patient/$everything, keyset paging and _include cycles on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.errors import InvalidSearch, NotFound
from fhir_server.interactions.operations.everything import patient_everything
from fhir_server.interactions.search import compartment_search, search_bundle
from fhir_server.storage.protocol import ResourceStore
from tests.contract.search_support import load, shared_registry

BASE = "http://t/fhir"


def _record() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "李"}]},
        {"resourceType": "Patient", "id": "p2", "name": [{"family": "王"}]},
        {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Doc"}]},
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": "Patient/p1"},
        },
        {
            "resourceType": "Condition",
            "id": "c1",
            "subject": {"reference": "Patient/p1"},
            "code": {"text": "HTN"},
        },
        {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p1"}},
        {
            "resourceType": "Observation",
            "id": "o-other",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/p2"},
        },
    ]
    for i in range(25):
        out.append(
            {
                "resourceType": "Observation",
                "id": f"o{i:02d}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4" if i % 2 else "2339-0"}]},
                "subject": {"reference": "Patient/p1"},
                "performer": [{"reference": "Practitioner/dr"}],
            }
        )
    return out


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    ]


async def test_compartment_search(store: ResourceStore) -> None:
    registry = shared_registry()
    await load(store, _record(), registry)
    bundle = await compartment_search(
        store,
        registry,
        "Patient",
        "p1",
        "Observation",
        [("code", "8867-4"), ("_count", "50")],
        base_url=BASE,
        strict=True,
    )
    assert sorted(_ids(bundle)) == [f"Observation/o{i:02d}" for i in range(25) if i % 2]
    assert bundle["link"][0]["url"].startswith(f"{BASE}/Patient/p1/Observation?")
    bundle = await compartment_search(
        store, registry, "Patient", "p2", "Condition", [], base_url=BASE, strict=True
    )
    assert _ids(bundle) == []
    with pytest.raises(InvalidSearch):
        await compartment_search(
            store, registry, "Patient", "p1", "Organization", [], base_url=BASE, strict=True
        )


async def test_patient_everything_pages_and_filters(store: ResourceStore) -> None:
    registry = shared_registry()
    await load(store, _record(), registry)
    bundle = await patient_everything(store, registry, "p1", [], base_url=BASE)
    got = _ids(bundle)
    assert got[0] == "Patient/p1"
    assert sorted(got) == sorted(
        ["Patient/p1", "Encounter/e1", "Condition/c1", "AllergyIntolerance/a1"]
        + [f"Observation/o{i:02d}" for i in range(25)]
    )
    assert "Observation/o-other" not in got and "Patient/p2" not in got
    typed = await patient_everything(
        store, registry, "p1", [("_type", "Condition,AllergyIntolerance")], base_url=BASE
    )
    assert sorted(_ids(typed)) == ["AllergyIntolerance/a1", "Condition/c1"]
    later = await patient_everything(
        store, registry, "p1", [("_since", "2030-01-01T00:00:00Z")], base_url=BASE
    )
    assert _ids(later) == []
    paged: list[str] = []
    page = await patient_everything(store, registry, "p1", [("_count", "10")], base_url=BASE)
    while True:
        paged += _ids(page)
        nxt = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)
        if nxt is None:
            break
        cursor = nxt.split("_cursor=")[1]
        page = await patient_everything(
            store, registry, "p1", [("_count", "10"), ("_cursor", cursor)], base_url=BASE
        )
    assert sorted(paged) == sorted(got) and len(paged) == len(set(paged))
    with pytest.raises(NotFound):
        await patient_everything(store, registry, "nobody", [], base_url=BASE)


async def test_keyset_pages_cover_everything_once(store: ResourceStore) -> None:
    registry = shared_registry()
    await load(store, _record(), registry)
    for sort in ("", "-_id", "code,-_id", "_lastUpdated"):
        params = [("subject", "Patient/p1"), ("_count", "4")] + ([("_sort", sort)] if sort else [])
        bundle = await search_bundle(store, registry, "Observation", params, base_url=BASE, strict=True)
        seen = _ids(bundle)
        while nxt := next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), None):
            cursor = nxt.split("_cursor=")[1]
            bundle = await search_bundle(
                store, registry, "Observation", [*params, ("_cursor", cursor)], base_url=BASE, strict=True
            )
            seen += _ids(bundle)
        assert sorted(seen) == sorted(f"Observation/o{i:02d}" for i in range(25)), sort
        if sort == "-_id":
            assert seen == sorted(seen, reverse=True)
