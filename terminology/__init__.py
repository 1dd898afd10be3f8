"""Terminology service: CodeSystems, ValueSets, ConceptMaps."""
