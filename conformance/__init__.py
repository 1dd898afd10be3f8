"""Black-box conformance runner for any FHIR server."""
