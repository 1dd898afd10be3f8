"""Patient/$match latency at scale, beside a plain indexed search measured in the same run.

Loads N Patients (a county's population: Chinese names from a small pool, so names repeat thousands of
times, birth dates over 90 years, a mobile number each, a 居民身份证 on 70%) into a SQLite file through
the store's write path, then times `$match` below HTTP for three probe shapes and, as the reference,
`Patient?birthdate=<day>` (one indexed search returning a page of Patients):

    .venv/bin/python bench/match.py --patients 1000000 --db /tmp/match-bench.db   # load once (minutes)
    .venv/bin/python bench/match.py --db /tmp/match-bench.db --no-load            # measure again

Prints p50/p95 per shape and the ratio of each p95 to the reference's p95. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.search_load import FAMILIES, GIVENS  # noqa: E402  (the same name pool as the search bench)
from fhir_server.interactions.matching import MatchRules  # noqa: E402
from fhir_server.interactions.operations.match import patient_match  # noqa: E402
from fhir_server.interactions.search import search_bundle  # noqa: E402
from fhir_server.interactions.service import FhirService  # noqa: E402
from fhir_server.model.definitions import resource_types  # noqa: E402
from fhir_server.search.extract import extract  # noqa: E402
from fhir_server.search.registry import build_registry  # noqa: E402
from fhir_server.storage.protocol import NewVersion  # noqa: E402
from fhir_server.storage.sqlite.store import SqliteStore  # noqa: E402
from terminology import cn_resident_id  # noqa: E402

MEMBERS = ["XYRMYY", "DLZWSY", "HSZWSY", "XCWSS"]
LAST_UPDATED = "2026-12-01T00:00:00.000Z"
BASE = "http://bench/fhir"


def person(n: int) -> dict[str, Any]:
    """Patient n, the same every run (its own seeded generator), so probes can be made from n."""
    rng = random.Random(n)
    born = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randint(0, 90 * 365))
    male = rng.random() < 0.5
    member = MEMBERS[n % len(MEMBERS)]
    idents = [{"system": f"urn:yilian:member:{member}:patient-id", "value": f"M{n:08d}"}]
    if rng.random() < 0.7:
        idents.append(
            {"system": cn_resident_id.SYSTEM, "value": cn_resident_id.make("411302", born, n % 1000)}
        )
    return {
        "resourceType": "Patient",
        "id": f"p{n}",
        "identifier": idents,
        "name": [{"text": rng.choice(FAMILIES) + rng.choice(GIVENS)}],
        "gender": "male" if male else "female",
        "birthDate": born.isoformat(),
        "telecom": [{"system": "phone", "value": f"1{rng.randint(3, 9)}{rng.randint(0, 999_999_999):09d}"}],
        "address": [
            {"text": f"河南省南阳市{rng.choice(['卧龙区', '宛城区', '镇平县'])}{rng.randint(1, 300)}号"}
        ],
    }


async def load(store: SqliteStore, patients: int, batch: int = 5000) -> None:
    registry = build_registry()
    started = time.perf_counter()
    for first in range(0, patients, batch):
        async with store.write(durable=False) as tx:
            for n in range(first, min(first + batch, patients)):
                body = person(n)
                body["meta"] = {"versionId": "1", "lastUpdated": LAST_UPDATED}
                await tx.write_version(
                    NewVersion("Patient", body["id"], 1, LAST_UPDATED, "POST", body, extract(body, registry))
                )
        if (first // batch) % 20 == 0:
            print(
                f"{first + batch:>9,} patients  {(first + batch) / (time.perf_counter() - started):,.0f}/s",
                flush=True,
            )
    await store.sync()
    print(f"loaded {patients:,} patients in {time.perf_counter() - started:,.0f} s", flush=True)


def probes(patients: int) -> dict[str, Callable[[random.Random], dict[str, Any]]]:
    """Probe shapes; each probe describes a loaded person, whose id it carries in `id` (not sent)."""

    def known(rng: random.Random) -> dict[str, Any]:
        return person(rng.randrange(patients))

    def name_birth(rng: random.Random) -> dict[str, Any]:
        p = known(rng)
        return {"resourceType": "Patient", "id": p["id"], "name": p["name"], "birthDate": p["birthDate"]}

    def demographics(rng: random.Random) -> dict[str, Any]:
        p = known(rng)
        p.pop("identifier")
        p["name"] = [{"text": " ".join(p["name"][0]["text"])}]  # 王 伟: spacing as another member writes it
        return p

    def name_phone(rng: random.Random) -> dict[str, Any]:
        p = known(rng)
        return {"resourceType": "Patient", "id": p["id"], "name": p["name"], "telecom": p["telecom"]}

    def resident(rng: random.Random) -> dict[str, Any]:
        while True:
            p = known(rng)
            ids = [i for i in p["identifier"] if i["system"] == cn_resident_id.SYSTEM]
            if ids:
                return {"resourceType": "Patient", "id": p["id"], "identifier": ids}

    return {
        "name + birthDate": name_birth,
        "demographics, no ID": demographics,
        "name + phone, no birth date": name_phone,
        "resident ID": resident,
    }


def parameters(probe: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": probe}]}


def quantiles(times: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(times, n=20)
    return statistics.median(times), cuts[18]


async def measure(store: SqliteStore, patients: int, rounds: int) -> None:
    registry = build_registry()
    service = FhirService(
        store=store,
        validate=lambda r: [],
        extract=lambda r: extract(r, registry),
        registry=registry,
        resource_types=resource_types(),
    )
    rng = random.Random(11)
    rules = MatchRules()
    results: dict[str, list[float]] = {}
    recall: dict[str, dict[str, int]] = {}

    async def reference() -> None:
        day = person(rng.randrange(patients))["birthDate"]
        await search_bundle(store, registry, "Patient", [("birthdate", day)], base_url=BASE, strict=True)

    shapes: dict[str, Callable[[], Any]] = {"reference: Patient?birthdate=<day>": reference}
    for label, make in probes(patients).items():

        async def run(make: Callable[[random.Random], dict[str, Any]] = make, label: str = label) -> None:
            probe = make(rng)
            expected = probe.pop("id")
            bundle = await patient_match(service, parameters(probe), rules, base_url=BASE)
            found = [e["resource"]["id"] for e in bundle.get("entry", [])]
            outcome = "first" if found[:1] == [expected] else "listed" if expected in found else "missed"
            recall.setdefault(f"$match {label}", {}).setdefault(outcome, 0)
            recall[f"$match {label}"][outcome] += 1

        shapes[f"$match {label}"] = run
    for run in shapes.values():  # warm caches once per shape
        for _ in range(20):
            await run()
    for _ in range(rounds):  # interleaved, so a slow spell of the machine hits every shape alike
        for label, run in shapes.items():
            started = time.perf_counter()
            await run()
            results.setdefault(label, []).append((time.perf_counter() - started) * 1000)
    ref_p95 = quantiles(results["reference: Patient?birthdate=<day>"])[1]
    print(f"{patients:,} patients, {rounds} rounds each")
    for label, times in results.items():
        p50, p95 = quantiles(times)
        print(f"{label:<40} p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  p95 / reference p95 {p95 / ref_p95:5.2f}")
    for label, outcomes in recall.items():
        print(f"{label:<40} the described person: {dict(sorted(outcomes.items()))}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, default=Path("/tmp/match-bench.db"))
    ap.add_argument("--patients", type=int, default=100_000, help="to load; with --no-load, as loaded")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--no-load", action="store_true", help="measure an existing database")
    args = ap.parse_args()
    if not args.no_load and args.db.exists():
        raise SystemExit(f"{args.db} exists; remove it first or pass --no-load")
    store = SqliteStore(args.db)
    await store.open()
    try:
        if not args.no_load:
            await load(store, args.patients)
        await measure(store, args.patients, args.rounds)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
