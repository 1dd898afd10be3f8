"""StructureDefinition validation of R4 JSON resources.

Entry points: `profiles.validator.build_validator()` (once, at startup) → `Validator.validate(resource)`
→ `list[fhir_server.errors.Issue]`; `Validator.ensure_valid()` raises `Unprocessable` (422).

Modules: `structure` compiles snapshots into lookup nodes · `primitives` checks primitive values ·
`references` checks reference syntax and targets · `check` walks an instance · `validator` wires them
with the terminology service · `report` summarises a whole package (the official examples).

Checked: JSON structure and types, unknown elements, cardinality, choice types, primitive formats,
required bindings, reference syntax/targets, core extension definitions, SimpleQuantity, and the
structural invariants ele-1, ext-1, ref-1, dom-2..dom-5. Not yet: FHIRPath invariants in general.
"""
