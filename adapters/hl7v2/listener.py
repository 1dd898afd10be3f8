"""The MLLP listener: an asyncio server feeding the pipeline, beside the FHIR API in one process.

One sender may keep a connection open and stream thousands of messages (ACKs go back in order); many
senders connect at once (up to `mllp_max_connections`; more are refused at accept). A connection with too
many unanswered messages stops being read until the pipeline catches up (backpressure, not memory
growth). Bytes outside MLLP frames are skipped and logged; an oversize frame is answered AR and
journaled by its head; a peer that drops mid-frame loses only that unacknowledged frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
from collections import deque
from dataclasses import dataclass

from adapters.base import ListenerError, Sink, bind_failure
from adapters.hl7v2.journal import Journal
from adapters.hl7v2.mllp import Frame, FrameDecoder, Garbage, Oversize, frame
from adapters.hl7v2.parse import ParseError, is_batch, split_batch
from adapters.hl7v2.pipeline import Pipeline, Received
from adapters.hl7v2.tls import HANDSHAKE_TIMEOUT_S, handshake_failure, peer_name, server_context
from fhir_server.settings import Settings

log = logging.getLogger(__name__)

HIGH_WATER = 512
LOW_WATER = 64


class _Connection(asyncio.Protocol):
    def __init__(self, service: MllpService) -> None:
        self.service = service
        self.decoder = FrameDecoder(service.settings.mllp_max_message_bytes)
        self.pending: deque[Received | _Batch] = deque()
        self.wakeup = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.writer: asyncio.Task[None] | None = None
        self.paused = False
        self.closed = False
        self.early: list[bytes] = []  # TLS: data the handshake's last read passed on before connection_made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        sender = peer_name(transport.get_extra_info("peercert"))
        if sender:  # a verified client certificate (mutual TLS): journaled with every message
            self.peer += f" ({sender})"
        if len(self.service.connections) >= self.service.settings.mllp_max_connections:
            log.warning(
                "MLLP connection from %s refused: %d connections open",
                self.peer,
                len(self.service.connections),
            )
            transport.abort()
            self.closed = True
            return
        self.service.connections.add(self)
        self.writer = asyncio.get_running_loop().create_task(self._write_acks())
        early, self.early = self.early, []
        for data in early:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            self.early.append(data)
            return
        if self.closed:
            return
        for event in self.decoder.feed(data):
            if isinstance(event, Frame) and is_batch(event.data):
                self._enqueue_batch(event.data)
            elif isinstance(event, Frame):
                self._enqueue(self.service.pipeline.submit(event.data, self.peer))
            elif isinstance(event, Oversize):
                self._enqueue(self.service.pipeline.submit(event.head, self.peer, oversize=event.size))
            elif isinstance(event, Garbage):
                log.warning("MLLP peer %s sent %d bytes outside any frame; skipped", self.peer, event.size)
        if len(self.pending) > HIGH_WATER and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    def _enqueue(self, item: Received | _Batch) -> None:
        self.pending.append(item)
        self.wakeup.set()

    def _enqueue_batch(self, data: bytes) -> None:
        """An FHS/BHS batch in one frame: each message goes through the pipeline, one batch ACK back."""
        try:
            messages = split_batch(data)
        except ParseError:
            messages = []
        if not messages:  # nothing splittable: the pipeline rejects the frame itself (AR, journaled)
            self._enqueue(self.service.pipeline.submit(data, self.peer))
            return
        self._enqueue(_Batch([self.service.pipeline.submit(m, self.peer) for m in messages]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.wakeup.set()
        if self.decoder.partial:
            log.warning(
                "MLLP peer %s disconnected mid-message (%d bytes dropped, not acknowledged)",
                self.peer,
                self.decoder.partial,
            )
        self.service.connections.discard(self)

    async def _write_acks(self) -> None:
        """Send ACKs in message order; results keep being journaled even when the peer is gone."""
        while True:
            if not self.pending:
                if self.closed:
                    return
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            item = self.pending[0]
            try:
                if isinstance(item, _Batch):
                    answer = await item.answer()
                    if not self.closed and self.transport is not None:
                        self.transport.write(frame(answer))
                else:
                    for fut in (item.commit, item.done):
                        ack = await fut
                        if ack is not None and not self.closed and self.transport is not None:
                            self.transport.write(frame(ack))
            except asyncio.CancelledError:
                if self.service.closing:
                    raise
                # The pipeline gave up on this message (it stays journaled); no ACK: the sender re-sends.
            self.pending.popleft()
            if (
                self.paused
                and len(self.pending) < LOW_WATER
                and self.transport is not None
                and not self.closed
            ):
                self.transport.resume_reading()
                self.paused = False


@dataclass
class _Batch:
    """Messages that arrived as one batch frame; answered with one batch of their ACKs (BHS ... BTS)."""

    items: list[Received]

    async def answer(self) -> bytes:
        acks: list[bytes] = []
        for item in self.items:
            for fut in (item.commit, item.done):
                ack = await fut
                if ack is not None:
                    acks.append(ack if ack.endswith(b"\r") else ack + b"\r")
        stamp = dt.datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z")
        return (
            b"BHS|^~\\&|YILIAN|YLHUB|||"
            + stamp.encode()
            + b"\r"
            + b"".join(acks)
            + f"BTS|{len(acks)}\r".encode()
        )


class _TlsAcceptor(asyncio.Protocol):
    """Takes a TCP connection and runs the TLS handshake itself (`loop.start_tls`), then hands the
    encrypted connection to `_Connection`.

    Why not `create_server(ssl=...)`: asyncio reports a failed server-side handshake only in debug
    mode, so an operator would never see a member whose certificate is wrong, expired or from another
    CA, nor a sender speaking clear text to the TLS port. Here each refusal is a warning naming the
    peer and the reason."""

    def __init__(self, service: MllpService, context: ssl.SSLContext) -> None:
        self.service = service
        self.context = context

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the ClientHello must reach start_tls, not this protocol
        peer = transport.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        task = asyncio.get_running_loop().create_task(self._handshake(transport, where))
        self.service.handshakes.add(task)
        task.add_done_callback(self.service.handshakes.discard)

    async def _handshake(self, transport: asyncio.Transport, peer: str) -> None:
        connection = _Connection(self.service)
        try:
            secure = await asyncio.get_running_loop().start_tls(
                transport,
                connection,
                self.context,
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError; start_tls closed it
            log.warning("MLLP TLS handshake with %s refused: %s", peer, handshake_failure(exc))
            return
        if secure is None:  # the peer went away during the handshake
            transport.abort()
            return
        connection.connection_made(secure)


@dataclass
class MllpService:
    """A running listener: `.port` is the bound port, `close()` stops accepting and drains."""

    settings: Settings
    pipeline: Pipeline
    journal: Journal
    server: asyncio.Server | None = None
    port: int = 0
    closing: bool = False

    def __post_init__(self) -> None:
        self.connections: set[_Connection] = set()
        self.handshakes: set[asyncio.Task[None]] = set()  # TLS handshakes in progress

    async def close(self) -> None:
        self.closing = True
        if self.server is not None:
            self.server.close()
        for handshake in list(self.handshakes):
            handshake.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        writers = [c.writer for c in self.connections if c.writer is not None]
        await self.pipeline.close()
        for w in writers:
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w
        if self.server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2)
        await asyncio.to_thread(self.journal.close)


async def start_mllp(settings: Settings, sink: Sink, port: int | None = None) -> MllpService:
    """Open the journal, recover unfinished entries, and listen on settings.mllp_host.

    `port` overrides settings.mllp_port (0 = an ephemeral port, for tests); the CLI does not call this
    when settings.mllp_port is 0 (disabled).
    """
    tls = server_context(settings)  # a bad certificate stops start-up before anything is opened
    journal = Journal(settings.resolved_journal_path())
    pipeline = Pipeline(settings, sink, journal)
    await pipeline.start()
    service = MllpService(settings, pipeline, journal)
    bind_port = settings.mllp_port if port is None else port
    loop = asyncio.get_running_loop()
    try:
        service.server = await loop.create_server(
            (lambda: _TlsAcceptor(service, tls)) if tls is not None else (lambda: _Connection(service)),
            settings.mllp_host,
            bind_port,
        )
    except OSError as exc:
        await service.close()
        raise ListenerError(
            f"MLLP cannot listen on {settings.mllp_host}:{bind_port}: {bind_failure(exc)}"
        ) from exc
    service.port = service.server.sockets[0].getsockname()[1]
    mode = ("TLS, client certificates required" if settings.mllp_tls_ca else "TLS") if tls else "plain"
    log.info("MLLP listener on %s:%d, %s (journal %s)", settings.mllp_host, service.port, mode, journal.path)
    return service
