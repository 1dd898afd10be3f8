"""Primitive checks remember values they found valid (`primitives._string_check`): answers must not
depend on what was checked before, a non-string must never reach the set, and the set stays bounded."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.model.definitions import core_structure_definitions
from profiles.primitives import KNOWN_LENGTH, KNOWN_LIMIT, compile_primitives

CASES: list[tuple[str, Any, bool]] = [
    ("date", "2024-02-28", True),
    ("date", "2024-02-30", False),
    ("dateTime", "2024-03-15T08:30:00+08:00", True),
    ("dateTime", "2024-03-15T8:30:00+08:00", False),
    ("code", "final", True),
    ("code", "final ", False),
    ("code", "", False),
    ("id", "a" * 64, True),
    ("id", "a" * 65, False),
    ("string", "淡黄色，清亮", True),
    ("uri", "http://loinc.org", True),
    ("uri", "http://loinc .org", False),
    ("code", {"not": "a string"}, False),
    ("code", ["final"], False),
    ("code", 7, False),
]


@pytest.fixture(scope="module")
def checks() -> dict[str, Any]:
    return {name: p.check for name, p in compile_primitives(core_structure_definitions()).items()}


def test_answers_do_not_depend_on_what_was_checked_before(checks: dict[str, Any]) -> None:
    fresh = compile_primitives(core_structure_definitions())
    first = [fresh[name].check(value) is None for name, value, _ in CASES]
    assert first == [ok for _, _, ok in CASES]
    for name, value, ok in CASES * 3 + CASES[::-1]:  # again and again, both orders, one shared check
        assert (checks[name](value) is None) == ok, (name, value)


def test_what_is_remembered_is_bounded(checks: dict[str, Any]) -> None:
    check = checks["string"]
    cells = check.__closure__  # the remembered values live in the closure
    known = next(c.cell_contents for c in cells if isinstance(c.cell_contents, set))
    for n in range(KNOWN_LIMIT * 2 + 5):
        assert check(f"value {n}") is None
        assert len(known) <= KNOWN_LIMIT
    assert check("x" * (KNOWN_LENGTH + 1)) is None and "x" * (KNOWN_LENGTH + 1) not in known
