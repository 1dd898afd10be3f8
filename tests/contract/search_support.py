"""Data and oracles for the search contract tests.

- `official_examples()`: the R4 examples package (real data), `generated_resources(seed)`: random
  Synthea-like patients/observations/encounters with Chinese and accented names, zoned and partial dates,
  Periods, Ranges, codes with and without systems.
- `load()`: writes resources through the storage write path with their index entries.
- `derived_queries()`: search parameters built from the values actually present in the data (so most
  queries match something), per parameter type and modifier.
- `brute_force()`: the oracle: evaluates each SearchParameter's FHIRPath with fhirpathpy over every stored
  resource, converts the values with the same rules, and matches with `search/match.py`.
"""

from __future__ import annotations

import json
import random
import re
import tarfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from fhir_server.search.ast import SortKey
from fhir_server.search.extract import add_nodes, extract
from fhir_server.search.index import IndexEntries
from fhir_server.search.match import Candidate, matches, sort_value
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import CompiledParam, SearchRegistry, build_registry
from fhir_server.search.values import date_range
from fhir_server.storage.protocol import NewVersion, ResourceStore

EXAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7.fhir.r4.examples-4.0.1.tgz"
LAST_UPDATED = "2026-01-01T00:00:00.000Z"
ORACLE_TYPES = (
    "Patient",
    "Observation",
    "Encounter",
    "Condition",
    "Practitioner",
    "Organization",
    "DiagnosticReport",
    "ServiceRequest",
    "Procedure",
    "MedicationRequest",
    "AllergyIntolerance",
    "Immunization",
)


@cache
def shared_registry() -> SearchRegistry:
    return build_registry()


@cache
def official_examples() -> tuple[dict[str, Any], ...]:
    out = []
    seen = set()
    with tarfile.open(EXAMPLES, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".json"):
                continue
            fh = tar.extractfile(member)
            assert fh is not None
            data = json.loads(fh.read())
            if not isinstance(data, dict) or "resourceType" not in data or "id" not in data:
                continue
            key = (data["resourceType"], data["id"])
            if key in seen:
                continue
            seen.add(key)
            out.append(data)
    return tuple(out)


FAMILIES = ["张", "王", "李", "Müller", "García", "O'Brien", "Nguyễn", "欧阳", "Smith"]
GIVENS = ["三丰", "小明", "伟", "José", "Zoë", "Anna", "Łukasz", "John"]
LOINC = [
    ("8867-4", "Heart rate", "/min"),
    ("2339-0", "Glucose", "mg/dL"),
    ("8480-6", "Systolic BP", "mm[Hg]"),
]


def _date(rng: random.Random) -> str:
    y, m, d = rng.randint(1950, 2025), rng.randint(1, 12), rng.randint(1, 28)
    form = rng.randint(0, 5)
    if form == 0:
        return f"{y}"
    if form == 1:
        return f"{y}-{m:02d}"
    if form == 2:
        return f"{y}-{m:02d}-{d:02d}"
    tz = rng.choice(["Z", "+08:00", "-05:00"])
    return f"{y}-{m:02d}-{d:02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00{tz}"


def generated_resources(seed: int, patients: int = 30) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    out.append(
        {
            "resourceType": "Organization",
            "id": "org-1",
            "name": "县人民医院",
            "identifier": [{"system": "urn:org", "value": "o1"}],
        }
    )
    out.append(
        {
            "resourceType": "Organization",
            "id": "org-2",
            "name": "Township Centre",
            "partOf": {"reference": "Organization/org-1"},
        }
    )
    for p in range(patients):
        pid = f"gp{seed}-{p}"
        family = rng.choice(FAMILIES)
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [
                {"system": rng.choice(["urn:mrn", "urn:cn-id"]), "value": f"{rng.randint(1, 50)}"}
            ],
            "name": [{"family": family, "given": [rng.choice(GIVENS)]}],
            "gender": rng.choice(["male", "female", "other"]),
            "managingOrganization": {"reference": f"Organization/org-{rng.randint(1, 2)}"},
        }
        if rng.random() < 0.8:
            patient["birthDate"] = _date(rng)[:10]
        if rng.random() < 0.3:
            patient["deceasedBoolean"] = rng.random() < 0.5
        if rng.random() < 0.5:
            patient["telecom"] = [{"system": "phone", "value": f"138{rng.randint(0, 99):04d}"}]
        out.append(patient)
        enc_id = f"ge{seed}-{p}"
        encounter: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": enc_id,
            "status": rng.choice(["finished", "in-progress"]),
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"},
            "serviceProvider": {"reference": "Organization/org-2"},
        }
        start = _date(rng)
        if rng.random() < 0.7:
            encounter["period"] = {"start": start}
            if rng.random() < 0.6:
                encounter["period"]["end"] = _date(rng)
        out.append(encounter)
        for o in range(rng.randint(0, 4)):
            code, display, unit = rng.choice(LOINC)
            obs: dict[str, Any] = {
                "resourceType": "Observation",
                "id": f"go{seed}-{p}-{o}",
                "status": rng.choice(["final", "preliminary"]),
                "code": {
                    "coding": [
                        {
                            "system": rng.choice(["http://loinc.org", ""]) or None,
                            "code": code,
                            "display": display,
                        }
                    ]
                },
                "subject": {"reference": f"Patient/{pid}"},
                "encounter": {"reference": f"Encounter/{enc_id}"},
            }
            obs["code"]["coding"] = [{k: v for k, v in c.items() if v} for c in obs["code"]["coding"]]
            kind = rng.randint(0, 3)
            if kind == 0:
                obs["valueQuantity"] = {
                    "value": round(rng.uniform(1, 200), rng.randint(0, 2)),
                    "system": "http://unitsofmeasure.org",
                    "code": unit,
                }
            elif kind == 1:
                obs["valueString"] = rng.choice(["阳性", "négatif", "Normal"])
            elif kind == 2:
                obs["valueCodeableConcept"] = {
                    "coding": [{"system": "http://snomed.info/sct", "code": str(rng.randint(1, 5))}],
                    "text": "Finding",
                }
            if rng.random() < 0.5:
                obs["effectivePeriod"] = {"start": _date(rng)}
            else:
                obs["effectiveDateTime"] = _date(rng)
            out.append(obs)
    return out


async def load(store: ResourceStore, resources: Iterable[dict[str, Any]], registry: SearchRegistry) -> None:
    async with store.write() as tx:
        for resource in resources:
            body = dict(resource)
            body["meta"] = {**(body.get("meta") or {}), "versionId": "1", "lastUpdated": LAST_UPDATED}
            await tx.write_version(
                NewVersion(
                    body["resourceType"], body["id"], 1, LAST_UPDATED, "POST", body, extract(body, registry)
                )
            )


def derived_queries(
    resources: Iterable[dict[str, Any]], registry: SearchRegistry, types: Iterable[str]
) -> list[tuple[str, list[tuple[str, str]]]]:
    """Queries for every parameter type and modifier, built from values present in the data."""
    wanted = set(types)
    out: list[tuple[str, list[tuple[str, str]]]] = []
    codes: dict[int, tuple[str, str]] = {}
    for rtype in wanted:
        for cp in registry.compiled(rtype):
            codes[cp.pid] = (rtype, cp.param.code)
    for resource in resources:
        rtype = resource["resourceType"]
        if rtype not in wanted:
            continue
        e = extract(resource, registry)
        q = out.append
        q((rtype, [("_id", resource["id"])]))
        for pid, system, code, text in e.tokens[:6]:
            if pid not in codes or not code or "," in code or "|" in code or "\\" in code:
                continue
            name = codes[pid][1]
            q((rtype, [(name, code)]))
            q((rtype, [(name, f"{system}|{code}")]))
            q((rtype, [(name + ":not", code)]))
            q((rtype, [(name + ":missing", "true")]))
            if text:
                q((rtype, [(name + ":text", text.split()[0][:4])]))
        for pid, norm, raw in e.strings[:4]:
            if pid in codes and len(norm) > 2 and not any(c in raw for c in ",|$\\"):
                name = codes[pid][1]
                q((rtype, [(name, norm[:2])]))
                q((rtype, [(name + ":exact", raw)]))
                q((rtype, [(name + ":contains", norm[1:3])]))
        for pid, ttype, tid, _url in e.references[:4]:
            if pid in codes and ttype and tid:
                name = codes[pid][1]
                q((rtype, [(name, f"{ttype}/{tid}")]))
                q((rtype, [(name, tid)]))
                q((rtype, [(f"{name}:{ttype}", tid)]))
                if ttype in wanted:
                    q((rtype, [(f"{name}:{ttype}._id", tid)]))
                    q((ttype, [(f"_has:{rtype}:{name}:_id", resource["id"])]))
        for pid, low, _high in e.dates[:3]:
            if pid in codes and -(2**61) < low < 2**61:
                name = codes[pid][1]
                from datetime import UTC, datetime, timedelta

                day = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=low)).date().isoformat()
                for prefix in ("", "gt", "lt", "ge", "le", "sa", "eb", "ne", "ap"):
                    q((rtype, [(name, prefix + day[:4])]))
                q((rtype, [(name, day)]))
        for pid, system, code, low, _high in e.quantities[:2]:
            if pid in codes and abs(low) < 1e12:
                name = codes[pid][1]
                for prefix in ("", "gt", "lt", "ge", "le", "ap"):
                    q((rtype, [(name, f"{prefix}{low:g}")]))
                q((rtype, [(name, f"{low:g}|{system}|{code}")]))
        for pid, uri in e.uris[:2]:
            if pid in codes and uri and not any(c in uri for c in ",|$\\"):
                q((rtype, [(codes[pid][1], uri)]))
                q((rtype, [(codes[pid][1] + ":below", uri[: max(1, len(uri) // 2)])]))
        for pid, _system, code, key, low, _high in e.composites[:2]:
            if pid in codes and code and "|" not in code:
                name = codes[pid][1]
                param = registry.get(rtype, name)
                second_def = registry.by_url.get(param.components[1].definition) if param else None
                numeric = second_def is not None and second_def.type in ("quantity", "number", "date")
                if second_def is not None and second_def.type == "date":
                    continue
                second = f"{low:g}" if numeric else key.split("|")[-1]
                q((rtype, [(name, f"{code}${second}")]))
    return out


def oracle_expression(expression: str, rtype: str) -> str:
    """Rewrites so fhirpathpy evaluates what R4 means: it lacks resolve() (becomes a test on the reference
    text), its `as` insists on a singleton (R4 uses it on collections; R5 fixed this with ofType), and it
    does not match `Resource.` against a concrete type."""
    expr = re.sub(r"where\(resolve\(\) is (\w+)\)", r"where(reference.startsWith('\1/'))", expression)
    expr = re.sub(r"\(([A-Za-z.]+(?:\.where\([^)]*\))?) as (\w+)\)", r"\1.ofType(\2)", expr)
    return re.sub(r"\b(Resource|DomainResource)\.", rtype + ".", expr)


def _oracle_extractor(expression: str) -> Any:
    import fhirpathpy
    from fhirpathpy.models import models

    expr = expression
    fn = fhirpathpy.compile(expr, models["r4"])

    def run(resource: dict[str, Any]) -> list[Any]:
        return [(v, None, None) for v in fn(resource)]

    return run


class Oracle:
    """Brute-force search: FHIRPath over every resource, then the reference matcher."""

    def __init__(self, resources: Iterable[dict[str, Any]], registry: SearchRegistry) -> None:
        self.registry = registry
        self.resources = {(r["resourceType"], r["id"]): r for r in resources}
        self._entries: dict[tuple[str, str], IndexEntries] = {}
        self._extractors: dict[str, list[CompiledParam]] = {}

    def _compiled(self, rtype: str) -> list[CompiledParam]:
        if rtype not in self._extractors:
            out = []
            for cp in self.registry.compiled(rtype):
                if cp.param.type == "composite":
                    # fhirpathpy cannot type a component node (value[x] of an untyped dict): composites
                    # are extracted by our paths and checked here for SQL vs. matcher only
                    out.append(cp)
                    continue
                try:
                    fn = _oracle_extractor(oracle_expression(cp.param.expression or "", rtype))
                except Exception:  # noqa: BLE001 - expression fhirpathpy cannot parse: keep ours
                    fn = cp.extract
                out.append(CompiledParam(cp.param, cp.pid, fn, cp.components))
            self._extractors[rtype] = out
        return self._extractors[rtype]

    def candidate(self, key: tuple[str, str]) -> Candidate | None:
        resource = self.resources.get(key)
        if resource is None:
            return None
        if key not in self._entries:
            entries = IndexEntries(key[0])
            for cp in self._compiled(key[0]):
                try:
                    nodes = cp.extract(resource)
                except Exception:  # noqa: BLE001 - fhirpathpy evaluation error: no values
                    nodes = []
                if nodes:
                    add_nodes(entries, cp, nodes, key[0])
            self._entries[key] = entries
        lu = date_range(LAST_UPDATED)
        assert lu is not None
        return Candidate(key[0], key[1], lu[0], self._entries[key])

    def sort_key(self, key: tuple[str, str], sort: tuple[SortKey, ...]) -> tuple[Any, ...]:
        cand = self.candidate(key)
        assert cand is not None
        return tuple(sort_value(k, cand) for k in sort)

    def search(self, rtype: str, params: list[tuple[str, str]]) -> set[tuple[str, str]]:
        query = parse_search(rtype, params, self.registry, strict=True)

        def resolve(t: str, i: str) -> Candidate | None:
            return self.candidate((t, i))

        def of_type(t: str) -> list[Candidate]:
            return [c for k in self.resources if k[0] == t and (c := self.candidate(k)) is not None]

        out = set()
        for key in self.resources:
            if key[0] != rtype:
                continue
            cand = self.candidate(key)
            if cand is not None and matches(query.filters, cand, resolve, of_type):
                out.add(key)
        return out
