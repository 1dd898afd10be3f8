"""ValueSet expansion and code validation over the R4 core package, plus consortium code sets on top."""

from __future__ import annotations

import pytest

from terminology.valuesets import PackageTerminology, build_core_terminology

GENDER = "http://hl7.org/fhir/ValueSet/administrative-gender"
GENDER_SYSTEM = "http://hl7.org/fhir/administrative-gender"


@pytest.fixture(scope="module")
def core() -> PackageTerminology:
    return build_core_terminology()


def test_whole_code_system_include(core: PackageTerminology) -> None:
    assert core.expand(GENDER) == {(GENDER_SYSTEM, c) for c in ("male", "female", "other", "unknown")}
    assert core.validate_code(GENDER, GENDER_SYSTEM, "female") is True
    assert core.validate_code(GENDER, None, "female") is True
    assert core.validate_code(GENDER, None, "bogus") is False
    assert core.validate_code(GENDER, "http://example.org/other-system", "female") is False


def test_version_suffix_is_ignored(core: PackageTerminology) -> None:
    assert core.validate_code(GENDER + "|4.0.1", None, "male") is True


def test_enumerated_concepts(core: PackageTerminology) -> None:
    # Observation.status: a subset of the observation-status codes listed in compose.include.concept
    url = "http://hl7.org/fhir/ValueSet/observation-status"
    assert core.validate_code(url, None, "final") is True
    assert core.validate_code(url, None, "complete") is False


def test_is_a_filter_on_a_hierarchy(core: PackageTerminology) -> None:
    # v3 ActEncounterCode is defined with an is-a filter over the v3 ActCode hierarchy
    url = "http://terminology.hl7.org/ValueSet/v3-ActEncounterCode"
    system = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    assert core.validate_code(url, system, "AMB") is True
    assert core.validate_code(url, system, "IMP") is True
    assert core.validate_code(url, system, "_ActAccountCode") is False


def test_unexpandable_value_sets_answer_none(core: PackageTerminology) -> None:
    assert core.validate_code("http://hl7.org/fhir/ValueSet/mimetypes", None, "text/plain") is None
    assert core.validate_code("http://hl7.org/fhir/ValueSet/ucum-units", None, "mg") is None
    assert core.validate_code("http://example.org/ValueSet/never-heard-of", None, "x") is None


def test_consortium_code_sets_layer_on_top() -> None:
    service = PackageTerminology()
    ethnicity_cs = "http://yilian.example.cn/CodeSystem/gbt-3304-ethnicity"
    service.add(
        {
            "resourceType": "CodeSystem",
            "url": ethnicity_cs,
            "content": "complete",
            "concept": [{"code": "01", "display": "汉族"}, {"code": "02", "display": "蒙古族"}],
        }
    )
    service.add(
        {
            "resourceType": "ValueSet",
            "url": "http://yilian.example.cn/ValueSet/ethnicity",
            "compose": {
                "include": [{"system": ethnicity_cs}],
                "exclude": [{"system": ethnicity_cs, "concept": [{"code": "02"}]}],
            },
        }
    )
    assert service.validate_code("http://yilian.example.cn/ValueSet/ethnicity", ethnicity_cs, "01") is True
    assert service.validate_code("http://yilian.example.cn/ValueSet/ethnicity", ethnicity_cs, "02") is False
    # a fragment CodeSystem cannot prove a code absent: the ValueSet becomes unknown, not wrong
    service.add({"resourceType": "CodeSystem", "url": ethnicity_cs, "content": "fragment", "concept": []})
    assert service.validate_code("http://yilian.example.cn/ValueSet/ethnicity", ethnicity_cs, "01") is None


def test_value_set_cycles_do_not_hang() -> None:
    service = PackageTerminology()
    service.add(
        {"resourceType": "ValueSet", "url": "urn:a", "compose": {"include": [{"valueSet": ["urn:b"]}]}}
    )
    service.add(
        {"resourceType": "ValueSet", "url": "urn:b", "compose": {"include": [{"valueSet": ["urn:a"]}]}}
    )
    assert service.expand("urn:a") is None
