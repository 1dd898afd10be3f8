"""The HL7 v2 ingest pipeline: journal (group fsync) → parse → route → translate → Sink → journal → ACK.

Two stages in sequence, each a task: the journal stage takes every message queued since its last round
(up to `max_batch`) and journals them with one fsync; the apply stage translates and applies that group
(one store transaction for messages about different patients, `coalesce.py`) while the journal stage
is already writing the next group. The apply stage translates a round while the round before it is
still in the store's writer thread, and applies it only when that one is done. A quiet link still gets
its ACK after one round trip; under load many messages share one fsync. Order is arrival order through
both FIFO stages, hence per patient.

Nothing is acknowledged before its journal commit returns (fsync). The journal, not the store, is what
makes an acknowledged message survive a power cut, so a round's store transaction commits without its
own fsync (`Sink.submit(durable=False)`), and the round's messages stay `received` in the journal
until a sync stage has made those commits durable (`Sink.sync()`, one fsync every `sync_interval`) and
then records their outcomes. A re-send meanwhile is answered from the outcomes held in memory. Errors
(AE/AR) stored nothing and are recorded at once, so a corrected re-send is processed again.

At start, entries left `received` (a crash, or a power cut that took unsynced store commits with it)
are finished first: an entry whose Provenance (deterministic id) exists was applied and is only
marked; one whose Provenance is missing is applied again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from adapters.base import Sink
from adapters.hl7v2 import ack as acks
from adapters.hl7v2.coalesce import groups, merge
from adapters.hl7v2.journal import Appended, Entry, Journal, NewEntry, Outcome
from adapters.hl7v2.parse import Message, ParseError, header_facts, parse
from adapters.hl7v2.router import Router, build_router
from adapters.hl7v2.structure import diagnose
from adapters.hl7v2.transaction import (
    Context,
    Translation,
    TranslationError,
    message_identifier_system,
    provenance_id,
)
from fhir_server.errors import FhirError
from fhir_server.model.access_record import IMPORT, AccessRecord
from fhir_server.settings import Settings

log = logging.getLogger(__name__)
V2_EVENT_TYPES = "http://terminology.hl7.org/CodeSystem/v2-0003"
_ACCESS_STATUS = {"applied": 200, "error": 422, "rejected": 400}
"""An outcome as the status of its AuditEvent (AE: the hub could not apply it; AR: not acceptable)."""

_REJECT_CODES = {"100", "200", "201", "202", "203"}
SYNC_INTERVAL_S = 0.2
"""How long applied outcomes wait for the store fsync that lets the journal mark them: the cost is one
fsync (~2-8 ms here, under the store's write lock) per interval instead of one per round."""


@dataclass
class Received:
    """One message in flight; the connection awaits its ACK(s) in order."""

    raw: bytes
    peer: str
    received_at: dt.datetime
    oversize: int = 0
    header: acks.Header = field(default_factory=acks.Header)
    commit: asyncio.Future[bytes | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    done: asyncio.Future[bytes | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class _Work:
    """Per-message state inside one round."""

    entry_id: int
    raw: bytes
    header: acks.Header
    peer: str = ""
    message: Message | None = None
    context: Context | None = None
    translation: Translation | None = None
    outcome: Outcome | None = None
    errors: list[acks.ErrorDetail] = field(default_factory=list)


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        journal: Journal,
        router: Router | None = None,
        max_batch: int = 128,  # messages per journal group and per round; 64 measured 1-9% slower
        sync_interval: float = SYNC_INTERVAL_S,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.journal = journal
        self.router = router or build_router()
        self.max_batch = max_batch
        self.tz = ZoneInfo(settings.hl7_timezone)
        self._queue: asyncio.Queue[Received] = asyncio.Queue()
        self._journaled: asyncio.Queue[tuple[list[Received], list[Appended]]] = asyncio.Queue(maxsize=2)
        self._workers: list[asyncio.Task[None]] = []
        self.sync_interval = sync_interval
        self._unsynced: dict[int, Outcome] = {}  # applied, store commit not yet fsynced, journal not told
        self._has_unsynced = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.recover()
        self._workers = [
            asyncio.create_task(self._journal_stage(), name="hl7v2-journal"),
            asyncio.create_task(self._apply_stage(), name="hl7v2-apply"),
            asyncio.create_task(self._sync_stage(), name="hl7v2-sync"),
        ]

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        while not self._journaled.empty():  # journaled, not applied: recovery finishes them
            _cancel(self._journaled.get_nowait()[0])
        while not self._queue.empty():  # never acknowledged: the sender will re-send
            _cancel([self._queue.get_nowait()])
        await self.sync_outcomes()  # if this fails, the entries stay `received` and recovery marks them

    def _now(self) -> dt.datetime:
        return dt.datetime.now(self.tz)

    def submit(self, raw: bytes, peer: str, oversize: int = 0) -> Received:
        item = Received(raw, peer, dt.datetime.now(self.tz), oversize, acks.Header.from_raw(raw))
        self._queue.put_nowait(item)
        return item

    async def recover(self) -> int:
        """Finish entries a crash left `received`; returns how many."""
        pending = await asyncio.to_thread(self.journal.pending)
        for entry in pending:
            applied = await self.sink.read(
                "Provenance", provenance_id(entry.sending_facility, entry.control_id or "")
            )
            if applied is not None and entry.control_id:
                header = acks.Header.from_raw(entry.raw)
                ack = acks.build(header, "AA", f"YL{entry.id}", now=self._now())
                await asyncio.to_thread(self.journal.finish, [Outcome(entry.id, "applied", None, ack)])
                continue
            await self.process_entries([entry])
        if pending:
            log.info("HL7 journal recovery finished %d pending message(s)", len(pending))
        return len(pending)

    # -- the worker: two stages, so the next group's fsync overlaps this group's apply ------------
    async def _journal_stage(self) -> None:
        """Group commit: everything queued since the last round is journaled with one fsync."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                news = []
                for item in batch:
                    facility, control, mtype = header_facts(item.raw)
                    # An oversize message has no usable control id: journal its head without one.
                    control_id = None if item.oversize else control or None
                    news.append(NewEntry(item.raw, item.peer, facility, control_id, mtype, item.received_at))
                appended = await asyncio.to_thread(self.journal.append, news)
                for item, app in zip(batch, appended, strict=True):
                    header = item.header
                    if header.enhanced and acks.wants(header.accept_ack, True):
                        item.commit.set_result(acks.build(header, "CA", f"YLC{app.id}", now=self._now()))
                    else:
                        item.commit.set_result(None)
            except Exception:  # not journaled: nothing acknowledged, the sender re-sends
                log.exception("HL7 journal append failed; %d message(s) not acknowledged", len(batch))
                _cancel(batch)
                continue
            await self._journaled.put((batch, appended))

    async def _apply_stage(self) -> None:
        """Rounds in order, each translated while the one before is still being stored.

        Why the overlap: a round's store work ends in a thread (its last rows and COMMIT, where SQLite
        releases the GIL), and translating the next round meanwhile keeps the event loop busy on the
        one core while the other finishes the store's part."""
        applying: asyncio.Task[None] | None = None
        try:
            while True:
                batch, appended = await self._journaled.get()
                # Groups journaled while the last round was applied go into one round: its fixed cost
                # (the store's commit) is then shared by more messages.
                self._take_journaled(batch, appended)
                works = self._prepare(batch, appended)
                if works is None:
                    continue
                if applying is not None:
                    await applying
                    more: list[Received] = []
                    more_appended: list[Appended] = []
                    self._take_journaled(more, more_appended, len(batch))
                    if more and (more_works := self._prepare(more, more_appended)) is not None:
                        works.extend(more_works)
                        batch, appended = batch + more, appended + more_appended
                applying = asyncio.create_task(self._finish_round(batch, appended, works))
        finally:
            if applying is not None and not applying.done():
                applying.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await applying

    def _take_journaled(self, batch: list[Received], appended: list[Appended], held: int = 0) -> None:
        while not self._journaled.empty() and held + len(batch) < self.max_batch:
            more, more_appended = self._journaled.get_nowait()
            batch.extend(more)
            appended.extend(more_appended)

    def _prepare(self, batch: list[Received], appended: list[Appended]) -> list[_Work] | None:
        """Translate a round's new messages (re-sends are answered from their original's outcome);
        None when a translator failed unexpectedly: the messages stay journaled, unacknowledged."""
        try:
            return self._translate_all(
                [
                    _entry(item, app)
                    for item, app in zip(batch, appended, strict=True)
                    if app.duplicate_of is None
                ],
                {app.id: item.oversize for item, app in zip(batch, appended, strict=True) if item.oversize},
            )
        except Exception:  # a bug in a translator must not stop the listener: its round is applied empty
            log.exception("HL7 round translation failed; %d message(s) left unacknowledged", len(batch))
            _cancel(batch)
            return None

    async def _finish_round(
        self, batch: list[Received], appended: list[Appended], works: list[_Work]
    ) -> None:
        try:
            await self._round(batch, appended, works)
        except asyncio.CancelledError:  # closing: journaled, so recovery finishes them
            _cancel(batch)
            raise
        except Exception:  # a bug here must not stop the listener; the messages stay journaled
            log.exception("HL7 pipeline round failed; %d message(s) left unacknowledged", len(batch))
            _cancel(batch)

    async def _sync_stage(self) -> None:
        while True:
            await self._has_unsynced.wait()
            await asyncio.sleep(self.sync_interval)
            await self.sync_outcomes()

    async def sync_outcomes(self) -> None:
        """Fsync the store's commits so far, then journal the outcomes they cover."""
        # Outcomes are held only after their round's commit returned, so this sync covers them all.
        outcomes = list(self._unsynced.values())
        if not outcomes:
            return
        try:
            await self.sink.sync()
            await asyncio.to_thread(self.journal.finish, outcomes)
        except Exception:  # noqa: BLE001 - kept in memory and retried; recovery covers a crash meanwhile
            log.exception("HL7 store sync failed; %d outcome(s) kept for the next attempt", len(outcomes))
            return
        for outcome in outcomes:  # a sync called meanwhile (close, a test) may have journaled some already
            self._unsynced.pop(outcome.id, None)
        if not self._unsynced:
            self._has_unsynced.clear()

    async def _round(self, batch: list[Received], appended: list[Appended], works: list[_Work]) -> None:
        outcomes = {o.id: o for o in await self._apply_works(works, deferred=True)}
        for item, app in zip(batch, appended, strict=True):
            if app.duplicate_of is not None:
                log.info("HL7 message %d re-sent by %s: answered with the original ACK", app.id, item.peer)
                ack = await self._original_ack(app.id, app.duplicate_of, outcomes)
            else:
                ack = outcomes[app.id].ack
            item.done.set_result(ack if _app_ack_wanted(item.header, ack) else None)

    async def _original_ack(
        self, entry_id: int, original: Entry, outcomes: dict[int, Outcome]
    ) -> bytes | None:
        """Earlier rounds are finished by now: the original's ACK is in this round, held for the next
        sync, or in the journal (read again if it was still `received` when the re-send arrived)."""
        held = outcomes.get(entry_id) or self._unsynced.get(entry_id)
        if held is not None:
            return held.ack
        if original.ack:
            return original.ack
        stored = await asyncio.to_thread(self.journal.get, entry_id)
        return stored.ack if stored else None

    # -- processing (shared by the listener, recovery and replay) --------------------------------
    async def process_entries(
        self, entries: list[Entry], oversize: dict[int, int] | None = None, *, deferred: bool = False
    ) -> list[Outcome]:
        """Parse, translate, apply and journal the outcome of journaled entries, in order.

        `deferred` (the listener's rounds): the store commits without fsync and applied outcomes are
        journaled by the sync stage; recovery and replay write durably and journal at once."""
        return await self._apply_works(self._translate_all(entries, oversize), deferred=deferred)

    def _translate_all(self, entries: list[Entry], oversize: dict[int, int] | None = None) -> list[_Work]:
        return [self._translate(e, (oversize or {}).get(e.id, 0)) for e in entries]

    async def _apply_works(self, works: list[_Work], *, deferred: bool) -> list[Outcome]:
        """Apply translated messages in groups, then journal (or hold for the sync stage) outcomes."""
        ready = [(w, w.translation) for w in works if w.translation is not None]
        keys = [t.patient_key for _, t in ready]
        for group in groups(keys, self.max_batch):
            await self._apply([ready[i][0] for i in group], durable=not deferred)
        outcomes = []
        for w in works:
            if w.outcome is None:
                w.outcome = self._outcome(w, "AA")
            outcomes.append(w.outcome)
            self.sink.audit(self._access(w, w.outcome))
        held = [o for o in outcomes if o.status == "applied"] if deferred else []
        finished = [o for o in outcomes if o.status != "applied"] if deferred else outcomes
        if finished:
            await asyncio.to_thread(self.journal.finish, finished)
        if held:
            self._unsynced.update((o.id, o) for o in held)
            self._has_unsynced.set()
        return outcomes

    def _translate(self, entry: Entry, oversize: int) -> _Work:
        work = _Work(entry.id, entry.raw, acks.Header(), entry.peer)
        if oversize:
            work.header = acks.Header.from_raw(entry.raw)
            limit = self.settings.mllp_max_message_bytes
            return self._fail(
                work,
                "AR",
                [acks.ErrorDetail("207", f"message of {oversize} bytes exceeds the {limit}-byte limit")],
            )
        try:
            msg = parse(entry.raw, self.settings.hl7_default_charset, self.settings.hl7_sender_charsets)
            work.message = msg
            work.header = acks.Header.from_message(msg)
            if not msg.control_id:
                return self._fail(
                    work, "AR", [acks.ErrorDetail("101", "message control id is empty", "MSH-10")]
                )
            translator = self.router.resolve(msg.message_type, msg.trigger)
            work.context = Context(entry_received_at(entry), self.tz, self.settings.hl7_member_levels)
            work.translation = translator(msg, work.context)
        except ParseError as exc:
            work.header = acks.Header.from_raw(entry.raw)
            return self._fail(
                work,
                "AR" if exc.code in _REJECT_CODES else "AE",
                [acks.ErrorDetail(exc.code, exc.reason, exc.location)],
            )
        except TranslationError as exc:
            return self._fail(
                work,
                "AR" if exc.code in _REJECT_CODES - {"100"} else "AE",
                [acks.ErrorDetail(exc.code, exc.reason, exc.location)],
            )
        return work

    async def _apply(self, works: list[_Work], durable: bool) -> None:
        if len(works) > 1:
            try:
                await self.sink.submit(
                    merge([w.translation.bundle for w in works]),  # type: ignore[union-attr]
                    durable=durable,
                )
                return
            except FhirError:
                log.info("merged transaction of %d messages failed; applying them one by one", len(works))
            # The Sink consumed the Bundles (references rewritten in place); translation is pure, so
            # translating again is the cheap way to get them back, rather than copying every round's.
            for w in works:
                assert w.message is not None and w.context is not None
                w.translation = self.router.resolve(w.message.message_type, w.message.trigger)(
                    w.message, w.context
                )
        for w in works:
            assert w.translation is not None
            try:
                await self.sink.submit(w.translation.bundle, durable=durable)
            except FhirError as exc:
                self._fail(w, "AE", _fhir_error_details(exc, w.translation.fields))

    def _fail(self, work: _Work, code: str, errors: list[acks.ErrorDetail]) -> _Work:
        log.warning(
            "HL7 message %d answered %s: %s",
            work.entry_id,
            code,
            ", ".join(f"{e.code}@{e.location or '-'}" for e in errors),
        )
        if work.message is not None:
            text = "\r".join(
                "|".join(s.fields if s.name != "MSH" else [s.fields[0], *s.fields[2:]])
                for s in work.message.segments
            )
            errors = errors + diagnose(text, work.header.version)
        work.errors = errors
        work.outcome = self._outcome(work, code)
        return work

    def _access(self, work: _Work, outcome: Outcome) -> AccessRecord:
        """The message as an access to the hub: an Import by the sending system, naming the message
        (and, once applied, its Provenance, which names every resource it wrote)."""
        header = work.header
        facility = header.sending_facility or "unknown"
        control = header.control_id or f"journal-{work.entry_id}"
        entities: list[dict[str, Any]] = [
            {
                "identifier": {"system": message_identifier_system(facility), "value": control},
                "display": f"HL7 v2 message, journal entry {work.entry_id}",
            }
        ]
        if outcome.status == "applied" and header.control_id:
            entities.append({"reference": f"Provenance/{provenance_id(facility, header.control_id)}"})
        return AccessRecord(
            interaction="create",
            recorded=self._now().isoformat(timespec="milliseconds"),
            status=_ACCESS_STATUS[outcome.status],
            client_address=work.peer.rsplit(":", 1)[0] if work.peer else None,
            client_name=f"{header.sending_application}@{facility}"
            if header.sending_application
            else facility,
            event_type=IMPORT,
            subtype=(V2_EVENT_TYPES, header.trigger) if header.trigger else None,
            action="C",
            entities=tuple(entities),
            client_member=header.sending_facility or None,
        )

    def _outcome(self, work: _Work, code: str) -> Outcome:
        ack = acks.build(work.header, code, f"YL{work.entry_id}", work.errors, self._now())
        status = {"AA": "applied", "AE": "error", "AR": "rejected"}[code]
        error = (
            "; ".join(
                f"{e.location}: {e.reason}" if e.location else e.reason
                for e in work.errors
                if e.severity == "E"
            )
            or None
        )
        return Outcome(work.entry_id, status, error, ack)


def _entry(item: Received, app: Appended) -> Entry:
    """A just-journaled message as the journal would return it, without reading it back."""
    return Entry(
        app.id, item.received_at.isoformat(), item.peer, "", None, "", "received", None, None, item.raw, 0
    )


def entry_received_at(entry: Entry) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(entry.received_at)
    except ValueError:
        return dt.datetime.now(dt.UTC)


def _cancel(batch: list[Received]) -> None:
    for item in batch:
        for fut in (item.commit, item.done):
            if not fut.done():
                fut.cancel()


def _app_ack_wanted(header: acks.Header, ack: bytes | None) -> bool:
    """Original mode always answers; enhanced mode only as MSH-16 asks."""
    if not header.enhanced:
        return True
    return acks.wants(header.app_ack, ack is not None and acks.is_accept(ack))


def _fhir_error_details(exc: FhirError, fields: Mapping[str, tuple[str, str]]) -> list[acks.ErrorDetail]:
    """ERR segments for a transaction the hub refused: each issue about an element the translator
    mapped from a field (`Translation.fields`) names that field and its table 0357 code; any other
    is 207 (application internal error) with the FHIR diagnostics."""
    details = []
    for issue in exc.issues[:5]:
        mapped = next(
            (fields[e] for e in issue.expression if e in fields),
            ("", "207"),
        )
        details.append(
            acks.ErrorDetail(mapped[1], f"FHIR {exc.status} {issue.code}: {issue.diagnostics}", mapped[0])
        )
    return details or [acks.ErrorDetail("207", f"FHIR {exc.status}: {exc.message}")]
