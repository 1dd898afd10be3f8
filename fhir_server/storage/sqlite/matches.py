"""The writer's answers to conditional searches, kept while nothing of the searched type changes.

Why: conditional creates and references of reference data repeat in every write. Each HL7 message
names its member's Organization and its ordering Practitioner with `ifNoneExist`, and each one was a
search inside the write section (about 40% of a one-message transaction). The answer stays the same
until a resource of that type is written, so it is reused until then.

Only queries on one type with plain criteria are kept. Chains and `_has` read other types as well,
so they are always searched, as are value-set modifiers (`:in`, `:below`, ...). What empties the cache:
- a write of the type;
- a rolled-back section or a failed commit: the answers may have seen writes that are gone;
- a commit by another connection, which SQLite's `data_version` shows when a group begins.
"""

from __future__ import annotations

from fhir_server.search.ast import Criterion, SearchQuery

MatchIds = list[tuple[str, str]]
_TERMINOLOGY = frozenset({"in", "not-in", "above", "below"})  # answers depend on value sets as well


class MatchCache:
    """search_ids answers of one writer connection, by resource type. Used under the write lock."""

    def __init__(self, max_per_type: int = 4096) -> None:
        self._by_type: dict[str, dict[tuple[SearchQuery, int], MatchIds]] = {}
        self._max_per_type = max_per_type

    @staticmethod
    def cacheable(query: SearchQuery) -> bool:
        """One type, plain criteria, first page: the answer depends only on that type's resources."""
        return (
            query.resource_type is not None
            and query.types in ((), (query.resource_type,))
            and query.cursor is None
            and all(type(f) is Criterion and f.modifier not in _TERMINOLOGY for f in query.filters)
        )

    def get(self, query: SearchQuery, limit: int) -> MatchIds | None:
        assert query.resource_type is not None
        found = self._by_type.get(query.resource_type, {}).get((query, limit))
        return None if found is None else list(found)

    def put(self, query: SearchQuery, limit: int, ids: MatchIds) -> None:
        assert query.resource_type is not None
        answers = self._by_type.setdefault(query.resource_type, {})
        if len(answers) >= self._max_per_type:
            answers.clear()  # a type searched with ever new criteria (patients) and never written
        answers[(query, limit)] = list(ids)

    def wrote(self, resource_type: str) -> None:
        self._by_type.pop(resource_type, None)

    def clear(self) -> None:
        self._by_type.clear()
