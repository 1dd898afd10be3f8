"""Values and extraction: normalisation, ranges, every R4 expression compiles, typed entries per shape."""

from __future__ import annotations

import time
from typing import Any

from fhir_server.search.extract import add_nodes, extract
from fhir_server.search.index import IndexEntries
from fhir_server.search.registry import build_registry, param_id
from fhir_server.search.values import date_range, normalize_string, number_range
from tests.contract.search_support import official_examples, shared_registry


def test_normalize_folds_case_accents_and_width() -> None:
    assert normalize_string("Müller") == "muller"
    assert normalize_string("ZOË") == "zoe"
    assert normalize_string("ＡＢＣ１２３") == "abc123"
    assert normalize_string("张三丰") == "张三丰"


def test_date_ranges_follow_precision_and_zone() -> None:
    assert date_range("2024") == (1704067200000000, 1735689600000000)
    low, high = date_range("2024-02") or (0, 0)
    assert (high - low) == 29 * 86_400_000_000
    assert date_range("2024-01-01T08:00:00+08:00") == (1704067200000000, 1704067201000000)
    assert date_range("2024-01-01T00:00:00.5Z") == (1704067200500000, 1704067200600000)
    assert date_range("2024-13") is None and date_range("soon") is None


def test_number_ranges_use_significant_figures() -> None:
    assert number_range("100") == (100.0, 99.5, 100.5)
    assert number_range("1.50") == (1.5, 1.495, 1.505)
    assert number_range("x") is None


def test_all_r4_parameters_compile_with_few_fallbacks() -> None:
    registry = build_registry()
    assert sum(len(v) for v in registry.by_type.values()) > 2500
    types = sorted(registry.by_type)
    for rtype in types:
        registry.compiled(rtype)
    # only expressions outside the handled FHIRPath shapes fall back to fhirpathpy
    assert len(registry.fallbacks) <= 5, registry.fallbacks
    caps = {p.code: p for p in registry.params_for("Patient")}
    assert caps["birthdate"].type == "date" and caps["birthdate"].url.endswith("individual-birthdate")


def test_handwritten_extractors_agree_with_fhirpathpy() -> None:
    import fhirpathpy
    from fhirpathpy.models import models

    from fhir_server.search.registry import _HANDWRITTEN

    patients = [
        {"resourceType": "Patient"},
        {"resourceType": "Patient", "deceasedBoolean": False},
        {"resourceType": "Patient", "deceasedBoolean": True},
        {"resourceType": "Patient", "deceasedDateTime": "2026-11-30T08:00:00+08:00"},
    ]
    for expression, extractor in _HANDWRITTEN.items():
        for patient in patients:
            expected = fhirpathpy.evaluate(patient, expression, {}, models["r4"])
            assert [value for value, _, _ in extractor(patient)] == expected, (expression, patient)


def test_extract_typed_entries() -> None:
    registry = shared_registry()
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
            "text": "HR",
        },
        "subject": {"reference": "Patient/p1", "identifier": {"system": "urn:mrn", "value": "7"}},
        "effectivePeriod": {"start": "2024-01-01", "end": "2024-01-02"},
        "valueQuantity": {"value": 72, "system": "http://unitsofmeasure.org", "code": "/min"},
        "component": [{"code": {"coding": [{"code": "x"}]}, "valueQuantity": {"value": 5, "code": "mm"}}],
    }
    e = extract(obs, registry)
    pid = lambda code: param_id("Observation", code)  # noqa: E731
    assert (pid("code"), "http://loinc.org", "8867-4", "hr") in e.tokens
    assert (pid("subject"), "Patient", "p1", "") in e.references
    assert (pid("subject:identifier"), "urn:mrn", "7", "") in e.tokens
    assert (pid("date"), 1704067200000000, 1704240000000000) in e.dates
    assert (pid("value-quantity"), "http://unitsofmeasure.org", "/min", 72.0, 72.0) in e.quantities
    assert (pid("component-code-value-quantity"), "", "x", "|mm", 5.0, 5.0) in e.composites
    assert not e.warnings


def test_chinese_name_concatenation() -> None:
    e = extract(
        {"resourceType": "Patient", "name": [{"family": "欧阳", "given": ["娜娜"]}]}, shared_registry()
    )
    values = {row[1] for row in e.strings if row[0] == param_id("Patient", "name")}
    assert {"欧阳", "娜娜", "欧阳娜娜"} <= values


def test_extract_is_fast_on_real_examples() -> None:
    registry = shared_registry()
    examples = official_examples()
    for r in examples:  # compile every type first
        extract(r, registry)
    started = time.perf_counter()
    for r in examples:
        extract(r, registry)
    per_resource_ms = (time.perf_counter() - started) * 1000 / len(examples)
    assert per_resource_ms < 1.0, per_resource_ms  # ~0.15 ms measured; generous bound for slow CI


def test_skipping_parameters_by_their_first_keys_loses_no_entry() -> None:
    """`extract` skips a parameter when none of the top-level keys it reads first is present (composites:
    the key of their second component). Over every R4 example, the entries must be exactly those of
    evaluating every parameter."""
    registry = shared_registry()
    skipped = 0
    for resource in official_examples():
        rtype = resource["resourceType"]
        every = IndexEntries(rtype)
        for cp in registry.compiled(rtype):
            try:
                nodes = cp.extract(resource)
            except Exception as exc:  # noqa: BLE001 - as `extract` does
                every.warnings.append(f"{cp.param.code}: {exc}")
                continue
            if nodes:
                add_nodes(every, cp, nodes, rtype)
            elif cp.keys is not None and not any(key in resource for key in cp.keys):
                skipped += 1
        assert extract(resource, registry) == every, f"{rtype}/{resource['id']}"
    assert skipped > 10_000  # the skip is taken: most parameters of an example find nothing


def test_direct_element_reads_equal_the_general_path_steps() -> None:
    """`compile_root` reads a one-element expression straight from the resource; over every R4 example
    and every parameter of its type, the nodes equal those of the general step machinery."""
    from fhir_server.search.paths import Unsupported, compile_expression, compile_root

    registry = shared_registry()
    compiled: dict[str, list[tuple[str, Any, Any]]] = {}
    compared = 0
    for resource in official_examples():
        rtype = resource["resourceType"]
        if rtype not in compiled:
            compiled[rtype] = []
            for param in registry.by_type.get(rtype, {}).values():
                if not param.expression:
                    continue
                try:
                    compiled[rtype].append(
                        (
                            param.code,
                            compile_root(param.expression, rtype),
                            compile_expression(param.expression, rtype),
                        )
                    )
                except Unsupported:
                    continue
        for code, direct, general in compiled[rtype]:
            assert direct(resource) == general([(resource, rtype, rtype)]), (rtype, code)
            compared += 1
    assert compared > 20_000
