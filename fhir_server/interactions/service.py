"""FhirService: what the interactions need, wired once by the composition root and passed to every call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import Issue
from fhir_server.interactions.events import EventBus
from fhir_server.interactions.matching import MatchRules
from fhir_server.search.index import IndexEntries
from fhir_server.storage.protocol import ResourceStore
from fhir_server.storage.timestamps import now_instant

JsonObject = dict[str, Any]
Validate = Callable[[JsonObject], list[Issue]]
Extract = Callable[[JsonObject], IndexEntries]


@dataclass
class Limits:
    max_bundle_entries: int = 10_000
    default_page_size: int = 20
    max_page_size: int = 1000


@dataclass
class FhirService:
    store: ResourceStore
    validate: Validate
    extract: Extract
    registry: Any  # fhir_server.search.registry.SearchRegistry
    resource_types: frozenset[str]
    events: EventBus = field(default_factory=EventBus)
    limits: Limits = field(default_factory=Limits)
    match_rules: MatchRules = field(default_factory=MatchRules)
    clock: Callable[[], str] = now_instant
