"""Run every listener of the hub in one asyncio loop until interrupted (composition root).

FHIR over HTTP (uvicorn), MLLP, DICOM (+ DICOMweb mounted beside /fhir) and the outbound ORU delivery
hooked to the after-commit events. A listener whose port is 0 is not started.
"""

from __future__ import annotations

import contextlib
import logging

import uvicorn

from adapters.dicom.dicomweb import build_dicomweb_app
from adapters.dicom.service import start_dicom
from adapters.hl7v2.listener import start_mllp
from adapters.hl7v2.outbound import OruDelivery
from fhir_server.hub import open_hub
from fhir_server.settings import Settings

LOGGER = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    async with open_hub(settings) as hub, contextlib.AsyncExitStack() as stack:
        delivery = OruDelivery(settings, hub.sink)
        hub.service.events.subscribe(delivery.on_change)
        stack.push_async_callback(delivery.close)
        if settings.mllp_port:
            mllp = await start_mllp(settings, hub.sink)
            stack.push_async_callback(mllp.close)
            LOGGER.info("MLLP listening on %s:%s", settings.mllp_host, mllp.port)
        if settings.dicom_port:
            dicom = await start_dicom(settings, hub.sink)
            stack.push_async_callback(dicom.close)
            hub.app.mount("/dicomweb", build_dicomweb_app(settings, hub.sink, dicom.instances))
            LOGGER.info("DICOM %s listening on %s:%s", settings.dicom_aet, settings.dicom_host, dicom.port)
        LOGGER.info("FHIR API on http://%s:%s%s", settings.host, settings.port, settings.base_path)
        config = uvicorn.Config(
            hub.app, host=settings.host, port=settings.port, log_level="warning", lifespan="off"
        )
        await uvicorn.Server(config).serve()
