"""Member access, the per-request part: each token is a client of a member with a role (member, reader,
admin, auditor), and the audit trail is create-only for everyone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.base import HttpSink
from adapters.dicom.commands import collect
from fhir_server.errors import FhirError
from fhir_server.hub import Hub
from tests.api.conftest import client_hub

TOKENS: dict[str, Any] = {
    "t-admin": "consortium-ops",  # a bare name: an admin client, as tokens always were
    "t-county": {"client": "county-his", "member": "XYRMYY", "role": "member"},
    "t-village": {"client": "village-his", "member": "HSZWSY", "role": "member"},
    "t-viewer": {"client": "county-viewer", "member": "XYRMYY", "role": "reader"},
    "t-audit": {"client": "privacy-office", "role": "auditor"},
}


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async with client_hub(tmp_path, api_tokens=TOKENS) as opened:
        yield opened


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forbidden(r: httpx.Response, why: str) -> None:
    assert r.status_code == 403, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "forbidden" and why in issue["diagnostics"], issue


PATIENT = {"resourceType": "Patient", "name": [{"text": "张三"}]}
ORG = {"resourceType": "Organization", "name": "某乡卫生院"}


async def test_members_write_patient_data_and_only_admin_writes_shared_data(http: httpx.AsyncClient) -> None:
    r = await http.post("/fhir/Patient", json=PATIENT, headers=as_("t-county"))
    assert r.status_code == 201, r.text
    forbidden(await http.post("/fhir/Organization", json=ORG, headers=as_("t-county")), "only admin clients")
    assert (await http.post("/fhir/Organization", json=ORG, headers=as_("t-admin"))).status_code == 201
    assert (await http.get("/fhir/Organization", headers=as_("t-village"))).status_code == 200

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}},
            {"resource": ORG, "request": {"method": "POST", "url": "http://t/fhir/Organization"}},
        ],
    }
    forbidden(await http.post("/fhir", json=bundle, headers=as_("t-county")), "Bundle.entry[1]")
    bundle["entry"] = bundle["entry"][:1]
    assert (await http.post("/fhir", json=bundle, headers=as_("t-county"))).status_code == 200

    link = {"resourceType": "Parameters", "parameter": []}
    forbidden(await http.post("/fhir/Patient/$mpi-link", json=link, headers=as_("t-county")), "admin")
    assert (await http.post("/fhir/Patient/$mpi-link", json=link, headers=as_("t-admin"))).status_code == 400


async def test_readers_read_and_auditors_read_the_trail_only(http: httpx.AsyncClient, hub: Hub) -> None:
    pid = (await http.post("/fhir/Patient", json=PATIENT, headers=as_("t-county"))).json()["id"]
    assert (await http.get(f"/fhir/Patient/{pid}", headers=as_("t-viewer"))).status_code == 200
    assert (
        await http.post("/fhir/Patient/_search", data={"name": "张"}, headers=as_("t-viewer"))
    ).status_code == 200
    match = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": PATIENT}]}
    assert (await http.post("/fhir/Patient/$match", json=match, headers=as_("t-viewer"))).status_code == 200
    forbidden(await http.post("/fhir/Patient", json=PATIENT, headers=as_("t-viewer")), "do not write")
    forbidden(await http.delete(f"/fhir/Patient/{pid}", headers=as_("t-viewer")), "do not write")

    forbidden(await http.post("/fhir/AuditEvent/_search", headers=as_("t-county")), "auditor and admin")
    forbidden(await http.get(f"/fhir/Patient/{pid}", headers=as_("t-audit")), "AuditEvents only")
    await hub.audit.flush()
    trail = await http.get("/fhir/AuditEvent", params={"_count": "100"}, headers=as_("t-audit"))
    assert trail.status_code == 200
    agents = {e["resource"]["agent"][0]["who"]["display"] for e in trail.json()["entry"]}
    assert {"county-his", "county-viewer", "privacy-office"} <= agents  # refusals are audited too
    assert (await http.get("/fhir/metadata")).status_code == 200


async def test_the_audit_trail_is_create_only_for_everyone(http: httpx.AsyncClient, hub: Hub) -> None:
    await http.get("/fhir/Patient", headers=as_("t-county"))
    await hub.audit.flush()
    (entry,) = (await http.get("/fhir/AuditEvent", headers=as_("t-admin"))).json()["entry"][:1]
    event = entry["resource"]
    for r in (
        await http.put(f"/fhir/AuditEvent/{event['id']}", json=event, headers=as_("t-admin")),
        await http.delete(f"/fhir/AuditEvent/{event['id']}", headers=as_("t-admin")),
        await http.patch(
            f"/fhir/AuditEvent/{event['id']}",
            json=[{"op": "replace", "path": "/outcome", "value": "0"}],
            headers={**as_("t-admin"), "Content-Type": "application/json-patch+json"},
        ),
    ):
        assert r.status_code == 405, r.text
        assert "create-only" in r.json()["issue"][0]["diagnostics"]
    delete_in_bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"AuditEvent/{event['id']}"}}],
    }
    assert (await http.post("/fhir", json=delete_in_bundle, headers=as_("t-admin"))).status_code == 405
    after = await http.get(f"/fhir/AuditEvent/{event['id']}", headers=as_("t-audit"))
    assert after.status_code == 200 and after.json()["meta"]["versionId"] == "1"


async def test_cli_commands_send_their_token(hub: Hub) -> None:
    def sink(token: str | None) -> HttpSink:
        transport = httpx.ASGITransport(app=hub.app)
        return HttpSink("http://t/fhir", client=httpx.AsyncClient(transport=transport), token=token)

    assert await collect(sink("t-county"), "org-town-a") == []
    with pytest.raises(FhirError) as refused:
        await collect(sink(None), "org-town-a")
    assert refused.value.status == 401


async def test_a_member_searches_only_its_own_clients_events(http: httpx.AsyncClient, hub: Hub) -> None:
    await http.get("/fhir/Patient", headers=as_("t-county"))
    await http.get("/fhir/Patient", headers=as_("t-viewer"))  # the county's viewer: same member
    await http.get("/fhir/Patient", headers=as_("t-village"))
    await hub.audit.flush()
    r = await http.get("/fhir/AuditEvent", params={"_count": "2"}, headers=as_("t-county"))
    assert r.status_code == 200, r.text
    seen, page = [], r.json()
    while True:
        seen += [e["resource"]["agent"][0]["who"] for e in page.get("entry", [])]
        nxt = next((lk["url"] for lk in page.get("link", []) if lk["relation"] == "next"), None)
        if nxt is None:
            break
        page = (await http.get(nxt.replace("http://t", ""), headers=as_("t-county"))).json()
    assert {w["display"] for w in seen} == {"county-his", "county-viewer"}
    assert {w["identifier"]["value"] for w in seen} == {"XYRMYY"}
    # Asking for another member's events by hand finds nothing: the member's own criterion still holds.
    other = await http.get(
        "/fhir/AuditEvent", params={"agent:identifier": "urn:yilian:member|HSZWSY"}, headers=as_("t-county")
    )
    assert other.json().get("entry", []) == []
    # Read by id: its own events, yes; another member's answer as absent, as the search leaves them out.
    everyone = (await http.get("/fhir/AuditEvent", params={"_count": "50"}, headers=as_("t-admin"))).json()
    by_client = {e["resource"]["agent"][0]["who"]["display"]: e["resource"]["id"] for e in everyone["entry"]}
    assert (
        await http.get(f"/fhir/AuditEvent/{by_client['county-viewer']}", headers=as_("t-county"))
    ).status_code == 200
    assert (
        await http.get(f"/fhir/AuditEvent/{by_client['village-his']}", headers=as_("t-county"))
    ).status_code == 404
    forbidden(
        await http.get(f"/fhir/AuditEvent/{by_client['county-his']}", headers=as_("t-viewer")), "auditor"
    )
