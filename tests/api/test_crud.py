"""CRUD, versions, headers and Prefer over real HTTP against the ASGI app on a real SQLite file."""

from __future__ import annotations

import httpx

PATIENT = {
    "resourceType": "Patient",
    "name": [{"family": "张", "given": ["三"], "text": "张三"}],
    "gender": "male",
    "birthDate": "1980-05-17",
}


async def test_create_assigns_id_and_headers(client: httpx.AsyncClient) -> None:
    r = await client.post("/fhir/Patient", json={**PATIENT, "id": "client-chosen"})
    assert r.status_code == 201
    body = r.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"] == f"http://hub.test/fhir/Patient/{body['id']}/_history/1"
    assert r.headers["last-modified"].endswith("GMT")
    assert r.headers["content-type"].startswith("application/fhir+json")


async def test_read_vread_update_history_delete(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/fhir/Patient", json=PATIENT)).json()["id"]
    r = await client.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 200 and r.json()["name"][0]["family"] == "张"
    updated = {**PATIENT, "id": pid, "gender": "female"}
    r = await client.put(f"/fhir/Patient/{pid}", json=updated, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
    r = await client.put(f"/fhir/Patient/{pid}", json=updated, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert r.json()["resourceType"] == "OperationOutcome"
    v1 = await client.get(f"/fhir/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and v1.json()["gender"] == "male"
    assert (await client.get(f"/fhir/Patient/{pid}/_history/9")).status_code == 404
    assert (await client.delete(f"/fhir/Patient/{pid}")).status_code == 204
    gone = await client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410 and gone.json()["issue"][0]["code"] == "deleted"
    hist = (await client.get(f"/fhir/Patient/{pid}/_history")).json()
    assert hist["type"] == "history" and hist["total"] == 3
    assert [e["request"]["method"] for e in hist["entry"]] == ["DELETE", "PUT", "POST"]
    assert (await client.delete(f"/fhir/Patient/{pid}")).status_code == 204  # idempotent


async def test_update_as_create(client: httpx.AsyncClient) -> None:
    r = await client.put("/fhir/Patient/township-42", json={**PATIENT, "id": "township-42"})
    assert r.status_code == 201
    assert r.headers["location"].endswith("/fhir/Patient/township-42/_history/1")


async def test_prefer_return(client: httpx.AsyncClient) -> None:
    r = await client.post("/fhir/Patient", json=PATIENT, headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b"" and "location" in r.headers
    r = await client.post("/fhir/Patient", json=PATIENT, headers={"Prefer": "return=OperationOutcome"})
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_json_patch(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/fhir/Patient", json=PATIENT)).json()["id"]
    ops = [
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/active", "value": True},
    ]
    r = await client.patch(
        f"/fhir/Patient/{pid}", json=ops, headers={"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 200, r.text
    assert (
        r.json()["gender"] == "female" and r.json()["active"] is True and r.json()["meta"]["versionId"] == "2"
    )
    bad = [{"op": "replace", "path": "/gender", "value": "bogus"}]
    r = await client.patch(
        f"/fhir/Patient/{pid}", json=bad, headers={"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Patient.gender"]
    r = await client.patch(
        f"/fhir/Patient/{pid}", json=ops, headers={"Content-Type": "application/fhir+json"}
    )
    assert r.status_code == 415


async def test_if_none_match_read(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/fhir/Patient", json=PATIENT)).json()["id"]
    r = await client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304


async def test_pretty_and_format(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/fhir/Patient", json=PATIENT)).json()["id"]
    r = await client.get(f"/fhir/Patient/{pid}?_pretty=true&_format=json")
    assert r.status_code == 200 and "\n  " in r.text
    r = await client.get(f"/fhir/Patient/{pid}", headers={"Accept": "application/fhir+json"})
    assert r.status_code == 200


async def test_type_and_system_history(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        await client.post("/fhir/Patient", json=PATIENT)
    await client.post("/fhir/Organization", json={"resourceType": "Organization", "name": "乡镇卫生院"})
    page = (await client.get("/fhir/Patient/_history?_count=2")).json()
    assert page["total"] == 5 and len(page["entry"]) == 2
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    seen = [e["resource"]["id"] for e in page["entry"]]
    while next_url:
        page = (await client.get(next_url)).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        next_url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(seen) == len(set(seen)) == 5
    system = (await client.get("/fhir/_history")).json()
    assert system["total"] == 6
    since = (await client.get("/fhir/_history", params={"_since": "2999-01-01"})).json()
    assert since["total"] == 0


async def test_history_at(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/fhir/Patient", json=PATIENT)).json()["id"]
    first = (await client.get(f"/fhir/Patient/{pid}")).json()["meta"]["lastUpdated"]
    await client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "gender": "female"})
    page = (await client.get(f"/fhir/Patient/{pid}/_history", params={"_at": first})).json()
    assert [e["resource"]["meta"]["versionId"] for e in page["entry"]] == ["1"]


async def test_unchanged_update_keeps_the_version(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/fhir/Patient", json=PATIENT)).json()["id"]
    same = await client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid})
    assert same.status_code == 200 and same.headers["etag"] == 'W/"1"'
    changed = await client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "active": True})
    assert changed.headers["etag"] == 'W/"2"'
    assert (await client.get(f"/fhir/Patient/{pid}/_history")).json()["total"] == 2


async def test_read_with_summary_and_elements(client: httpx.AsyncClient) -> None:
    body = {
        **PATIENT,
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">张三</div>'},
    }
    pid = (await client.post("/fhir/Patient", json=body)).json()["id"]
    elements = (await client.get(f"/fhir/Patient/{pid}", params={"_elements": "gender"})).json()
    assert elements["gender"] == "male" and "name" not in elements and "birthDate" not in elements
    assert any(t.get("code") == "SUBSETTED" for t in elements["meta"].get("tag", []))
    data = (await client.get(f"/fhir/Patient/{pid}", params={"_summary": "data"})).json()
    assert "text" not in data and data["name"][0]["family"] == "张"
    assert (await client.get(f"/fhir/Patient/{pid}", params={"_summary": "bogus"})).status_code == 400
    full = (await client.get(f"/fhir/Patient/{pid}/_history/1", params={"_summary": "false"})).json()
    assert "text" in full
