"""The lean storage upper layer: negotiation and framing checked against pynetdicom's own encoders."""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification, SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import build_context
from pynetdicom.transport import AddressInformation

from adapters.dicom import vocabulary as v
from adapters.dicom.part10 import file_meta
from adapters.dicom.storage_scp import (
    build_associate_ac,
    build_response,
    negotiate,
    parse_associate_rq,
    parse_command,
    storage_only,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
RT_IMAGE = "1.2.840.10008.5.1.4.1.1.481.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _rq(contexts, role=False) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "TOWNA"
    primitive.called_ae_title = "YILIAN"
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 1)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 2)
    cxs = []
    for i, (abstract, syntaxes) in enumerate(contexts):
        cx = build_context(abstract, syntaxes)
        cx.context_id = 2 * i + 1
        cxs.append(cx)
    primitive.presentation_context_definition_list = cxs
    max_len = MaximumLengthNotification()
    max_len.maximum_length_received = 16384
    user = [max_len]
    if role:
        item = SCP_SCU_RoleSelectionNegotiation()
        item.sop_class_uid = CT
        item.scp_role = True
        user.append(item)
    primitive.user_information = user
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def test_negotiation_accepts_storage_in_our_preference_and_rejects_the_rest():
    req = parse_associate_rq(
        _rq(
            [
                (CT, [v.IMPLICIT_VR_LE, v.EXPLICIT_VR_LE]),
                (CT, ["1.2.840.10008.1.2.4.50"]),
                (CT, ["1.2.840.10008.1.2.2"]),  # explicit big endian: not stored
                (RT_IMAGE, [v.EXPLICIT_VR_LE]),
            ]
        )
    )
    assert (req.calling_ae, req.called_ae, req.max_pdu) == ("TOWNA", "YILIAN", 16384)
    result = negotiate(req)
    assert result.results == [
        (1, 0, v.EXPLICIT_VR_LE),
        (3, 0, "1.2.840.10008.1.2.4.50"),
        (5, 4, "1.2.840.10008.1.2.2"),  # transfer syntaxes not supported
        (7, 3, v.EXPLICIT_VR_LE),  # abstract syntax not supported
    ]
    ac = build_associate_ac(req, result, 1 << 20)
    assert ac[0] == 0x02 and int.from_bytes(ac[2:6], "big") == len(ac) - 6


def test_only_pure_storage_associations_take_the_lean_path():
    assert storage_only(
        parse_associate_rq(_rq([(CT, [v.EXPLICIT_VR_LE]), (v.VERIFICATION_SOP_CLASS, [v.IMPLICIT_VR_LE])]))
    )
    assert not storage_only(
        parse_associate_rq(_rq([(CT, [v.EXPLICIT_VR_LE]), (STUDY_FIND, [v.IMPLICIT_VR_LE])]))
    )
    assert not storage_only(parse_associate_rq(_rq([(CT, [v.EXPLICIT_VR_LE])], role=True)))  # C-GET SCP role
    # storage classes we do not store still take the lean path (and are rejected there)
    assert storage_only(parse_associate_rq(_rq([(CT, [v.EXPLICIT_VR_LE]), (RT_IMAGE, [v.EXPLICIT_VR_LE])])))


def test_store_response_round_trips_as_a_command_set():
    sop = generate_uid()
    cmd = parse_command(build_response(0x8001, 7, CT, 0xA700, sop))
    assert int.from_bytes(cmd[0x0100], "little") == 0x8001
    assert int.from_bytes(cmd[0x0120], "little") == 7
    assert int.from_bytes(cmd[0x0900], "little") == 0xA700
    assert cmd[0x1000].rstrip(b"\x00").decode() == sop
    assert int.from_bytes(cmd[0x0000], "little") == sum(8 + len(v) for k, v in cmd.items() if k)


def test_file_meta_is_valid_part10():
    sop = generate_uid()
    meta = file_meta(CT, sop, v.EXPLICIT_VR_LE, "TOWNA")
    ds = dcmread(BytesIO(meta), stop_before_pixels=True)
    assert ds.file_meta.MediaStorageSOPInstanceUID == sop
    assert ds.file_meta.TransferSyntaxUID == v.EXPLICIT_VR_LE
    assert ds.file_meta.SourceApplicationEntityTitle == "TOWNA"
    assert ds.file_meta.FileMetaInformationGroupLength == len(meta) - 132 - 12
