"""open_hub: build the whole FHIR side from Settings (store → registry → validator → service → app → sink).

Part of the composition root, like `cli.py`: the one place that knows every concrete class. Tests and
adapters use it to get a real hub without the listeners; `yilian serve` adds MLLP and DICOM around it.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache

from fastapi import FastAPI

from fhir_server.api.app import create_app
from fhir_server.errors import FhirError, Issue
from fhir_server.interactions.audit import AuditTrail
from fhir_server.interactions.ingest import InProcessSink
from fhir_server.interactions.match_review import MatchReview
from fhir_server.interactions.matching import MatchRules
from fhir_server.interactions.search_parameters import check_search_parameter, load_stored, registry_updater
from fhir_server.interactions.service import FhirService, Limits
from fhir_server.model.definitions import resource_types
from fhir_server.search.extract import extract
from fhir_server.search.registry import SearchRegistry, build_registry
from fhir_server.settings import Settings
from fhir_server.storage.memory.store import MemoryStore
from fhir_server.storage.protocol import ResourceStore
from fhir_server.storage.sqlite.store import SqliteStore
from profiles.validator import Validator, build_validator

LOGGER = logging.getLogger(__name__)


@dataclass
class Hub:
    settings: Settings
    store: ResourceStore
    service: FhirService
    app: FastAPI
    sink: InProcessSink
    audit: AuditTrail
    review: MatchReview | None


def build_store(settings: Settings) -> ResourceStore:
    if settings.storage == "sqlite":
        return SqliteStore(settings.db)
    if settings.storage == "memory":
        return MemoryStore()
    if settings.storage == "mongodb":
        from fhir_server.storage.mongo.store import MongoStore

        if not settings.mongodb_uri:
            raise ValueError("storage=mongodb needs YILIAN_MONGODB_URI")
        return MongoStore.from_uri(settings.mongodb_uri, settings.mongodb_database)
    raise ValueError(f"unknown storage backend {settings.storage!r} (sqlite, memory, mongodb)")


@cache
def shared_validator() -> Validator:
    """The validator's tables are immutable definitions: build them once per process."""
    return build_validator()


def build_service(
    settings: Settings, store: ResourceStore, registry: SearchRegistry | None = None
) -> FhirService:
    registry = registry or build_registry()
    validator = shared_validator()

    def validate(resource: dict[str, object]) -> list[Issue]:
        issues = validator.validate(resource)
        if resource.get("resourceType") == "SearchParameter" and not issues:
            try:
                check_search_parameter(registry, resource)
            except FhirError as exc:  # a custom parameter this server could not index is refused
                issues = exc.issues
        return issues

    service = FhirService(
        store=store,
        validate=validate,
        extract=lambda resource: extract(resource, registry),
        registry=registry,
        resource_types=resource_types(),
        limits=Limits(
            max_bundle_entries=settings.max_bundle_entries,
            default_page_size=settings.default_page_size,
            max_page_size=settings.max_page_size,
        ),
        match_rules=MatchRules(possible=settings.match_possible, probable=settings.match_probable),
    )
    service.events.subscribe(registry_updater(registry))
    return service


def local_base_url(settings: Settings) -> str:
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    return f"http://{settings.host}:{settings.port}{settings.base_path}"


@asynccontextmanager
async def open_hub(settings: Settings, store: ResourceStore | None = None) -> AsyncIterator[Hub]:
    store = store or build_store(settings)
    await store.open()
    try:
        service = build_service(settings, store)
        loaded = await load_stored(store, service.registry)
        if loaded:
            LOGGER.info("%d custom SearchParameters loaded from the store", loaded)
        audit = AuditTrail(service, interval=settings.audit_flush_seconds)
        app = create_app(settings, service, audit=audit)
        sink = InProcessSink(service, local_base_url(settings), audit=audit.record)
        review = (
            MatchReview(service, interval=settings.match_review_seconds) if settings.match_review else None
        )
        if review is not None:
            service.events.subscribe(review.on_change)
            review.start()
        audit.start()
        try:
            yield Hub(
                settings=settings,
                store=store,
                service=service,
                app=app,
                sink=sink,
                audit=audit,
                review=review,
            )
        finally:
            await audit.stop()
            if review is not None:
                await review.stop()
    finally:
        await store.close()


GC_THRESHOLDS = (20_000, 50, 100)
GIL_SWITCH_INTERVAL_S = 0.0002


def tune_for_serving() -> None:
    """Process settings for a serving hub, called once by the process that serves, after every
    listener is up: the start-up heap frozen (`freeze_startup_heap`) and a short GIL switch interval.

    Why the switch interval: the SQLite writer thread (`storage/sqlite/writer.py`) releases the GIL
    for each statement it steps and needs it back to start the next. With the default 5 ms it waited
    up to that long each time for the busy event loop to let go, so a large write's inserts piled up
    until its COMMIT instead of running beside the loop. The threads here (writer, readers, journal,
    checkpoint) hold the GIL only between C calls, so a shorter slice costs little: HL7 ingest end to
    end, alternating runs, ~820 -> ~880 msg/s."""
    freeze_startup_heap()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def freeze_startup_heap() -> None:
    """Exempt everything built at start-up from the cyclic garbage collector, for good.

    The validator, the search registry and the definitions behind them are hundreds of thousands of
    long-lived objects. Without this, each full collection (triggered by the many short-lived dicts a
    transaction allocates) walks all of them: measured here, HL7 ingest end to end went from ~410 to
    ~480 msg/s with it. Called once, by the process that serves, after every listener is up; tests
    that open many hubs do not call it, because frozen objects are never collected.

    It also makes the collector run less often (thresholds 20,000 / 50 / 100 instead of 700 / 10 /
    10). A transaction keeps thousands of young dicts alive while it runs, so each young collection
    mostly walks and promotes live objects, and the older generations walk them again. Measured on
    the HL7 store path (3,000 messages, three runs alternating): 1,448 -> 1,344 us per message.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
