"""No PHI at INFO: names, resident ID numbers and phone numbers never reach the logs, whether a message
is applied, refused for a bad 居民身份证, or a REST client's record is refused for one."""

from __future__ import annotations

import logging

import httpx
import pytest

from adapters.hl7v2.client import send_all
from adapters.hl7v2.listener import MllpService
from tests.adapters.hl7v2.conftest import sample

PHI = ("张", "赵", "Zhang", "330102198005121233", "330102198005121234", "13800138000", "88886666", "文一西路")


async def test_a_full_run_logs_no_phi(
    mllp: MllpService, fhir: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    acks = await send_all(
        "127.0.0.1", mllp.port, [sample("adt_a04_utf8"), sample("adt_a04_bad_resident_id"), sample("oru_r01")]
    )
    assert [a.split(b"MSA|")[1][:2] for a in acks] == [b"AA", b"AE", b"AA"]
    bad = {
        "resourceType": "Patient",
        "name": [{"text": "赵六"}],
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "330102198005121234"}],
        "telecom": [{"system": "phone", "value": "13800138000"}],
    }
    assert (await fhir.post("/fhir/Patient", json=bad)).status_code == 422
    match = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": bad}]}
    assert (await fhir.post("/fhir/Patient/$match", json=match)).status_code == 200
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert caplog.records, "the run logged nothing: the check would prove nothing"
    leaked = [p for p in PHI if p in logged]
    assert leaked == [], logged
