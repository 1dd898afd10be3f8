"""The SearchParameter registry: every R4 SearchParameter plus custom ones, by resource type and code.

Built from the spec's search-parameters Bundle (standards content is data). Each (resource type, code)
gets a small stable integer id (`pid`), a hash so it is the same in every process and every database
without a mapping table; collisions are detected when a parameter is added. Expressions are compiled
into path extractors lazily per resource type (see `paths.py`).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar, cast

from fhir_server.errors import Unprocessable
from fhir_server.model.definitions import resource_types, search_parameter_bundle
from fhir_server.search.paths import (
    Node,
    Unsupported,
    compile_expression,
    compile_root,
    composite_root_keys,
    root_keys,
)

LOGGER = logging.getLogger(__name__)

JsonObject = dict[str, Any]
NodeExtractor = Callable[[JsonObject], list[Node]]
ComponentExtractor = Callable[[Node], list[Node]]

# parameters answered from the resource table, or not indexable per resource
RESOURCE_TABLE_PARAMS = frozenset({"_id", "_lastUpdated"})
UNINDEXED_PARAMS = frozenset({"_text", "_content", "_query", "_list", "_has", "_type", "near"})
_MEMO_LIMIT = 4096
T = TypeVar("T")


@cache
def param_id(resource_type: str, code: str) -> int:
    """Stable id of parameter `code` on `resource_type` (31-bit CRC: small, fast integer keys).

    Cached: extraction asks for the derived ids (`:of-type`, `:identifier`, canonical quantities) per
    indexed value, and the set of (type, code) pairs is bounded by the registry."""
    return zlib.crc32(f"{resource_type}.{code}".encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class Component:
    definition: str
    expression: str


@dataclass(frozen=True)
class SearchParam:
    code: str
    type: str
    url: str
    base: tuple[str, ...]
    expression: str | None
    target: tuple[str, ...] = ()
    documentation: str = ""
    components: tuple[Component, ...] = ()
    name: str = ""

    @staticmethod
    def from_json(sp: JsonObject) -> SearchParam:
        return SearchParam(
            code=sp["code"],
            type=sp["type"],
            url=sp.get("url", ""),
            base=tuple(sp.get("base", [])),
            expression=sp.get("expression"),
            target=tuple(sp.get("target", [])),
            documentation=sp.get("description", ""),
            components=tuple(
                Component(c.get("definition", ""), c.get("expression", "")) for c in sp.get("component", [])
            ),
            name=str(sp.get("name") or sp["code"]),
        )


@dataclass
class CompiledParam:
    """A parameter ready to extract for one resource type."""

    param: SearchParam
    pid: int
    extract: NodeExtractor
    components: tuple[tuple[SearchParam, ComponentExtractor], ...] = ()
    keys: tuple[str, ...] | None = None
    """Top-level keys of which one must be present for `extract` to find anything (None: no such set)."""


@dataclass
class SearchRegistry:
    by_type: dict[str, dict[str, SearchParam]] = field(default_factory=dict)
    by_url: dict[str, SearchParam] = field(default_factory=dict)
    _compiled: dict[str, list[CompiledParam]] = field(default_factory=dict)
    _pids: dict[int, tuple[str, str]] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    _memo: dict[Hashable, Any] = field(default_factory=dict)
    """What callers derived from the parameters (parsed conditional criteria); emptied on any change."""

    def memo(self, key: Hashable, derive: Callable[[], T]) -> T:
        """`derive()`, kept until a parameter is added or removed.

        Why: conditional criteria (`identifier=urn:member|FYXRMYY`) repeat in every HL7 message and
        cost ~25 µs to parse each time. Kept up to `_MEMO_LIMIT` keys, then started afresh: criteria
        naming one patient each do not repeat, and must not pile up."""
        try:
            return cast(T, self._memo[key])
        except KeyError:
            value = derive()
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = value
            return value

    def add(self, sp_json: JsonObject) -> SearchParam:
        """Register a SearchParameter resource (R4 core or custom); replaces one with the same url."""
        for key in ("code", "type", "base"):
            if not sp_json.get(key):
                raise Unprocessable(f"SearchParameter needs '{key}'")
        param = SearchParam.from_json(sp_json)
        types = set(resource_types())
        for base in param.base:
            targets = sorted(types) if base in ("Resource", "DomainResource") else [base]
            for rtype in targets:
                if rtype not in types:
                    raise Unprocessable(f"SearchParameter base '{rtype}' is not a resource type")
                pid = param_id(rtype, param.code)
                seen = self._pids.get(pid)
                if seen is not None and seen != (rtype, param.code):
                    raise Unprocessable(f"parameter id collision: {rtype}.{param.code} vs {seen}")
                self._pids[pid] = (rtype, param.code)
                self.by_type.setdefault(rtype, {})[param.code] = param
                self._compiled.pop(rtype, None)
        self._memo.clear()
        if param.url:
            self.by_url[param.url] = param
        return param

    def check(self, sp_json: JsonObject) -> None:
        """Reject a custom SearchParameter the engine cannot index (before it is stored)."""
        for key in ("code", "type", "base"):
            if not sp_json.get(key):
                raise Unprocessable(f"SearchParameter needs '{key}'")
        code = str(sp_json["code"])
        if not code.replace("-", "").replace("_", "").isalnum() or code.startswith("_"):
            raise Unprocessable(f"SearchParameter code '{code}' must be letters, digits and '-'")
        if sp_json["type"] not in (
            "number",
            "date",
            "string",
            "token",
            "reference",
            "composite",
            "quantity",
            "uri",
        ):
            raise Unprocessable(f"SearchParameter type '{sp_json['type']}' cannot be indexed")
        expression = sp_json.get("expression")
        if not isinstance(expression, str) or not expression.strip():
            raise Unprocessable("SearchParameter needs an 'expression' to be indexed")
        if expression.count("(") != expression.count(")") or expression.count("'") % 2:
            raise Unprocessable(f"SearchParameter expression is not well formed: {expression}")
        for base in sp_json["base"]:
            if base not in resource_types() and base not in ("Resource", "DomainResource"):
                raise Unprocessable(f"SearchParameter base '{base}' is not a resource type")
            sample = base if base in resource_types() else "Patient"
            try:
                compile_expression(expression, sample)
            except Unsupported:
                if not _fhirpath_evaluates(expression, sample):
                    raise Unprocessable(
                        f"SearchParameter expression cannot be evaluated: {expression}"
                    ) from None
        existing = self.by_url.get(str(sp_json.get("url", "")))
        for base in sp_json["base"]:
            current = self.get(base, code) if base in resource_types() else None
            if (
                current is not None
                and current is not existing
                and current.url.startswith("http://hl7.org/fhir/")
            ):
                raise Unprocessable(f"'{code}' is already an R4 search parameter of {base}")

    def remove(self, url: str) -> None:
        """Forget a custom SearchParameter (its SearchParameter resource was deleted)."""
        param = self.by_url.pop(url, None)
        if param is None:
            return
        for rtype, params in self.by_type.items():
            if params.get(param.code) is param:
                del params[param.code]
                self._compiled.pop(rtype, None)
        self._memo.clear()

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self.by_type.get(resource_type, {}).get(code)

    def params_for(self, resource_type: str) -> list[SearchParam]:
        """Parameters of a type for the CapabilityStatement (name, type, definition, documentation)."""
        return sorted(self.by_type.get(resource_type, {}).values(), key=lambda p: p.code)

    def compiled(self, resource_type: str) -> list[CompiledParam]:
        """Extractors of every indexable parameter of `resource_type` (compiled once, cached)."""
        cached = self._compiled.get(resource_type)
        if cached is not None:
            return cached
        out: list[CompiledParam] = []
        for code, param in sorted(self.by_type.get(resource_type, {}).items()):
            if code in RESOURCE_TABLE_PARAMS or code in UNINDEXED_PARAMS or not param.expression:
                continue
            second = param.components[1].expression if len(param.components) > 1 else None
            compiled = self._extractor(param.expression, resource_type, second)
            if compiled is None:
                continue
            extractor, keys = compiled
            comps: list[tuple[SearchParam, ComponentExtractor]] = []
            if param.type == "composite":
                for comp in param.components[:2]:
                    sub = self.by_url.get(comp.definition)
                    if sub is None:
                        break
                    comps.append((sub, self._component_extractor(comp.expression)))
                if len(comps) < 2:
                    continue
            out.append(
                CompiledParam(
                    param,
                    param_id(resource_type, code),
                    extractor,
                    tuple(comps),
                    None if keys is None else tuple(sorted(keys)),
                )
            )
        self._compiled[resource_type] = out
        return out

    def _extractor(
        self, expression: str, resource_type: str, second_component: str | None = None
    ) -> tuple[NodeExtractor, frozenset[str] | None] | None:
        """The extractor of `expression`, with the top-level keys it needs when they are known
        (for a composite, `second_component` is its second component's expression)."""
        handwritten = _HANDWRITTEN.get(expression)
        if handwritten is not None:
            return handwritten, None
        try:
            extract = compile_root(expression, resource_type)
        except Unsupported as exc:
            LOGGER.debug("fhirpathpy fallback for %s (%s): %s", resource_type, expression, exc)
            self.fallbacks.append(f"{resource_type}: {expression}")
            fallback = _fhirpath_extractor(expression, resource_type)
            return None if fallback is None else (fallback, None)

        if second_component is not None:
            return extract, composite_root_keys(expression, resource_type, second_component)
        return extract, root_keys(expression, resource_type)

    def _component_extractor(self, expression: str) -> ComponentExtractor:
        """Components are relative to the composite's node: compiled per node context on first use."""
        cache: dict[str | None, Callable[[list[Node]], list[Node]]] = {}

        def extract(node: Node) -> list[Node]:
            run = cache.get(node[2])
            if run is None:
                try:
                    run = compile_expression(expression, None, {node[2]})
                except Unsupported:
                    fallback = _fhirpath_extractor(expression, None)

                    def run(nodes: list[Node]) -> list[Node]:
                        return [out for n in nodes for out in (fallback(n[0]) if fallback else [])]

                cache[node[2]] = run
            return run([node])

        return extract


def _patient_deceased(resource: JsonObject) -> list[Node]:
    """`Patient.deceased.exists() and Patient.deceased != false`, the one core expression on a
    consortium type that the path compiler leaves to fhirpathpy (whose engine cost ~5% of HL7 ingest,
    since every Patient write evaluates it). Same values as fhirpathpy gives, a test compares them."""
    if "deceasedBoolean" in resource:
        return [(resource["deceasedBoolean"] is True, None, None)]
    return [("deceasedDateTime" in resource, None, None)]


_HANDWRITTEN: dict[str, NodeExtractor] = {
    "Patient.deceased.exists() and Patient.deceased != false": _patient_deceased,
}


def _fhirpath_extractor(expression: str, resource_type: str | None) -> NodeExtractor | None:
    import fhirpathpy  # imported lazily: only the few exotic expressions need it
    from fhirpathpy.models import models

    try:
        fn = fhirpathpy.compile(expression, models["r4"])
    except Exception:  # noqa: BLE001 - fhirpathpy raises bare exceptions for grammar it lacks
        LOGGER.warning("SearchParameter expression not evaluable: %s", expression)
        return None

    def extract(resource: JsonObject) -> list[Node]:
        try:
            values = fn(resource, {"resource": resource})
        except Exception:  # noqa: BLE001 - evaluation errors mean "no values" for this resource
            return []
        return [(v, None, None) for v in values]

    return extract


def _fhirpath_evaluates(expression: str, resource_type: str) -> bool:
    import fhirpathpy
    from fhirpathpy.models import models

    try:
        fhirpathpy.evaluate({"resourceType": resource_type}, expression, {}, models["r4"])
    except Exception:  # noqa: BLE001 - fhirpathpy signals grammar errors with bare exceptions
        return False
    return True


def build_registry() -> SearchRegistry:
    """Every R4 4.0.1 SearchParameter (1,375), compiled lazily per resource type."""
    registry = SearchRegistry()
    for entry in search_parameter_bundle().get("entry", []):
        registry.add(entry["resource"])
    return registry
