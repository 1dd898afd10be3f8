"""DICOM: DIMSE services and DICOMweb."""
