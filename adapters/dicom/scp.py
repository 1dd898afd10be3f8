"""Build and start the pynetdicom Application Entity for the hub's DICOM listener.

Presentation contexts come from `vocabulary` (storage SOP classes × stored-as-received transfer
syntaxes, verification, Q/R FIND/MOVE/GET in patient and study root, Modality Worklist). Anything else
is rejected at negotiation. Unknown calling AE titles are refused when configured.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import AE, _config
from pynetdicom.transport import ThreadedAssociationServer

from adapters.dicom import vocabulary as v
from adapters.dicom.handlers import DicomHandlers
from adapters.dicom.storage_scp import ProtocolError, parse_associate_rq, storage_only
from fhir_server.settings import Settings

MAX_PDU = 1024 * 1024


def build_ae(settings: Settings) -> AE:
    """An AE accepting the hub's storage, query/retrieve and worklist contexts."""
    _config.LOG_REQUEST_IDENTIFIERS = False  # identifiers carry names and IDs: never at INFO
    ae = AE(ae_title=settings.dicom_aet)
    ae.maximum_pdu_size = MAX_PDU
    ae.maximum_associations = 64
    ae.add_supported_context(v.VERIFICATION_SOP_CLASS, [v.EXPLICIT_VR_LE, v.IMPLICIT_VR_LE])
    for sop_class in v.STORAGE_SOP_CLASSES:
        # scp_role/scu_role: also accept the role reversal C-GET needs to send back on this association
        ae.add_supported_context(sop_class, list(v.TRANSFER_SYNTAXES), scu_role=True, scp_role=True)
    for sop_class in sorted(v.QUERY_SOP_CLASSES):
        ae.add_supported_context(sop_class, [v.EXPLICIT_VR_LE, v.IMPLICIT_VR_LE])
    if settings.dicom_refuse_unknown_callers:
        ae.require_calling_aet = list(settings.dicom_known_aes)
    return ae


log = logging.getLogger(__name__)
PEEK_TIMEOUT = 10.0
Dispatch = Callable[[socket.socket], bool]


class DispatchingServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, except that storage-only associations are handed to `dispatch`.

    The A-ASSOCIATE-RQ is only peeked (MSG_PEEK), so whichever side serves the connection reads it
    from the start: pynetdicom for query/retrieve/worklist/mixed, a storage worker for the rest.
    """

    def __init__(self, *args: Any, dispatch: Dispatch | None = None, **kwargs: Any) -> None:
        self._dispatch = dispatch
        super().__init__(*args, **kwargs)

    def finish_request(self, request: Any, client_address: Any) -> None:
        handed_off = (
            self._dispatch is not None
            and isinstance(request, socket.socket)
            and _storage_only(request)
            and self._dispatch(request)
        )
        if not handed_off:  # else: detached and sent away; shutdown_request finds nothing to close
            super().finish_request(request, client_address)


def _storage_only(conn: socket.socket) -> bool:
    previous = conn.gettimeout()
    conn.settimeout(PEEK_TIMEOUT)
    try:
        header = conn.recv(6, socket.MSG_PEEK | socket.MSG_WAITALL)
        if len(header) < 6 or header[0] != 0x01:
            return False
        length = struct.unpack_from(">I", header, 2)[0]
        if length > 1 << 20:
            return False
        pdu = conn.recv(6 + length, socket.MSG_PEEK | socket.MSG_WAITALL)
        return storage_only(parse_associate_rq(pdu))
    except (OSError, ProtocolError, struct.error):
        return False  # let pynetdicom read it and answer (or abort) properly
    finally:
        conn.settimeout(previous)


def start_server(
    ae: AE, host: str, port: int, handlers: DicomHandlers, dispatch: Dispatch | None = None
) -> DispatchingServer:
    bindings: list[Any] = handlers.bindings()
    server = ae.make_server(
        (host, port), evt_handlers=bindings, server_class=DispatchingServer, dispatch=dispatch
    )
    assert isinstance(server, DispatchingServer)
    thread = threading.Thread(target=server.serve_forever, name="dicom-acceptor", daemon=True)
    thread.start()
    ae._servers.append(server)  # pynetdicom's own start_server does the same; shutdown() removes it
    return server
