"""The audit trail: every FHIR access becomes an AuditEvent, written in batches off the request path.

Why batches: writing one AuditEvent per request in its own transaction would double the cost of every
read. Records are queued (bounded) and flushed together every `interval` seconds or `batch` records;
the flush goes straight to the store's write section (validated by construction, indexed so
`AuditEvent?entity=Patient/123` answers "who saw this patient"). AuditEvents the trail writes are not
themselves audited. On shutdown the queue is flushed; a full queue drops the oldest record with an
ERROR log rather than block patient care.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import deque
from typing import Any

from fhir_server.interactions.service import FhirService
from fhir_server.model.access_record import MEMBER_SYSTEM, AccessRecord
from fhir_server.model.ids import new_resource_id
from fhir_server.storage.protocol import NewVersion
from fhir_server.waits import stop_task, wake_or_timeout

LOGGER = logging.getLogger(__name__)

_INTERACTION_ACTION = {
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "search-type": "E",
    "search-system": "E",
    "search-compartment": "E",
    "capabilities": "E",
    "create": "C",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "transaction": "E",
    "batch": "E",
    "operation": "E",
}


ETREAT = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "code": "ETREAT",
    "display": "Emergency Treatment",
}


def audit_event(record: AccessRecord) -> dict[str, Any]:
    """The R4 AuditEvent for one access (pure)."""
    outcome = "0" if record.status < 400 else ("4" if record.status < 500 else "8")
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
            ]
        },
        "requestor": True,
        "who": {"display": record.client_name or "unidentified client"},
    }
    if record.client_member:
        agent["who"]["identifier"] = {"system": MEMBER_SYSTEM, "value": record.client_member}
    if record.client_address:
        agent["network"] = {"address": record.client_address, "type": "2"}
    if record.event_type is None:
        event_type = {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        }
        subtype = {"system": "http://hl7.org/fhir/restful-interaction", "code": record.interaction}
    else:
        system, code, display = record.event_type
        event_type = {"system": system, "code": code, "display": display}
        subtype = (
            {"system": record.subtype[0], "code": record.subtype[1]}
            if record.subtype
            else {"system": system, "code": code}
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": event_type,
        "subtype": [subtype],
        "action": record.action or _INTERACTION_ACTION.get(record.interaction, "E"),
        "recorded": record.recorded,
        "outcome": outcome,
        "agent": [agent],
        "source": {
            "observer": {"display": "YiLian FHIR Hub"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}],
        },
    }
    if record.break_glass is not None:
        # Purpose of use "emergency treatment", as the event's and the agent's, and as a security label,
        # so auditors find every break-glass access with `AuditEvent?_security=<v3-ActReason>|ETREAT`.
        purpose = {"coding": [dict(ETREAT)], "text": record.break_glass}
        event["purposeOfUse"] = [purpose]
        agent["purposeOfUse"] = [purpose]
        event["meta"] = {"security": [dict(ETREAT)]}
    entity: dict[str, Any] = {}
    if record.resource_type and record.resource_id:
        entity["what"] = {"reference": f"{record.resource_type}/{record.resource_id}"}
    elif record.resource_type:
        entity["what"] = {"display": record.resource_type}
    if record.query:
        entity["query"] = base64.b64encode(record.query.encode("utf-8")).decode("ascii")
    if record.operation:
        entity["detail"] = [{"type": "operation", "valueString": record.operation}]
    entities = [entity] if entity else []
    entities += [{"what": what} for what in record.entities]
    if entities:
        event["entity"] = entities
    return event


class AuditTrail:
    def __init__(
        self, service: FhirService, *, interval: float = 1.0, batch: int = 50, capacity: int = 100_000
    ) -> None:
        self._service = service
        self._interval = interval
        self._batch = batch
        self._queue: deque[AccessRecord] = deque()
        self._capacity = capacity
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dropped = 0

    def record(self, record: AccessRecord) -> None:
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self._dropped += 1
            LOGGER.error("audit queue full: %d access records dropped so far", self._dropped)
        self._queue.append(record)
        if len(self._queue) >= self._batch:
            self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-trail")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await wake_or_timeout(self._wakeup, self._interval)
            self._wakeup.clear()
            try:
                await self.flush()
            except Exception:
                LOGGER.exception("audit flush failed; records stay queued")

    async def flush(self) -> int:
        """Write every queued record now; returns how many were written."""
        written = 0
        while self._queue:
            records = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            try:
                await self._write(records)
            except BaseException:
                self._queue.extendleft(reversed(records))
                raise
            written += len(records)
        return written

    async def _write(self, records: list[AccessRecord]) -> None:
        service = self._service
        async with service.store.write() as tx:
            for record in records:
                rid = new_resource_id()
                instant = service.clock()
                event = {
                    "resourceType": "AuditEvent",
                    "id": rid,
                    "meta": {"versionId": "1", "lastUpdated": instant},
                }
                event.update({k: v for k, v in audit_event(record).items() if k != "resourceType"})
                await tx.write_version(
                    NewVersion("AuditEvent", rid, 1, instant, "POST", event, service.extract(event))
                )
