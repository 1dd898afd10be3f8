"""Shared fixtures: a real hub (SQLite file in tmp_path) and an HTTP client against its ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fhir_server.hub import Hub, open_hub
from fhir_server.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        db=tmp_path / "hub.db",
        dicom_storage=tmp_path / "dicom",
        hl7_journal=tmp_path / "journal.db",
        mllp_port=0,
        dicom_port=0,
        audit_flush_seconds=3600.0,  # tests flush the audit trail explicitly (hub.audit.flush())
        match_review_seconds=3600.0,  # and review matches explicitly (hub.review.drain())
    )


@pytest.fixture
async def hub(settings: Settings) -> AsyncIterator[Hub]:
    async with open_hub(settings) as opened:
        yield opened


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=hub.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as c:
        yield c
