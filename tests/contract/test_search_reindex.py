"""$reindex: a custom SearchParameter added after the data was written finds that data once reindexed."""

from __future__ import annotations

from fhir_server.interactions.operations.reindex import reindex
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import build_registry
from fhir_server.storage.protocol import ResourceStore
from tests.contract.search_support import load

MAIDEN = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
SP = {
    "resourceType": "SearchParameter",
    "url": "http://yilian.example/SearchParameter/mothers-maiden-name",
    "code": "mothers-maiden-name",
    "base": ["Patient"],
    "type": "string",
    "expression": f"Patient.extension.where(url='{MAIDEN}').value",
}


async def test_reindex_makes_existing_data_searchable(store: ResourceStore) -> None:
    registry = build_registry()
    patients = [
        {"resourceType": "Patient", "id": f"r{i}", "extension": [{"url": MAIDEN, "valueString": name}]}
        for i, name in enumerate(["欧阳", "Smith", "欧阳"])
    ]
    await load(store, [*patients, {"resourceType": "Patient", "id": "gone"}], registry)
    registry.check(SP)
    registry.add(SP)
    query = parse_search("Patient", [("mothers-maiden-name", "欧阳")], registry, strict=True)
    assert (await store.search(query)).resources == []  # written before the parameter existed
    count = await reindex(store, registry, ["Patient"], batch=2)
    assert count == 4
    found = sorted(v.id for v in (await store.search(query)).resources)
    assert found == ["r0", "r2"]
