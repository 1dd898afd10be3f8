"""`yilian dicom ...` subcommands: turnaround report for remote reading, per member, over FHIR HTTP."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from adapters.base import HttpSink, JsonObject, add_token_argument
from adapters.dicom.turnaround import Turnaround, turnaround
from adapters.identity import organization_identifier_system
from fhir_server.errors import FhirError


def add_parser(subparsers: Any) -> None:
    dicom = subparsers.add_parser("dicom", help="DICOM adapter tools")
    sub = dicom.add_subparsers(dest="dicom_command", required=True)
    tat = sub.add_parser("turnaround", help="first instance received → final report, per study of a member")
    tat.add_argument("--member", required=True, help="Organization id the member's AE titles map to")
    tat.add_argument("--fhir-base", default="http://127.0.0.1:8080/fhir", help="FHIR base URL of the hub")
    tat.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    add_token_argument(tat)
    tat.set_defaults(func=_turnaround)


def _turnaround(args: argparse.Namespace) -> int:
    try:
        rows = asyncio.run(collect(HttpSink(args.fhir_base, token=args.token), args.member))
    except FhirError as exc:  # the hub is unreachable or refused the searches
        print(exc.message, file=sys.stderr)
        return 1
    if args.json:
        json.dump([r.__dict__ | {"met": r.met} for r in rows], sys.stdout, indent=1)
        print()
        return 0
    print(f"{'study':64s} {'category':10s} {'minutes':>8s} {'target':>6s}  met")
    for r in rows:
        minutes = f"{r.minutes:8.1f}" if r.minutes is not None else "    open"
        print(f"{r.study_uid:64s} {r.category:10s} {minutes} {r.target_minutes:6d}  {r.met}")
    return 0


async def collect(sink: HttpSink, member: str) -> list[Turnaround]:
    """Fetch the member's ImagingStudies, their final reports and ordering ServiceRequests, then compute."""
    try:
        studies = await _all(sink, "ImagingStudy", [("_tag", f"{organization_identifier_system()}|{member}")])
        reports: list[JsonObject] = []
        requests: dict[str, JsonObject] = {}
        for study in studies:
            patient = study.get("subject", {}).get("reference", "")
            if patient:
                reports += await _all(sink, "DiagnosticReport", [("subject", patient)])
            for ref in study.get("basedOn", []):
                sr_id = str(ref.get("reference", "")).removeprefix("ServiceRequest/")
                if sr_id and sr_id not in requests:
                    found = await sink.read("ServiceRequest", sr_id)
                    if found:
                        requests[sr_id] = found
    finally:
        await sink.aclose()
    return turnaround(studies, reports, requests)


async def _all(sink: HttpSink, resource_type: str, params: list[tuple[str, str]]) -> list[JsonObject]:
    bundle = await sink.search(resource_type, [*params, ("_count", "1000")])
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if e.get("resource", {}).get("resourceType") == resource_type
    ]
