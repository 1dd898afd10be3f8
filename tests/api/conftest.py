"""Shared by the API tests that run a hub with registered clients (tokens, SMART clients)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.hub import Hub, open_hub
from fhir_server.settings import Settings


@asynccontextmanager
async def client_hub(tmp_path: Path, **settings: Any) -> AsyncIterator[Hub]:
    """A hub on SQLite with `settings` (its clients), the audit trail held back and no review worker."""
    config = Settings(db=tmp_path / "hub.db", audit_flush_seconds=3600, match_review=False, **settings)
    async with open_hub(config) as hub:
        yield hub


@pytest.fixture
async def http(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the module's `hub` fixture."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.app), base_url="http://t") as c:
        yield c
