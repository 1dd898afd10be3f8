"""Every official R4 example through the validator: what the hub accepts, and why it refuses the rest.

The examples package holds the instance examples (Patient-example.json, ...) and copies of the core
definitions (StructureDefinitions, SearchParameters, ...). Each refusal below was checked by hand
against the R4 specification: the example itself breaks an R4 rule. A new refusal (a regression) or a
newly accepted one (a fixed rule) both fail the test, so this list stays the truth the lead quotes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.model.definitions import CORE_PACKAGE, JsonObject, iter_package
from profiles.report import PackageReport, validate_all
from profiles.validator import Validator

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7.fhir.r4.examples-4.0.1.tgz"

# (resourceType, id) → why the example is not valid R4.
GENUINELY_INVALID_INSTANCES = {
    ("Observation", "clinical-gender"): "performer references an Encounter; Observation.performer allows "
    "Practitioner | PractitionerRole | Organization | CareTeam | Patient | RelatedPerson",
    ("MedicationRequest", "medrx0301"): "dispenseRequest.performer references a Practitioner; R4 allows "
    "only Organization",
    (
        "DeviceMetric",
        "example",
    ): "parent references a DeviceDefinition; DeviceMetric.parent allows only Device",
    ("DeviceUseStatement", "example"): "reasonReference points at a Procedure; R4 allows Condition | "
    "Observation | DiagnosticReport | DocumentReference | Media",
    ("Questionnaire", "qs1"): "32 display items without linkId (Questionnaire.item.linkId is 1..1)",
    ("ImplementationGuide", "fhir"): "(two files) no name and no status (both 1..1), and a manifest "
    "reference whose id is longer than 64 characters",
}
GENUINELY_INVALID_DEFINITIONS = {
    **{
        ("SearchParameter", f"{kind}-extensions-{kind_cap}-{code}"): "SearchParameter.base (1..*) missing"
        for kind, kind_cap in (("codesystem", "CodeSystem"), ("valueset", "ValueSet"))
        for code in ("author", "effective", "end", "keyword", "workflow")
    },
    ("SearchParameter", "questionnaireresponse-extensions-QuestionnaireResponse-item-subject"): "id is 67 "
    "characters (ids are at most 64)",
}
MUST_ACCEPT = {
    "Patient",
    "ServiceRequest",
    "DiagnosticReport",
    "ImagingStudy",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Encounter",
    "Observation",
    "Task",
    "Endpoint",
    "Provenance",
}
INSTANCE_FLOOR = 721  # of 728
DEFINITION_FLOOR = 4567  # of 4578


@pytest.fixture(scope="module")
def reports(validator: Validator) -> tuple[list[JsonObject], PackageReport, PackageReport]:
    core = {(r["resourceType"], r.get("id")) for r in iter_package(CORE_PACKAGE)}
    everything = list(iter_package(EXAMPLES))
    instances = [r for r in everything if (r["resourceType"], r.get("id")) not in core]
    definitions = [r for r in everything if (r["resourceType"], r.get("id")) in core]
    instance_report = validate_all(validator, instances)
    definition_report = validate_all(validator, definitions)
    print("\nR4 instance examples:", *instance_report.lines(), sep="\n")
    print("\nR4 definitions in the examples package:", *definition_report.lines(), sep="\n")
    return instances, instance_report, definition_report


def test_instance_examples(reports: tuple[list[JsonObject], PackageReport, PackageReport]) -> None:
    instances, report, _ = reports
    assert report.total == len(instances) == 728
    refused = {(r.resource_type, r.id) for r in report.refusals}
    assert refused == set(GENUINELY_INVALID_INSTANCES), "\n".join(report.lines())
    assert report.accepted >= INSTANCE_FLOOR


def test_every_example_of_the_hub_types_is_accepted_unless_invalid(
    reports: tuple[list[JsonObject], PackageReport, PackageReport],
) -> None:
    instances, report, _ = reports
    present = {r["resourceType"] for r in instances} & MUST_ACCEPT
    assert present == MUST_ACCEPT  # the package really has examples of each
    for refusal in report.refusals:
        if refusal.resource_type in MUST_ACCEPT:
            assert (refusal.resource_type, refusal.id) in GENUINELY_INVALID_INSTANCES, refusal.describe()


def test_definitions_in_the_examples_package(
    reports: tuple[list[JsonObject], PackageReport, PackageReport],
) -> None:
    _, _, report = reports
    refused = {(r.resource_type, r.id) for r in report.refusals}
    assert refused == set(GENUINELY_INVALID_DEFINITIONS), "\n".join(report.lines())
    assert report.accepted >= DEFINITION_FLOOR
