"""HL7 v2 test fixtures: sample messages, a real hub with an MLLP listener on an ephemeral port."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.hl7v2.listener import MllpService, start_mllp
from adapters.hl7v2.parse import parse
from adapters.hl7v2.router import build_router
from adapters.hl7v2.transaction import Context, Translation
from fhir_server.hub import Hub, open_hub
from fhir_server.settings import Settings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
LEVELS = {"XCWSS": 1, "FYXWSY": 2, "FYXRMYY": 3}


def sample(name: str) -> bytes:
    return (FIXTURES / f"{name}.hl7").read_bytes()


def translate(name_or_raw: str | bytes, **settings: Any) -> Translation:
    raw = sample(name_or_raw) if isinstance(name_or_raw, str) else name_or_raw
    msg = parse(raw, sender_charsets={"XCWSS": "GB18030"})
    ctx = Context(dt.datetime(2024, 3, 15, 8, 30, tzinfo=dt.UTC), member_levels=LEVELS)
    return build_router().resolve(msg.message_type, msg.trigger)(msg, ctx)


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


@pytest.fixture
def hl7_settings(tmp_path: Path) -> Settings:
    return Settings(
        db=tmp_path / "hub.db",
        hl7_journal=tmp_path / "journal.db",
        mllp_port=0,
        dicom_port=0,
        hl7_sender_charsets={"XCWSS": "GB18030"},
        hl7_member_levels=LEVELS,
    )


@pytest.fixture
async def hl7_hub(hl7_settings: Settings) -> AsyncIterator[Hub]:
    async with open_hub(hl7_settings) as opened:
        yield opened


@pytest.fixture
async def mllp(hl7_settings: Settings, hl7_hub: Hub) -> AsyncIterator[MllpService]:
    service = await start_mllp(hl7_settings, hl7_hub.sink, port=0)
    try:
        yield service
    finally:
        await service.close()


@pytest.fixture
async def fhir(hl7_hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hl7_hub.app), base_url="http://t"
    ) as client:
        yield client
