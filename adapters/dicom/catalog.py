"""What C-FIND and QIDO-RS search: the FHIR store for patients and studies, the instance index below.

PATIENT and STUDY levels are answered from the FHIR store through the Sink (so studies and patients
registered by FHIR clients or the HL7 feed are found too), SERIES and IMAGE levels from the instance
index (the FHIR ImagingStudy holds no per-series patient data and C-MOVE needs the files anyway). In
both cases the FHIR search only narrows; DICOM matching (`matching.py`) decides, so wildcards, ranges
and UID lists mean the same everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from adapters.base import Sink
from adapters.dicom.instances import InstanceStore
from adapters.dicom.matching import matches
from adapters.dicom.query import (
    Record,
    level_records,
    patient_records,
    patient_search_params,
    study_records,
    study_search_params,
    uid_filters,
)


class Catalog:
    def __init__(self, sink: Sink, store: InstanceStore) -> None:
        self._sink = sink
        self._store = store

    async def find(self, level: str, criteria: Mapping[str, str]) -> list[Record]:
        """Records at `level` matching `criteria`; raises FhirError when the FHIR store fails."""
        if level == "STUDY":
            records = study_records(await self._sink.search("ImagingStudy", study_search_params(criteria)))
        elif level == "PATIENT":
            records = patient_records(await self._sink.search("Patient", patient_search_params(criteria)))
        else:
            instances = await asyncio.to_thread(self._store.select, **uid_filters(criteria))
            records = level_records(level, instances)
        return [r for r in records if matches(r, criteria)]
