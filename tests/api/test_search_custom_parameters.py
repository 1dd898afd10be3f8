"""Custom SearchParameter resources: checked, registered after commit, indexed and searchable."""

from __future__ import annotations

import httpx
import pytest

from fhir_server.errors import Unprocessable
from fhir_server.hub import Hub
from fhir_server.interactions.search_parameters import check_search_parameter, load_stored, registry_updater

MAIDEN = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
SP = {
    "resourceType": "SearchParameter",
    "id": "mothers-maiden-name",
    "url": "http://yilian.example/SearchParameter/mothers-maiden-name",
    "name": "MothersMaidenName",
    "status": "active",
    "description": "Mother's maiden name",
    "code": "mothers-maiden-name",
    "base": ["Patient"],
    "type": "string",
    "expression": f"Patient.extension.where(url='{MAIDEN}').value",
}


async def test_custom_parameter_is_indexed_and_searchable(hub: Hub, client: httpx.AsyncClient) -> None:
    registry = hub.service.registry
    hub.service.events.subscribe(registry_updater(registry))
    check_search_parameter(registry, SP)
    r = await client.put("/fhir/SearchParameter/mothers-maiden-name", json=SP)
    assert r.status_code in (200, 201), r.text
    assert registry.get("Patient", "mothers-maiden-name") is not None
    patient = {"resourceType": "Patient", "extension": [{"url": MAIDEN, "valueString": "欧阳"}]}
    r = await client.post("/fhir/Patient", json=patient)
    assert r.status_code == 201
    bundle = (
        await client.get("/fhir/Patient?mothers-maiden-name=欧", headers={"Prefer": "handling=strict"})
    ).json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [r.json()["id"]]
    caps = {p.code for p in registry.params_for("Patient")}
    assert "mothers-maiden-name" in caps
    # a fresh registry (restart) gets it back from the store
    from fhir_server.search.registry import build_registry

    fresh = build_registry()
    assert (
        await load_stored(hub.store, fresh) == 1 and fresh.get("Patient", "mothers-maiden-name") is not None
    )


@pytest.mark.parametrize(
    "change",
    [
        {"type": "special"},
        {"base": ["Nope"]},
        {"expression": ""},
        {"code": "_bad"},
        {"code": "birthdate"},  # shadows an R4 parameter
        {"expression": "Patient.name.where(("},
    ],
)
def test_unindexable_parameters_are_rejected(hub: Hub, change: dict[str, object]) -> None:
    with pytest.raises(Unprocessable):
        check_search_parameter(hub.service.registry, {**SP, **change})
