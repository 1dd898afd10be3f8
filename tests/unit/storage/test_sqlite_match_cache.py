"""The SQLite writer reuses conditional search answers only while they still hold: a write of the type,
a rolled-back section, and a commit by another connection (another process) each make it search again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fhir_server.search.ast import SearchQuery
from fhir_server.search.extract import extract
from fhir_server.search.parse import parse_search
from fhir_server.storage.protocol import NewVersion
from fhir_server.storage.sqlite import search as sqlite_search
from fhir_server.storage.sqlite.store import SqliteStore
from tests.contract.search_support import shared_registry


def _org(org_id: str, identifier: str) -> NewVersion:
    body: dict[str, Any] = {
        "resourceType": "Organization",
        "id": org_id,
        "identifier": [{"system": "urn:member", "value": identifier}],
    }
    return NewVersion(
        "Organization", org_id, 1, "2026-01-01T00:00:00Z", "POST", body, extract(body, shared_registry())
    )


def _patient(patient_id: str) -> NewVersion:
    body: dict[str, Any] = {"resourceType": "Patient", "id": patient_id}
    return NewVersion(
        "Patient", patient_id, 1, "2026-01-01T00:00:00Z", "POST", body, extract(body, shared_registry())
    )


def _by_identifier(value: str) -> SearchQuery:
    return parse_search(
        "Organization", [("identifier", f"urn:member|{value}")], shared_registry(), strict=True
    )


@pytest.fixture
def searches(monkeypatch: pytest.MonkeyPatch) -> list[SearchQuery]:
    """The queries that reached the database."""
    seen: list[SearchQuery] = []
    real = sqlite_search.search_ids

    def counting(conn: Any, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
        seen.append(query)
        return real(conn, query, limit)

    monkeypatch.setattr(sqlite_search, "search_ids", counting)
    return seen


async def test_answers_are_reused_until_their_type_is_written(tmp_path: Path, searches: list[Any]) -> None:
    store = SqliteStore(tmp_path / "m.db")
    await store.open()
    try:
        async with store.write() as tx:
            assert await tx.search_ids(_by_identifier("A"), 2) == []
            await tx.write_version(_patient("p1"))  # another type: the answer stands
        async with store.write() as tx:
            assert await tx.search_ids(_by_identifier("A"), 2) == []
            assert len(searches) == 1
            await tx.write_version(_org("o1", "A"))
            assert await tx.search_ids(_by_identifier("A"), 2) == [("Organization", "o1")]
        assert len(searches) == 2
        chained = parse_search(
            "Patient", [("organization.identifier", "urn:member|A")], shared_registry(), strict=True
        )
        async with store.write() as tx:
            await tx.search_ids(chained, 2)
            await tx.search_ids(chained, 2)
        assert len(searches) == 4  # a chain reads another type: never kept
    finally:
        await store.close()


async def test_a_rolled_back_section_leaves_no_answer_behind(tmp_path: Path, searches: list[Any]) -> None:
    store = SqliteStore(tmp_path / "m.db")
    await store.open()
    try:
        with pytest.raises(RuntimeError):
            async with store.write() as tx:
                await tx.write_version(_org("o1", "A"))
                assert await tx.search_ids(_by_identifier("A"), 2) == [("Organization", "o1")]
                raise RuntimeError("the section fails")
        async with store.write() as tx:
            assert await tx.search_ids(_by_identifier("A"), 2) == []
    finally:
        await store.close()


async def test_a_commit_by_another_connection_is_seen(tmp_path: Path) -> None:
    first, second = SqliteStore(tmp_path / "m.db"), SqliteStore(tmp_path / "m.db")
    await first.open()
    await second.open()
    try:
        async with first.write() as tx:
            assert await tx.search_ids(_by_identifier("A"), 2) == []
        async with second.write() as tx:  # e.g. `yilian hl7 replay` in another process
            await tx.write_version(_org("o1", "A"))
        async with first.write() as tx:
            assert await tx.search_ids(_by_identifier("A"), 2) == [("Organization", "o1")]
    finally:
        await first.close()
        await second.close()
