"""StructureDefinition validation: structure, cardinality, bindings, invariants."""
