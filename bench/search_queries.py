"""Search latency on a database made by bench/search_load.py: p50/p95 per query shape, and the plans.

Each query runs through the full search pipeline below HTTP (parse → plan → compile → SQLite →
searchset Bundle with includes), on one process, against the file database.

    .venv/bin/python bench/search_queries.py --db /tmp/search-bench.db [--explain]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fhir_server.interactions.operations.everything import patient_everything  # noqa: E402
from fhir_server.interactions.search import search_bundle  # noqa: E402
from fhir_server.search.parse import parse_search  # noqa: E402
from fhir_server.search.registry import build_registry  # noqa: E402
from fhir_server.storage.sqlite.compile import compile_page  # noqa: E402
from fhir_server.storage.sqlite.search import choose_driver  # noqa: E402
from fhir_server.storage.sqlite.store import SqliteStore  # noqa: E402

BASE = "http://bench/fhir"
MRN = "urn:oid:2.16.156.10011.1.1"


def shapes(patients: int) -> list[tuple[str, str, Callable[[random.Random], list[tuple[str, str]]]]]:
    def pid(rng: random.Random) -> int:
        return rng.randint(1, patients - 1)

    return [
        ("single", "Patient", lambda r: [("identifier", f"{MRN}|MRN{pid(r):08d}")]),
        ("single", "Patient", lambda r: [("_id", f"p{pid(r)}")]),
        ("single", "Patient", lambda r: [("family", r.choice("王李张刘陈"))]),
        ("single", "Patient", lambda r: [("name", "王伟")]),
        ("single", "Patient", lambda r: [("gender", r.choice(["male", "female"]))]),
        (
            "single",
            "Patient",
            lambda r: [("birthdate", f"{r.randint(1930, 2020)}-0{r.randint(1, 9)}-1{r.randint(0, 9)}")],
        ),
        ("single", "Observation", lambda r: [("code", "http://loinc.org|8867-4")]),
        ("single", "Observation", lambda r: [("subject", f"Patient/p{pid(r)}")]),
        ("single", "Observation", lambda r: [("date", f"ge{r.randint(2015, 2025)}-0{r.randint(1, 9)}-01")]),
        ("single", "Observation", lambda r: [("value-quantity", f"gt{r.randint(60, 200)}")]),
        ("single", "Encounter", lambda r: [("date", f"{r.randint(2015, 2025)}-0{r.randint(1, 9)}")]),
        ("single", "Condition", lambda r: [("code", "http://snomed.info/sct|44054006")]),
        ("single", "ServiceRequest", lambda r: [("requester", f"Practitioner/pr{r.randint(0, 199)}")]),
        ("two", "Observation", lambda r: [("code", "8867-4"), ("subject", f"Patient/p{pid(r)}")]),
        ("two", "Observation", lambda r: [("code", "8867-4"), ("date", "ge2024-01-01")]),
        ("sorted", "Observation", lambda r: [("subject", f"Patient/p{pid(r)}"), ("_sort", "-date")]),
        ("sorted", "Observation", lambda r: [("_sort", r.choice(["-date", "date"]))]),
        ("sorted", "Observation", lambda r: [("code", "8867-4"), ("_sort", "-value-quantity")]),
        ("sorted", "Patient", lambda r: [("gender", "female"), ("_sort", "family")]),
        ("chain", "Observation", lambda r: [("subject.identifier", f"{MRN}|MRN{pid(r):08d}")]),
        (
            "chain2",
            "DiagnosticReport",
            lambda r: [("encounter.subject:Patient.identifier", f"{MRN}|MRN{pid(r):08d}")],
        ),
        ("chain2", "Observation", lambda r: [("encounter.patient.identifier", f"{MRN}|MRN{pid(r):08d}")]),
        ("has", "Patient", lambda r: [("_has:Observation:subject:_id", f"o{pid(r)}-1")]),
        (
            "include",
            "Observation",
            lambda r: [("subject", f"Patient/p{pid(r)}"), ("_include", "Observation:subject")],
        ),
        (
            "include",
            "DiagnosticReport",
            lambda r: [("code", "24323-8"), ("_include", "DiagnosticReport:result")],
        ),
        (
            "revinclude",
            "Patient",
            lambda r: [("identifier", f"{MRN}|MRN{pid(r):08d}"), ("_revinclude", "Encounter:subject")],
        ),
    ]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))]


async def run(db: Path, rounds: int, explain: bool) -> None:
    registry = build_registry()
    store = SqliteStore(db)
    await store.open()
    conn = store._read  # noqa: SLF001 - bench only: EXPLAIN QUERY PLAN needs the connection
    (patients,) = conn.execute("SELECT count(*) FROM resource WHERE type = 'Patient'").fetchone()
    (total,) = conn.execute("SELECT count(*) FROM resource").fetchone()
    print(f"{total:,} resources, {patients:,} patients; {rounds} runs per query shape\n")
    rng = random.Random(1)
    print(f"{'kind':<10} {'query':<72} {'p50 ms':>8} {'p95 ms':>8} {'entries':>8}")
    for kind, rtype, make in shapes(patients):
        times: list[float] = []
        entries = 0
        for i in range(rounds + 3):
            params = make(rng)
            t0 = time.perf_counter()
            bundle: dict[str, Any] = await search_bundle(
                store, registry, rtype, params, base_url=BASE, strict=True
            )
            dt = (time.perf_counter() - t0) * 1000
            if i >= 3:  # warm-up
                times.append(dt)
                entries += len(bundle.get("entry", []))
        label = f"{rtype}?" + "&".join(f"{k}={v}" for k, v in params)
        p50, p95 = pct(times, 0.5), pct(times, 0.95)
        print(f"{kind:<10} {label[:72]:<72} {p50:>8.2f} {p95:>8.2f} {entries / rounds:>8.1f}")
        if explain:
            query = parse_search(rtype, params, registry, strict=True)
            driver = choose_driver(conn, query)
            sql = compile_page(query, driver=driver, after=None, backwards=False, limit=query.count + 1)
            for row in conn.execute("EXPLAIN QUERY PLAN " + sql.text, sql.params):
                print(f"{'':<12}plan: {'  ' * (row[1] != 0)}{row[3]}")
    times = []
    for i in range(max(10, rounds // 5) + 2):
        t0 = time.perf_counter()
        bundle = await patient_everything(store, registry, "p0", [], base_url=BASE)
        if i >= 2:  # warm-up
            times.append((time.perf_counter() - t0) * 1000)
    print(
        f"{'everything':<10} {'Patient/p0/$everything (heavy patient)':<72} {pct(times, 0.5):>8.2f} "
        f"{pct(times, 0.95):>8.2f} {len(bundle['entry']):>8}"
    )
    await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, default=Path("/tmp/search-bench.db"))
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--explain", action="store_true")
    args = ap.parse_args()
    asyncio.run(run(args.db, args.rounds, args.explain))


if __name__ == "__main__":
    main()
