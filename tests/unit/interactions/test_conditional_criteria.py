"""Conditional criteria of one identifier take a shortcut; it must mean what parsing them whole means."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import parse_qsl

import pytest

from fhir_server.interactions.write import _criteria_query, _parsed_criteria
from fhir_server.search.registry import build_registry

SERVICE = SimpleNamespace(registry=build_registry())


@pytest.mark.parametrize(
    ("resource_type", "criteria"),
    [
        ("Patient", "identifier=urn%3Ayilian%3Amember%3AFYXRMYY%3Apatient-id|MZ0001234"),
        ("Patient", "?identifier=urn:oid:2.16.156.10011.1.3|33018319580130357X"),
        ("ServiceRequest", "identifier=urn:yilian:member:FYXWSY:placer-order|PO+0001"),
        ("Observation", "identifier=|no-system"),
        ("Encounter", "identifier=just-a-code"),
    ],
)
def test_the_identifier_shortcut_equals_a_full_parse(resource_type: str, criteria: str) -> None:
    fast = _criteria_query(SERVICE, resource_type, criteria)  # type: ignore[arg-type]
    full = _parsed_criteria(SERVICE, resource_type, parse_qsl(criteria.lstrip("?")))  # type: ignore[arg-type]
    assert (fast.types, fast.filters, fast.count) == (full.types, full.filters, full.count)
    assert fast.filters != _criteria_query(SERVICE, resource_type, "identifier=other|value").filters  # type: ignore[arg-type]
