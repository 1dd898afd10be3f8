"""The DICOM listener as one service the CLI starts beside the FHIR API: `start_dicom` / `close`.

Composition: instance store (files + index) → study publisher (translate + Sink) → study buffer
(debounce on the hub's loop) → pynetdicom handlers and AE. Must be started from within the running
event loop: it captures that loop for the thread → asyncio bridge in `handlers`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from adapters.base import ListenerError, Sink, bind_failure
from adapters.dicom.handlers import DicomHandlers
from adapters.dicom.instances import InstanceStore, open_instance_store
from adapters.dicom.publish import StudyBuffer, StudyPublisher
from adapters.dicom.scp import MAX_PDU, DispatchingServer, build_ae, start_server
from adapters.dicom.workers import WorkerPool, worker_config
from fhir_server.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class DicomService:
    """A running listener. `instances` is the store to hand to `build_dicomweb_app`."""

    port: int
    instances: InstanceStore
    publisher: StudyPublisher
    buffer: StudyBuffer
    _server: DispatchingServer
    _pool: WorkerPool | None = None

    async def close(self) -> None:
        """Stop accepting, let running associations end, publish what is pending, close the index."""
        await asyncio.to_thread(self._server.shutdown)
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)
        await self.buffer.close()
        self.instances.leave_clean_mark()
        self.instances.close()


async def start_dicom(settings: Settings, sink: Sink, port: int | None = None) -> DicomService:
    """Start the listener on `settings.dicom_host`:`port` (default `settings.dicom_port`; 0 = ephemeral).

    The CLI treats `settings.dicom_port == 0` as "disabled" and does not call this; tests pass `port=0`
    explicitly to get an ephemeral port, read back from `.port`.
    """
    loop = asyncio.get_running_loop()
    store = open_instance_store(settings)
    store.clean_tmp()
    if not store.take_clean_mark():  # the last run did not stop cleanly: index rows may be missing
        await asyncio.to_thread(store.reindex_orphans)
    publisher = StudyPublisher(store, sink, settings)

    async def pending() -> dict[str, int]:
        return await asyncio.to_thread(store.pending_studies)

    buffer = StudyBuffer(publisher.publish, settings.dicom_stable_seconds, pending=pending)
    buffer.start()
    for study_uid in store.pending_studies():  # stored before a crash or a failed submit: publish now
        buffer.touch(study_uid)
    handlers = DicomHandlers(settings, sink, store, buffer, loop)
    ae = build_ae(settings)
    pool = None
    if settings.dicom_workers > 0:
        config = worker_config(
            store.root,
            settings.dicom_duplicate_policy,
            settings.dicom_known_aes,
            settings.dicom_refuse_unknown_callers,
            MAX_PDU,
            settings.dicom_fsync,
        )
        pool = WorkerPool(config, settings.dicom_workers, handlers.on_worker_released)
    bind_port = settings.dicom_port if port is None else port
    dispatch = pool.dispatch if pool is not None else None
    try:
        server = await asyncio.to_thread(start_server, ae, settings.dicom_host, bind_port, handlers, dispatch)
    except OSError as exc:
        if pool is not None:
            await asyncio.to_thread(pool.close)
        await buffer.close()
        store.leave_clean_mark()  # nothing was received
        store.close()
        raise ListenerError(
            f"DICOM cannot listen on {settings.dicom_host}:{bind_port}: {bind_failure(exc)}"
        ) from exc
    bound = int(server.server_address[1])
    log.info("DICOM listener %s on %s:%d", settings.dicom_aet, settings.dicom_host, bound)
    return DicomService(bound, store, publisher, buffer, server, pool)
