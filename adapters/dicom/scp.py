"""Build and start the pynetdicom Application Entity for the hub's DICOM listener.

Presentation contexts come from `vocabulary` (storage SOP classes × stored-as-received transfer
syntaxes, verification, Q/R FIND/MOVE/GET in patient and study root, Modality Worklist). Anything else
is rejected at negotiation. Unknown calling AE titles are refused when configured.
"""

from __future__ import annotations

from typing import Any

from pynetdicom import AE, _config
from pynetdicom.transport import ThreadedAssociationServer

from adapters.dicom import vocabulary as v
from adapters.dicom.handlers import DicomHandlers
from fhir_server.settings import Settings

_QUERY_CLASSES = (
    v.PATIENT_ROOT_FIND,
    v.PATIENT_ROOT_MOVE,
    v.PATIENT_ROOT_GET,
    v.STUDY_ROOT_FIND,
    v.STUDY_ROOT_MOVE,
    v.STUDY_ROOT_GET,
    v.MODALITY_WORKLIST_FIND,
)
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
    for sop_class in _QUERY_CLASSES:
        ae.add_supported_context(sop_class, [v.EXPLICIT_VR_LE, v.IMPLICIT_VR_LE])
    if settings.dicom_refuse_unknown_callers:
        ae.require_calling_aet = list(settings.dicom_known_aes)
    return ae


def start_server(ae: AE, host: str, port: int, handlers: DicomHandlers) -> ThreadedAssociationServer:
    bindings: list[Any] = handlers.bindings()
    server = ae.start_server((host, port), block=False, evt_handlers=bindings)
    assert isinstance(server, ThreadedAssociationServer)
    return server
