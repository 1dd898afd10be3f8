"""Walk one JSON resource against the compiled nodes and collect issues (pure; no I/O).

Follows the R4 JSON representation rules: unknown properties are errors at every depth; elements whose
base cardinality repeats are arrays, others are not; primitives carry their extensions in `_name`
(arrays aligned, `null` padding allowed only where the partner has content); no empty objects, arrays,
strings or `null`s (ele-1). On top of structure: cardinality, primitive formats, required bindings,
reference syntax and targets, ext-1. Paths are FHIRPath-like with indexes on repeating elements
(`Patient.name[0].given[1]`, `Bundle.entry[0].resource.gender`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhir_server.errors import Issue
from profiles.primitives import PrimitiveType
from profiles.references import ReferenceSyntax
from profiles.structure import ElementRule, Node
from terminology.service import TerminologyService, canonical_url

_STRING_KINDS = frozenset({"code", "string", "uri", "url", "canonical", "id", "oid", "uuid", "markdown"})


@dataclass(frozen=True)
class InstanceChecker:
    """Validates resources against compiled R4 nodes; shareable across threads (holds no state)."""

    resources: Mapping[str, Node]
    datatypes: Mapping[str, Node]
    primitives: Mapping[str, PrimitiveType]
    terminology: TerminologyService
    references: ReferenceSyntax

    def check_resource(self, value: Any, path: str, issues: list[Issue]) -> None:
        """Check a resource found at `path` (the root path is the resource type itself)."""
        if not isinstance(value, dict):
            issues.append(Issue("error", "structure", "a resource must be a JSON object", (path,)))
            return
        resource_type = value.get("resourceType")
        node = self.resources.get(resource_type) if isinstance(resource_type, str) else None
        if node is None:
            issues.append(
                Issue("error", "structure", f"unknown or missing resourceType {resource_type!r}", (path,))
            )
            return
        self._object(node, value, path, issues)

    # -- objects ------------------------------------------------------------------------------------
    def _object(self, node: Node, obj: dict[str, Any], path: str, issues: list[Issue]) -> None:
        rules = node.rules
        chosen: dict[str, str] | None = None
        for key, value in obj.items():
            rule = rules.get(key)
            if rule is None and key[:1] == "_":
                rule = rules.get(key[1:])
                if rule is not None and rule.type_code in self.primitives:
                    self._primitive_extension(rule, value, obj, f"{path}.{key}", issues)
                else:
                    rule = None
                    self._unknown(node, key, path, issues)
            elif rule is not None:
                self._property(rule, value, obj, path, issues)
            elif not (key == "resourceType" and node.is_resource):
                self._unknown(node, key, path, issues)
                continue
            if rule is not None and rule.base != rule.name:
                chosen = chosen if chosen is not None else {}
                other = chosen.setdefault(rule.base, rule.name)
                if other != rule.name:
                    issues.append(
                        Issue(
                            "error",
                            "structure",
                            f"only one of {other} and {rule.name} may be present ({rule.path})",
                            (f"{path}.{rule.name}",),
                        )
                    )
        for element, names in node.required:
            if not any(name in obj or "_" + name in obj for name in names):
                issues.append(
                    Issue(
                        "error",
                        "required",
                        f"{node.path}.{element}: minimum required = 1, but only found 0",
                        (f"{path}.{element}",),
                    )
                )

    def _unknown(self, node: Node, key: str, path: str, issues: list[Issue]) -> None:
        issues.append(
            Issue("error", "structure", f"unknown element '{key}' in {node.path}", (f"{path}.{key}",))
        )

    # -- properties ---------------------------------------------------------------------------------
    def _property(
        self, rule: ElementRule, value: Any, owner: dict[str, Any], path: str, issues: list[Issue]
    ) -> None:
        child = f"{path}.{rule.name}"
        if not rule.many:
            if isinstance(value, list):
                issues.append(Issue("error", "structure", f"{rule.path} must not be an array", (child,)))
            elif value is None:
                issues.append(Issue("error", "structure", f"{rule.path} must not be null", (child,)))
            else:
                self._item(rule, value, child, issues)
            return
        if not isinstance(value, list):
            issues.append(Issue("error", "structure", f"{rule.path} must be an array", (child,)))
            return
        count = len(value)
        if count == 0:
            issues.append(Issue("error", "structure", f"{rule.path} must not be an empty array", (child,)))
        if rule.max is not None and count > rule.max:
            issues.append(
                Issue(
                    "error",
                    "structure",
                    f"{rule.path}: maximum allowed = {rule.max}, found {count}",
                    (child,),
                )
            )
        partner = owner.get("_" + rule.name)
        for index, item in enumerate(value):
            if item is None:
                if isinstance(partner, list) and index < len(partner) and partner[index] is not None:
                    continue
                issues.append(
                    Issue("error", "structure", f"{rule.path} must not contain null", (f"{child}[{index}]",))
                )
                continue
            self._item(rule, item, f"{child}[{index}]", issues)

    def _item(self, rule: ElementRule, value: Any, path: str, issues: list[Issue]) -> None:
        type_code = rule.type_code
        primitive = self.primitives.get(type_code)
        if primitive is not None:
            message = primitive.check(value)
            if message is not None:
                issues.append(Issue("error", "value", f"{rule.path}: {message}", (path,)))
            elif rule.binding is not None and type_code in _STRING_KINDS:
                self._code_binding(rule, value, path, issues)
            return
        if type_code == "Resource":
            self.check_resource(value, path, issues)
            return
        node = rule.node or self.datatypes.get(type_code)
        if not isinstance(value, dict):
            issues.append(Issue("error", "structure", f"{rule.path} must be a JSON object", (path,)))
            return
        if not value:
            issues.append(Issue("error", "structure", f"{rule.path} must not be an empty object", (path,)))
            return
        if node is None:
            issues.append(Issue("error", "not-supported", f"no definition for type {type_code}", (path,)))
            return
        self._object(node, value, path, issues)
        if type_code == "Reference":
            self._reference(rule, value, path, issues)
        elif type_code == "Extension":
            self._extension(value, path, issues)
        elif rule.binding is not None:
            self._coded_binding(rule, value, path, issues)

    def _primitive_extension(
        self, rule: ElementRule, value: Any, owner: dict[str, Any], path: str, issues: list[Issue]
    ) -> None:
        element = self.datatypes["Element"]
        if not rule.many:
            if isinstance(value, dict) and value:
                self._object(element, value, path, issues)
            else:
                issues.append(Issue("error", "structure", f"{path} must be a non-empty object", (path,)))
            return
        values = owner.get(rule.name)
        if not isinstance(value, list) or (isinstance(values, list) and len(values) != len(value)):
            issues.append(
                Issue("error", "structure", f"{path} must be an array aligned with {rule.name}", (path,))
            )
            return
        for index, item in enumerate(value):
            if item is None:
                continue
            if isinstance(item, dict) and item:
                self._object(element, item, f"{path}[{index}]", issues)
            else:
                issues.append(Issue("error", "structure", "must be a non-empty object or null", (path,)))

    # -- rules beyond structure ---------------------------------------------------------------------
    def _reference(self, rule: ElementRule, value: dict[str, Any], path: str, issues: list[Issue]) -> None:
        reference = value.get("reference")
        if isinstance(reference, str):
            problem = self.references.problem(reference, rule.targets)
            if problem is not None:
                issues.append(Issue("error", "value", problem, (f"{path}.reference",)))

    def _extension(self, value: dict[str, Any], path: str, issues: list[Issue]) -> None:
        has_value = any(key.startswith(("value", "_value")) for key in value)
        if has_value == ("extension" in value):
            issues.append(
                Issue(
                    "error", "invariant", "ext-1: must have either extensions or value[x], not both", (path,)
                )
            )

    def _code_binding(self, rule: ElementRule, code: str, path: str, issues: list[Issue]) -> None:
        assert rule.binding is not None
        if self.terminology.validate_code(rule.binding, None, code) is False:
            issues.append(
                Issue(
                    "error",
                    "code-invalid",
                    f"'{code}' is not in the required value set {canonical_url(rule.binding)} ({rule.path})",
                    (path,),
                )
            )

    def _coded_binding(
        self, rule: ElementRule, value: dict[str, Any], path: str, issues: list[Issue]
    ) -> None:
        assert rule.binding is not None
        if rule.type_code == "Coding":
            codings: list[Any] = [value]
        elif rule.type_code == "CodeableConcept":
            codings = value.get("coding") or []
        else:
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
            issues.append(
                Issue(
                    "error",
                    "code-invalid",
                    f"none of {shown} is in the required value set "
                    f"{canonical_url(rule.binding)} ({rule.path})",
                    (path,),
                )
            )
