"""YiLian FHIR hub: an R4 server with HL7 v2 and DICOM adapters for a medical consortium."""

__version__ = "0.1.0"
