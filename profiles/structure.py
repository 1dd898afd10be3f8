"""Compile StructureDefinition snapshots into lookup tables the instance walker can use quickly.

Each resource type, complex datatype and backbone element becomes a `Node`: its JSON property names
(choice elements expanded, `value[x]` → `valueString`, `valueQuantity`, ...) mapped to `ElementRule`s
holding type, cardinality, JSON array-ness (from `base.max`, as the JSON format says), required
binding and allowed reference targets. Compiling once turns per-request validation into dict lookups.
Standards content stays data: nothing here is written per resource type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_server.model.definitions import JsonObject

PrimitiveCheck = Callable[[Any], str | None]
"""Returns None when a primitive JSON value is fine, else a human message."""

FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
_FHIRPATH_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}


CODED_STRINGS = frozenset({"code", "string", "uri", "url", "canonical", "id", "oid", "uuid", "markdown"})
"""Primitive types whose values a required binding checks against its value set."""
LOCAL_REFERENCE_TYPES = frozenset({"canonical", "uri", "url"})
"""Primitive types whose `#id` values point at contained resources (dom-3 counts them)."""


@dataclass(slots=True)
class ElementRule:
    """One JSON property of a node: `name` as written in JSON, `base` the element name (`value[x]`)."""

    name: str
    base: str
    path: str
    type_code: str
    min: int
    max: int | None
    many: bool
    binding: str | None = None
    targets: frozenset[str] | None = None
    profile: str | None = None
    """A constrained datatype the value must also meet (SimpleQuantity), when the element names one."""
    node: Node | None = field(default=None, repr=False)
    check: PrimitiveCheck | None = field(default=None, repr=False)
    plain: PrimitiveCheck | None = field(default=None, repr=False)
    """`check` where it is all there is to do (no required code binding, no `#id` reference): the
    walker then calls it without its per-value dispatch."""


@dataclass(slots=True)
class Node:
    """A complex structure: resource, datatype or backbone element."""

    path: str
    is_resource: bool = False
    rules: dict[str, ElementRule] = field(default_factory=dict, repr=False)
    required: list[tuple[str, int, tuple[str, ...]]] = field(default_factory=list)
    """(element name, min, JSON names that satisfy it, `_name` forms included)."""
    choices: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)


def _type_code(type_: JsonObject) -> str:
    code: str = type_.get("code", "")
    for ext in type_.get("extension", ()):
        if ext.get("url") == FHIR_TYPE_EXTENSION:
            value: str = ext.get("valueUrl") or ext.get("valueUri") or code
            return value
    return _FHIRPATH_TYPES.get(code, code)


def _profile(type_: JsonObject) -> str | None:
    for profile in type_.get("profile", ()):
        return str(profile).removeprefix(_SD_PREFIX)
    return None


def _max(text: str | None) -> int | None:
    if text is None or text == "*":
        return None
    return int(text)


def _targets(types: list[JsonObject]) -> frozenset[str] | None:
    names: set[str] = set()
    for type_ in types:
        if type_.get("code") != "Reference":
            continue
        for profile in type_.get("targetProfile", ()):
            name = profile.removeprefix(_SD_PREFIX)
            if name in ("Resource", "DomainResource") or "/" in name:
                return None
            names.add(name)
    return frozenset(names) or None


def _required_binding(element: JsonObject) -> str | None:
    binding = element.get("binding")
    if binding and binding.get("strength") == "required" and isinstance(binding.get("valueSet"), str):
        url: str = binding["valueSet"]
        return url
    return None


def compile_definition(sd: JsonObject) -> Node:
    """Build the node tree of one StructureDefinition from its snapshot."""
    # slices and everything inside them carry ':' in their element id; the unsliced element stands
    elements = [e for e in sd["snapshot"]["element"] if ":" not in e.get("id", "")]
    root_path: str = elements[0]["path"]
    is_resource = sd.get("kind") == "resource"
    nodes: dict[str, Node] = {root_path: Node(root_path, is_resource)}
    pending_refs: list[tuple[ElementRule, str]] = []
    parents = {e["path"].rsplit(".", 1)[0] for e in elements[1:]}

    for element in elements[1:]:
        path: str = element["path"]
        parent_path, name = path.rsplit(".", 1)
        parent = nodes.get(parent_path)
        if parent is None:
            continue  # child of an element we skipped (e.g. under a slice)
        cardinality_min = int(element.get("min", 0))
        cardinality_max = _max(element.get("max"))
        many = _max(element.get("base", {}).get("max", element.get("max"))) != 1
        binding = _required_binding(element)
        types = element.get("type", [])
        if name.endswith("[x]"):
            base = name[:-3]
            names = []
            for type_ in types:
                code = _type_code(type_)
                json_name = base + code[0].upper() + code[1:]
                names.append(json_name)
                parent.rules[json_name] = ElementRule(
                    json_name,
                    base,
                    path,
                    code,
                    cardinality_min,
                    cardinality_max,
                    False,
                    binding,
                    _targets([type_]),
                    _profile(type_),
                )
            parent.choices.append((name, tuple(names)))
            if cardinality_min > 0:
                parent.required.append((name, cardinality_min, _with_underscores(names)))
            continue
        if "contentReference" in element:
            rule = ElementRule(name, name, path, "BackboneElement", cardinality_min, cardinality_max, many)
            pending_refs.append((rule, element["contentReference"].lstrip("#")))
        else:
            code = _type_code(types[0]) if types else "Element"
            if is_resource and path == f"{root_path}.id":
                code = "id"  # the R4 snapshot types Resource.id as string; the spec (and JSON schema) say id
            rule = ElementRule(
                name,
                name,
                path,
                code,
                cardinality_min,
                cardinality_max,
                many,
                binding,
                _targets(types),
                _profile(types[0]) if types else None,
            )
            if path in parents:
                rule.node = nodes[path] = Node(path)
        parent.rules[name] = rule
        if cardinality_min > 0:
            parent.required.append((name, cardinality_min, _with_underscores([name])))

    for rule, target in pending_refs:
        rule.node = nodes[target]
    return nodes[root_path]


def _with_underscores(names: list[str]) -> tuple[str, ...]:
    return tuple(names) + tuple("_" + name for name in names)


def walk_rules(roots: Iterable[Node]) -> Iterator[ElementRule]:
    """Every rule reachable from `roots`, each node visited once (the graph has cycles)."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for rule in node.rules.values():
            yield rule
            if rule.node is not None:
                stack.append(rule.node)


def link_types(
    roots: Iterable[Node], datatypes: Mapping[str, Node], checks: Mapping[str, PrimitiveCheck]
) -> None:
    """Point every rule at its primitive checker or datatype node, so walking needs no type lookups."""
    for rule in walk_rules(roots):  # linking before the walker descends: it then follows the new node
        rule.check = checks.get(rule.type_code)
        coded = rule.binding is not None and rule.type_code in CODED_STRINGS
        if not coded and rule.type_code not in LOCAL_REFERENCE_TYPES:
            rule.plain = rule.check
        if rule.node is None and rule.check is None:
            profiled = datatypes.get(rule.profile) if rule.profile else None
            rule.node = profiled or datatypes.get(rule.type_code)
