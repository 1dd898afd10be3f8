"""The resource validator the FHIR core calls on every write and for `POST [type]/$validate`.

`build_validator()` does the expensive part once: it compiles every core StructureDefinition snapshot
(resources and datatypes) into lookup nodes, the primitive regexes into checkers, and loads the core
terminology. `Validator.validate(resource)` is then a pure walk of the JSON (a Patient takes tens of
microseconds). Why not the R4 JSON schema or the R4B models on the hot path: the schema misses
cardinality minimums, bindings and reference rules and costs far more per call; the R4B models
disagree with R4 on some types (R4 decides) and accept bogus codes. Both stay useful as oracles in
tests and benchmarks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_server.errors import Issue, Unprocessable
from fhir_server.model.definitions import (
    CORE_PACKAGE,
    core_structure_definitions,
    iter_package,
    resource_types,
)
from profiles.check import InstanceChecker
from profiles.consortium import resident_id_issues
from profiles.primitives import compile_primitives
from profiles.references import ReferenceSyntax
from profiles.structure import Node, compile_definition, link_types, walk_rules
from terminology.service import TerminologyService
from terminology.valuesets import build_core_terminology

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Validator:
    """Validates R4 JSON resources; thread-safe and cheap to call."""

    checker: InstanceChecker

    def __repr__(self) -> str:  # the compiled tables are huge; keep test failure output readable
        return f"Validator({len(self.checker.resources)} resource types)"

    @property
    def resource_types(self) -> frozenset[str]:
        return frozenset(self.checker.resources)

    def validate(self, resource: Any, resource_type: str | None = None) -> list[Issue]:
        """All findings for `resource`; valid when no issue has severity error or fatal.

        `resource_type`, when given (the type in the request URL), must match `resourceType`.
        """
        issues: list[Issue] = []
        actual = resource.get("resourceType") if isinstance(resource, dict) else None
        if resource_type is not None and actual != resource_type:
            issues.append(
                Issue(
                    "error",
                    "invalid",
                    f"resourceType {actual!r} does not match the expected type {resource_type}",
                    (resource_type,),
                )
            )
            return issues
        root = actual if isinstance(actual, str) else "Resource"
        try:
            self.checker.check_resource(resource, root, issues)
        except (
            RecursionError
        ):  # absurdly deep nesting (Questionnaire.item inside item ...): refuse, don't crash
            issues.append(
                Issue("error", "too-costly", "the resource is nested too deeply to validate", (root,))
            )
        issues.extend(resident_id_issues(resource))
        return issues

    def ensure_valid(self, resource: Any, resource_type: str | None = None) -> list[Issue]:
        """Raise `Unprocessable` (422) carrying the issues when any is an error; return the rest."""
        issues = self.validate(resource, resource_type)
        errors = [issue for issue in issues if is_error(issue)]
        if errors:
            first = errors[0]
            where = f" at {first.expression[0]}" if first.expression else ""
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise Unprocessable(f"Invalid resource: {first.diagnostics}{where}{more}", issues)
        return issues


def is_error(issue: Issue) -> bool:
    return issue.severity in ("error", "fatal")


def build_validator(
    terminology: TerminologyService | None = None, extra_packages: Iterable[Path] = ()
) -> Validator:
    """Compile the core R4 definitions into a `Validator` (about a second; call once at startup)."""
    started = time.perf_counter()
    definitions = core_structure_definitions()
    concrete = resource_types()
    resources: dict[str, Node] = {}
    datatypes: dict[str, Node] = {}
    for name, sd in definitions.items():
        kind = sd.get("kind")
        if "snapshot" not in sd:
            continue
        if kind == "resource" and name in concrete:
            resources[name] = compile_definition(sd)
        elif kind == "complex-type" or name == "Element":
            datatypes[name] = compile_definition(sd)
    extensions: dict[str, Node] = {}
    for sd in iter_package(CORE_PACKAGE, "StructureDefinition"):
        if sd.get("derivation") != "constraint" or "snapshot" not in sd:
            continue
        if sd.get("type") == "Extension":
            node = extensions[sd["url"]] = compile_definition(sd)
            node.path = f"Extension({sd['url']})"  # messages then name the extension
        elif sd.get("kind") == "complex-type" and sd["id"] not in datatypes:  # SimpleQuantity, MoneyQuantity
            datatypes[sd["id"]] = compile_definition(sd)
    primitives = compile_primitives(definitions)
    roots = [*resources.values(), *datatypes.values(), *extensions.values()]
    link_types(
        roots,
        datatypes,
        {k: p.check for k, p in primitives.items()},
    )
    service = terminology if terminology is not None else build_core_terminology(extra_packages)
    bindings = {rule.binding for rule in walk_rules(roots) if rule.binding is not None}
    expandable = sum(service.expand(url) is not None for url in sorted(bindings))  # warm, off the hot path
    checker = InstanceChecker(
        resources=resources,
        datatypes=datatypes,
        terminology=service,
        references=ReferenceSyntax(frozenset(resources)),
        extensions=extensions,
    )
    logger.info(
        "validator built: %d resource types, %d datatypes, %d extensions, %d/%d required value sets "
        "expandable, in %.2fs",
        len(resources),
        len(datatypes),
        len(extensions),
        expandable,
        len(bindings),
        time.perf_counter() - started,
    )
    return Validator(checker)
