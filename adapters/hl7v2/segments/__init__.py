"""One module per v2 segment: segment → FHIR resource content (pure)."""
