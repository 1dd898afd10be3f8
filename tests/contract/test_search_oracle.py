"""Oracle: the indexed search of every backend returns exactly what brute-force FHIRPath evaluation
(fhirpathpy over all stored resources + the reference matcher) returns, for hundreds of random queries
drawn from the data (official R4 examples and generated resources).

The seed is random per run and printed on failure; rerun with SEARCH_ORACLE_SEED=<seed> to reproduce.
"""

from __future__ import annotations

import os
import random

import pytest

from fhir_server.search.parse import parse_search
from fhir_server.storage.protocol import ResourceStore
from tests.contract.search_support import (
    ORACLE_TYPES,
    Oracle,
    derived_queries,
    generated_resources,
    load,
    official_examples,
    shared_registry,
)

QUERIES_PER_RUN = 300


async def _all_ids(store: ResourceStore, rtype: str, params: list[tuple[str, str]]) -> set[tuple[str, str]]:
    query = parse_search(rtype, [*params, ("_count", "1000")], shared_registry(), strict=True)
    page = await store.search(query)
    assert page.next_cursor is None
    return {(v.resource_type, v.id) for v in page.resources}


@pytest.mark.slow
async def test_indexed_search_equals_brute_force_fhirpath(store: ResourceStore) -> None:
    seed = int(os.environ.get("SEARCH_ORACLE_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    registry = shared_registry()
    data = [r for r in official_examples() if r["resourceType"] in ORACLE_TYPES]
    data += generated_resources(seed % 1000, patients=40)
    await load(store, data, registry)
    oracle = Oracle(data, registry)
    queries = derived_queries(data, registry, ORACLE_TYPES)
    assert len(queries) > 1000
    chosen = rng.sample(queries, QUERIES_PER_RUN)
    # AND of two parameters on the same type, too
    for _ in range(QUERIES_PER_RUN // 3):
        a, b = rng.sample(queries, 2)
        if a[0] == b[0]:
            chosen.append((a[0], a[1] + b[1]))
    mismatches = []
    matched_something = 0
    for rtype, params in chosen:
        expected = oracle.search(rtype, params)
        got = await _all_ids(store, rtype, params)
        matched_something += bool(expected)
        if got != expected:
            mismatches.append((rtype, params, sorted(got - expected)[:3], sorted(expected - got)[:3]))
    assert not mismatches, (
        f"seed={seed}: {len(mismatches)} of {len(chosen)} queries differ (extra, missing): {mismatches[:6]}"
    )
    assert matched_something > len(chosen) // 3, f"seed={seed}: too few queries matched anything"


@pytest.mark.slow
async def test_sorted_keyset_pages_follow_the_oracle(store: ResourceStore) -> None:
    """_sort with random keys and directions, read in pages of 7 through the cursors: the union is the
    oracle's set, nothing repeats, and the order agrees with the oracle's sort values."""
    seed = int(os.environ.get("SEARCH_ORACLE_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    registry = shared_registry()
    data = [r for r in official_examples() if r["resourceType"] in ("Patient", "Observation", "Encounter")]
    data += generated_resources(seed % 1000, patients=40)
    await load(store, data, registry)
    oracle = Oracle(data, registry)
    sortable = {
        "Patient": ["birthdate", "family", "gender", "_id", "identifier", "organization"],
        "Observation": ["date", "code", "value-quantity", "status", "subject", "_lastUpdated"],
        "Encounter": ["date", "status", "class", "subject"],
    }
    queries = [q for q in derived_queries(data, registry, sortable) if not q[1][0][0].startswith("_has")]
    for _ in range(40):
        rtype, params = rng.choice(queries)
        keys = rng.sample(sortable[rtype], rng.randint(1, 2))
        sort = ",".join(("-" if rng.random() < 0.5 else "") + k for k in keys)
        full = [*params, ("_sort", sort), ("_count", "7")]
        query = parse_search(rtype, full, registry, strict=True)
        seen: list[tuple[str, str]] = []
        page = await store.search(query)
        while True:
            seen += [(v.resource_type, v.id) for v in page.resources]
            if page.next_cursor is None:
                break
            page = await store.search(
                parse_search(rtype, [*full, ("_cursor", page.next_cursor)], registry, strict=True)
            )
        context = f"seed={seed} {rtype}?{params}&_sort={sort}"
        assert len(seen) == len(set(seen)), f"{context}: duplicates"
        assert set(seen) == oracle.search(rtype, params), f"{context}: different set"
        order = [oracle.sort_key(k, query.sort) for k in seen]
        for a, b in zip(order, order[1:], strict=False):
            assert _not_after(a, b, query.sort), f"{context}: {a} before {b}"


def _not_after(a: tuple, b: tuple, sort: tuple) -> bool:
    for x, y, key in zip(a, b, sort, strict=True):
        if x == y:
            continue
        return (x > y) if key.descending else (x < y)
    return True
