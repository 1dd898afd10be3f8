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

from adapters.base import JsonObject, Sink
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
from adapters.dicom.worklist import is_imaging_request, worklist_record
from adapters.identity import organization_identifier_system


class Catalog:
    def __init__(self, sink: Sink, store: InstanceStore) -> None:
        self._sink = sink
        self._store = store

    async def find(
        self, level: str, criteria: Mapping[str, str], *, member: str | None = None
    ) -> list[Record]:
        """Records at `level` matching `criteria`; raises FhirError when the FHIR store fails. `member`:
        as that member's clients see (series and instances: of the studies it sees)."""
        if level == "STUDY":
            found = await self._sink.search("ImagingStudy", study_search_params(criteria), member=member)
            records = study_records(found)
        elif level == "PATIENT":
            records = patient_records(
                await self._sink.search("Patient", patient_search_params(criteria), member=member)
            )
        elif member is not None and not await self.sees_study(criteria.get("StudyInstanceUID"), member):
            records = []
        else:
            instances = await asyncio.to_thread(self._store.select, **uid_filters(criteria))
            records = level_records(level, instances)
        return [r for r in records if matches(r, criteria)]

    async def sees_study(self, study_uid: str | None, member: str) -> bool:
        """Whether `member` sees the study `study_uid` (its ImagingStudy is of a person it sees)."""
        if not study_uid:
            return False
        return bool(await self.find("STUDY", {"StudyInstanceUID": study_uid}, member=member))

    async def worklist(self, calling_ae: str, member: str | None) -> list[Record]:
        """Active imaging ServiceRequests as worklist items for the calling modality.

        With a member (the AE's mapping), only requests whose performer is that member's Organization
        (by id, or by its `urn:yilian:member` identifier as the HL7 feed creates it) or that name no
        performer; without one, every active imaging request.
        """
        bundle = await self._sink.search("ServiceRequest", [("status", "active"), ("_count", "1000")])
        orgs: dict[str, bool] = {}
        records = []
        for entry in bundle.get("entry", []):
            sr = entry.get("resource", {})
            if sr.get("resourceType") != "ServiceRequest" or sr.get("status") != "active":
                continue
            if not is_imaging_request(sr):
                continue
            performers = [str(p.get("reference", "")) for p in sr.get("performer", [])]
            if (
                member
                and performers
                and not any([await self._is_member(ref, member, orgs) for ref in performers])
            ):
                continue
            subject = str(sr.get("subject", {}).get("reference", ""))
            patient = None
            if subject.startswith("Patient/"):
                patient = await self._sink.read("Patient", subject.removeprefix("Patient/"))
            records.append(worklist_record(sr, patient, calling_ae))
        return records

    async def _is_member(self, reference: str, member: str, cache: dict[str, bool]) -> bool:
        if not reference.startswith("Organization/"):
            return False
        if reference not in cache:
            org_id = reference.removeprefix("Organization/")
            org: JsonObject | None = (
                None if org_id == member else await self._sink.read("Organization", org_id)
            )
            cache[reference] = org_id == member or any(
                i.get("system") == organization_identifier_system() and i.get("value") == member
                for i in (org or {}).get("identifier", [])
            )
        return cache[reference]
