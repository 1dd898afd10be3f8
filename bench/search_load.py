"""Load a Synthea-like data set into a SQLite hub database through the store's write path.

Patients with encounters, observations, diagnostic reports (with results), conditions and referrals
(ServiceRequest), practitioners and organisations (20 consortium members), plus one "heavy" patient
with ~1,000 resources for $everything. Each patient has the care-relationship CareTeam the hub keeps
(its registering member and its referrals' performers), for searches as a member (search_queries.py).
Resources go through `extract` and `SqliteStore.write()` exactly as the server writes them,
in big transactions.

    .venv/bin/python bench/search_load.py --db /tmp/search-bench.db --resources 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fhir_server.interactions.care_team import Participant, team_body  # noqa: E402
from fhir_server.model.access_record import MEMBER_SYSTEM  # noqa: E402
from fhir_server.search.extract import extract  # noqa: E402
from fhir_server.search.registry import build_registry  # noqa: E402
from fhir_server.storage.protocol import NewVersion  # noqa: E402
from fhir_server.storage.sqlite.store import SqliteStore  # noqa: E402

FAMILIES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVENS = [
    "伟",
    "芳",
    "娜",
    "秀英",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "勇",
    "艳",
    "杰",
    "涛",
    "明",
    "超",
    "秀兰",
]
LOINC = [
    ("8867-4", "Heart rate", "/min", 50, 120),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 90, 180),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 50, 110),
    ("2339-0", "Glucose", "mg/dL", 60, 250),
    ("29463-7", "Body weight", "kg", 3, 120),
    ("8302-2", "Body height", "cm", 45, 200),
    ("39156-5", "BMI", "kg/m2", 15, 40),
    ("2093-3", "Cholesterol", "mg/dL", 100, 300),
    ("4548-4", "HbA1c", "%", 4, 12),
    ("718-7", "Hemoglobin", "g/dL", 8, 18),
]
SNOMED = [("44054006", "Diabetes mellitus type 2"), ("38341003", "Hypertension"), ("195967001", "Asthma")]
PER_PATIENT = {"Encounter": 5, "Observation": 30, "DiagnosticReport": 5, "Condition": 3, "ServiceRequest": 2}
LAST_UPDATED = "2025-06-01T00:00:00.000Z"


def _date(rng: random.Random, start: int = 2015, end: int = 2025) -> str:
    day = f"{rng.randint(start, end)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return f"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00+08:00"


def patient_bundle(rng: random.Random, n: int, scale: float = 1.0) -> list[dict[str, Any]]:
    pid = f"p{n}"
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [
                {"system": "urn:oid:2.16.156.10011.1.1", "value": f"MRN{n:08d}"},
                {
                    "system": "urn:oid:2.16.156.10011.2.5.1.3",
                    "value": f"11010119{rng.randint(50, 99)}0101{n % 10000:04d}",
                },
            ],
            "name": [{"family": rng.choice(FAMILIES), "given": [rng.choice(GIVENS)]}],
            "gender": rng.choice(["male", "female"]),
            "birthDate": f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "address": [{"city": rng.choice(["县城", "东乡", "西镇"]), "district": "示范县"}],
            "managingOrganization": {"reference": f"Organization/org{n % 20}"},
        }
    ]
    encounters = []
    for e in range(max(1, int(PER_PATIENT["Encounter"] * scale))):
        eid = f"e{n}-{e}"
        encounters.append(eid)
        start = _date(rng)
        out.append(
            {
                "resourceType": "Encounter",
                "id": eid,
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": rng.choice(["AMB", "IMP", "EMER"]),
                },
                "subject": {"reference": f"Patient/{pid}"},
                "participant": [{"individual": {"reference": f"Practitioner/pr{rng.randint(0, 199)}"}}],
                "period": {"start": start, "end": start[:11] + "23:59:00+08:00"},
                "serviceProvider": {"reference": f"Organization/org{n % 20}"},
            }
        )
    obs_ids = []
    for o in range(int(PER_PATIENT["Observation"] * scale)):
        code, display, unit, lo, hi = rng.choice(LOINC)
        oid = f"o{n}-{o}"
        obs_ids.append(oid)
        out.append(
            {
                "resourceType": "Observation",
                "id": oid,
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                "code": "vital-signs",
                            }
                        ]
                    }
                ],
                "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                "subject": {"reference": f"Patient/{pid}"},
                "encounter": {"reference": f"Encounter/{rng.choice(encounters)}"},
                "effectiveDateTime": _date(rng),
                "valueQuantity": {
                    "value": round(rng.uniform(lo, hi), 1),
                    "unit": unit,
                    "system": "http://unitsofmeasure.org",
                    "code": unit,
                },
            }
        )
    for d in range(int(PER_PATIENT["DiagnosticReport"] * scale)):
        out.append(
            {
                "resourceType": "DiagnosticReport",
                "id": f"d{n}-{d}",
                "status": "final",
                "code": {
                    "coding": [
                        {"system": "http://loinc.org", "code": "24323-8", "display": "Metabolic panel"}
                    ]
                },
                "subject": {"reference": f"Patient/{pid}"},
                "encounter": {"reference": f"Encounter/{rng.choice(encounters)}"},
                "effectiveDateTime": _date(rng),
                "result": [
                    {"reference": f"Observation/{i}"} for i in rng.sample(obs_ids, min(3, len(obs_ids)))
                ],
            }
        )
    for c in range(int(PER_PATIENT["Condition"] * scale)):
        code, display = rng.choice(SNOMED)
        out.append(
            {
                "resourceType": "Condition",
                "id": f"c{n}-{c}",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
                "subject": {"reference": f"Patient/{pid}"},
                "onsetDateTime": _date(rng, 2000, 2025),
            }
        )
    for s in range(int(PER_PATIENT["ServiceRequest"] * scale)):
        out.append(
            {
                "resourceType": "ServiceRequest",
                "id": f"s{n}-{s}",
                "status": "active",
                "intent": "order",
                "category": [
                    {
                        "coding": [
                            {"system": "http://snomed.info/sct", "code": "3457005", "display": "Referral"}
                        ]
                    }
                ],
                "subject": {"reference": f"Patient/{pid}"},
                "requester": {"reference": f"Practitioner/pr{rng.randint(0, 199)}"},
                "performer": [{"reference": f"Organization/org{rng.randint(0, 19)}"}],
                "authoredOn": _date(rng),
            }
        )
    out.append(care_team(out))
    return out


def member_code(org: int) -> str:
    """The consortium member code of Organization/org<i> (`urn:yilian:member`)."""
    return f"M{org:02d}"


def care_team(bundle: list[dict[str, Any]]) -> dict[str, Any]:
    """The care-relationship CareTeam the hub keeps for this patient (`interactions/care_team.py`): its
    registering organization and its referrals' performers, written as the hub writes it."""
    patient = bundle[0]
    participants: dict[str, Participant] = {}
    for ref, role in [(patient["managingOrganization"]["reference"], "registered")] + [
        (p["reference"], "performer")
        for r in bundle
        if r["resourceType"] == "ServiceRequest"
        for p in r["performer"]
    ]:
        code = member_code(int(ref.removeprefix("Organization/org")))
        participants.setdefault(code, Participant(ref)).roles.add(role)
    return team_body(patient["id"], participants)


def reference_data() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Organization",
            "id": f"org{i}",
            "name": f"乡镇卫生院{i}",
            "identifier": [
                {"system": "urn:org", "value": f"ORG{i}"},
                {"system": MEMBER_SYSTEM, "value": member_code(i)},
            ],
        }
        for i in range(20)
    ]
    out += [
        {
            "resourceType": "Practitioner",
            "id": f"pr{i}",
            "name": [{"family": FAMILIES[i % len(FAMILIES)], "given": ["医生"]}],
            "identifier": [{"system": "urn:practitioner", "value": f"PR{i}"}],
        }
        for i in range(200)
    ]
    return out


async def load(db: Path, total: int, batch: int, seed: int) -> None:
    registry = build_registry()
    store = SqliteStore(db)
    await store.open()
    rng = random.Random(seed)
    written = 0
    started = time.perf_counter()
    pending: list[dict[str, Any]] = reference_data()
    # the heavy patient: ~1,000 resources in its compartment
    pending += patient_bundle(rng, 0, scale=1000 / 45)
    n = 1
    while written + len(pending) < total or pending:
        while len(pending) < batch and written + len(pending) < total:
            pending += patient_bundle(rng, n)
            n += 1
        chunk, pending = pending[:batch], pending[batch:]
        async with store.write() as tx:
            for body in chunk:
                body["meta"] = {**body.get("meta", {}), "versionId": "1", "lastUpdated": LAST_UPDATED}
                await tx.write_version(
                    NewVersion(
                        body["resourceType"],
                        body["id"],
                        1,
                        LAST_UPDATED,
                        "POST",
                        body,
                        extract(body, registry),
                    )
                )
        written += len(chunk)
        if written % (batch * 20) < batch:
            rate = written / (time.perf_counter() - started)
            print(f"{written:>9,} resources  {rate:,.0f}/s", flush=True)
    await store.close()
    elapsed = time.perf_counter() - started
    print(
        f"loaded {written:,} resources ({n - 1:,} patients) in {elapsed:,.0f} s: {written / elapsed:,.0f}/s"
    )
    print(f"database size: {db.stat().st_size / 1e9:.2f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, default=Path("/tmp/search-bench.db"))
    ap.add_argument("--resources", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if args.db.exists():
        raise SystemExit(f"{args.db} exists; remove it first")
    asyncio.run(load(args.db, args.resources, args.batch, args.seed))


if __name__ == "__main__":
    main()
