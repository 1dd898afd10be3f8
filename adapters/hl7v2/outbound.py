"""Outbound ORU^R01: a final DiagnosticReport for another member's order goes back to that member's HIS.

Hook: subscribe `OruDelivery.on_change` to the hub's after-commit event bus (it takes any object with
`resource_type` and `resource`, i.e. `ResourceChanged`) and `start()` it. `on_change` notes the report
and returns; the worker task writes notes to the outbox (`outbox.py`, durable, survives a restart) and
sends due deliveries, so neither a disk nor a slow or absent member system ever slows a write.

Who gets it: the report's `basedOn` ServiceRequest names the requester (Organization, or PractitionerRole
→ organization). When that organization is not the one that produced the report (its performer), and
it has an active `Endpoint` with connectionType `hl7v2-mllp` and address `mllp://host:port`
(Organization.endpoint), an ORU^R01 is built from the report (as it is when sent) and its Observations.
AA/CA ends it; AR/CR is final (logged); anything else (AE, timeout, refused) is retried with exponential
backoff up to `Settings.hl7_outbound_retries` attempts. A requester found to have no active MLLP endpoint
is remembered until an Organization, Endpoint or PractitionerRole is written (at most
`NO_ENDPOINT_TRUST_S`): its later reports are not noted, as reports for the performer's own orders are
not. Left open: a crash between the store's commit and the worker's next outbox write (milliseconds)
loses those deliveries; the reports stay in the hub and `yilian hl7 outbound` shows what was queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sqlite3
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from adapters.base import Sink
from adapters.hl7v2.client import MllpClient, MllpClientError
from adapters.hl7v2.outbox import Delivery, Outbox
from adapters.hl7v2.parse import escape
from adapters.hl7v2.tls import hub_client_context
from adapters.identity import organization_identifier_system
from fhir_server.errors import FhirError
from fhir_server.model.access_record import EXPORT, AccessRecord
from fhir_server.settings import Settings
from fhir_server.waits import wake_or_timeout

log = logging.getLogger(__name__)
JsonObject = dict[str, Any]
FINAL = {"final", "amended", "corrected", "appended"}
REMEMBERED_ORDERS = 4096  # orders whose requester `on_change` keeps; the oldest is forgotten first
_STATUS_0123 = {"final": "F", "amended": "C", "corrected": "C", "appended": "C"}
_STATUS_0085 = {"final": "F", "amended": "C", "corrected": "C", "preliminary": "P", "cancelled": "X"}
IDLE_POLL = 30.0  # seconds between outbox checks when nothing wakes the sender
NO_ENDPOINT_TRUST_S = 300.0
"""How long `on_change` trusts that a requester has no MLLP endpoint before noting its reports again
(a bound for Endpoint or Organization writes that bypass this hub's events)."""
_DIRECTORY = frozenset({"Organization", "Endpoint", "PractitionerRole"})
"""Writes that can change where (or whether) a requester's reports go."""
RETRY_AFTER_ERROR = 1.0  # seconds before the recorder or sender tries the outbox again after an error


@dataclass(frozen=True)
class Target:
    facility: str
    host: str
    port: int
    tls: bool = False  # an mllps:// endpoint


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt's result: the outbox status it leads to and why."""

    status: str  # delivered | rejected | retry | dropped
    target: str | None = None
    error: str | None = None


class OruDelivery:
    def __init__(self, settings: Settings, sink: Sink, backoff: float = 1.0, timeout: float = 15.0) -> None:
        self.settings = settings
        self.sink = sink
        self.backoff = backoff
        self.timeout = timeout
        self.tz = ZoneInfo(settings.hl7_timezone)
        self.outbox = Outbox(settings.resolved_journal_path())
        self._wake = asyncio.Event()  # the sender: something may be due
        self._noted = asyncio.Event()  # the recorder: notes to write
        # (report, version) noted by on_change, not yet written to the outbox by the recorder
        self._incoming: list[tuple[str, str]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._counter = 0
        self._tls: ssl.SSLContext | None = None
        # "ServiceRequest/id" -> its requester reference, for the orders this hub has seen written
        self._requesters: OrderedDict[str, str] = OrderedDict()
        # requester reference -> when `target()` found that it has no active MLLP endpoint
        self._no_endpoint: dict[str, float] = {}
        self._directory_writes = 0  # Organization/Endpoint/PractitionerRole writes seen: a finding
        # that began before one of them is not kept

    def start(self) -> None:
        """Start the recorder and the sender; deliveries left pending by an earlier run are sent first.

        Two tasks, so a delivery attempt waiting on a slow member (up to `timeout`) never holds back
        writing new notes to disk."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._record(), name="hl7-outbound-record"),
                asyncio.create_task(self._send(), name="hl7-outbound-send"),
            ]

    async def on_change(self, change: Any) -> None:
        """Event-bus handler: note a final DiagnosticReport for the outbox and return at once.

        It runs inside the write path (after the commit, before the caller gets its answer), so it must
        not wait for a disk: the recorder writes what was noted in batches, one fsync each."""
        resource = getattr(change, "resource", None)
        resource_type = getattr(change, "resource_type", "")
        if resource_type in _DIRECTORY:
            self._no_endpoint.clear()  # an endpoint may have been added, or a requester re-pointed
            self._directory_writes += 1
            return
        if resource_type == "ServiceRequest":
            self._remember_requester(f"ServiceRequest/{getattr(change, 'id', '')}", resource)
            return
        if resource_type != "DiagnosticReport" or not resource:
            return
        if getattr(change, "reason", None) == "merge":
            return  # a merge re-pointed its subject: the member already has this report
        if resource.get("status") not in FINAL or not resource.get("id") or not resource.get("basedOn"):
            return  # without basedOn there is no ordering member to send it to
        requester = self._requesters.get((resource.get("basedOn") or [{}])[0].get("reference") or "")
        if requester is not None and (
            _requested_by_performer(resource, requester) or self._unreachable(requester)
        ):
            return
        version = str((resource.get("meta") or {}).get("versionId", ""))
        self._incoming.append((f"DiagnosticReport/{resource['id']}", version))
        self._noted.set()

    def _remember_requester(self, order: str, resource: Any) -> None:
        self._requesters.pop(order, None)
        requester = ((resource or {}).get("requester") or {}).get("reference")
        if isinstance(requester, str):
            self._requesters[order] = requester
            if len(self._requesters) > REMEMBERED_ORDERS:
                self._requesters.popitem(last=False)

    def _unreachable(self, requester: str) -> bool:
        """`requester` had no active MLLP endpoint when a report for it was last attempted, and no
        Organization, Endpoint or PractitionerRole was written since: nothing to deliver.

        Why `on_change` notes nothing for such a report, nor for one answering its performer's own
        order (going by the order's latest version written through this hub; `target()` makes the same
        test when the order was not seen here): those are most reports (a lab resulting its own
        clinicians' orders; members without an MLLP endpoint, the village clinics and township
        centres), and each noted one cost an outbox write, four reads and an outbox update (~5% of HL7
        ingest), only to be dropped."""
        found = self._no_endpoint.get(requester)
        return found is not None and time.monotonic() - found < NO_ENDPOINT_TRUST_S

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._record_incoming()  # noted but not yet written: kept for the next start
        self.outbox.close()

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """For tests and shutdown: wait until nothing is noted or pending."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._incoming or await asyncio.to_thread(self.outbox.next_due_in) is not None:
            if loop.time() > deadline:
                raise TimeoutError("outbound deliveries still pending")
            self._wake.set()
            await asyncio.sleep(0.02)

    async def _record_incoming(self) -> None:
        if self._incoming:
            batch, self._incoming = self._incoming, []
            try:
                await asyncio.to_thread(self.outbox.enqueue, batch)
            except sqlite3.Error:
                self._incoming[:0] = batch  # kept in memory; the recorder tries again
                raise

    async def _record(self) -> None:
        while True:
            await self._noted.wait()
            self._noted.clear()
            try:
                await self._record_incoming()
            except sqlite3.Error as exc:  # disk full, file locked: retry, never lose the notes
                log.error("outbound deliveries not recorded (%s); retrying", exc)
                await asyncio.sleep(RETRY_AFTER_ERROR)
                self._noted.set()
                continue
            self._wake.set()

    async def _send(self) -> None:
        while True:
            try:
                for delivery in await asyncio.to_thread(self.outbox.due):
                    await self._attempt(delivery)
                self._wake.clear()  # before reading the next due time: a write after this sets it again
                wait = await asyncio.to_thread(self.outbox.next_due_in)
            except sqlite3.Error as exc:
                log.error("outbound queue unreadable (%s); retrying", exc)
                wait = RETRY_AFTER_ERROR
            await wake_or_timeout(self._wake, IDLE_POLL if wait is None else min(wait, IDLE_POLL))

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            report = await self.sink.read(*delivery.report.split("/", 1))
            if report is None or report.get("status") not in FINAL:
                result = Attempt("dropped", error="report no longer final or gone")
            else:
                result = await self.deliver(report)
        except FhirError as exc:
            result = Attempt("retry", error=f"reading the report failed: {exc.message}")
        attempts = delivery.attempts + 1
        if result.status == "retry" and attempts >= self.settings.hl7_outbound_retries:
            log.error("ORU for %s not delivered: retries exhausted (%s)", delivery.report, result.error)
            status, retry_in = "failed", 0.0
        elif result.status == "retry":
            status, retry_in = "pending", self.backoff * 2 ** (attempts - 1)
        else:
            status, retry_in = result.status, 0.0
        record = self.outbox.record
        await asyncio.to_thread(
            record, delivery.id, status, target=result.target, error=result.error, retry_in=retry_in
        )

    async def deliver(self, report: JsonObject) -> Attempt:
        """One attempt to deliver `report` to the member that ordered it."""
        try:
            target = await self.target(report)
            if target is None:
                return Attempt("dropped", error="no other member with an active MLLP endpoint ordered it")
            message = await self.build(report, target)
        except FhirError as exc:
            log.warning("ORU for DiagnosticReport/%s not built: %s", report.get("id"), exc.message)
            return Attempt("retry", error=exc.message)
        where = f"{target.facility} mllp{'s' if target.tls else ''}://{target.host}:{target.port}"
        try:
            tls = self._tls_context() if target.tls else None
        except (OSError, ValueError) as exc:  # certificate files missing or unreadable: fix, then retried
            log.error("ORU delivery to %s: TLS set-up failed: %s", target.facility, exc)
            return Attempt("retry", where, f"TLS set-up failed: {exc}")
        try:
            async with MllpClient(target.host, target.port, self.timeout, tls=tls) as client:
                [answer] = await client.send(message)
        except MllpClientError as exc:
            log.warning("ORU delivery to %s failed: %s", target.facility, exc)
            return Attempt("retry", where, str(exc))
        code = _msa_code(answer)
        self._audit(report, target, code)
        if code in ("AA", "CA"):
            log.info("ORU for DiagnosticReport/%s delivered to %s", report.get("id"), target.facility)
            return Attempt("delivered", where)
        if code in ("AR", "CR"):
            log.warning("ORU for DiagnosticReport/%s rejected by %s", report.get("id"), target.facility)
            return Attempt("rejected", where, f"answered {code}")
        log.warning("ORU delivery to %s answered %s", target.facility, code)
        return Attempt("retry", where, f"answered {code}")

    def _audit(self, report: JsonObject, target: Target, code: str) -> None:
        """The report left the hub for `target` (whatever its answer): an Export in the audit trail."""
        subject = (report.get("subject") or {}).get("reference")
        entities = [{"reference": f"DiagnosticReport/{report.get('id')}"}]
        if isinstance(subject, str):
            entities.append({"reference": subject})
        self.sink.audit(
            AccessRecord(
                interaction="read",
                recorded=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                status=200 if code in ("AA", "CA") else (400 if code in ("AR", "CR") else 422),
                client_address=target.host,
                client_name=target.facility,
                event_type=EXPORT,
                subtype=("http://terminology.hl7.org/CodeSystem/v2-0003", "R01"),
                action="R",
                entities=tuple(entities),
            )
        )

    def _tls_context(self) -> ssl.SSLContext:
        """Built on first use: only mllps:// members need it (the consortium CA, the hub's certificate)."""
        if self._tls is None:
            self._tls = hub_client_context(self.settings)
        return self._tls

    async def _ref(self, reference: str | None) -> JsonObject | None:
        if not reference or "/" not in reference:
            return None
        rtype, rid = reference.split("/")[-2:]
        return await self.sink.read(rtype, rid)

    async def target(self, report: JsonObject) -> Target | None:
        """The requesting member's MLLP endpoint, when the report is for another member's order."""
        writes = self._directory_writes
        order = await self._ref((report.get("basedOn") or [{}])[0].get("reference"))
        if order is None:
            return None
        performers = _performer_ids(report)
        requested_by = order.get("requester", {}).get("reference") or ""
        if _requested_by_performer(report, requested_by):
            return None  # the member resulted its own order (most reports): no need to read it
        requester = await self._ref(requested_by)
        if requester is not None and requester["resourceType"] == "PractitionerRole":
            requester = await self._ref(requester.get("organization", {}).get("reference"))
        if requester is None or requester["resourceType"] != "Organization":
            return None
        if requester["id"] in performers:
            return None  # the member resulted its own order
        facility = next(
            (
                i["value"]
                for i in requester.get("identifier", [])
                if i.get("system") == organization_identifier_system()
            ),
            requester.get("name", requester["id"]),
        )
        for ref in requester.get("endpoint", []):
            endpoint = await self._ref(ref.get("reference"))
            if endpoint is None or endpoint.get("status") != "active":
                continue
            if endpoint.get("connectionType", {}).get("code") != "hl7v2-mllp":
                continue
            url = urlparse(endpoint.get("address", ""))
            if url.scheme in ("mllp", "mllps") and url.hostname and url.port:
                return Target(str(facility), url.hostname, url.port, tls=url.scheme == "mllps")
        if writes == self._directory_writes:  # else what was read may already be out of date
            self._no_endpoint[requested_by] = time.monotonic()
        return None

    async def build(self, report: JsonObject, target: Target) -> bytes:
        """ORU^R01 (v2.5, UTF-8) from the report, its patient, order and Observations."""
        self._counter += 1
        now = dt.datetime.now(self.tz)
        patient = await self._ref(report.get("subject", {}).get("reference")) or {}
        order = await self._ref((report.get("basedOn") or [{}])[0].get("reference")) or {}
        control = f"YLO{now:%Y%m%d%H%M%S}{self._counter:04d}"
        pid3 = "~".join(
            f"{escape(i['value'])}^^^{escape(_namespace(i.get('system', '')))}"
            for i in patient.get("identifier", [])
            if i.get("value")
        )
        name = (patient.get("name") or [{}])[0]
        given = (name.get("given") or [""])[0]
        placer = _order_id(order, "PLAC")
        filler = _order_id(order, "FILL") or _order_id(report, "FILL")
        segs = [
            f"MSH|^~\\&|YILIAN|YLHUB|HIS|{escape(target.facility)}|{now:%Y%m%d%H%M%S%z}||ORU^R01^ORU_R01|{control}|P|2.5"
            "||||||UNICODE UTF-8",
            f"PID|1||{pid3}||{escape(name.get('family', ''))}^{escape(given)}||"
            f"{patient.get('birthDate', '').replace('-', '')}|{_sex(patient.get('gender'))}",
            f"ORC|RE|{placer}|{filler}",
            f"OBR|1|{placer}|{filler}|{_cwe(report.get('code', {}))}|||"
            f"{_dtm(report.get('effectiveDateTime'))}"
            + "|" * 15
            + f"{_dtm(report.get('issued'))}|||{_STATUS_0123.get(report.get('status', ''), 'F')}",
        ]
        for n, ref in enumerate(report.get("result", []), start=1):
            obs = await self._ref(ref.get("reference"))
            if obs is not None:
                segs.append(_obx(n, obs))
        return ("\r".join(segs) + "\r").encode("utf-8")


def _msa_code(ack: bytes) -> str:
    for line in ack.split(b"\r"):
        if line.startswith(b"MSA|"):
            return line[4:6].decode("ascii", "replace")
    return "??"


def _namespace(system: str) -> str:
    parts = system.split(":")
    if system.startswith("urn:yilian:member:") and len(parts) >= 4:
        return parts[3]
    return system.removeprefix("urn:oid:")


def _order_id(resource: JsonObject, kind: str) -> str:
    for ident in resource.get("identifier", []):
        codes = [c.get("code") for c in ident.get("type", {}).get("coding", [])]
        if kind in codes:
            return f"{escape(ident['value'])}^{escape(_namespace(ident.get('system', '')))}"
    return ""


def _sex(gender: str | None) -> str:
    return {"male": "M", "female": "F", "other": "O", "unknown": "U"}.get(gender or "", "")


def _dtm(value: str | None) -> str:
    """FHIR date/dateTime → DTM, keeping precision and zone."""
    if not value:
        return ""
    zone = ""
    if value.endswith("Z"):
        value, zone = value[:-1], "+0000"
    elif len(value) > 10 and value[-6] in "+-":
        value, zone = value[:-6], value[-6] + value[-5:].replace(":", "")
    return value.replace("-", "").replace(":", "").replace("T", "") + zone


def _cwe(concept: JsonObject) -> str:
    coding = (concept.get("coding") or [{}])[0]
    system = {"http://loinc.org": "LN", "http://snomed.info/sct": "SCT"}.get(coding.get("system", ""), "")
    display = coding.get("display") or concept.get("text", "")
    return f"{escape(coding.get('code', ''))}^{escape(display)}^{system}"


def _obx(n: int, obs: JsonObject) -> str:
    status = _STATUS_0085.get(obs.get("status", ""), "F")
    flags = "~".join(c["coding"][0]["code"] for c in obs.get("interpretation", []) if c.get("coding"))
    ref_range = escape((obs.get("referenceRange") or [{}])[0].get("text", ""))
    if "valueQuantity" in obs:
        q = obs["valueQuantity"]
        unit = (
            f"{escape(q.get('code', q.get('unit', '')))}^{escape(q.get('unit', ''))}^UCUM"
            if q.get("unit")
            else ""
        )
        if q.get("comparator"):
            vtype, value = "SN", f"{q['comparator']}^{q['value']}"
        else:
            vtype, value = "NM", str(q["value"])
    elif "valueCodeableConcept" in obs:
        vtype, value, unit = "CWE", _cwe(obs["valueCodeableConcept"]), ""
    elif "valueString" in obs:
        vtype, value, unit = "ST", escape(obs["valueString"]), ""
    elif "valueDateTime" in obs:
        vtype, value, unit = "DTM", _dtm(obs["valueDateTime"]), ""
    else:
        vtype, value, unit = "ST", "", ""
    return (
        f"OBX|{n}|{vtype}|{_cwe(obs.get('code', {}))}||{value}|{unit}|{ref_range}|{flags}|||{status}|||"
        f"{_dtm(obs.get('effectiveDateTime'))}"
    )


def _performer_ids(report: JsonObject) -> set[str]:
    return {p.get("reference", "").split("/")[-1] for p in report.get("performer", [])}


def _requested_by_performer(report: JsonObject, requester: str) -> bool:
    """The order's requester (a reference) is an Organization that also performed the report."""
    return requester.startswith("Organization/") and requester.split("/")[-1] in _performer_ids(report)
