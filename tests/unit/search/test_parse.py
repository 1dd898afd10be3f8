"""Parsing search parameters into the plan: values, modifiers, chains, _has, controls, strictness."""

from __future__ import annotations

import pytest

from fhir_server.errors import InvalidSearch
from fhir_server.search.ast import (
    Chain,
    CompositeValue,
    Criterion,
    Has,
    Include,
    MissingValue,
    RangeValue,
    ReferenceValue,
    StringValue,
    TokenValue,
)
from fhir_server.search.format import query_string
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import param_id
from tests.contract.search_support import shared_registry


def parse(rtype: str | None, query: str, strict: bool = True):
    params = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    return parse_search(rtype, params, shared_registry(), strict=strict)


def only(rtype: str, query: str) -> Criterion:
    f = parse(rtype, query).filters
    assert len(f) == 1 and isinstance(f[0], Criterion)
    return f[0]


def test_token_forms() -> None:
    assert only("Patient", "identifier=a|b").values == (TokenValue("a", "b"),)
    assert only("Patient", "identifier=|b").values == (TokenValue("", "b"),)
    assert only("Patient", "identifier=a|").values == (TokenValue("a", None),)
    assert only("Patient", "identifier=b").values == (TokenValue(None, "b"),)
    assert only("Patient", r"identifier=a\|b").values == (TokenValue(None, "a|b"),)
    c = only("Patient", "gender=male,female")
    assert c.values == (TokenValue(None, "male"), TokenValue(None, "female"))
    assert c.param.pids == (param_id("Patient", "gender"),)
    assert only("Patient", "gender:not=male").modifier == "not"
    assert only("Observation", "code:text=Héart").values == (TokenValue(None, None, "heart"),)
    t = only("Patient", "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|123")
    assert t.param.code == "identifier:of-type" and t.values == (
        TokenValue("http://terminology.hl7.org/CodeSystem/v2-0203", "MR|123"),
    )
    assert only("Patient", "active:missing=true").values == (MissingValue(True),)


def test_string_reference_and_ranges() -> None:
    assert only("Patient", "name=ZOË").values == (StringValue("zoe"),)
    assert only("Patient", "name:exact=ZOË").values == (StringValue("ZOË"),)
    assert only("Observation", "subject=Patient/1").values == (ReferenceValue("Patient", "1"),)
    assert only("Observation", "subject:Patient=1").values == (ReferenceValue("Patient", "1"),)
    assert only("Observation", "subject=http://x/fhir/Patient/1").values == (
        ReferenceValue("Patient", "1", "http://x/fhir/Patient/1"),
    )
    ident = only("Observation", "subject:identifier=urn:mrn|7")
    assert ident.param.code == "subject:identifier" and ident.values == (TokenValue("urn:mrn", "7"),)
    d = only("Patient", "birthdate=ge2024-02")
    assert isinstance(d.values[0], RangeValue) and d.values[0].prefix == "ge"
    q = only("Observation", "value-quantity=lt5.40|http://example.org/units|mmol/L").values[0]
    assert isinstance(q, RangeValue)
    assert (q.value, q.low, q.high, q.system, q.code) == (
        5.4,
        5.395,
        5.405,
        "http://example.org/units",
        "mmol/L",
    )
    # UCUM units that are pure scalings are searched in canonical units (indexed under `code:canonical`)
    c = only("Observation", "value-quantity=5.40|http://unitsofmeasure.org|mmol/L")
    assert c.param.code == "value-quantity:canonical"
    (v,) = c.values
    assert isinstance(v, RangeValue) and v.code == "mol/L" and abs(v.low - 5.395e-3) < 1e-15
    comp = only("Observation", "code-value-quantity=8867-4$gt60").values[0]
    assert (
        isinstance(comp, CompositeValue)
        and comp.first == TokenValue(None, "8867-4")
        and comp.second_range is not None
    )


def test_chains_and_has() -> None:
    (f,) = parse("Observation", "subject:Patient.organization.name=x").filters
    assert isinstance(f, Chain) and f.target_types == ("Patient",)
    assert isinstance(f.inner, Chain) and f.inner.target_types == ("Organization",)
    (g,) = parse("Observation", "subject.name=x").filters  # targets narrowed to types with a `name`
    assert isinstance(g, Chain) and set(g.target_types) <= {
        "Patient",
        "Practitioner",
        "RelatedPerson",
        "Group",
        "Device",
        "Location",
        "Organization",
        "PractitionerRole",
        "Medication",
        "Substance",
    }
    (h,) = parse("Patient", "_has:Observation:subject:_has:AuditEvent:entity:agent=x").filters
    assert isinstance(h, Has) and h.source_type == "Observation" and isinstance(h.inner, Has)


def test_controls_and_self_link() -> None:
    q = parse(
        "Observation",
        "code=x&_sort=-date,_id&_count=5&_include=Observation:subject&_revinclude:iterate=Provenance:target&_total=accurate&_summary=data&_elements=code",
    )
    assert [(k.param.code, k.descending) for k in q.sort] == [("date", True), ("_id", False)]
    assert q.count == 5 and q.total == "accurate" and q.summary == "data" and q.elements == ("code",)
    assert q.includes == (
        Include("Observation", "subject"),
        Include("Provenance", "target", None, True, True),
    )
    assert query_string(q).startswith("code=x&_sort=-date,_id&_count=5")


def test_strict_rejects_and_lenient_drops() -> None:
    for bad in (
        "nonsense=1",
        "birthdate=2024-99",
        "gender:exact=x",
        "_count=-1",
        "subject:Patient.nonsense=1",
        "_sort=nonsense",
        "_include=Observation:code",
        "_has:Nope:subject:code=1",
        "value-quantity=abc",
    ):
        with pytest.raises(InvalidSearch):
            parse("Observation" if "subject" in bad or "value" in bad or "include" in bad else "Patient", bad)
    for unsupported in ("_text=x", "_content=x", "_query=x"):
        with pytest.raises(InvalidSearch, match="not supported"):
            parse("Patient", unsupported)
    with pytest.raises(InvalidSearch, match="not supported"):
        parse("Location", "near=1|2|3|km")
    q = parse("Patient", "nonsense=1&gender=male", strict=False)
    assert q.ignored == ("nonsense",) and query_string(q) == "gender=male"


def test_system_search_types() -> None:
    q = parse(None, "_type=Patient,Practitioner&name=x")
    assert q.types == ("Patient", "Practitioner")
    (c,) = q.filters
    assert isinstance(c, Criterion) and c.param.pids == (
        param_id("Patient", "name"),
        param_id("Practitioner", "name"),
    )
    with pytest.raises(InvalidSearch):
        parse(None, "_type=Nope")


def test_memoised_criteria_are_forgotten_when_parameters_change() -> None:
    """Parsed conditional criteria are kept per registry state: adding or removing a SearchParameter
    (a custom one, posted by an integrator) must make the next conditional write parse again."""
    from fhir_server.search.registry import build_registry

    registry = build_registry()
    derived: list[object] = []

    def derive() -> object:
        derived.append(object())
        return derived[-1]

    first = registry.memo(("conditional", "Patient", "identifier=x|1"), derive)
    assert registry.memo(("conditional", "Patient", "identifier=x|1"), derive) is first
    custom = {
        "resourceType": "SearchParameter",
        "url": "http://yilian.example/SearchParameter/nickname",
        "code": "nickname",
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.name.where(use='nickname')",
    }
    registry.add(custom)
    second = registry.memo(("conditional", "Patient", "identifier=x|1"), derive)
    registry.remove(custom["url"])
    third = registry.memo(("conditional", "Patient", "identifier=x|1"), derive)
    assert len({id(first), id(second), id(third)}) == 3 and len(derived) == 3
