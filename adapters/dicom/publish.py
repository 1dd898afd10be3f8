"""From stored instances to ImagingStudy: the study buffer and the publisher behind it.

Translating on every C-STORE would rewrite the ImagingStudy hundreds of times per CT. Instead the edge
`touch`es a study when an instance lands; the buffer publishes it once it has been quiet for
`settings.dicom_stable_seconds` (Orthanc's "stable study") or when the association that sent it ends.
Publishing re-reads the whole study from the instance index, resolves the ServiceRequest by accession
number and the member, translates (pure) and submits one transaction. A failed submit leaves the study
dirty and it is retried after another quiet period; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from adapters.base import Sink
from adapters.dicom.instances import InstanceStore
from adapters.dicom.translate import StudyContext, translate_study
from fhir_server.errors import FhirError
from fhir_server.settings import Settings
from fhir_server.waits import wake_or_timeout

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]


def wado_rs_base(settings: Settings) -> str:
    """The DICOMweb base the Endpoint advertises: beside the public FHIR base, at `/dicomweb`."""
    if settings.public_base_url:
        base = settings.public_base_url.rstrip("/")
        if base.endswith(settings.base_path.rstrip("/")):
            base = base[: len(base) - len(settings.base_path.rstrip("/"))]
        return f"{base}/dicomweb"
    return f"http://{settings.host}:{settings.port}/dicomweb"


class StudyPublisher:
    """Turns the indexed instances of one study into a submitted ImagingStudy transaction."""

    def __init__(self, store: InstanceStore, sink: Sink, settings: Settings) -> None:
        self._store = store
        self._sink = sink
        self._settings = settings
        self._base = wado_rs_base(settings)

    async def publish(self, study_uid: str) -> JsonObject | None:
        generation = (await asyncio.to_thread(self._store.pending_studies)).get(study_uid)
        records = await asyncio.to_thread(self._store.study, study_uid)
        if not records:
            return None
        first = records[0]
        ctx = StudyContext(
            wado_rs_base=self._base,
            timezone=self._settings.hl7_timezone,
            member=first.member or None,
            service_request_id=await self._service_request(first.summary.accession_number),
        )
        response = await self._sink.submit(translate_study(records, ctx))
        if generation is not None:
            await asyncio.to_thread(self._store.mark_published, study_uid, generation)
        log.info("ImagingStudy published: %d instances, %d series", len(records), _series(records))
        return response

    async def _service_request(self, accession: str) -> str | None:
        if not accession:
            return None
        try:
            found = await self._sink.search("ServiceRequest", [("identifier", accession)])
        except FhirError as exc:
            log.warning("ServiceRequest lookup by accession failed: %s", exc)
            return None
        for entry in found.get("entry", []):
            resource = entry.get("resource", {})
            if resource.get("resourceType") == "ServiceRequest" and resource.get("id"):
                return str(resource["id"])
        return None


class StudyBuffer:
    """Debounces publication per study; all methods run on the hub's event loop."""

    def __init__(
        self,
        publish: Callable[[str], Any],
        stable_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        pending: Callable[[], Awaitable[dict[str, int]]] | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        self._publish = publish
        self._pending = pending
        self._generations: dict[str, int] = {}  # study -> change counter last seen in the store
        self._poll_seconds = poll_seconds
        self._stable = stable_seconds
        self._clock = clock
        self._dirty: dict[str, float] = {}  # study uid -> last touch
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dicom-study-buffer")

    def touch(self, study_uid: str) -> None:
        self._dirty[study_uid] = self._clock()
        self._wake.set()

    def pending(self) -> list[str]:
        return list(self._dirty)

    async def flush(self, study_uids: Iterable[str] | None = None, changed: bool = False) -> None:
        """Publish now (association ended, STOW request done, shutdown). `changed`: the caller knows
        these studies changed even if this buffer was not told instance by instance (worker processes)."""
        for uid in list(study_uids if study_uids is not None else self._dirty):
            if changed:
                self._dirty[uid] = self._clock()
            if uid in self._dirty:
                await self._publish_one(uid)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        tick = max(0.05, min(0.25, self._stable / 4))
        last_poll = self._clock()
        while True:
            if not self._dirty:
                self._wake.clear()
                await wake_or_timeout(self._wake, self._poll_seconds)
            await asyncio.sleep(tick)
            now = self._clock()
            if self._pending is not None and now - last_poll >= self._poll_seconds:
                # instances stored by STOW-RS, other processes or before a restart
                last_poll = now
                self._observe(await self._pending(), now)
            for uid, last in list(self._dirty.items()):
                if now - last >= self._stable:
                    await self._publish_one(uid)

    def _observe(self, generations: dict[str, int], now: float) -> None:
        """A study whose change counter moved (written by a worker process) was touched just now; one
        still moving is not quiet, however long ago the buffer first heard of it."""
        for uid, generation in generations.items():
            if self._generations.get(uid) != generation:
                self._generations[uid] = generation
                self._dirty[uid] = now
        for uid in list(self._generations):
            if uid not in generations:
                del self._generations[uid]

    async def _publish_one(self, uid: str) -> None:
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            touched = self._dirty.get(uid)
            if touched is None:
                return
            try:
                await self._publish(uid)
            except (FhirError, OSError) as exc:
                log.warning("ImagingStudy publication failed, will retry: %s", exc)
                self._dirty[uid] = self._clock()
                return
            except Exception:  # a background loop must outlive one bad study; keep it dirty and say why
                log.exception("ImagingStudy publication crashed, will retry")
                self._dirty[uid] = self._clock()
                return
            if self._dirty.get(uid) == touched:
                del self._dirty[uid]
                self._locks.pop(uid, None)


def _series(records: list[Any]) -> int:
    return len({r.summary.series_uid for r in records})
