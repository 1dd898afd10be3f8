from __future__ import annotations

import pytest

from adapters.dicom.translate import FIRST_RECEIVED_URL
from adapters.dicom.turnaround import turnaround


def _study(sid, received, sr=None):
    study = {
        "resourceType": "ImagingStudy",
        "id": sid,
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:1.2.{sid}"}],
        "extension": [{"url": FIRST_RECEIVED_URL, "valueDateTime": received}],
    }
    if sr:
        study["basedOn"] = [{"reference": f"ServiceRequest/{sr}"}]
    return study


def _report(sid, issued, status="final"):
    return {"resourceType": "DiagnosticReport", "status": status, "issued": issued,
            "imagingStudy": [{"reference": f"ImagingStudy/{sid}"}]}  # fmt: skip


def test_turnaround_per_category_and_target():
    studies = [
        _study("a", "2026-11-23T01:00:00+00:00", sr="er"),
        _study("b", "2026-11-23T01:00:00+00:00", sr="ip"),
        _study("c", "2026-11-23T01:00:00+00:00"),
        _study("d", "2026-11-23T01:00:00+00:00"),
    ]
    reports = [
        _report("a", "2026-11-23T09:20:00+08:00"),  # 20 min, emergency target 30
        _report("a", "2026-11-23T09:50:00+08:00"),  # later amendment does not count
        _report("b", "2026-11-23T02:40:00Z"),  # 100 min, inpatient target 120
        _report("c", "2026-11-23T02:30:00Z"),  # 90 min, outpatient target 60: missed
        _report("d", "2026-11-23T01:10:00Z", status="preliminary"),  # not final: still open
    ]
    requests = {"er": {"priority": "stat"}, "ip": {"encounter": {"reference": "Encounter/e1"}}}
    rows = {r.study_uid: r for r in turnaround(studies, reports, requests, {"e1": "IMP"})}
    assert (rows["1.2.a"].category, rows["1.2.a"].minutes, rows["1.2.a"].met) == ("emergency", 20.0, True)
    assert (rows["1.2.b"].category, rows["1.2.b"].minutes, rows["1.2.b"].met) == ("inpatient", 100.0, True)
    assert (rows["1.2.c"].category, rows["1.2.c"].minutes, rows["1.2.c"].met) == ("outpatient", 90.0, False)
    assert rows["1.2.d"].minutes is None and rows["1.2.d"].met is None


def test_cli_parser_accepts_the_turnaround_command():
    import argparse

    from adapters.dicom.commands import add_parser

    parser = argparse.ArgumentParser(prog="yilian")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dicom", "turnaround", "--member", "org-town-a", "--json"])
    assert (args.member, args.json, args.fhir_base) == ("org-town-a", True, "http://127.0.0.1:8080/fhir")
    assert callable(args.func)


def test_cli_reports_an_unreachable_hub_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse
    import socket

    from adapters.dicom.commands import add_parser

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    parser = argparse.ArgumentParser(prog="yilian")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["dicom", "turnaround", "--member", "org-town-a", "--fhir-base", f"http://127.0.0.1:{port}/fhir"]
    )
    assert args.func(args) == 1
    assert capsys.readouterr().err.startswith(f"FHIR server at http://127.0.0.1:{port}/fhir unreachable")
