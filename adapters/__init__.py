"""Adapters: legacy feeds (HL7 v2, DICOM) translated into FHIR transaction Bundles."""
