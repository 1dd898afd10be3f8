"""Run every listener of the hub in one asyncio loop until interrupted (composition root).

FHIR over HTTP (uvicorn), MLLP, DICOM (+ DICOMweb mounted beside /fhir) and the outbound ORU delivery
hooked to the after-commit events. A listener whose port is 0 is not started.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal

import uvicorn

from adapters.dicom.dicomweb import build_dicomweb_app
from adapters.dicom.service import start_dicom
from adapters.hl7v2.listener import start_mllp
from adapters.hl7v2.outbound import OruDelivery
from fhir_server.api.app import DICOMWEB_BASE
from fhir_server.hub import open_hub, tune_for_serving
from fhir_server.settings import Settings

LOGGER = logging.getLogger(__name__)


class UnsafeExposure(Exception):
    """The configuration would publish patient data on a network without access control."""


class Terminated(Exception):
    """SIGTERM (`docker stop`, systemd): stop the way Ctrl-C does, closing every listener and store."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Refuse to serve FHIR beyond this machine without bearer tokens, unless explicitly allowed."""
    if (
        _is_loopback(settings.host)
        or settings.api_tokens
        or settings.smart_clients
        or settings.allow_open_network
    ):
        return
    raise UnsafeExposure(
        f"refusing to serve patient data on {settings.host} without access control: set YILIAN_API_TOKENS "
        '(e.g. \'{"<token>": "county-his"}\') or, for a closed network only, YILIAN_ALLOW_OPEN_NETWORK=true'
    )


async def serve(settings: Settings) -> None:
    check_exposure(settings)
    if not _is_loopback(settings.mllp_host) and settings.mllp_tls_cert is None:
        LOGGER.warning(
            "MLLP listens on %s in clear text: set YILIAN_MLLP_TLS_CERT and YILIAN_MLLP_TLS_KEY (and "
            "YILIAN_MLLP_TLS_CA for member certificates), or restrict it to member networks",
            settings.mllp_host,
        )
    if not _is_loopback(settings.dicom_host):
        LOGGER.warning(
            "DICOM listens on %s: restrict it to member networks (firewall / VPN)", settings.dicom_host
        )
    async with open_hub(settings) as hub, contextlib.AsyncExitStack() as stack:
        delivery = OruDelivery(settings, hub.sink)
        hub.service.events.subscribe(delivery.on_change)
        delivery.start()
        stack.push_async_callback(delivery.close)
        if settings.mllp_port:
            mllp = await start_mllp(settings, hub.sink)
            stack.push_async_callback(mllp.close)
            LOGGER.info("MLLP listening on %s:%s", settings.mllp_host, mllp.port)
        if settings.dicom_port:
            dicom = await start_dicom(settings, hub.sink)
            stack.push_async_callback(dicom.close)
            hub.app.mount(DICOMWEB_BASE, build_dicomweb_app(settings, hub.sink, dicom.instances))
            LOGGER.info("DICOM %s listening on %s:%s", settings.dicom_aet, settings.dicom_host, dicom.port)
        LOGGER.info("FHIR API on http://%s:%s%s", settings.host, settings.port, settings.base_path)
        tune_for_serving()
        # uvicorn stops on SIGTERM, then raises it again with the handler it found. Python's default
        # ends the process there, before the listeners, the outbound recorder and the stores close:
        # reports noted for delivery but not yet written would be lost. This handler unwinds instead.
        signal.signal(signal.SIGTERM, _raise_terminated)
        config = uvicorn.Config(
            hub.app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            lifespan="off",
            limit_concurrency=settings.max_http_connections,
            access_log=False,  # request lines carry patient ids and names; AuditEvents record access
        )
        try:
            await uvicorn.Server(config).serve()
        finally:
            LOGGER.info("stopping: closing the listeners")
            await stack.aclose()
            LOGGER.info("listeners closed; closing the stores")
