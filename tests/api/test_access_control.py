"""Bearer tokens on the HTTP edge, and no open exposure of patient data by default."""

from __future__ import annotations

import httpx
import pytest

from fhir_server.api.access import ApiClient
from fhir_server.api.auth import client_for, registered_clients
from fhir_server.hub import open_hub
from fhir_server.serve import UnsafeExposure, check_exposure
from fhir_server.settings import ApiClientEntry, Settings


async def test_tokens_required_when_configured(tmp_path) -> None:
    settings = Settings(
        db=tmp_path / "a.db", api_tokens={"s3cret-county": "county-his"}, audit_flush_seconds=3600
    )
    async with (
        open_hub(settings) as hub,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.app), base_url="http://t") as c,
    ):
        assert (await c.get("/fhir/metadata")).status_code == 200  # SMART clients read it first
        refused = await c.get("/fhir/Patient")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["issue"][0]["code"] == "login"
        wrong = await c.get("/fhir/Patient", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401
        ok = await c.post(
            "/fhir/Patient",
            json={"resourceType": "Patient"},
            headers={"Authorization": "Bearer s3cret-county"},
        )
        assert ok.status_code == 201
        await hub.audit.flush()
        events = await c.get(
            "/fhir/AuditEvent",
            params={"subtype": "create"},
            headers={"Authorization": "Bearer s3cret-county"},
        )
        agents = [e["resource"]["agent"][0]["who"]["display"] for e in events.json()["entry"]]
        assert agents == ["county-his"]


def test_client_for_parses_bearer_only() -> None:
    tokens = registered_clients(
        {"abc": "township-3", "xyz": ApiClientEntry(client="village-7", member="HSZWSY", role="reader")}
    )
    assert client_for("Bearer abc", tokens) == ApiClient("township-3", "admin")  # a bare name: admin
    assert client_for("bearer abc", tokens) == ApiClient("township-3", "admin")
    assert client_for("Bearer xyz", tokens) == ApiClient("village-7", "reader", "HSZWSY")
    assert client_for("Basic abc", tokens) is None
    assert client_for("Bearer abd", tokens) is None
    assert client_for(None, tokens) is None


def test_member_and_reader_clients_must_name_their_member() -> None:
    with pytest.raises(ValueError, match="needs its member's code"):
        Settings(api_tokens={"t": {"client": "his", "role": "member"}})
    assert Settings(api_tokens={"t": {"client": "ops", "role": "auditor"}}).api_tokens["t"] == ApiClientEntry(
        client="ops", role="auditor"
    )


def test_no_open_network_bind_without_tokens(tmp_path) -> None:
    check_exposure(Settings(db=tmp_path / "x.db"))  # loopback: fine
    with pytest.raises(UnsafeExposure, match="YILIAN_API_TOKENS"):
        check_exposure(Settings(db=tmp_path / "x.db", host="0.0.0.0"))
    check_exposure(Settings(db=tmp_path / "x.db", host="0.0.0.0", api_tokens={"t": "c"}))
    check_exposure(Settings(db=tmp_path / "x.db", host="10.0.0.5", allow_open_network=True))
