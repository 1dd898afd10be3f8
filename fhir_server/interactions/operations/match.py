"""Patient/$match (R4 OperationDefinition Patient-match): which persons the hub knows a Patient to be.

Input: a Parameters resource with `resource` (a Patient), optional `onlyCertainMatches` (boolean) and
`count` (integer). Output: a searchset Bundle, best first, one entry per person: the person's master
when the hub has linked their records, else the one record; each with `search.score` and the
`match-grade` extension (certain | probable | possible). Scoring is `matching.py`'s rule.

Candidates come from indexed searches only (blocking), never a scan: the probe's 居民身份证 numbers,
its phone numbers, its birth date, and, for a probe with neither phone nor birth date, each of its
names (string prefix of the whole name). Each block is capped at `BLOCK_LIMIT` records; a birth date
shared by more than that (1,000,000 patients spread over 90 years share a day about 30 at a time)
leaves the rest to the other blocks, and so does a common name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fhir_server.errors import BadRequest, FhirError
from fhir_server.interactions.matching import Match, MatchRules, phones, resident_ids, score
from fhir_server.interactions.member_view import MemberView
from fhir_server.interactions.service import FhirService
from fhir_server.model.person import is_master, listed, referred
from fhir_server.search.parse import parse_search
from fhir_server.storage.protocol import StoredVersion
from terminology import chinese_names, cn_resident_id

JsonObject = dict[str, Any]
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
BLOCK_LIMIT = 200
DEFAULT_COUNT = 10
MAX_COUNT = 100
_ORDER = {"certain": 0, "probable": 1, "possible": 2}


def parse_parameters(body: JsonObject) -> tuple[JsonObject, bool, int]:
    """(probe Patient, onlyCertainMatches, count) from the operation's Parameters."""
    if body.get("resourceType") != "Parameters":
        raise BadRequest("Patient/$match takes a Parameters resource", expression="Parameters")
    probe: JsonObject | None = None
    only_certain, count = False, DEFAULT_COUNT
    for i, param in enumerate(body.get("parameter") or []):
        if not isinstance(param, dict):
            raise BadRequest("a parameter must be an object", expression=f"Parameters.parameter[{i}]")
        name = param.get("name")
        if name == "resource":
            probe = param.get("resource")
            if not isinstance(probe, dict) or probe.get("resourceType") != "Patient":
                raise BadRequest(
                    "the 'resource' parameter must hold a Patient",
                    expression=f"Parameters.parameter[{i}].resource",
                )
        elif name == "onlyCertainMatches":
            value = param.get("valueBoolean")
            if not isinstance(value, bool):
                raise BadRequest(
                    "onlyCertainMatches takes valueBoolean",
                    expression=f"Parameters.parameter[{i}].valueBoolean",
                )
            only_certain = value
        elif name == "count":
            value = param.get("valueInteger")
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadRequest(
                    "count takes a positive valueInteger",
                    expression=f"Parameters.parameter[{i}].valueInteger",
                )
            count = min(value, MAX_COUNT)
    if probe is None:
        raise BadRequest(
            "Patient/$match needs a 'resource' parameter (a Patient)", expression="Parameters.parameter"
        )
    return probe, only_certain, count


def _blocks(probe: JsonObject, *, certain: bool = True) -> list[list[tuple[str, str]]]:
    """The indexed searches whose union holds every candidate worth scoring (`certain=False`: not the
    resident-ID block, which finds only certain matches)."""
    blocks = []
    numbers = sorted(resident_ids(probe))
    if numbers and certain:
        blocks.append([("identifier", ",".join(f"{cn_resident_id.SYSTEM}|{n}" for n in numbers))])
    raw = {
        t["value"]
        for t in listed(probe, "telecom")
        if isinstance(t, dict) and isinstance(t.get("value"), str)
    }
    numbers_as_sent = sorted(raw | phones(probe))
    if numbers_as_sent:
        blocks.append([("phone", ",".join(v.replace(",", "\\,") for v in numbers_as_sent))])
    birth = probe.get("birthDate")
    if isinstance(birth, str) and len(birth) >= 10:
        blocks.append([("birthdate", birth[:10])])
    elif not numbers_as_sent:
        # Only without a birth date and a phone: with either, a record that differs in it reaches
        # `possible` only through the other, whose own block finds it. A common name (王伟) is
        # thousands of records, read 200 at a time here (and AND-ed with a year or a gender, no index
        # narrows it: 0.6 s at 1M Patients), so it is the last resort.
        for name in chinese_names.names_of(probe):
            blocks.append([("name", chinese_names.fold(name))])
    return blocks


async def _candidates(service: FhirService, probe: JsonObject, *, certain: bool) -> dict[str, StoredVersion]:
    queries = []
    for params in _blocks(probe, certain=certain):
        try:
            queries.append(
                parse_search(
                    "Patient", [*params, ("_count", str(BLOCK_LIMIT))], service.registry, strict=True
                )
            )
        except FhirError:
            continue  # a value the parameter cannot take (an odd date): that block finds nothing
    found: dict[str, StoredVersion] = {}
    for page in await asyncio.gather(*(service.store.search(q) for q in queries)):
        for version in page.resources:
            if version.body is not None:
                found[version.id] = version
    return found


def person_of(version: StoredVersion) -> str:
    """The id that stands for the person: the master a record refers to, or the record itself."""
    body = version.body or {}
    if is_master(body):
        return version.id
    return next(iter(referred(body)), version.id)


async def rank_persons(
    service: FhirService,
    probe: JsonObject,
    rules: MatchRules,
    *,
    skip: Callable[[StoredVersion], bool] | None = None,
    certain: bool = True,
) -> list[tuple[str, Match]]:
    """The persons `probe` may be, best first: (the person's id, its best record's match). `skip`: a
    candidate record left out (the review leaves out the probe's own person and merged-away records);
    `certain=False`: only probable and possible matches are wanted (one search fewer)."""
    best: dict[str, Match] = {}
    refused: set[str] = set()
    for version in (await _candidates(service, probe, certain=certain)).values():
        assert version.body is not None
        if skip is not None and skip(version):
            continue
        person = person_of(version)
        match = score(probe, version.body, rules)
        if match.grade == "certainly-not":
            refused.add(person)  # another record of this person carries a different resident ID
        elif match.grade != "none" and (person not in best or match.score > best[person].score):
            best[person] = match
    return sorted(
        ((p, m) for p, m in best.items() if p not in refused or m.grade == "certain"),
        key=lambda pm: (_ORDER[pm[1].grade], -pm[1].score, pm[0]),
    )


async def patient_match(
    service: FhirService,
    body: JsonObject,
    rules: MatchRules,
    *,
    base_url: str,
    view: MemberView | None = None,
) -> JsonObject:
    """`view`: a member's; persons it does not see are not candidates (as if absent)."""
    probe, only_certain, count = parse_parameters(body)
    ranked = await rank_persons(service, probe, rules)
    if only_certain:
        ranked = [(p, m) for p, m in ranked if m.grade == "certain"]
    stored = await service.store.current_many([("Patient", p) for p, _ in ranked])
    if view is not None:
        stored = await view.visible(service.store, service.registry, stored)
    people = {v.id: v for v in stored}
    ranked = [(p, m) for p, m in ranked if p in people][:count]
    entries = []
    for person, match in ranked:
        found = people.get(person)
        if found is None or found.body is None:
            continue
        entries.append(
            {
                "fullUrl": f"{base_url}/Patient/{person}",
                "resource": found.body,
                "search": {
                    "extension": [{"url": MATCH_GRADE, "valueCode": match.grade}],
                    "mode": "match",
                    "score": match.score,
                },
            }
        )
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
