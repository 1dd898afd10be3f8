"""MLLP over TLS: the listener with and without client certificates, `yilian hl7 send --tls`, and an
outbound ORU to an mllps:// member endpoint (real sockets, real handshakes, test CA in fixtures/tls)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.hl7v2.client import MllpClient, MllpClientError, send_all
from adapters.hl7v2.listener import MllpService, start_mllp
from adapters.hl7v2.outbound import OruDelivery
from adapters.hl7v2.tls import TlsConfigError, client_context, server_context
from fhir_server.hub import Hub, open_hub
from fhir_server.settings import Settings
from tests.adapters.hl7v2.conftest import FIXTURES, sample
from tests.adapters.hl7v2.test_commands import yilian
from tests.adapters.hl7v2.test_outbound import Change, MemberHis, _report_for_other_member

TLS = Path(__file__).resolve().parents[2] / "fixtures" / "tls"
CA, CLIENT = TLS / "ca.pem", (TLS / "client.pem", TLS / "client.key")


def tls_settings(tmp_path: Path, *, client_certificates: bool) -> Settings:
    return Settings(
        db=tmp_path / "hub.db",
        hl7_journal=tmp_path / "journal.db",
        mllp_port=0,
        mllp_tls_cert=TLS / "server.pem",
        mllp_tls_key=TLS / "server.key",
        mllp_tls_ca=CA if client_certificates else None,
    )


@pytest.fixture
async def mutual(tmp_path: Path) -> AsyncIterator[tuple[Hub, MllpService]]:
    settings = tls_settings(tmp_path, client_certificates=True)
    async with open_hub(settings) as hub:
        service = await start_mllp(settings, hub.sink, port=0)
        try:
            yield hub, service
        finally:
            await service.close()


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> str:
    """The listener's warning containing `text` (it is written once the listener gives up)."""
    for _ in range(100):
        found = [r.getMessage() for r in caplog.records if text in r.getMessage()]
        if found:
            return found[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no log line with {text!r}: {[r.getMessage() for r in caplog.records]}")


async def test_mutual_tls_accepts_member_certificates_only(
    mutual: tuple[Hub, MllpService], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="adapters.hl7v2.listener")
    hub, service = mutual
    member = client_context(CA, *CLIENT)
    [ack] = await send_all("127.0.0.1", service.port, [sample("adt_a04_utf8")], tls=member)
    assert b"MSA|AA|ADT0001" in ack
    [entry] = service.journal.entries()
    assert entry.peer.endswith("(FYXRMYY-HIS)")  # the verified sender is journaled with its message

    # No client certificate: refused. Under TLS 1.3 the listener verifies it after the client's side of
    # the handshake, so the sender sees the connection closed instead of a handshake error.
    with pytest.raises(MllpClientError):
        await send_all("127.0.0.1", service.port, [sample("oru_r01")], timeout=5, tls=client_context(CA))
    refused = await _logged(caplog, "presented no client certificate")
    assert refused.startswith("MLLP TLS handshake with 127.0.0.1:")  # the operator sees who and why
    # clear text on the TLS port: never read as HL7, never journaled
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(b"\x0b" + sample("oru_r01") + b"\x1c\r")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 15) == b""  # closed without an ACK
    writer.close()
    await _logged(caplog, "did not speak TLS")
    assert [e.control_id for e in service.journal.entries()] == ["ADT0001"]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.app), base_url="http://t") as fhir:
        found = await fhir.get(
            "/fhir/Patient", params={"identifier": "urn:yilian:member:FYXWSY:patient-id|MRN10001"}
        )
    assert len(found.json()["entry"]) == 1
    [again] = await send_all("127.0.0.1", service.port, [sample("oru_r01")], tls=member)  # still serving
    assert b"MSA|AA|ORU0001" in again


async def test_server_tls_verified_by_the_sender_and_cli(tmp_path: Path) -> None:
    settings = tls_settings(tmp_path, client_certificates=False)
    async with open_hub(settings) as hub:
        service = await start_mllp(settings, hub.sink, port=0)
        try:
            [ack] = await send_all(
                "127.0.0.1", service.port, [sample("adt_a04_utf8")], tls=client_context(CA)
            )
            assert b"MSA|AA|ADT0001" in ack
            # a sender that does not trust the consortium CA refuses the listener
            with pytest.raises(MllpClientError, match="CERTIFICATE_VERIFY_FAILED"):
                async with MllpClient("127.0.0.1", service.port, timeout=5, tls=client_context()):
                    pass
            port = str(service.port)
            file = str(FIXTURES / "oru_r01.hl7")
            code, out, err = await yilian("hl7", "send", file, "--port", port, "--tls", "--ca", str(CA))
            assert code == 0 and "MSA|AA|ORU0001" in out, err
            code, _, err = await yilian("hl7", "send", file, "--port", port, "--timeout", "3")
            assert code == 1  # clear text to a TLS listener: no ACK
        finally:
            await service.close()


async def test_outbound_oru_to_an_mllps_member_endpoint(
    mllp: MllpService, hl7_hub: Hub, fhir: httpx.AsyncClient, hl7_settings: Settings
) -> None:
    his = MemberHis(fail_first=0)
    member_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    member_tls.load_cert_chain(TLS / "server.pem", TLS / "server.key")
    server = await asyncio.start_server(his.handle, "127.0.0.1", 0, ssl=member_tls)
    port = server.sockets[0].getsockname()[1]
    report = await _report_for_other_member(mllp, fhir, port, scheme="mllps")
    settings = hl7_settings.model_copy(update={"mllp_tls_ca": CA})
    delivery = OruDelivery(settings, hl7_hub.sink, backoff=0.01)
    delivery.start()
    try:
        await delivery.on_change(Change("DiagnosticReport", report))
        await delivery.wait_idle()
        [row] = delivery.outbox.rows()
    finally:
        await delivery.close()
        server.close()
        await server.wait_closed()
    assert (row.status, row.target) == ("delivered", f"FYXWSY mllps://127.0.0.1:{port}")
    assert len(his.received) == 1 and his.received[0].startswith(b"MSH|")


def test_unreadable_certificate_is_a_clear_start_up_error(tmp_path: Path) -> None:
    settings = tls_settings(tmp_path, client_certificates=False).model_copy(
        update={"mllp_tls_key": tmp_path / "missing.key"}
    )
    with pytest.raises(TlsConfigError, match="missing.key"):
        server_context(settings)
