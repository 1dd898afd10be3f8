"""An MLLP client: send messages on one connection and read their ACKs (CLI `hl7 send`, outbound ORU
delivery, tests and benchmarks share it)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from types import TracebackType

from adapters.base import AdapterError
from adapters.hl7v2.mllp import Frame, FrameDecoder, frame


class MllpClientError(AdapterError):
    """The peer could not be reached, closed the connection, or did not answer in time."""


class MllpClient:
    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = 30.0,
        max_size: int = 16 * 1024 * 1024,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.timeout, self.tls = host, port, timeout, tls
        self._decoder = FrameDecoder(max_size)
        self._frames: list[bytes] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> MllpClient:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.tls), self.timeout
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError: a refused handshake too
            scheme = "MLLP over TLS" if self.tls else "MLLP"
            raise MllpClientError(f"cannot connect to {scheme} {self.host}:{self.port}: {exc}") from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
            self._writer = None

    def send_nowait(self, message: bytes) -> None:
        """Queue one framed message (pipelining: read the ACKs later with `receive`)."""
        assert self._writer is not None, "not connected"
        self._writer.write(frame(message))

    async def drain(self) -> None:
        assert self._writer is not None
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            raise MllpClientError(f"{self.host}:{self.port} closed the connection ({exc})") from exc

    async def receive(self) -> bytes:
        """The next frame from the peer."""
        assert self._reader is not None, "not connected"
        while not self._frames:
            try:
                data = await asyncio.wait_for(self._reader.read(65536), self.timeout)
            except TimeoutError as exc:
                raise MllpClientError(f"no answer from {self.host}:{self.port} in {self.timeout}s") from exc
            except ConnectionError as exc:  # reset: e.g. a TLS listener refusing our certificate
                raise MllpClientError(f"{self.host}:{self.port} closed the connection ({exc})") from exc
            if not data:
                raise MllpClientError(f"{self.host}:{self.port} closed the connection")
            self._frames += [e.data for e in self._decoder.feed(data) if isinstance(e, Frame)]
        return self._frames.pop(0)

    async def send(self, message: bytes, answers: int = 1) -> list[bytes]:
        """Send one message and wait for `answers` frames (2 for enhanced mode: commit + application)."""
        self.send_nowait(message)
        await self.drain()
        return [await self.receive() for _ in range(answers)]


async def send_all(
    host: str,
    port: int,
    messages: Sequence[bytes],
    timeout: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> list[bytes]:
    """Send messages one after another on one connection; returns the ACK of each (original mode)."""
    async with MllpClient(host, port, timeout, tls=tls) as client:
        return [(await client.send(m))[0] for m in messages]
