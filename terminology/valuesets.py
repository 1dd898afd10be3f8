"""ValueSet expansion from CodeSystem and ValueSet resources held in memory (the R4 core package first).

Expansion follows ValueSet.compose: `include`/`exclude` by enumerated concepts, by whole CodeSystem (only
when the CodeSystem's content is `complete`), by hierarchy filters (`is-a`, `descendent-of`,
`is-not-a` on `concept`) and by other ValueSets. Anything else (external systems such as SNOMED CT,
UCUM, BCP-47, MIME types; property filters) makes the expansion unknown: callers get `None` and must
not guess. Expansions are computed lazily and cached, so loading stays cheap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_server.model.definitions import CORE_PACKAGE, iter_package
from terminology.service import canonical_url

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
Expansion = frozenset[tuple[str, str]]

_HIERARCHY_OPS = frozenset({"is-a", "descendent-of", "is-not-a"})
_MISSING: frozenset[tuple[str, str]] = frozenset({("", "missing")})  # sentinel, never a real expansion


class _Unexpandable(Exception):
    """Internal signal: this compose part cannot be evaluated locally."""


@dataclass(frozen=True)
class CodeSystemIndex:
    """The codes of one complete CodeSystem and its parent → children hierarchy."""

    url: str
    codes: frozenset[str]
    children: dict[str, tuple[str, ...]]

    @classmethod
    def from_resource(cls, resource: JsonObject) -> CodeSystemIndex:
        codes: set[str] = set()
        children: dict[str, list[str]] = {}

        def walk(concepts: Iterable[JsonObject], parent: str | None) -> None:
            for concept in concepts:
                code = concept.get("code")
                if not isinstance(code, str):
                    continue
                codes.add(code)
                if parent is not None:
                    children.setdefault(parent, []).append(code)
                walk(concept.get("concept", ()), code)

        walk(resource.get("concept", ()), None)
        for prop in _subsumption_properties(resource):
            parent_code, child = prop
            children.setdefault(parent_code, []).append(child)
        return cls(resource["url"], frozenset(codes), {k: tuple(v) for k, v in children.items()})

    def descendants(self, code: str) -> set[str]:
        out: set[str] = set()
        stack = list(self.children.get(code, ()))
        while stack:
            current = stack.pop()
            if current not in out:
                out.add(current)
                stack.extend(self.children.get(current, ()))
        return out


def _subsumption_properties(resource: JsonObject) -> Iterable[tuple[str, str]]:
    """(parent, child) pairs declared with the `parent` / `subsumedBy` concept properties (v3 systems)."""

    def walk(concepts: Iterable[JsonObject]) -> Iterable[tuple[str, str]]:
        for concept in concepts:
            for prop in concept.get("property", ()):
                if prop.get("code") in ("parent", "subsumedBy") and isinstance(prop.get("valueCode"), str):
                    yield prop["valueCode"], concept["code"]
            yield from walk(concept.get("concept", ()))

    return walk(resource.get("concept", ()))


@dataclass
class PackageTerminology:
    """A `TerminologyService` over CodeSystems and ValueSets loaded from packages or added one by one."""

    code_systems: dict[str, CodeSystemIndex] = field(default_factory=dict)
    value_sets: dict[str, JsonObject] = field(default_factory=dict)
    _expansions: dict[str, Expansion | None] = field(default_factory=dict, repr=False)
    _codes: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _in_progress: set[str] = field(default_factory=set, repr=False)

    def add(self, resource: JsonObject) -> None:
        """Register a CodeSystem or ValueSet; later additions replace earlier ones with the same url."""
        url = resource.get("url")
        if not isinstance(url, str):
            return
        if resource.get("resourceType") == "CodeSystem":
            if resource.get("content") == "complete":
                self.code_systems[url] = CodeSystemIndex.from_resource(resource)
            else:
                self.code_systems.pop(url, None)
        elif resource.get("resourceType") == "ValueSet":
            self.value_sets[url] = resource
        self._expansions.clear()
        self._codes.clear()

    def load_package(self, path: Path) -> None:
        for kind in ("CodeSystem", "ValueSet"):
            for resource in iter_package(path, kind):
                self.add(resource)

    # -- TerminologyService -------------------------------------------------------------------------
    def expand(self, valueset_url: str) -> Expansion | None:
        url = canonical_url(valueset_url)
        cached = self._expansions.get(url, _MISSING)
        if cached is not _MISSING:
            return cached
        with self._lock:
            cached = self._expansions.get(url, _MISSING)
            return self._expand_locked(url) if cached is _MISSING else cached

    def _expand_locked(self, url: str) -> Expansion | None:
        if url in self._in_progress:  # an include cycle: this part cannot be evaluated
            return None
        self._in_progress.add(url)
        try:
            result: Expansion | None = self._expand(url)
        except _Unexpandable as exc:
            logger.debug("ValueSet %s not expandable locally: %s", url, exc)
            result = None
        finally:
            self._in_progress.discard(url)
        self._expansions[url] = result  # published only when final: readers skip the lock
        return result

    def validate_code(self, valueset_url: str, system: str | None, code: str) -> bool | None:
        expansion = self.expand(valueset_url)
        if expansion is None:
            return None
        if system is not None:
            return (system, code) in expansion
        codes = self._codes.get(valueset_url)
        if codes is None:  # built from a final expansion; a race only builds it twice
            codes = self._codes[valueset_url] = frozenset(c for _, c in expansion)
        return code in codes

    # -- compose evaluation -------------------------------------------------------------------------
    def _expand(self, url: str) -> Expansion:
        vs = self.value_sets.get(url)
        if vs is None:
            raise _Unexpandable(f"unknown ValueSet {url}")
        compose = vs.get("compose")
        if compose is None:
            contains = vs.get("expansion", {}).get("contains")
            if contains is None:
                raise _Unexpandable("no compose and no expansion")
            return frozenset(_flatten_contains(contains))
        included: set[tuple[str, str]] = set()
        for part in compose.get("include", ()):
            included |= self._evaluate(part)
        for part in compose.get("exclude", ()):
            included -= self._evaluate(part)
        return frozenset(included)

    def _evaluate(self, part: JsonObject) -> set[tuple[str, str]]:
        result: set[tuple[str, str]] | None = None
        system = part.get("system")
        if system is not None:
            result = self._system_part(system, part)
        for vs_url in part.get("valueSet", ()):
            other = self.expand(vs_url)
            if other is None:
                raise _Unexpandable(f"included ValueSet {vs_url}")
            result = set(other) if result is None else result & other
        return result or set()

    def _system_part(self, system: str, part: JsonObject) -> set[tuple[str, str]]:
        concepts = part.get("concept")
        filters = part.get("filter", ())
        if concepts is not None and not filters:
            return {(system, c["code"]) for c in concepts if isinstance(c.get("code"), str)}
        cs = self.code_systems.get(system)
        if cs is None:
            raise _Unexpandable(f"CodeSystem {system} not available")
        codes = set(cs.codes)
        for flt in filters:
            op, value = flt.get("op"), flt.get("value")
            if flt.get("property") != "concept" or op not in _HIERARCHY_OPS or not isinstance(value, str):
                raise _Unexpandable(f"filter {flt.get('property')} {op}")
            below = cs.descendants(value)
            if op == "is-a":
                codes &= below | {value}
            elif op == "descendent-of":
                codes &= below
            else:
                codes -= below | {value}
        if concepts is not None:
            codes &= {c["code"] for c in concepts if isinstance(c.get("code"), str)}
        return {(system, c) for c in codes}


def _flatten_contains(contains: Iterable[JsonObject]) -> Iterable[tuple[str, str]]:
    for item in contains:
        if isinstance(item.get("system"), str) and isinstance(item.get("code"), str):
            yield item["system"], item["code"]
        yield from _flatten_contains(item.get("contains", ()))


def build_core_terminology(extra_packages: Iterable[Path] = ()) -> PackageTerminology:
    """The official R4 core terminology, then any further packages (consortium code sets) over it."""
    service = PackageTerminology()
    service.load_package(CORE_PACKAGE)
    for path in extra_packages:
        service.load_package(path)
    return service
