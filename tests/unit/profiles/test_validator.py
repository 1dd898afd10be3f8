"""The validator's findings on small hand-made resources: each rule, with the exact element path."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.errors import Unprocessable
from fhir_server.model.definitions import resource_types
from profiles.validator import Validator, is_error

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [{"system": "urn:oid:2.16.156.10011.1.2", "value": "110101199003074514"}],
    "name": [{"family": "张", "given": ["三", "丰"]}],
    "gender": "male",
    "birthDate": "1990-03-07",
    "managingOrganization": {"reference": "Organization/county-hospital"},
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-05-01T08:30:00+08:00",
    "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
}


def errors(validator: Validator, resource: Any) -> list[tuple[str, str]]:
    """(code, first expression) of each error, in order."""
    return [
        (i.code, i.expression[0] if i.expression else "") for i in validator.validate(resource) if is_error(i)
    ]


def patched(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_valid_resources_have_no_errors(validator: Validator) -> None:
    assert errors(validator, PATIENT) == []
    assert errors(validator, OBSERVATION) == []


def test_bogus_gender_is_rejected_at_patient_gender(validator: Validator) -> None:
    issues = validator.validate(patched(PATIENT, gender="bogus"))
    assert [(i.severity, i.code, i.expression) for i in issues] == [
        ("error", "code-invalid", ("Patient.gender",))
    ]
    assert "administrative-gender" in issues[0].diagnostics


def test_unknown_elements_are_errors_at_every_depth(validator: Validator) -> None:
    resource = patched(PATIENT, nickname="Sanfeng")
    resource["name"][0]["suffixx"] = ["Jr"]
    resource["identifier"][0]["assigner"] = {"reference": "Organization/1", "bogus": True}
    assert errors(validator, resource) == [
        ("structure", "Patient.identifier[0].assigner.bogus"),
        ("structure", "Patient.name[0].suffixx"),
        ("structure", "Patient.nickname"),
    ]


def test_json_types(validator: Validator) -> None:
    assert errors(validator, patched(PATIENT, active="true")) == [("value", "Patient.active")]
    resource = patched(PATIENT)
    resource["name"][0]["given"][1] = 7
    assert errors(validator, resource) == [("value", "Patient.name[0].given[1]")]
    assert errors(validator, patched(PATIENT, name={"family": "张"})) == [("structure", "Patient.name")]
    assert errors(validator, patched(PATIENT, gender=["male"])) == [("structure", "Patient.gender")]
    assert errors(validator, patched(PATIENT, multipleBirthInteger=2.5)) == [
        ("value", "Patient.multipleBirthInteger")
    ]
    quantity = patched(OBSERVATION, valueQuantity={"value": "72"})
    assert errors(validator, quantity) == [("value", "Observation.valueQuantity.value")]


def test_empty_and_null_values_are_rejected(validator: Validator) -> None:
    assert errors(validator, patched(PATIENT, telecom=[])) == [("structure", "Patient.telecom")]
    assert errors(validator, patched(PATIENT, maritalStatus={})) == [("structure", "Patient.maritalStatus")]
    assert errors(validator, patched(PATIENT, birthDate="")) == [("value", "Patient.birthDate")]
    resource = patched(PATIENT)
    resource["active"] = None
    assert errors(validator, resource) == [("structure", "Patient.active")]


def test_missing_required_elements(validator: Validator) -> None:
    assert errors(validator, patched(OBSERVATION, status=None, code=None)) == [
        ("required", "Observation.status"),
        ("required", "Observation.code"),
    ]
    link = {"other": {"reference": "Patient/p2"}}
    assert errors(validator, patched(PATIENT, link=[link])) == [("required", "Patient.link[0].type")]


def test_maximum_cardinality(validator: Validator) -> None:
    extension = {
        "url": "http://example.org/x",
        "valueString": "a",
        "extension": [{"url": "y", "valueCode": "b"}],
    }
    assert errors(validator, patched(PATIENT, extension=[extension])) == [
        ("invariant", "Patient.extension[0]")
    ]


@pytest.mark.parametrize("bad_id", ["a b", "x" * 65, "", "día", 12])
def test_bad_ids(validator: Validator, bad_id: Any) -> None:
    assert errors(validator, patched(PATIENT, id=bad_id)) == [("value", "Patient.id")]


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/p1",
        "Patient/p1/_history/3",
        "Patient?identifier=urn:oid:2.16.156.10011.1.2|110101199003074514",
        "urn:uuid:5b3bd5c8-7e39-4bb0-a6c9-1e1b5f4a2b11",
        "urn:oid:1.2.156.112604",
        "http://fhir.example.cn/fhir/Patient/p1",
    ],
)
def test_good_references(validator: Validator, reference: str) -> None:
    assert errors(validator, patched(OBSERVATION, subject={"reference": reference})) == []


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/",
        "Patient/has space",
        "patient/p1",
        "Alien/p1",
        "urn:uuid:not-a-uuid",
        "urn:oid:1.02",
        "Medication/m1",  # not a permitted target of Observation.subject
    ],
)
def test_bad_references(validator: Validator, reference: str) -> None:
    assert errors(validator, patched(OBSERVATION, subject={"reference": reference})) == [
        ("value", "Observation.subject.reference")
    ]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2024", True),
        ("2024-05", True),
        ("2024-05-01T08:30:00+08:00", True),
        ("2024-05-01T08:30:00.123Z", True),
        ("2024-05-01T08:30:00", False),  # a time needs a zone
        ("2024-05-01T08:30+08:00", False),  # seconds are required
        ("2024-02-30", False),  # no such day
        ("2024-13-01", False),
        ("2024-05-01 08:30:00+08:00", False),
    ],
)
def test_datetime_format(validator: Validator, value: str, ok: bool) -> None:
    expected = [] if ok else [("value", "Observation.effectiveDateTime")]
    assert errors(validator, patched(OBSERVATION, effectiveDateTime=value)) == expected


def test_code_whitespace_and_instant(validator: Validator) -> None:
    assert errors(validator, patched(OBSERVATION, status="final ")) == [("value", "Observation.status")]
    assert errors(validator, patched(OBSERVATION, issued="2024-05-01")) == [("value", "Observation.issued")]
    assert errors(validator, patched(OBSERVATION, issued="2024-05-01T08:30:00.5+08:00")) == []


def test_choice_types(validator: Validator) -> None:
    assert errors(validator, patched(OBSERVATION, valueQuantity=None, valueString="72 bpm")) == []
    assert errors(validator, patched(OBSERVATION, valueBanana="72")) == [
        ("structure", "Observation.valueBanana")
    ]
    both = patched(OBSERVATION, valueString="72 bpm")
    assert errors(validator, both) == [("structure", "Observation.valueString")]
    # a choice required by the resource (MedicationRequest.medication[x], 1..1)
    request = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
    }
    assert errors(validator, request) == [("required", "MedicationRequest.medication[x]")]
    request["medicationCodeableConcept"] = {"text": "阿莫西林"}
    assert errors(validator, request) == []


def test_primitive_extensions(validator: Validator) -> None:
    extension = [
        {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}
    ]
    assert errors(validator, patched(PATIENT, birthDate=None, _birthDate={"extension": extension})) == []
    given = patched(PATIENT)
    given["name"][0]["given"] = ["三", None]
    given["name"][0]["_given"] = [None, {"extension": extension}]
    assert errors(validator, given) == []
    given["name"][0]["_given"] = [None]  # not aligned with given
    assert errors(validator, given) == [
        ("structure", "Patient.name[0].given[1]"),
        ("structure", "Patient.name[0]._given"),
    ]


def test_contained_resources(validator: Validator) -> None:
    organization = {"resourceType": "Organization", "id": "org1", "name": "乡镇卫生院"}
    resource = patched(PATIENT, contained=[organization], managingOrganization={"reference": "#org1"})
    assert errors(validator, resource) == []
    resource["contained"][0]["active"] = "yes"
    assert errors(validator, resource) == [("value", "Patient.contained[0].active")]
    dangling = patched(PATIENT, managingOrganization={"reference": "#nowhere"})
    assert errors(validator, dangling) == [("invariant", "Patient.managingOrganization.reference")]
    unreferenced = patched(PATIENT, contained=[{**organization, "active": True}])
    assert errors(validator, unreferenced) == [("invariant", "Patient.contained[0]")]


def test_bundle_entries_are_validated_recursively(validator: Validator) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5b3bd5c8-7e39-4bb0-a6c9-1e1b5f4a2b11",
                "resource": patched(PATIENT, id=None, gender="bogus"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": patched(
                    OBSERVATION, subject={"reference": "urn:uuid:5b3bd5c8-7e39-4bb0-a6c9-1e1b5f4a2b11"}
                ),
                "request": {"method": "POST", "url": "Observation"},
            },
            {"resource": {"resourceType": "Nonsense"}, "request": {"method": "POST", "url": "Nonsense"}},
        ],
    }
    assert errors(validator, bundle) == [
        ("code-invalid", "Bundle.entry[0].resource.gender"),
        ("structure", "Bundle.entry[2].resource"),
    ]


def test_required_binding_on_coding_and_codeable_concept(validator: Validator) -> None:
    narrative = {"status": "made-up", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}
    assert errors(validator, patched(PATIENT, text=narrative)) == [("code-invalid", "Patient.text.status")]
    # Coding with a required binding: Subscription.channel.type is code; use Attachment-free example:
    signature_type = {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1"}
    provenance = {
        "resourceType": "Provenance",
        "target": [{"reference": "Patient/p1"}],
        "recorded": "2024-05-01T08:30:00+08:00",
        "agent": [{"who": {"reference": "Practitioner/d1"}}],
        "signature": [
            {
                "type": [signature_type],
                "when": "2024-05-01T08:30:00+08:00",
                "who": {"reference": "Practitioner/d1"},
            }
        ],
    }
    assert errors(validator, provenance) == []


def test_expected_type_and_non_objects(validator: Validator) -> None:
    assert errors(validator, PATIENT) == []
    assert validator.validate(PATIENT, "Observation")[0].code == "invalid"
    assert errors(validator, ["not", "a", "resource"]) == [("structure", "Resource")]
    assert errors(validator, {"resourceType": "Alien"}) == [("structure", "Alien")]


def test_ensure_valid_raises_unprocessable(validator: Validator) -> None:
    with pytest.raises(Unprocessable) as caught:
        validator.ensure_valid(patched(PATIENT, gender="bogus"))
    assert caught.value.status == 422
    assert "Patient.gender" in caught.value.message
    assert validator.ensure_valid(PATIENT) == []


def test_every_resource_type_is_known_and_checked_for_cardinality(validator: Validator) -> None:
    assert validator.resource_types == resource_types()
    for resource_type in sorted(resource_types()):
        found = validator.validate({"resourceType": resource_type, "id": "x", "unknownThing": 1})
        codes = {issue.code for issue in found}
        assert codes <= {"structure", "required"}, (resource_type, found)
        assert ("structure", f"{resource_type}.unknownThing") in [(i.code, i.expression[0]) for i in found]


def test_core_extension_definitions_are_enforced(validator: Validator) -> None:
    absent = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
    wrong_type = patched(
        PATIENT, birthDate=None, _birthDate={"extension": [{"url": absent, "valueString": "?"}]}
    )
    assert errors(validator, wrong_type) == [
        ("structure", "Patient._birthDate.extension[0].valueString"),
        ("required", "Patient._birthDate.extension[0].value[x]"),
    ]
    # patient-nationality is a complex extension: sub-extensions only, no value[x]
    nationality = {"url": "http://hl7.org/fhir/StructureDefinition/patient-nationality", "valueCode": "CN"}
    assert errors(validator, patched(PATIENT, extension=[nationality])) == [
        ("structure", "Patient.extension[0].valueCode")
    ]
    # extensions the hub has no definition for are checked only as Extension
    local = {"url": "http://yilian.example.cn/fhir/StructureDefinition/hukou", "valueString": "农业"}
    assert errors(validator, patched(PATIENT, extension=[local])) == []


def test_simple_quantity_has_no_comparator(validator: Validator) -> None:
    low = {"value": 60, "comparator": "<", "unit": "/min"}
    observation = patched(OBSERVATION, referenceRange=[{"low": low}])
    assert errors(validator, observation) == [("structure", "Observation.referenceRange[0].low.comparator")]
    with_comparator = patched(OBSERVATION, valueQuantity={"value": 5, "comparator": "<"})
    assert errors(validator, with_comparator) == []  # Observation.value[x] is a full Quantity


def test_absurd_nesting_is_refused_not_crashed(validator: Validator) -> None:
    item: dict[str, Any] = {"linkId": "leaf", "type": "display"}
    for depth in range(5000):
        item = {"linkId": str(depth), "type": "group", "item": [item]}
    questionnaire = {"resourceType": "Questionnaire", "status": "draft", "item": [item]}
    assert errors(validator, questionnaire) == [("too-costly", "Questionnaire")]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["id", "text", "value", "system", "code", "extension", "url", "_given", "x"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(
        ["name", "telecom", "gender", "birthDate", "contact", "extension", "_birthDate", "link"]
    ),
    value=json_values,
)
def test_arbitrary_json_never_crashes_and_bad_shapes_are_errors(
    validator: Validator, field: str, value: Any
) -> None:
    found = validator.validate({"resourceType": "Patient", field: value})
    assert all(issue.expression and issue.expression[0].startswith("Patient") for issue in found)
    if value is None or value == [] or value == {} or value == "":
        assert any(is_error(issue) for issue in found)
