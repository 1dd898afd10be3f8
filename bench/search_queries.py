"""Search latency on a database made by bench/search_load.py: p50/p95 per query shape, and the plans.

Each query runs through the full search pipeline below HTTP (parse → plan → compile → SQLite →
searchset Bundle with includes), on one process, against the file database.

    .venv/bin/python bench/search_queries.py --db /tmp/search-bench.db [--explain] [--member M00]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fhir_server.interactions.member_view import MemberView  # noqa: E402
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


async def _timed(call: Awaitable[dict[str, Any]]) -> tuple[float, int]:
    t0 = time.perf_counter()
    bundle = await call
    return (time.perf_counter() - t0) * 1000, len(bundle.get("entry", []))


async def run(db: Path, rounds: int, explain: bool, member: str | None) -> None:
    registry = build_registry()
    store = SqliteStore(db)
    await store.open()
    conn = store._read  # noqa: SLF001 - bench only: EXPLAIN QUERY PLAN needs the connection
    (patients,) = conn.execute("SELECT count(*) FROM resource WHERE type = 'Patient'").fetchone()
    (total,) = conn.execute("SELECT count(*) FROM resource").fetchone()
    print(f"{total:,} resources, {patients:,} patients; {rounds} runs per query shape\n")
    views: list[MemberView | None] = [None]
    if member:
        views.append(MemberView(member))
        print(
            f"each query runs as an admin (all) and as member {member} (its care relationships, filter "
            "inside the query), alternating; ratio = member / admin\n"
        )
    rng = random.Random(1)
    head = f"{'kind':<10} {'query':<64} {'p50 ms':>8} {'p95 ms':>8} {'entries':>8}"
    if member:
        head += f" {'member p50':>10} {'p95':>8} {'entries':>8} {'x p50':>6} {'x p95':>6}"
    print(head)
    for kind, rtype, make in shapes(patients):
        times: list[list[float]] = [[] for _ in views]
        entries = [0 for _ in views]
        for i in range(rounds + 3):
            params = make(rng)
            for v, view in enumerate(views):
                dt, n = await _timed(
                    search_bundle(store, registry, rtype, params, base_url=BASE, strict=True, view=view)
                )
                if i >= 3:  # warm-up
                    times[v].append(dt)
                    entries[v] += n
        label = f"{rtype}?" + "&".join(f"{k}={v}" for k, v in params)
        print(f"{kind:<10} {label[:64]:<64} " + _figures(times, entries, rounds))
        if explain:
            query = parse_search(rtype, params, registry, strict=True)
            driver = choose_driver(conn, query)
            sql = compile_page(query, driver=driver, after=None, backwards=False, limit=query.count + 1)
            for row in conn.execute("EXPLAIN QUERY PLAN " + sql.text, sql.params):
                print(f"{'':<12}plan: {'  ' * (row[1] != 0)}{row[3]}")
    times = [[] for _ in views]
    entries = [0 for _ in views]
    runs = max(10, rounds // 5)
    for i in range(runs + 2):
        for v, view in enumerate(views):
            dt, n = await _timed(patient_everything(store, registry, "p0", [], base_url=BASE, view=view))
            if i >= 2:  # warm-up
                times[v].append(dt)
                entries[v] += n
    print(
        f"{'everything':<10} {'Patient/p0/$everything (heavy patient)':<64} " + _figures(times, entries, runs)
    )
    await store.close()


def _figures(times: list[list[float]], entries: list[int], rounds: int) -> str:
    p50, p95 = pct(times[0], 0.5), pct(times[0], 0.95)
    out = f"{p50:>8.2f} {p95:>8.2f} {entries[0] / rounds:>8.1f}"
    if len(times) > 1:
        m50, m95 = pct(times[1], 0.5), pct(times[1], 0.95)
        out += f" {m50:>10.2f} {m95:>8.2f} {entries[1] / rounds:>8.1f} {m50 / p50:>6.2f} {m95 / p95:>6.2f}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, default=Path("/tmp/search-bench.db"))
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--explain", action="store_true")
    ap.add_argument(
        "--member", help="also run each query as this member (e.g. M00), same run, and print ratios"
    )
    args = ap.parse_args()
    asyncio.run(run(args.db, args.rounds, args.explain, args.member))


if __name__ == "__main__":
    main()
