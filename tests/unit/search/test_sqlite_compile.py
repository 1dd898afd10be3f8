# ruff: noqa: E501 - golden SQL is kept verbatim
"""Golden SQL for representative plans: the compiler is pure, so its output is pinned here.

When a change to the SQL is intended, regenerate the expectations and review the diff of this file.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.search.parse import parse_search
from fhir_server.storage.sqlite.compile import compile_count, compile_page
from tests.contract.search_support import shared_registry

# (type, query, driver filter index, keyset cursor, expected SQL, expected parameters)
GOLDEN = [
    (
        "Patient",
        "identifier=urn:mrn|7",
        0,
        None,
        "SELECT r.rid, r.type, r.id FROM resource r WHERE r.type = ? AND r.deleted = 0 AND r.rid IN (SELECT "
        "x1.rid FROM idx_token x1 WHERE x1.param = ? AND (x1.code = ? AND x1.system = ?)) ORDER BY r.rid ASC "
        "LIMIT ?",
        ["Patient", 587468934, "7", "urn:mrn", 21],
    ),
    (
        "Patient",
        "name=zh&birthdate=ge2024",
        0,
        None,
        "SELECT r.rid, r.type, r.id FROM resource r WHERE r.type = ? AND r.deleted = 0 AND r.rid IN (SELECT "
        "x1.rid FROM idx_string x1 WHERE x1.param = ? AND (x1.value >= ? AND x1.value < ?)) AND EXISTS (SELECT 1 "
        "FROM idx_date x2 INDEXED BY idx_date_rid WHERE x2.rid = r.rid AND x2.param = ? AND ((x2.high > ? AND "
        "(x2.high > ? OR (x2.low >= ? AND x2.high <= ?))))) ORDER BY r.rid ASC LIMIT ?",
        [
            "Patient",
            187769161,
            "zh",
            "zh\U0010ffff",
            55005760,
            1704067200000000,
            1735689600000000,
            1704067200000000,
            1735689600000000,
            21,
        ],
    ),
    (
        "Observation",
        "subject:Patient.identifier=urn:mrn|7",
        0,
        None,
        "SELECT r.rid, r.type, r.id FROM resource r WHERE r.type = ? AND r.deleted = 0 AND r.rid IN (SELECT "
        "x1.rid FROM resource t2 CROSS JOIN idx_reference x1 WHERE t2.type = ? AND t2.deleted = 0 AND t2.rid IN "
        "(SELECT x3.rid FROM idx_token x3 WHERE x3.param = ? AND (x3.code = ? AND x3.system = ?)) AND x1.param = "
        "? AND x1.target_id = t2.id AND x1.target_type = t2.type AND x1.url = '') ORDER BY r.rid ASC LIMIT ?",
        ["Observation", "Patient", 587468934, "7", "urn:mrn", 526566324, 21],
    ),
    (
        "Patient",
        "_has:Observation:subject:code=8867-4",
        0,
        None,
        "SELECT r.rid, r.type, r.id FROM resource r WHERE r.type = ? AND r.deleted = 0 AND r.rid IN (SELECT "
        "t3.rid FROM resource s1 CROSS JOIN idx_reference x2 CROSS JOIN resource t3 WHERE s1.rid IN (SELECT "
        "x4.rid FROM idx_token x4 WHERE x4.param = ? AND (x4.code = ?)) AND x2.rid = s1.rid AND x2.param = ? AND "
        "s1.type = ? AND s1.deleted = 0 AND x2.url = '' AND t3.type = x2.target_type AND t3.id = x2.target_id) "
        "ORDER BY r.rid ASC LIMIT ?",
        ["Patient", 1187855407, "8867-4", 526566324, "Observation", 21],
    ),
    (
        "Patient",
        "gender=male&_sort=-birthdate",
        None,
        ([0], 5),
        "SELECT rid, type, id, k0 FROM (SELECT r.rid, r.type, r.id, coalesce((SELECT max(s.high) FROM idx_date s "
        "INDEXED BY idx_date_rid WHERE s.rid = r.rid AND s.param = ?), ?) AS k0 FROM resource r WHERE r.type = ? "
        "AND r.deleted = 0 AND EXISTS (SELECT 1 FROM idx_token x1 INDEXED BY idx_token_rid WHERE x1.rid = r.rid "
        "AND x1.param = ? AND (x1.code = ?))) WHERE (k0 < ? OR (k0 = ? AND rid > ?)) ORDER BY k0 DESC, rid ASC "
        "LIMIT ?",
        [55005760, -1e308, "Patient", 1265778943, "male", 0, 0, 5, 21],
    ),
]


@pytest.mark.parametrize(("rtype", "query", "driver", "after", "sql", "params"), GOLDEN)
def test_golden_sql(
    rtype: str, query: str, driver: int | None, after: Any, sql: str, params: list[Any]
) -> None:
    plan = parse_search(
        rtype, [tuple(p.split("=", 1)) for p in query.split("&")], shared_registry(), strict=True
    )
    compiled = compile_page(
        plan, driver=driver, after=after, backwards=False, limit=21, in_driver_order=False
    )
    assert compiled.text == sql
    assert compiled.params == params
    assert compiled.text.count("?") == len(compiled.params)


def test_a_driven_page_walks_the_drivers_rids_in_order_and_stops_at_the_page_size() -> None:
    plan = parse_search(
        "Patient", [("identifier", "urn:mrn|7"), ("gender", "male")], shared_registry(), strict=True
    )
    compiled = compile_page(plan, driver=0, after=([], 9), backwards=False, limit=21)
    assert compiled.text == (
        "SELECT r.rid, r.type, r.id FROM (SELECT DISTINCT rid FROM (SELECT x1.rid FROM idx_token x1 WHERE "
        "x1.param = ? AND (x1.code = ? AND x1.system = ?)) WHERE rid > ? ORDER BY rid ASC LIMIT -1) d "
        "CROSS JOIN resource r ON r.rid = d.rid WHERE r.deleted = 0 AND r.type = ? AND EXISTS (SELECT 1 FROM "
        "idx_token x2 INDEXED BY idx_token_rid WHERE x2.rid = r.rid AND x2.param = ? AND (x2.code = ?)) LIMIT ?"
    )
    assert compiled.params[1:5] == ["7", "urn:mrn", 9, "Patient"] and compiled.params[-2:] == ["male", 21]
    assert compiled.text.count("?") == len(compiled.params)


def test_backwards_page_reverses_order_and_keyset() -> None:
    plan = parse_search("Patient", [("gender", "male")], shared_registry(), strict=True)
    compiled = compile_page(plan, driver=None, after=([], 9), backwards=True, limit=5)
    assert compiled.text.endswith("WHERE rid < ? ORDER BY rid DESC LIMIT ?") and compiled.params[-2:] == [
        9,
        5,
    ]


def test_count_uses_the_same_filters() -> None:
    plan = parse_search("Patient", [("gender", "male")], shared_registry(), strict=True)
    assert compile_count(plan, None).text.startswith(
        "SELECT count(*) FROM resource r WHERE r.type = ? AND r.deleted = 0 AND EXISTS"
    )
