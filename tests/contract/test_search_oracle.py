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
