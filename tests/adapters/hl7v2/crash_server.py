"""A hub + MLLP listener whose Sink stalls before applying, run as a subprocess by the crash test.

The stall makes "killed between journal and apply" deterministic without any test hook in the product:
the message is journaled (and commit-acknowledged in enhanced mode), then the process is killed -9.
Usage: python -m tests.adapters.hl7v2.crash_server DB JOURNAL PORTFILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from adapters.hl7v2.listener import start_mllp
from fhir_server.hub import open_hub
from fhir_server.settings import Settings


class StallingSink:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def submit(self, bundle: dict[str, Any], *, durable: bool = True) -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def sync(self) -> None:
        pass

    async def search(
        self, resource_type: str, params: list[tuple[str, str]], *, member: str | None = None
    ) -> dict[str, Any]:
        return await self.inner.search(resource_type, params, member=member)  # type: ignore[no-any-return]

    async def read(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        return await self.inner.read(resource_type, resource_id)  # type: ignore[no-any-return]

    def audit(self, record: Any) -> None:
        self.inner.audit(record)


async def main(db: Path, journal: Path, port_file: Path, mode: str) -> None:
    """`stall`: the store never answers (killed between journal and apply). `unsynced`: messages are
    applied and acknowledged, but the sync that journals their outcomes never comes (killed in between)."""
    settings = Settings(db=db, hl7_journal=journal, mllp_port=0)
    async with open_hub(settings) as hub:
        sink = StallingSink(hub.sink) if mode == "stall" else hub.sink
        service = await start_mllp(settings, sink, port=0)
        if mode == "unsynced":
            service.pipeline.sync_interval = 3600.0
        port_file.write_text(str(service.port))
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]))
