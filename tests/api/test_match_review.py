"""The review list: a member record that may be a person the hub knows (probable/possible, never
certain) gets a review Task; an operator links it ($mpi-link completes the Task) or rejects it, and a
rejected proposal stays rejected until a new candidate appears."""

from __future__ import annotations

from typing import Any

import httpx

from fhir_server.hub import Hub
from tests.api.test_master_patient import LI_XIULAN, WANG, create, member_patient, read
from tests.records import masters, search

REVIEW = {"code": "urn:yilian:mpi|match-review"}


def li_xiulan(member: str, mrn: str, name: str = "李秀兰", **more: Any) -> dict[str, Any]:
    return member_patient(
        member,
        mrn,
        name=[{"text": name}],
        gender="female",
        birthDate="1961-03-14",
        telecom=[{"system": "phone", "value": "13800001111"}],
        **more,
    )


async def reviews(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    return await search(client, "Task", **REVIEW, **params)


async def test_a_probable_match_is_put_on_the_review_list(client: httpx.AsyncClient, hub: Hub) -> None:
    assert hub.review is not None
    county = await create(client, li_xiulan("XYRMYY", "C-1"))
    await hub.review.drain()  # nobody to propose yet
    township = await create(client, li_xiulan("DLZWSY", "T-1", name="李秀莲"))  # a homophone typo
    await create(client, member_patient("HSZWSY", "H-1", name=[{"text": "王伟"}], gender="male"))
    await hub.review.drain()
    # The county's record is reviewed again (written again): the pair is proposed once, not twice.
    county_again = li_xiulan("XYRMYY", "C-1", address=[{"text": "河南省南阳市"}])
    county_again["id"] = county
    assert (await client.put(f"/fhir/Patient/{county}", json=county_again)).status_code == 200
    await hub.review.drain()

    (task,) = await reviews(client, status="requested")
    assert task["focus"] == {"reference": f"Patient/{township}"}
    assert task["intent"] == "proposal"
    (candidate,) = task["input"]
    assert candidate["valueReference"] == {"reference": f"Patient/{county}"}
    assert candidate["type"]["coding"][0]["code"] in ("probable", "possible")
    assert await masters(client) == []  # proposed, never linked by itself

    # The member sends the record again: the same proposal, no new version.
    again = li_xiulan("DLZWSY", "T-1", name="李秀莲")
    again["id"] = township
    assert (await client.put(f"/fhir/Patient/{township}", json=again)).status_code == 200
    await hub.review.drain()
    (same,) = await reviews(client)
    assert same["meta"]["versionId"] == task["meta"]["versionId"]

    # The operator links them: the master appears and the Task is completed, naming it.
    link = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "source-patient", "valueReference": {"reference": f"Patient/{township}"}},
            {"name": "target-patient", "valueReference": {"reference": f"Patient/{county}"}},
        ],
    }
    assert (await client.post("/fhir/Patient/$mpi-link", json=link)).status_code == 200
    await hub.review.drain()
    (master,) = await masters(client)
    (done,) = await reviews(client)
    assert done["status"] == "completed"
    assert done["output"][0]["valueReference"] == {"reference": f"Patient/{master['id']}"}
    assert await reviews(client, status="requested") == []


async def test_a_rejected_proposal_stays_rejected_until_someone_new_appears(
    client: httpx.AsyncClient, hub: Hub
) -> None:
    assert hub.review is not None
    county = await create(client, li_xiulan("XYRMYY", "C-1"))
    await hub.review.drain()
    township = await create(client, li_xiulan("DLZWSY", "T-1"))
    await hub.review.drain()
    (task,) = await reviews(client, status="requested")
    rejected = {**task, "status": "rejected"}
    assert (await client.put(f"/fhir/Task/{task['id']}", json=rejected)).status_code == 200

    again = li_xiulan("DLZWSY", "T-1", address=[{"text": "河南省南阳市宛城区"}])
    again["id"] = township
    assert (await client.put(f"/fhir/Patient/{township}", json=again)).status_code == 200
    await hub.review.drain()
    (still,) = await reviews(client)
    assert still["status"] == "rejected"

    village = await create(client, li_xiulan("HSZWSY", "V-1"))
    await hub.review.drain()
    waiting = {t["focus"]["reference"]: t for t in await reviews(client, status="requested")}
    assert set(waiting) == {f"Patient/{village}"}
    assert {i["valueReference"]["reference"] for i in waiting[f"Patient/{village}"]["input"]} == {
        f"Patient/{county}",
        f"Patient/{township}",
    }
    # The township's record, written again, is not proposed again: the village's Task has that pair.
    assert (
        await client.put(f"/fhir/Patient/{township}", json={**again, "gender": "female"})
    ).status_code == 200
    await hub.review.drain()
    assert (await read(client, f"Task/{task['id']}"))["status"] == "rejected"


async def test_certain_matches_and_merged_records_are_not_proposed(
    client: httpx.AsyncClient, hub: Hub
) -> None:
    assert hub.review is not None
    await create(client, li_xiulan("XYRMYY", "C-1", resident_id=LI_XIULAN))
    await create(client, li_xiulan("DLZWSY", "T-1", resident_id=LI_XIULAN))  # linked: certain
    await create(client, li_xiulan("HSZWSY", "H-1", resident_id=WANG))  # certainly not: another number
    await hub.review.drain()
    assert await reviews(client) == []
    assert len(await masters(client)) == 1
