"""Building a FHIR transaction Bundle from one message: entries, deterministic fullUrls, Provenance.

Shared by every translator so each message type only says *what* it writes. Idempotency is built in:
- resources are written by conditional update/create on business identifiers, so re-applying a message
  never duplicates a resource;
- the Provenance has an id derived from (sending facility, MSH-10), so "was this message applied?" is
  one read (`provenance_id`), used by journal recovery to apply a message exactly once;
- fullUrls are uuid5 of the conditional URL, so the same Organization in two messages has the same
  fullUrl and several messages' Bundles can be merged into one transaction (`coalesce.py`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from adapters.base import AdapterError
from adapters.hl7v2.parse import Message, Segment
from adapters.identity import member_slug, organization_identifier_system
from fhir_server.model.sparse_update import request_extensions

JsonObject = dict[str, Any]

_NS = uuid.UUID("6f1c3f0e-8a43-4c1e-9e4b-2f6f2a9b7c11")


class TranslationError(AdapterError):
    """The message cannot be mapped: `location` names SEG-n, `code` is an HL7 table 0357 condition."""

    def __init__(self, reason: str, location: str = "", code: str = "207") -> None:
        super().__init__(f"{location}: {reason}" if location else reason)
        self.reason = reason
        self.location = location
        self.code = code


@dataclass(frozen=True)
class Context:
    """Everything a translator needs besides the message: passed in, so translators stay pure."""

    received_at: dt.datetime
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    member_levels: Mapping[str, int] = field(default_factory=dict)


def provenance_id(facility: str, control_id: str) -> str:
    """The id of the Provenance a message writes: the message's fingerprint in the FHIR store."""
    return str(uuid.uuid5(_NS, f"hl7v2|{facility}|{control_id}"))


@lru_cache(maxsize=65536)
def entry_url(key: str) -> str:
    """A deterministic `urn:uuid:` fullUrl for an entry keyed by its conditional URL or `Type/id`.

    Equal to uuid.uuid5(_NS, key), computed without building UUID objects (it is on the hot path)."""
    digest = bytearray(hashlib.sha1(_NS.bytes + key.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def message_identifier_system(facility: str) -> str:
    return f"urn:yilian:member:{member_slug(facility)}:hl7v2-message"


def member_system(facility: str, kind: str) -> str:
    """Identifier.system for a member-local business identifier (visit, placer/filler order, referral)."""
    return f"urn:yilian:member:{member_slug(facility)}:{kind}"


def require(seg: Segment | None, n: int, label: str, comp: int = 1) -> str:
    """SEG-n.comp or TranslationError 101 naming the field."""
    if seg is None:
        raise TranslationError(f"required segment missing ({label})", label.split("-")[0], "100")
    value = seg.get(n, comp)
    if not value:
        raise TranslationError(f"required field {label} is empty", f"{seg.name}-{n}", "101")
    return value


@dataclass
class Translation:
    """A translator's output: the Bundle and the patient it concerns (ordering/merging key; None:
    applied in a transaction of its own). A Patient it replaces whole keeps its hub-owned elements
    (master and merge links): the write section keeps them (`fhir_server/interactions/person.py`)."""

    bundle: JsonObject
    patient_key: str | None = None
    fields: dict[str, tuple[str, str]] = field(default_factory=dict)
    """FHIR element (an issue's expression) → (v2 field, table 0357 code) it came from, for the ACK
    of a Bundle the hub refuses (an A40's unknown MRG-1 is `Parameters.source-patient-identifier`)."""


class TransactionBuilder:
    """Collects entries for one message and adds its Provenance."""

    def __init__(self, message: Message, ctx: Context) -> None:
        self.message = message
        self.ctx = ctx
        self.facility = message.sending_facility or "unknown"
        self.entries: list[JsonObject] = []
        self._by_url: dict[str, JsonObject] = {}
        self.patient_key: str | None = None
        self._orgs: dict[str, str] = {}
        self._operations: list[JsonObject] = []

    def _add(self, resource: JsonObject, request: JsonObject, key: str) -> str:
        full_url = entry_url(key)
        if full_url in self._by_url:
            return full_url
        entry = {"fullUrl": full_url, "resource": resource, "request": request}
        self._by_url[full_url] = entry
        self.entries.append(entry)
        return full_url

    def upsert(self, resource: JsonObject, system: str, value: str) -> str:
        """Conditional update by identifier: create, or replace the one resource with that identifier."""
        rtype = resource["resourceType"]
        query = f"identifier={_q(system)}|{_q(value)}"
        return self._add(resource, {"method": "PUT", "url": f"{rtype}?{query}"}, f"{rtype}?{query}")

    def upsert_patient(
        self, resource: JsonObject, system: str, value: str, cleared: Sequence[str] = ()
    ) -> str:
        """`upsert` of a Patient from PID with v2 update semantics: what the PID sends replaces, what it
        leaves empty stays, what it sends as `""` (`cleared`) is deleted (a sparse update, applied in
        the write section; so are the master and merge links kept)."""
        url = self.upsert(resource, system, value)
        self._by_url[url]["request"]["extension"] = request_extensions(list(cleared))
        return url

    def ensure(self, resource: JsonObject, system: str, value: str) -> str:
        """Conditional create by identifier: create only when no resource has that identifier."""
        rtype = resource["resourceType"]
        query = f"identifier={_q(system)}|{_q(value)}"
        return self._add(resource, {"method": "POST", "url": rtype, "ifNoneExist": query}, f"{rtype}?{query}")

    def put(self, resource: JsonObject) -> str:
        """Update (or create) a resource at a known id."""
        rtype, rid = resource["resourceType"], resource["id"]
        return self._add(resource, {"method": "PUT", "url": f"{rtype}/{rid}"}, f"{rtype}/{rid}")

    def invoke(self, url: str, parameters: list[JsonObject]) -> None:
        """An operation entry (`POST Patient/$merge`): the server runs it after the Bundle's writes.
        Not a target of the message's Provenance (it writes its own)."""
        body = {"resourceType": "Parameters", "parameter": parameters}
        self._operations.append({"resource": body, "request": {"method": "POST", "url": url}})

    def organization(self, code: str, name: str | None = None) -> str:
        """The member Organization named by a facility code (MSH-4/MSH-6, ORC-21 ...)."""
        if code in self._orgs:
            return self._orgs[code]
        org: JsonObject = {
            "resourceType": "Organization",
            "identifier": [{"system": organization_identifier_system(), "value": code}],
            "active": True,
            "name": name or code,
        }
        url = self._orgs[code] = self.ensure(org, organization_identifier_system(), code)
        return url

    def practitioner(self, facility: str, id_number: str, name: JsonObject | None) -> str | None:
        """A Practitioner known by the member's staff number (XCN.1); None without one."""
        if not id_number:
            return None
        system = member_system(facility, "practitioner")
        prac: JsonObject = {
            "resourceType": "Practitioner",
            "identifier": [{"system": system, "value": id_number}],
        }
        if name:
            prac["name"] = [name]
        return self.ensure(prac, system, id_number)

    def finish(self) -> Translation:
        return Translation(self.build(), self.patient_key)

    def build(self) -> JsonObject:
        """The transaction Bundle, with a Provenance naming the member system and message."""
        msg = self.message
        control = msg.control_id
        org_url = self.organization(self.facility)
        targets = [{"reference": e["fullUrl"]} for e in self.entries]
        event = msg.trigger
        provenance: JsonObject = {
            "resourceType": "Provenance",
            "id": provenance_id(self.facility, control),
            "target": targets,
            "recorded": self.ctx.received_at.isoformat(timespec="milliseconds"),
            "activity": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0003", "code": event}],
                "text": f"{msg.message_type}^{event}",
            },
            "agent": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                "code": "author",
                            }
                        ]
                    },
                    "who": {"reference": org_url, "display": self.facility},
                },
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                "code": "assembler",
                            }
                        ]
                    },
                    "who": {
                        "display": f"{msg.sending_application or self.facility} via YiLian HL7 v2 adapter"
                    },
                },
            ],
            "entity": [
                {
                    "role": "source",
                    "what": {
                        "identifier": {"system": message_identifier_system(self.facility), "value": control},
                        "display": f"HL7 v{msg.version} {msg.message_type}^{event} {control}",
                    },
                }
            ],
        }
        self.put(provenance)
        return {"resourceType": "Bundle", "type": "transaction", "entry": [*self.entries, *self._operations]}


_PLAIN = re.compile(r"[A-Za-z0-9:/._~\-]*")


@lru_cache(maxsize=65536)
def escape_token(value: str) -> str:
    """FHIR search escaping of one part of a token value (`\\ , $ |`)."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$").replace("|", "\\|")


def _q(value: str) -> str:
    """Escape a token for a search URL value: FHIR-escape `| , $ \\`, then percent-encode for the URL."""
    if _PLAIN.fullmatch(value):
        return value
    return quote(escape_token(value), safe=":/.-_~\\")
