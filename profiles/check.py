"""Walk one JSON resource against the compiled nodes and collect issues (pure; no I/O).

Follows the R4 JSON representation rules: unknown properties are errors at every depth; elements whose
base cardinality repeats are arrays, others are not; primitives carry their extensions in `_name`
(arrays aligned, `null` padding allowed only where the partner has content); no empty objects, arrays,
strings or `null`s (ele-1). On top of structure: cardinality, primitive formats, required bindings,
reference syntax and targets, ext-1, and the container rules for contained resources (ref-1, dom-2,
dom-3, dom-4, dom-5). Paths are FHIRPath-like with indexes on repeating elements
(`Patient.name[0].given[1]`, `Bundle.entry[0].resource.gender`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import Issue
from profiles.references import ReferenceSyntax
from profiles.structure import CODED_STRINGS, LOCAL_REFERENCE_TYPES, ElementRule, Node
from terminology.service import TerminologyService, canonical_url


@dataclass
class _Scope:
    """Findings of one walk plus the local (`#id`) references of the resource being checked."""

    issues: list[Issue]
    local_refs: list[tuple[str, str]] = field(default_factory=list)

    def error(self, code: str, message: str, path: str) -> None:
        self.issues.append(Issue("error", code, message, (path,)))


@dataclass(frozen=True)
class InstanceChecker:
    """Validates resources against compiled R4 nodes; shareable across threads (its only state is the
    primitive checks' sets of strings known valid, which only grow or empty)."""

    resources: Mapping[str, Node]
    datatypes: Mapping[str, Node]
    terminology: TerminologyService
    references: ReferenceSyntax
    extensions: Mapping[str, Node]
    """Extension definitions by url: a known extension's value[x] and sub-extensions are checked."""

    def __repr__(self) -> str:
        return (
            f"InstanceChecker({len(self.resources)} resource types, {len(self.datatypes)} datatypes, "
            f"{len(self.extensions)} extensions)"
        )

    def check_resource(self, value: Any, path: str, issues: list[Issue]) -> None:
        """Check a resource found at `path` (the root path is the resource type itself)."""
        self._resource(value, path, _Scope(issues), contained=False)

    def _resource(self, value: Any, path: str, scope: _Scope, contained: bool) -> None:
        if not isinstance(value, dict):
            scope.error("structure", "a resource must be a JSON object", path)
            return
        resource_type = value.get("resourceType")
        node = self.resources.get(resource_type) if isinstance(resource_type, str) else None
        if node is None:
            scope.error("structure", f"unknown or missing resourceType {resource_type!r}", path)
            return
        if contained:
            self._contained_rules(value, path, scope)
            self._object(node, value, path, scope)
            return
        own = _Scope(scope.issues)
        self._object(node, value, path, own)
        if own.local_refs or "contained" in value:
            self._local_references(value, path, own)

    # -- objects ------------------------------------------------------------------------------------
    def _object(self, node: Node, obj: dict[str, Any], path: str, scope: _Scope) -> None:
        rules = node.rules
        chosen: dict[str, str] | None = None
        for key, value in obj.items():
            rule = rules.get(key)
            if rule is None:
                if key[:1] == "_" and (rule := rules.get(key[1:])) is not None and rule.check is not None:
                    self._primitive_extension(rule, value, obj, f"{path}.{key}", scope)
                elif key == "resourceType" and node.is_resource:
                    continue
                else:
                    scope.error("structure", f"unknown element '{key}' in {node.path}", f"{path}.{key}")
                    continue
            elif rule.max == 0:
                scope.error("structure", f"{rule.path} is not allowed here (max 0)", f"{path}.{key}")
            elif rule.many:
                self._repeating(rule, value, obj, path, scope)
            elif isinstance(value, list):
                scope.error("structure", f"{rule.path} must not be an array", f"{path}.{key}")
            elif value is None:
                scope.error("structure", f"{rule.path} must not be null", f"{path}.{key}")
            elif (plain := rule.plain) is not None:
                if (message := plain(value)) is not None:
                    scope.error("value", f"{rule.path}: {message}", f"{path}.{key}")
            else:
                self._item(rule, value, path, key, scope)
            if rule.base != rule.name:
                chosen = chosen if chosen is not None else {}
                other = chosen.setdefault(rule.base, rule.name)
                if other != rule.name:
                    scope.error(
                        "structure",
                        f"only one of {other} and {rule.name} may be present ({rule.path})",
                        f"{path}.{rule.name}",
                    )
        for element, minimum, names in node.required:
            for name in names:
                if name in obj:
                    break
            else:
                scope.error(
                    "required",
                    f"{node.path}.{element}: minimum required = {minimum}, but only found 0",
                    f"{path}.{element}",
                )

    def _repeating(
        self, rule: ElementRule, value: Any, owner: dict[str, Any], path: str, scope: _Scope
    ) -> None:
        child = f"{path}.{rule.name}"
        if not isinstance(value, list):
            scope.error("structure", f"{rule.path} must be an array", child)
            return
        count = len(value)
        if count == 0:
            scope.error("structure", f"{rule.path} must not be an empty array", child)
        elif rule.max is not None and count > rule.max:
            scope.error("structure", f"{rule.path}: maximum allowed = {rule.max}, found {count}", child)
        elif count < rule.min:
            scope.error("required", f"{rule.path}: minimum required = {rule.min}, found {count}", child)
        partner = owner.get("_" + rule.name) if rule.check is not None else None
        plain = rule.plain
        for index, item in enumerate(value):
            if item is None:
                if isinstance(partner, list) and index < len(partner) and partner[index] is not None:
                    continue
                scope.error("structure", f"{rule.path} must not contain null", f"{child}[{index}]")
            elif plain is None:
                self._item(rule, item, child, f"[{index}]", scope)
            elif (message := plain(item)) is not None:
                scope.error("value", f"{rule.path}: {message}", f"{child}[{index}]")

    def _item(self, rule: ElementRule, value: Any, parent: str, step: str, scope: _Scope) -> None:
        """Check one value; its path is `parent` + "." + `step` or `parent` + `[i]`, built only when used."""
        check = rule.check
        if check is not None:
            message = check(value)
            if message is not None:
                scope.error("value", f"{rule.path}: {message}", _join(parent, step))
            elif rule.binding is not None and rule.type_code in CODED_STRINGS:
                self._code_binding(rule, value, _join(parent, step), scope)
            elif value.__class__ is str and value[:1] == "#" and rule.type_code in LOCAL_REFERENCE_TYPES:
                scope.local_refs.append((value, _join(parent, step)))
            return
        path = _join(parent, step)
        if rule.type_code == "Resource":
            self._resource(value, path, scope, contained=rule.name == "contained")
            return
        if not isinstance(value, dict):
            scope.error("structure", f"{rule.path} must be a JSON object, not {type(value).__name__}", path)
            return
        if not value:
            scope.error("structure", f"{rule.path} must not be an empty object", path)
            return
        node = rule.node
        if rule.type_code == "Extension":
            url = value.get("url")
            if url.__class__ is str:
                node = self.extensions.get(url, node)
        if node is None:
            scope.error("not-supported", f"no definition for type {rule.type_code}", path)
            return
        self._object(node, value, path, scope)
        if rule.type_code == "Reference":
            self._reference(rule, value, path, scope)
        elif rule.type_code == "Extension":
            _extension_rule(value, path, scope)
        elif rule.binding is not None:
            self._coded_binding(rule, value, path, scope)

    def _primitive_extension(
        self, rule: ElementRule, value: Any, owner: dict[str, Any], path: str, scope: _Scope
    ) -> None:
        element = self.datatypes["Element"]
        if not rule.many:
            if isinstance(value, dict) and value:
                self._object(element, value, path, scope)
            else:
                scope.error("structure", f"{path} must be a non-empty object", path)
            return
        values = owner.get(rule.name)
        if not isinstance(value, list) or (isinstance(values, list) and len(values) != len(value)):
            scope.error("structure", f"{path} must be an array aligned with {rule.name}", path)
            return
        for index, item in enumerate(value):
            if item is None:
                if not isinstance(values, list):
                    scope.error("structure", "null without a value beside it", f"{path}[{index}]")
            elif isinstance(item, dict) and item:
                self._object(element, item, f"{path}[{index}]", scope)
            else:
                scope.error("structure", "must be a non-empty object or null", f"{path}[{index}]")

    # -- rules beyond structure ---------------------------------------------------------------------
    def _reference(self, rule: ElementRule, value: dict[str, Any], path: str, scope: _Scope) -> None:
        reference = value.get("reference")
        if not isinstance(reference, str):
            return
        problem = self.references.problem(reference, rule.targets)
        if problem is not None:
            scope.error("value", problem, f"{path}.reference")
        elif reference[:1] == "#":
            scope.local_refs.append((reference, f"{path}.reference"))

    def _code_binding(self, rule: ElementRule, code: str, path: str, scope: _Scope) -> None:
        assert rule.binding is not None
        if self.terminology.validate_code(rule.binding, None, code) is False:
            vs = canonical_url(rule.binding)
            scope.error("code-invalid", f"'{code}' is not in the required value set {vs} ({rule.path})", path)

    def _coded_binding(self, rule: ElementRule, value: dict[str, Any], path: str, scope: _Scope) -> None:
        assert rule.binding is not None
        if rule.type_code == "Coding":
            codings: list[Any] = [value]
        elif rule.type_code == "CodeableConcept":
            codings = value.get("coding") or []
        else:
            return
        vs = canonical_url(rule.binding)
        if not codings:
            scope.error("code-invalid", f"{rule.path} needs a coding from the required value set {vs}", path)
            return
        verdicts = []
        for coding in codings:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                system = coding.get("system")
                verdicts.append(
                    self.terminology.validate_code(
                        rule.binding, system if isinstance(system, str) else None, coding["code"]
                    )
                )
        if verdicts and not any(v is not False for v in verdicts):
            shown = ", ".join(
                f"{c.get('system', '')}#{c.get('code')}" for c in codings if isinstance(c, dict)
            )
            scope.error(
                "code-invalid", f"none of {shown} is in the required value set {vs} ({rule.path})", path
            )

    def _contained_rules(self, value: dict[str, Any], path: str, scope: _Scope) -> None:
        if "contained" in value:
            scope.error("invariant", "dom-2: a contained resource SHALL NOT contain resources", path)
        meta = value.get("meta")
        if isinstance(meta, dict):
            if "versionId" in meta or "lastUpdated" in meta:
                scope.error(
                    "invariant",
                    "dom-4: a contained resource SHALL NOT have meta.versionId or lastUpdated",
                    path,
                )
            if "security" in meta:
                scope.error("invariant", "dom-5: a contained resource SHALL NOT have a security label", path)
        if not isinstance(value.get("id"), str):
            scope.error("required", "a contained resource needs an id to be referenced by", f"{path}.id")

    def _local_references(self, resource: dict[str, Any], path: str, scope: _Scope) -> None:
        """ref-1 (local references resolve) and dom-3 (every contained resource is referenced)."""
        contained = resource.get("contained")
        ids = (
            {c.get("id") for c in contained if isinstance(c, dict)} if isinstance(contained, list) else set()
        )
        referenced = set()
        for reference, where in scope.local_refs:
            target = reference[1:]
            referenced.add(target)
            if target and target not in ids:
                if where.endswith(".reference"):
                    scope.error("invariant", f"ref-1: no contained resource with id '{target}'", where)
                else:  # a canonical: R4 has no invariant for these, so only warn
                    scope.issues.append(
                        Issue("warning", "not-found", f"no contained resource with id '{target}'", (where,))
                    )
        if "" in referenced:  # a contained resource points back at its container: all count as used
            return
        listed = (
            contained if isinstance(contained, list) else ()
        )  # a malformed `contained` is reported elsewhere
        for index, resource_id in enumerate(c.get("id") for c in listed if isinstance(c, dict)):
            if isinstance(resource_id, str) and resource_id not in referenced:
                scope.error(
                    "invariant",
                    f"dom-3: contained resource '{resource_id}' is not referenced from the resource",
                    f"{path}.contained[{index}]",
                )


def _join(parent: str, step: str) -> str:
    return parent + step if step[:1] == "[" else f"{parent}.{step}"


def _extension_rule(value: dict[str, Any], path: str, scope: _Scope) -> None:
    has_value = any(key.startswith(("value", "_value")) for key in value)
    if has_value == ("extension" in value):
        scope.error("invariant", "ext-1: must have either extensions or value[x], not both", path)
