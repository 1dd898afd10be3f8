"""`$everything` is the person's record: from any of a person's linked Patients (a member's source, the
record a merge replaced, a master) it returns every linked Patient's resources, each once."""

from __future__ import annotations

import httpx


async def _create(client: httpx.AsyncClient, resource: dict) -> str:
    r = await client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _patient(mrn: str, member: str, links: list[tuple[str, str]] = ()) -> dict:  # type: ignore[assignment]
    body: dict = {
        "resourceType": "Patient",
        "identifier": [{"system": f"urn:yilian:member:{member}:patient-id", "value": mrn}],
        "name": [{"text": "李秀兰"}],
    }
    if links:
        body["link"] = [{"other": {"reference": ref}, "type": kind} for ref, kind in links]
    return body


def _report(subject: str, text: str) -> dict:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": text},
        "subject": {"reference": subject},
    }


def _study(subject: str) -> dict:
    return {"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": subject}}


async def _everything(client: httpx.AsyncClient, pid: str, **params: str) -> list[str]:
    """Every entry of every page, as Type/id, following `next` links."""
    out: list[str] = []
    url: str | None = f"/fhir/Patient/{pid}/$everything"
    query: dict[str, str] | None = params
    while url:
        r = await client.get(url, params=query)
        assert r.status_code == 200, r.text
        bundle = r.json()
        out += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])]
        url = next((lk["url"] for lk in bundle.get("link", []) if lk["relation"] == "next"), None)
        query = None
    return out


async def test_each_linked_record_shows_the_whole_person(client: httpx.AsyncClient) -> None:
    county = await _create(client, _patient("C-1001", "XYRMYY"))
    county_ct = await _create(client, _study(f"Patient/{county}"))
    county_lab = await _create(client, _report(f"Patient/{county}", "血常规"))
    # The township's record links to the county's one way only (`refer`); the county record has no link.
    township = await _create(client, _patient("T-77", "DLZWSY", [(f"Patient/{county}", "refer")]))
    township_dr = await _create(client, _report(f"Patient/{township}", "胸部DR"))
    stranger = await _create(client, _patient("T-78", "DLZWSY"))
    await _create(client, _report(f"Patient/{stranger}", "肝功能"))

    person = {
        f"Patient/{county}",
        f"Patient/{township}",
        f"ImagingStudy/{county_ct}",
        f"DiagnosticReport/{county_lab}",
        f"DiagnosticReport/{township_dr}",
    }
    for start in (township, county):  # outgoing link from one side, incoming from the other
        entries = await _everything(client, start)
        assert entries[0] == f"Patient/{start}"
        assert sorted(entries) == sorted(person)
        paged = await _everything(client, start, _count="2")
        assert sorted(paged) == sorted(person)  # keyset pages: every resource, none twice
    stranger_entries = await _everything(client, stranger)
    assert len(stranger_entries) == 2 and not set(stranger_entries) & person
    assert set(await _everything(client, township, _type="ImagingStudy")) == {f"ImagingStudy/{county_ct}"}


async def test_links_are_followed_through_a_master(client: httpx.AsyncClient) -> None:
    county = await _create(client, _patient("C-2", "XYRMYY"))
    township = await _create(client, _patient("T-2", "DLZWSY"))
    master = await _create(
        client,
        _patient("M-2", "YLHUB", [(f"Patient/{county}", "seealso"), (f"Patient/{township}", "seealso")]),
    )
    lab = await _create(client, _report(f"Patient/{county}", "尿常规"))
    for start in (township, county, master):
        entries = await _everything(client, start)
        assert f"DiagnosticReport/{lab}" in entries
        assert {f"Patient/{county}", f"Patient/{township}", f"Patient/{master}"} <= set(entries)
        assert len(entries) == len(set(entries)) == 4


async def test_a_deleted_linked_record_is_left_out(client: httpx.AsyncClient) -> None:
    county = await _create(client, _patient("C-3", "XYRMYY"))
    township = await _create(client, _patient("T-3", "DLZWSY", [(f"Patient/{county}", "replaced-by")]))
    assert (await client.delete(f"/fhir/Patient/{county}")).status_code in (200, 204)
    assert await _everything(client, township) == [f"Patient/{township}"]
