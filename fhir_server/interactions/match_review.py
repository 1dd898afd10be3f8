"""The review list of the consortium record: member records that may be a person the hub knows already.

Only a certain match (the same valid 居民身份证) links records by itself. A record that `$match`'s rule
finds *probable* or *possible* for another person is put on a review list: one FHIR Task per member
record (R4's workflow resource, so the list is an ordinary search and its states are Task's):

- `Task.code` `urn:yilian:mpi|match-review`, `identifier` `urn:yilian:mpi:match-review|<record id>`,
  `focus` and `for` the record, `intent` `proposal`, `status` `requested` while it waits;
- one `input` per candidate person: `type` the match grade (`http://terminology.hl7.org/CodeSystem/
  match-grade`, with the score in `text`), `valueReference` the person (the master of linked records,
  else the one record), best first.

An operator lists `GET Task?code=urn:yilian:mpi|match-review&status=requested`, decides, and either links
(`Patient/$mpi-link`, which completes the Task) or sets the Task `completed` / `rejected` (not the same
person). A decided Task is reopened only when a candidate it did not list appears; a waiting one whose
candidates are gone is `cancelled`.

Why after the write and not in it (unlike certain links): scoring reads up to a few hundred candidates
through indexed searches, which inside a write section would hold every other writer back; a
proposal that shows up a moment after the record costs nobody anything. The queue is in memory and
bounded (`capacity`): records written during a restart, or beyond the bound, are reviewed again by
their member's next message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fhir_server.interactions.events import ResourceChanged
from fhir_server.interactions.matching import Match
from fhir_server.interactions.operations.match import person_of, rank_persons
from fhir_server.interactions.section import write_section
from fhir_server.interactions.service import FhirService
from fhir_server.interactions.write import conditional_target, write_resource
from fhir_server.model.person import is_master, listed, not_same_person, patient_id, replaced_by
from fhir_server.search.parse import parse_search
from fhir_server.storage.protocol import StoredVersion, WriteTransaction
from fhir_server.waits import stop_task

JsonObject = dict[str, Any]
LOGGER = logging.getLogger(__name__)

REVIEW_SYSTEM = "urn:yilian:mpi:match-review"
TASK_CODE = {"system": "urn:yilian:mpi", "code": "match-review", "display": "Review possible matches"}
MATCH_GRADE_SYSTEM = "http://terminology.hl7.org/CodeSystem/match-grade"
DECIDED = frozenset({"completed", "rejected", "cancelled", "failed", "entered-in-error"})
MAX_CANDIDATES = 5
MAX_DELAY_S = 10.0
"""Under writes that never pause, a record waits at most this long for its review."""
BUSY_SHARE = 0.1
"""The share of time reviews take while writes go on (they take all of it when writes pause)."""


def review_criteria(record_id: str) -> str:
    return f"identifier={REVIEW_SYSTEM}|{record_id}"


class MatchReview:
    """Event-bus handler and worker: notes member Patient writes, reviews them in the background."""

    def __init__(
        self,
        service: FhirService,
        *,
        interval: float = 0.5,
        max_delay: float = MAX_DELAY_S,
        capacity: int = 100_000,
    ) -> None:
        self._service = service
        self._interval = interval
        self._max_delay = max_delay
        self._capacity = capacity
        self._pending: dict[str, float] = {}  # id → when first noted, in arrival order, each once
        self._last_noted = 0.0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dropped = 0

    async def on_change(self, change: ResourceChanged) -> None:
        if change.resource_type != "Patient" or change.method == "DELETE" or change.reason is not None:
            return
        if change.resource is None or is_master(change.resource):
            return
        now = time.monotonic()
        self._last_noted = now
        self._pending.setdefault(change.id, now)
        if len(self._pending) > self._capacity:
            del self._pending[next(iter(self._pending))]
            self._dropped += 1
            LOGGER.warning("match review queue full: %d records not reviewed so far", self._dropped)
        self._wakeup.set()

    @property
    def pending(self) -> int:
        """Records noted and not yet reviewed."""
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="match-review")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def drain(self, budget: float | None = None) -> None:
        """Review what is noted, oldest first: everything (tests), or for about `budget` seconds."""
        deadline = None if budget is None else time.monotonic() + budget
        while self._pending and (deadline is None or time.monotonic() < deadline):
            record_id = next(iter(self._pending))
            del self._pending[record_id]
            await self.review(record_id)

    async def _run(self) -> None:
        """Review when writes pause, so reviews never compete with a burst of registrations: after
        `interval` seconds without a new Patient write. Under load that never pauses, the oldest
        record waits at most `max_delay` seconds; then reviews get `BUSY_SHARE` of the time."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                now = time.monotonic()
                quiet = now - self._last_noted >= self._interval
                overdue = now - next(iter(self._pending.values())) >= self._max_delay
                if not (quiet or overdue):
                    await asyncio.sleep(self._interval)
                    continue
                try:
                    await self.drain(None if quiet else self._interval * BUSY_SHARE / (1 - BUSY_SHARE))
                except Exception:
                    LOGGER.exception("match review failed; the record is reviewed again on its next write")
                if not quiet:
                    await asyncio.sleep(self._interval)

    async def review(self, record_id: str) -> None:
        """Propose (or withdraw) the candidates of member record `record_id` as it stands now."""
        service = self._service
        record = await service.store.current("Patient", record_id)
        if record is None or record.body is None or is_master(record.body):
            return
        candidates = [] if replaced_by(record.body) else await self._candidates(record)
        found = await self._tasks([record_id])
        if next_task(record_id, candidates, found[0].body if found else None) is None:
            return  # most reviews: nothing to propose, or the same as before; no write section opened
        async with write_section(service) as (tx, changes):
            task_id, minted = await conditional_target(service, tx, "Task", review_criteria(record_id), None)
            current = None if minted else await tx.current("Task", task_id)
            body = next_task(record_id, candidates, current.body if current is not None else None)
            if body is not None:
                await write_resource(
                    service, tx, "Task", task_id, body, method="PUT", changes=changes, minted=minted
                )

    async def _tasks(self, record_ids: list[str]) -> list[StoredVersion]:
        """The review Tasks of these member records (read outside any write section)."""
        query = parse_search(
            "Task",
            [("identifier", ",".join(f"{REVIEW_SYSTEM}|{rid}" for rid in record_ids))],
            self._service.registry,
            strict=True,
        )
        return (await self._service.store.search(query)).resources

    async def _candidates(self, record: StoredVersion) -> list[tuple[str, Match]]:
        assert record.body is not None
        own = {person_of(record), record.id}
        own |= {rid for lk in listed(record.body, "link") if (rid := patient_id((lk or {}).get("other")))}

        def skip(version: StoredVersion) -> bool:
            body = version.body or {}
            return (
                version.id in own
                or person_of(version) in own
                or replaced_by(body) is not None
                or record.id in not_same_person(body)
            )

        ranked = await rank_persons(
            self._service, record.body, self._service.match_rules, skip=skip, certain=False
        )
        # A certain match that is not linked was split by an operator: not a proposal.
        proposals = [(p, m) for p, m in ranked if m.grade in ("probable", "possible")][:MAX_CANDIDATES]
        return [(p, m) for p, m in proposals if not await self._proposed_the_other_way(p, own)]

    async def _proposed_the_other_way(self, person: str, own: set[str]) -> bool:
        """Whether a review Task of `person` (a record, or a master's records) already lists this
        record's person: one pair, one proposal, on the record reviewed first."""
        found = await self._service.store.current("Patient", person)
        records = [person]
        if found is not None and is_master(found.body):
            records = [
                rid for lk in listed(found.body, "link") if (rid := patient_id((lk or {}).get("other")))
            ]
        for task in await self._tasks(records):
            if {f"Patient/{rid}" for rid in own} & _listed_persons(task.body):
                return True
        return False


def _inputs(candidates: list[tuple[str, Match]]) -> list[JsonObject]:
    return [
        {
            "type": {
                "coding": [{"system": MATCH_GRADE_SYSTEM, "code": match.grade}],
                "text": f"{match.grade} match, score {match.score:.2f}",
            },
            "valueReference": {"reference": f"Patient/{person}"},
        }
        for person, match in candidates
    ]


def _listed_persons(task: JsonObject | None) -> set[str]:
    return {
        str((i.get("valueReference") or {}).get("reference"))
        for i in listed(task, "input")
        if isinstance(i, dict)
    }


def next_task(
    record_id: str, candidates: list[tuple[str, Match]], current: JsonObject | None
) -> JsonObject | None:
    """The review Task's next content, or None when it stays as it is."""
    inputs = _inputs(candidates)
    proposed = {i["valueReference"]["reference"] for i in inputs}
    status = (current or {}).get("status")
    if current is None:
        if not inputs:
            return None
        new_status = "requested"
    elif status in DECIDED:
        if not proposed - _listed_persons(current):
            return None  # the operator has seen every one of these
        new_status = "requested"
    elif not inputs:
        new_status = "cancelled"  # nobody is a candidate any more
    else:
        new_status = "requested"
    if current is not None and new_status == status and current.get("input") == inputs:
        return None
    body: JsonObject = {
        "resourceType": "Task",
        "identifier": [{"system": REVIEW_SYSTEM, "value": record_id}],
        "status": new_status,
        "intent": "proposal",
        "code": {"coding": [TASK_CODE]},
        "description": "Member record that may be a person the hub already knows: link or reject",
        "focus": {"reference": f"Patient/{record_id}"},
        "for": {"reference": f"Patient/{record_id}"},
    }
    if inputs:
        body["input"] = inputs
    elif current is not None and current.get("input"):
        body["input"] = current["input"]  # what was proposed, kept on the cancelled Task
    return body


async def close_review(
    service: FhirService, tx: WriteTransaction, record_id: str, master_id: str, changes: list[ResourceChanged]
) -> None:
    """An operator linked record `record_id` (`$mpi-link`): its waiting review Task is `completed`,
    with the person it was linked to as output. Runs in the link's write section."""
    task_id, minted = await conditional_target(service, tx, "Task", review_criteria(record_id), None)
    current = None if minted else await tx.current("Task", task_id)
    if current is None or current.body is None or current.body.get("status") in DECIDED:
        return
    body = {k: v for k, v in current.body.items() if k != "meta"}
    body["status"] = "completed"
    body["output"] = [
        {"type": {"text": "linked to"}, "valueReference": {"reference": f"Patient/{master_id}"}}
    ]
    await write_resource(service, tx, "Task", task_id, body, method="PUT", changes=changes)
