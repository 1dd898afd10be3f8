"""Bad input gets a clear OperationOutcome with the right status, and nothing is half-written."""

from __future__ import annotations

import httpx
import pytest

from fhir_server.hub import open_hub
from fhir_server.settings import Settings


def _outcome(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["diagnostics"]
    return body


async def _count(client: httpx.AsyncClient) -> int:
    return (await client.get("/fhir/_history")).json()["total"]


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/fhir/Patient",
        content=b'{"resourceType": "Patient",',
        headers={"Content-Type": "application/fhir+json"},
    )
    assert "not valid JSON" in _outcome(r, 400)["issue"][0]["diagnostics"]
    r = await client.post(
        "/fhir/Patient", content=b"[1, 2]", headers={"Content-Type": "application/fhir+json"}
    )
    _outcome(r, 400)
    assert await _count(client) == 0


async def test_wrong_resource_type_for_url(client: httpx.AsyncClient) -> None:
    r = await client.post("/fhir/Patient", json={"resourceType": "Observation", "status": "final"})
    assert "does not match" in _outcome(r, 400)["issue"][0]["diagnostics"]


async def test_id_mismatch(client: httpx.AsyncClient) -> None:
    r = await client.put("/fhir/Patient/a1", json={"resourceType": "Patient", "id": "b2"})
    body = _outcome(r, 400)
    assert body["issue"][0]["expression"] == ["Patient.id"]
    r = await client.put("/fhir/Patient/a1", json={"resourceType": "Patient"})
    _outcome(r, 400)


async def test_invalid_id_syntax(client: httpx.AsyncClient) -> None:
    r = await client.put("/fhir/Patient/bad_id!", json={"resourceType": "Patient", "id": "bad_id!"})
    _outcome(r, 400)


async def test_unknown_resource_type(client: httpx.AsyncClient) -> None:
    body = _outcome(await client.get("/fhir/Pateint/1"), 404)
    assert "Pateint" in body["issue"][0]["diagnostics"]
    _outcome(await client.post("/fhir/Pateint", json={"resourceType": "Pateint"}), 404)


async def test_validation_names_element_path(client: httpx.AsyncClient) -> None:
    body = _outcome(
        await client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "bogus"}), 422
    )
    assert body["issue"][0]["expression"] == ["Patient.gender"]
    body = _outcome(
        await client.post("/fhir/Patient", json={"resourceType": "Patient", "active": "yes"}), 422
    )
    assert body["issue"][0]["expression"] == ["Patient.active"]
    body = _outcome(
        await client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final"}), 422
    )
    assert any("Observation.code" in (i.get("expression") or [""])[0] for i in body["issue"])
    assert await _count(client) == 0


async def test_validate_operation_does_not_store(client: httpx.AsyncClient) -> None:
    r = await client.post("/fhir/Patient/$validate", json={"resourceType": "Patient", "gender": "bogus"})
    assert _outcome(r, 422)["issue"][0]["expression"] == ["Patient.gender"]
    r = await client.post("/fhir/Patient/$validate", json={"resourceType": "Patient", "gender": "male"})
    assert r.status_code == 200
    assert await _count(client) == 0


async def test_xml_is_refused_clearly(client: httpx.AsyncClient) -> None:
    _outcome(await client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"}), 406)
    _outcome(await client.get("/fhir/metadata?_format=xml"), 406)
    r = await client.post(
        "/fhir/Patient",
        content=b"<Patient xmlns='http://hl7.org/fhir'/>",
        headers={"Content-Type": "application/fhir+xml"},
    )
    _outcome(r, 415)


async def test_deep_nesting_refused(client: httpx.AsyncClient) -> None:
    nested: dict = {"url": "http://x", "valueString": "x"}
    for _ in range(200):
        nested = {"url": "http://x", "extension": [nested]}
    r = await client.post("/fhir/Patient", json={"resourceType": "Patient", "extension": [nested]})
    assert "nests deeper" in _outcome(r, 400)["issue"][0]["diagnostics"]


async def test_oversized_body(tmp_path) -> None:
    settings = Settings(db=tmp_path / "small.db", max_body_bytes=1024)
    async with (
        open_hub(settings) as small,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=small.app), base_url="http://t") as c,
    ):
        big = {"resourceType": "Patient", "name": [{"text": "x" * 4000}]}
        _outcome(await c.post("/fhir/Patient", json=big), 413)
        assert (await c.get("/fhir/_history")).json()["total"] == 0


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    _outcome(await client.get("/fhir/Patient/1/_history/1/extra/more"), 404)


@pytest.mark.parametrize("hub_body", [b"", b"   "])
async def test_empty_body(client: httpx.AsyncClient, hub_body: bytes) -> None:
    _outcome(
        await client.post(
            "/fhir/Patient", content=hub_body, headers={"Content-Type": "application/fhir+json"}
        ),
        400,
    )


async def test_bundle_entry_limit(tmp_path) -> None:
    settings = Settings(db=tmp_path / "b.db", max_bundle_entries=3)
    async with (
        open_hub(settings) as limited,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=limited.app), base_url="http://t") as c,
    ):
        entries = [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}
            for _ in range(4)
        ]
        r = await c.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
        _outcome(r, 413)
