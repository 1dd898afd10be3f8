"""`MergeWatch` lets HL7 rounds skip the carry-over search while no Patient is merged. Against a real hub
(SQLite, its event bus), with the Sink counted at the boundary: no search per round while nothing is
merged, a merge written by any path (an A40 round, a REST client) ends that at once, even one written
while the watch is asking, and the answer is asked again after `RECHECK_S`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from adapters.hl7v2 import hub_owned
from adapters.hl7v2.client import send_all
from adapters.hl7v2.hub_owned import MergeWatch
from adapters.hl7v2.listener import start_mllp
from fhir_server.hub import Hub
from fhir_server.settings import Settings
from tests.adapters.hl7v2.conftest import sample


class CountingSink:
    """The hub's own Sink, with its searches counted (and, when asked, held until released)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.searches: list[list[tuple[str, str]]] = []
        self.hold: asyncio.Event | None = None

    async def search(self, resource_type: str, params: list[tuple[str, str]]) -> Any:
        self.searches.append(params)
        if self.hold is not None:
            await self.hold.wait()
        return await self.inner.search(resource_type, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def merge_searches(sink: CountingSink) -> list[list[tuple[str, str]]]:
    return [p for p in sink.searches if ("link:missing", "false") in p]


async def test_rounds_do_not_search_while_nothing_is_merged_and_do_once_merged(
    hl7_settings: Settings, hl7_hub: Hub
) -> None:
    sink = CountingSink(hl7_hub.sink)
    merges = MergeWatch()
    hl7_hub.service.events.subscribe(merges.on_change)
    service = await start_mllp(hl7_settings, sink, port=0, merges=merges)
    try:
        updates = [sample("adt_a04_utf8"), sample("adt_a08_gbk"), sample("adt_a28_nocharset_gb")]
        for message in updates:  # one round each: each updates a Patient
            await send_all("127.0.0.1", service.port, [message])
        assert len(merge_searches(sink)) == 1  # asked the store once; the other rounds trusted it

        await send_all("127.0.0.1", service.port, [sample("adt_a28_duplicate_record"), sample("adt_a40")])
        before = len(merge_searches(sink))
        await send_all(
            "127.0.0.1", service.port, [sample("adt_a28_duplicate_record").replace(b"ADT0006", b"ADT0700")]
        )
        assert len(merge_searches(sink)) == before + 1  # merged now: the round searched again
    finally:
        await service.close()


async def test_a_merge_written_over_rest_or_while_asking_is_not_missed(hl7_hub: Hub) -> None:
    sink = CountingSink(hl7_hub.sink)
    merges = MergeWatch()
    hl7_hub.service.events.subscribe(merges.on_change)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hl7_hub.app), base_url="http://t") as fhir:
        made = await fhir.post("/fhir/Patient", json={"resourceType": "Patient", "active": True})
        assert made.status_code == 201, made.text
        survivor = made.json()["id"]
        assert await merges.none_merged(sink) is True

        # A REST client merges: the watch hears it before the client gets its answer.
        linked = {
            "resourceType": "Patient",
            "link": [{"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}],
        }
        assert (await fhir.post("/fhir/Patient", json=linked)).status_code == 201
        assert await merges.none_merged(sink) is False

    # A fresh watch asks; a merge committed while its question is in flight counts, whatever the
    # snapshot the search saw.
    fresh = MergeWatch()
    hl7_hub.service.events.subscribe(fresh.on_change)
    empty = CountingSink(_EmptyStore(hl7_hub.sink))
    empty.hold = asyncio.Event()
    asking = asyncio.create_task(fresh.none_merged(empty))
    await asyncio.sleep(0)
    await fresh.on_change(type("Change", (), {"resource_type": "Patient", "resource": linked})())
    empty.hold.set()
    assert await asking is False


class _EmptyStore:
    """A store whose searches find nothing (as one searched just before a merge committed)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def search(self, resource_type: str, params: list[tuple[str, str]]) -> Any:
        return {"resourceType": "Bundle", "type": "searchset", "entry": []}


async def test_the_answer_is_asked_again_after_the_recheck_interval(
    hl7_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = CountingSink(hl7_hub.sink)
    merges = MergeWatch()
    clock = [1000.0]
    monkeypatch.setattr(hub_owned.time, "monotonic", lambda: clock[0])
    assert await merges.none_merged(sink) is True
    clock[0] += hub_owned.RECHECK_S / 2
    assert await merges.none_merged(sink) is True and len(sink.searches) == 1
    clock[0] += hub_owned.RECHECK_S
    assert await merges.none_merged(sink) is True and len(sink.searches) == 2
