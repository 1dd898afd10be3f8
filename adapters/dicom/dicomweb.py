"""DICOMweb under `/dicomweb`: QIDO-RS search, WADO-RS retrieve (instances, metadata, frames), STOW-RS.

Served from the same instance store and matching rules as the DIMSE side, so a web viewer sees exactly
what C-FIND sees, and bytes as received. STOW-RS uses the same `ingest.receive` as C-STORE, then
publishes the touched studies before answering. The CLI obtains `instance_store` from the running
listener (`DicomService.instances`) or, without a listener, from `instances.open_instance_store`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.base import Sink
from adapters.dicom import multipart
from adapters.dicom.catalog import Catalog
from adapters.dicom.ingest import receive
from adapters.dicom.instances import InstanceStore, InstanceWriteError, StoredInstance
from adapters.dicom.matching import vr_of
from adapters.dicom.publish import StudyPublisher
from adapters.dicom.query import (
    IMAGE_KEYS,
    PATIENT_KEYS,
    SERIES_KEYS,
    STUDY_KEYS,
    matching_instances,
)
from adapters.dicom.summary import InvalidInstance
from adapters.dicom.vocabulary import NATIVE_TRANSFER_SYNTAXES
from fhir_server.errors import FhirError
from fhir_server.model.access_record import MEMBER_VIEW_SCOPE_KEY
from fhir_server.settings import Settings

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
_CONTROL_PARAMS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
_DEFAULT_KEYS = {
    "STUDY": (*PATIENT_KEYS, *STUDY_KEYS),
    "SERIES": (*SERIES_KEYS, "StudyInstanceUID"),
    "IMAGE": (*IMAGE_KEYS, "StudyInstanceUID", "SeriesInstanceUID"),
}
_FRAME_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


class DicomWeb:
    """Route handlers; one instance per mounted app."""

    def __init__(self, settings: Settings, sink: Sink, store: InstanceStore) -> None:
        self._settings = settings
        self._store = store
        self._publisher = StudyPublisher(store, sink, settings)
        self._catalog = Catalog(sink, store)

    # --- QIDO-RS ----------------------------------------------------------------------------------

    async def search(self, request: Request) -> Response:
        level = request.scope["route_level"]
        params = request.path_params
        criteria, requested, limit, offset = _qido_params(request, level)
        for key, name in (("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID")):
            if key in params:
                criteria[name] = params[key]
        member = request.scope.get(MEMBER_VIEW_SCOPE_KEY)
        try:
            records = (await self._catalog.find(level, criteria, member=member))[offset:]
        except FhirError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        if limit is not None:
            records = records[:limit]
        body = [_json_record(r, requested) for r in records]
        return JSONResponse(body, media_type=DICOM_JSON)

    # --- WADO-RS ----------------------------------------------------------------------------------

    async def retrieve(self, request: Request) -> Response:
        found = await self._selected(request)
        if not found:
            return Response(status_code=404)
        files = await asyncio.to_thread(lambda: [self._store.path_for(i.sha256).read_bytes() for i in found])
        body, content_type = multipart.build(files, "application/dicom")
        return Response(body, media_type=content_type)

    async def metadata(self, request: Request) -> Response:
        found = await self._selected(request)
        if not found:
            return Response(status_code=404)

        def load() -> list[dict[str, Any]]:
            out = []
            for inst in found:
                ds = dcmread(self._store.path_for(inst.sha256), stop_before_pixels=True)
                out.append(ds.to_json_dict(bulk_data_threshold=1 << 20))
            return out

        return JSONResponse(await asyncio.to_thread(load), media_type=DICOM_JSON)

    async def frames(self, request: Request) -> Response:
        found = await self._selected(request)
        if not found:
            return Response(status_code=404)
        try:
            wanted = [int(n) for n in request.path_params["frames"].split(",")]
        except ValueError:
            return Response("frame list must be integers", status_code=400)
        inst = found[0]
        try:
            frames, media = await asyncio.to_thread(self._frames, inst, wanted)
        except IndexError:
            return Response(status_code=404)
        body, content_type = multipart.build(frames, media)
        return Response(body, media_type=content_type)

    def _frames(self, inst: StoredInstance, wanted: list[int]) -> tuple[list[bytes], str]:
        ds = dcmread(self._store.path_for(inst.sha256))
        ts = inst.summary.transfer_syntax
        count = inst.summary.number_of_frames
        if any(n < 1 or n > count for n in wanted) or "PixelData" not in ds:
            raise IndexError("frame out of range")
        if ts in NATIVE_TRANSFER_SYNTAXES:
            data = ds.PixelData
            size = len(data) // count
            return [data[(n - 1) * size : n * size] for n in wanted], (
                f"application/octet-stream; transfer-syntax={ts}"
            )
        all_frames = list(generate_frames(ds.PixelData, number_of_frames=count))
        return [
            all_frames[n - 1] for n in wanted
        ], f"{_FRAME_MEDIA.get(ts, 'application/octet-stream')}; transfer-syntax={ts}"

    async def _selected(self, request: Request) -> list[StoredInstance]:
        """The instances a WADO-RS path names; none (404) for a member client's request about a study of
        a person it does not see."""
        p = request.path_params
        member = request.scope.get(MEMBER_VIEW_SCOPE_KEY)
        if member is not None and not await self._catalog.sees_study(p.get("study"), member):
            return []
        criteria = {}
        level = "STUDY"
        for key, name, lvl in (
            ("study", "StudyInstanceUID", "STUDY"),
            ("series", "SeriesInstanceUID", "SERIES"),
            ("instance", "SOPInstanceUID", "IMAGE"),
        ):
            if key in p:
                criteria[name] = p[key]
                level = lvl
        instances = await asyncio.to_thread(
            self._store.select,
            [p["study"]] if "study" in p else None,
            [p["series"]] if "series" in p else None,
            [p["instance"]] if "instance" in p else None,
        )
        return matching_instances(level, criteria, instances)

    # --- STOW-RS ----------------------------------------------------------------------------------

    async def store(self, request: Request) -> Response:
        media, params = multipart.content_type_params(request.headers.get("content-type", ""))
        if media != "multipart/related" or params.get("type", "application/dicom") != "application/dicom":
            return Response('expected multipart/related; type="application/dicom"', status_code=415)
        try:
            parts = multipart.split(await request.body(), params.get("boundary", ""))
        except multipart.MultipartError as exc:
            return Response(str(exc), status_code=400)
        target = request.path_params.get("study")
        caller = request.client.host if request.client else "dicomweb"
        stored: list[StoredInstance] = []
        failed: list[tuple[bytes, int]] = []
        for _headers, payload in parts:
            try:
                inst = await asyncio.to_thread(receive, self._store, payload, "STOW-RS", "", None, target)
            except InvalidInstance as exc:
                log.warning("STOW-RS part from %s refused: %s", caller, exc)
                failed.append((payload, 0xC000))
                continue
            except InstanceWriteError as exc:
                log.error("STOW-RS part from %s not stored: %s", caller, exc)
                failed.append((payload, 0xA700))
                continue
            stored.append(inst)
        for study_uid in dict.fromkeys(i.summary.study_uid for i in stored):
            try:
                await self._publisher.publish(study_uid)
            except FhirError as exc:  # stored and still pending: the listener's buffer retries it
                log.warning("ImagingStudy publication after STOW-RS failed: %s", exc)
        status = 200 if not failed else 202 if stored else 409
        return JSONResponse(_stow_response(stored, failed), status_code=status, media_type=DICOM_JSON)


def _qido_params(request: Request, level: str) -> tuple[dict[str, str], list[str], int | None, int]:
    criteria: dict[str, str] = {}
    requested = list(_DEFAULT_KEYS[level])
    limit: int | None = None
    offset = 0
    for key, value in request.query_params.multi_items():
        if key == "limit":
            limit = int(value)
        elif key == "offset":
            offset = int(value)
        elif key == "includefield":
            requested.extend(_keyword(v) for v in value.split(",") if v and v != "all")
        elif key not in _CONTROL_PARAMS:
            kw = _keyword(key)
            criteria[kw] = value
            requested.append(kw)
    return criteria, list(dict.fromkeys(requested)), limit, offset


def _keyword(key: str) -> str:
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        from pydicom.datadict import keyword_for_tag

        return keyword_for_tag(int(key, 16)) or key
    return key


def _json_record(record: dict[str, str], requested: list[str]) -> dict[str, Any]:
    ds = Dataset()
    for kw in requested:
        value = record.get(kw, "")
        vr = vr_of(kw)
        if not value:
            continue
        if vr in ("US", "UL", "SS", "SL"):
            setattr(ds, kw, int(value))
        elif "\\" in value:
            setattr(ds, kw, value.split("\\"))
        else:
            setattr(ds, kw, value)
    result: dict[str, Any] = ds.to_json_dict()
    return result


def _stow_response(stored: list[StoredInstance], failed: list[tuple[bytes, int]]) -> dict[str, Any]:
    ds = Dataset()
    if stored:
        refs = []
        for inst in stored:
            item = Dataset()
            item.ReferencedSOPClassUID = inst.summary.sop_class_uid
            item.ReferencedSOPInstanceUID = inst.summary.sop_instance_uid
            refs.append(item)
        ds.ReferencedSOPSequence = refs
    if failed:
        items = []
        for _payload, reason in failed:
            item = Dataset()
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = items
    result: dict[str, Any] = ds.to_json_dict()
    return result


def build_dicomweb_app(settings: Settings, sink: Sink, instance_store: InstanceStore) -> Starlette:
    """The DICOMweb sub-app the CLI mounts at `/dicomweb` beside `/fhir`."""
    web = DicomWeb(settings, sink, instance_store)

    def qido(path: str, level: str) -> Route:
        async def endpoint(request: Request) -> Response:
            request.scope["route_level"] = level
            return await web.search(request)

        return Route(path, endpoint, methods=["GET"])

    s, se, i = "/studies/{study}", "/series/{series}", "/instances/{instance}"
    routes = [
        qido("/studies", "STUDY"),
        Route("/studies", web.store, methods=["POST"]),
        qido("/series", "SERIES"),
        qido("/instances", "IMAGE"),
        Route(s, web.retrieve, methods=["GET"]),
        Route(s, web.store, methods=["POST"]),
        Route(f"{s}/metadata", web.metadata, methods=["GET"]),
        qido(f"{s}/series", "SERIES"),
        qido(f"{s}/instances", "IMAGE"),
        Route(f"{s}{se}", web.retrieve, methods=["GET"]),
        Route(f"{s}{se}/metadata", web.metadata, methods=["GET"]),
        qido(f"{s}{se}/instances", "IMAGE"),
        Route(f"{s}{se}{i}", web.retrieve, methods=["GET"]),
        Route(f"{s}{se}{i}/metadata", web.metadata, methods=["GET"]),
        Route(f"{s}{se}{i}/frames/{{frames}}", web.frames, methods=["GET"]),
    ]
    return Starlette(routes=routes)
