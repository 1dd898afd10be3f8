"""pynetdicom event handlers: the DICOM edge, and the only pynetdicom-thread → asyncio bridge.

pynetdicom runs each association in its own thread. C-STORE work that must finish before the status is
returned (check, atomic write, index) runs right here in that thread; only the study buffer and Sink
calls cross into the hub's event loop, via `call_soon_threadsafe` / `run_coroutine_threadsafe`.
Foreign failures are mapped to DIMSE statuses once, here: unreadable dataset → 0xC000, dataset does not
match the request → 0xA900, disk full / write failure → 0xA700, FHIR errors on worklist → 0xC001.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, TypeVar

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from adapters.base import Sink
from adapters.dicom import vocabulary as v
from adapters.dicom.catalog import Catalog
from adapters.dicom.ingest import dimse_status, receive
from adapters.dicom.instances import InstanceStore, InstanceWriteError, StoredInstance
from adapters.dicom.matching import matches
from adapters.dicom.part10 import file_meta
from adapters.dicom.publish import StudyBuffer
from adapters.dicom.query import (
    InvalidQuery,
    criteria_of,
    matching_instances,
    response_identifier,
    uid_filters,
)
from adapters.dicom.summary import InvalidInstance, KnownMeta
from adapters.dicom.worklist import worklist_criteria, worklist_response
from fhir_server.errors import FhirError
from fhir_server.model.access_record import EXPORT, IMPORT, QUERY, AccessRecord
from fhir_server.settings import Settings

log = logging.getLogger(__name__)
DIMSE_SERVICES = "urn:yilian:dimse-service"
"""AuditEvent.subtype of a DIMSE service (C-STORE, C-FIND, C-MOVE, C-GET): no standard code system."""

FindYield = tuple[int, Dataset | None]
T = TypeVar("T")


class DicomHandlers:
    """The evt handlers of one listener; holds the store, the buffer and the loop they bridge to."""

    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        store: InstanceStore,
        buffer: StudyBuffer,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._store = store
        self._buffer = buffer
        self._loop = loop
        self._lock = threading.Lock()
        self._studies: dict[int, set[str]] = {}  # id(association) -> studies it touched
        self._catalog = Catalog(sink, store)

    def bindings(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_MOVE, self.on_move),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_RELEASED, self.on_association_end),
            (evt.EVT_ABORTED, self.on_association_end),
        ]

    # --- verification and storage -----------------------------------------------------------------

    def on_echo(self, event: Event) -> int:
        return v.SUCCESS

    def on_store(self, event: Event) -> int:
        calling = _calling_ae(event)
        member = self._settings.dicom_known_aes.get(calling, "")
        expected = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
        try:
            part10, known = _part10(event, calling)
            stored = receive(self._store, part10, calling, member, expected, known=known)
        except (InvalidInstance, InstanceWriteError) as exc:
            log.warning("C-STORE from %s refused: %s", calling, exc)
            return dimse_status(exc)
        with self._lock:
            self._studies.setdefault(id(event.assoc), set()).add(stored.summary.study_uid)
        self._loop.call_soon_threadsafe(self._buffer.touch, stored.summary.study_uid)
        return v.SUCCESS

    def on_worker_released(self, study_uids: list[str], calling: str = "", address: str = "") -> None:
        """A storage worker process finished an association (called on the pool's reader thread)."""
        self.audit(calling, address, "C-STORE", IMPORT, "C", study_uids)
        asyncio.run_coroutine_threadsafe(self._buffer.flush(study_uids, changed=True), self._loop)

    def on_association_end(self, event: Event) -> None:
        with self._lock:
            studies = self._studies.pop(id(event.assoc), set())
        if studies:
            self.audit(_calling_ae(event), _address(event), "C-STORE", IMPORT, "C", studies)
            asyncio.run_coroutine_threadsafe(self._buffer.flush(studies), self._loop)

    def audit(
        self,
        calling: str,
        address: str,
        dimse: str,
        kind: tuple[str, str, str],
        action: str,
        studies: Iterable[str] = (),
        status: int = 200,
    ) -> None:
        """One DIMSE service an association used, as an AuditEvent (handed to the hub's loop: the
        trail is not thread-safe, and these handlers run on pynetdicom's threads)."""
        record = AccessRecord(
            interaction="dimse",
            recorded=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            status=status,
            client_address=address or None,
            client_name=calling or None,
            event_type=kind,
            subtype=(DIMSE_SERVICES, dimse),
            action=action,
            entities=tuple(
                {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}}
                for uid in sorted(studies)
            ),
        )
        self._loop.call_soon_threadsafe(self._sink.audit, record)

    # --- query / retrieve ---------------------------------------------------------------------------

    def on_find(self, event: Event) -> Iterator[FindYield]:
        identifier = event.identifier
        if str(event.request.AffectedSOPClassUID) == v.MODALITY_WORKLIST_FIND:
            yield from self._worklist(event, identifier)
            return
        try:
            level, criteria = criteria_of(identifier)
        except InvalidQuery as exc:
            log.warning("C-FIND refused: %s", exc)
            yield v.IDENTIFIER_DOES_NOT_MATCH, None
            return
        requested = [e.keyword for e in identifier if e.keyword]
        records = self._on_loop(self._catalog.find(level, criteria), "C-FIND")
        self.audit(
            _calling_ae(event), _address(event), "C-FIND", QUERY, "E", status=500 if records is None else 200
        )
        if records is None:
            yield v.UNABLE_TO_PROCESS, None
            return
        aet = self._settings.dicom_aet
        yield from _pending(event, (response_identifier(level, requested, r, aet) for r in records))

    def _worklist(self, event: Event, identifier: Dataset) -> Iterator[FindYield]:
        calling = _calling_ae(event)
        member = self._settings.dicom_known_aes.get(calling)
        records = self._on_loop(self._catalog.worklist(calling, member), "worklist query")
        if records is None:
            yield v.UNABLE_TO_PROCESS, None
            return
        criteria = worklist_criteria(identifier)
        matching = (worklist_response(identifier, r) for r in records if matches(r, criteria))
        yield from _pending(event, matching)

    def _on_loop(self, coro: Coroutine[Any, Any, T], what: str) -> T | None:
        """Run `coro` on the hub's event loop and wait for it here (the thread → asyncio bridge)."""
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)
        except (FhirError, TimeoutError) as exc:
            log.error("%s failed: %s", what, exc)
            return None

    def _retrieve_set(self, event: Event) -> list[StoredInstance] | None:
        try:
            level, criteria = criteria_of(event.identifier)
        except InvalidQuery as exc:
            log.warning("retrieve refused: %s", exc)
            return None
        return matching_instances(level, criteria, self._store.select(**uid_filters(criteria)))

    def on_move(self, event: Event) -> Iterator[Any]:
        destination = str(event.move_destination or "").strip()
        address = self._settings.dicom_move_destinations.get(destination)
        if address is None:
            log.warning("C-MOVE to unknown destination %s", destination)
            yield None, None
            return
        host, _, port = address.rpartition(":")
        instances = self._retrieve_set(event)
        if instances is None:
            yield None, None
            return
        yield host, int(port), {"contexts": _contexts_for(instances)}
        yield len(instances)
        yield from self._send(event, instances)

    def on_get(self, event: Event) -> Iterator[Any]:
        instances = self._retrieve_set(event)
        if instances is None:
            yield 0
            yield v.IDENTIFIER_DOES_NOT_MATCH, None
            return
        yield len(instances)
        yield from self._send(event, instances)

    def _send(self, event: Event, instances: list[StoredInstance]) -> Iterator[Any]:
        dimse = "C-GET" if event.event is evt.EVT_C_GET else "C-MOVE"
        studies = {inst.summary.study_uid for inst in instances}
        self.audit(_calling_ae(event), _address(event), dimse, EXPORT, "R", studies)
        for inst in instances:
            if event.is_cancelled:
                yield v.CANCEL, None
                return
            # pynetdicom only accepts a Dataset here; it is re-encoded in the stored (= negotiated)
            # transfer syntax, which pydicom does byte for byte for well-formed datasets.
            yield v.PENDING, dcmread(self._store.path_for(inst.sha256))


def _pending(event: Event, responses: Iterable[Dataset]) -> Iterator[FindYield]:
    """C-FIND pending responses until done or cancelled by the peer."""
    for ds in responses:
        if event.is_cancelled:
            yield v.CANCEL, None
            return
        yield v.PENDING, ds
    yield v.SUCCESS, None


def _contexts_for(instances: list[StoredInstance]) -> list[PresentationContext]:
    """One context per (SOP class, stored transfer syntax), so bytes go out exactly as stored."""
    pairs = dict.fromkeys((i.summary.sop_class_uid, i.summary.transfer_syntax) for i in instances)
    return [build_context(sop, [ts]) for sop, ts in list(pairs)[:128]]


def _part10(event: Event, calling: str) -> tuple[bytes, KnownMeta]:
    """The received dataset as a Part 10 file, bytes as sent (no decode / re-encode), and what we know
    of it because we framed it (as the storage workers do)."""
    request = event.request
    dataset = request.DataSet.getvalue() if request.DataSet is not None else b""  # type: ignore[union-attr]
    sop_class = str(getattr(request, "AffectedSOPClassUID", "") or "")
    transfer_syntax = str(event.context.transfer_syntax)
    meta = file_meta(
        sop_class, str(getattr(request, "AffectedSOPInstanceUID", "") or ""), transfer_syntax, calling
    )
    return meta + dataset, KnownMeta(len(meta), transfer_syntax, sop_class)


def _calling_ae(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def _address(event: Event) -> str:
    return str(getattr(event.assoc.requestor, "address", "") or "")
