"""A lean DICOM Upper Layer acceptor for storage-only associations (C-STORE and C-ECHO), no pynetdicom.

Why it exists: pynetdicom's reactor threads poll with millisecond sleeps, which caps one association at
~200-240 instances/s before any work is done, and its threads share one GIL. Associations that propose
only storage and verification contexts (what modalities send) are handed to worker processes running
this loop; everything else (C-FIND, C-MOVE, C-GET, worklist, mixed) stays with pynetdicom in the hub.

Protocol (PS3.8 section 9, PS3.7 annex E), pure functions plus one blocking connection loop:
A-ASSOCIATE-RQ → AC/RJ, P-DATA-TF (PDVs with command / dataset fragments) → C-STORE-RSP / C-ECHO-RSP,
A-RELEASE-RQ → RP, A-ABORT. Anything unexpected aborts the association; the instance in flight is never
stored because nothing is stored before its last fragment has arrived and passed the checks.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from adapters.dicom import vocabulary as v
from adapters.dicom.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

log = logging.getLogger(__name__)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
NO_DATASET = 0x0101


class InstanceWriter(Protocol):
    """Receives one C-STORE dataset fragment by fragment; `finish` gives (status, study UID if stored)."""

    def write(self, fragment: memoryview) -> None:
        """`fragment` views a PDU buffer that is never reused: keep it, no copy needed."""

    def finish(self) -> tuple[int, str | None]: ...

    def abort(self) -> None: ...


StartFn = Callable[[str, str, str, str], InstanceWriter]
# (calling AE, SOP class, SOP instance, transfer syntax) -> the writer for that instance's dataset


class _Refused:
    """Swallows the dataset of a C-STORE refused before it arrived (SOP class not the context's)."""

    def __init__(self, status: int) -> None:
        self._status = status

    def write(self, fragment: memoryview) -> None:
        return None

    def finish(self) -> tuple[int, str | None]:
        return self._status, None

    def abort(self) -> None:
        return None


class ProtocolError(Exception):
    """The peer sent something this acceptor does not accept; the association is aborted."""


@dataclass
class AssociateRequest:
    called_ae: str
    calling_ae: str
    contexts: list[tuple[int, str, list[str]]]  # (id, abstract syntax, transfer syntaxes)
    max_pdu: int = 0
    roles: bool = False  # SCP/SCU role selection proposed (C-GET): not ours to serve


@dataclass
class Negotiated:
    accepted: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (abstract, transfer syntax)
    results: list[tuple[int, int, str]] = field(default_factory=list)  # (id, result, transfer syntax)


def _uid(raw: bytes | bytearray) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii", "replace")


def _ae(raw: bytes | bytearray) -> str:
    return raw.decode("ascii", "replace").strip()


def parse_associate_rq(pdu: bytes | bytearray) -> AssociateRequest:
    """A-ASSOCIATE-RQ PDU (including its 6-byte header) → what negotiation needs."""
    if len(pdu) < 74 or pdu[0] != 0x01:
        raise ProtocolError("not an A-ASSOCIATE-RQ")
    req = AssociateRequest(_ae(pdu[10:26]), _ae(pdu[26:42]), [])
    pos = 74
    while pos + 4 <= len(pdu):
        item_type, item_len = pdu[pos], struct.unpack_from(">H", pdu, pos + 2)[0]
        body = pdu[pos + 4 : pos + 4 + item_len]
        if item_type == 0x20:
            ctx_id, syntaxes, abstract, sub = body[0], [], "", 4
            while sub + 4 <= len(body):
                s_type, s_len = body[sub], struct.unpack_from(">H", body, sub + 2)[0]
                value = _uid(body[sub + 4 : sub + 4 + s_len])
                if s_type == 0x30:
                    abstract = value
                elif s_type == 0x40:
                    syntaxes.append(value)
                sub += 4 + s_len
            req.contexts.append((ctx_id, abstract, syntaxes))
        elif item_type == 0x50:
            sub = 0
            while sub + 4 <= len(body):
                s_type, s_len = body[sub], struct.unpack_from(">H", body, sub + 2)[0]
                if s_type == 0x51 and s_len == 4:
                    req.max_pdu = struct.unpack_from(">I", body, sub + 4)[0]
                elif s_type == 0x54:
                    req.roles = True
                sub += 4 + s_len
        pos += 4 + item_len
    return req


def storage_only(req: AssociateRequest) -> bool:
    """True unless a context asks for a service the hub answers through pynetdicom (query/retrieve,
    worklist) or C-GET role reversal. Modalities propose every storage class they know; the ones we do
    not store are rejected here exactly as pynetdicom would reject them."""
    return (
        bool(req.contexts) and not req.roles and not any(a in v.QUERY_SOP_CLASSES for _, a, _ in req.contexts)
    )


def negotiate(req: AssociateRequest) -> Negotiated:
    out = Negotiated()
    for ctx_id, abstract, syntaxes in req.contexts:
        if abstract == v.VERIFICATION_SOP_CLASS:
            ours: tuple[str, ...] = (v.EXPLICIT_VR_LE, v.IMPLICIT_VR_LE)
        elif abstract in v.STORAGE_SOP_CLASSES:
            ours = v.TRANSFER_SYNTAXES
        else:
            out.results.append((ctx_id, 3, syntaxes[0] if syntaxes else v.IMPLICIT_VR_LE))
            continue
        chosen = next((ts for ts in ours if ts in syntaxes), None)  # our preference, as pynetdicom does
        if chosen is None:
            out.results.append((ctx_id, 4, syntaxes[0] if syntaxes else v.IMPLICIT_VR_LE))
        else:
            out.results.append((ctx_id, 0, chosen))
            out.accepted[ctx_id] = (abstract, chosen)
    return out


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def build_associate_ac(req: AssociateRequest, result: Negotiated, max_pdu: int) -> bytes:
    ctx_items = b"".join(
        _item(0x21, struct.pack(">BBBB", ctx_id, 0, code, 0) + _item(0x40, ts.encode("ascii")))
        for ctx_id, code, ts in result.results
    )
    user = _item(
        0x50,
        _item(0x51, struct.pack(">I", max_pdu))
        + _item(0x52, IMPLEMENTATION_CLASS_UID.encode("ascii"))
        + _item(0x55, IMPLEMENTATION_VERSION.encode("ascii")),
    )
    header = struct.pack(">HH", 1, 0) + req.called_ae.encode("ascii", "replace").ljust(16)[:16]
    header += req.calling_ae.encode("ascii", "replace").ljust(16)[:16] + b"\x00" * 32
    return _pdu(0x02, header + _item(0x10, APPLICATION_CONTEXT.encode("ascii")) + ctx_items + user)


def build_associate_rj(reason: int) -> bytes:
    return _pdu(0x03, bytes([0, 1, 1, reason]))  # rejected-permanent, by the service user


RELEASE_RP = _pdu(0x06, b"\x00" * 4)
ABORT = _pdu(0x07, b"\x00\x00\x02\x00")  # source: service provider, reason not specified


def parse_command(data: bytes) -> dict[int, bytes]:
    """A DIMSE command set (implicit VR little endian, group 0000) → {element: raw value}."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(data):
        group, element, length = struct.unpack_from("<HHI", data, pos)
        if group != 0x0000:
            raise ProtocolError("command set element outside group 0000")
        out[element] = data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return out


def _us(value: bytes) -> int:
    return int(struct.unpack("<H", value[:2])[0]) if len(value) >= 2 else 0


def _elem(element: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HHI", 0, element, len(value)) + value


def build_response(
    command_field: int, message_id: int, sop_class: str, status: int, sop_instance: str
) -> bytes:
    body = _elem(0x0002, sop_class.encode("ascii")) + _elem(0x0100, struct.pack("<H", command_field))
    body += _elem(0x0120, struct.pack("<H", message_id)) + _elem(0x0800, struct.pack("<H", NO_DATASET))
    body += _elem(0x0900, struct.pack("<H", status))
    if sop_instance:
        body += _elem(0x1000, sop_instance.encode("ascii"))
    return _elem(0x0000, struct.pack("<I", len(body))) + body


def p_data(context_id: int, command: bytes) -> bytes:
    pdv = struct.pack(">IBB", len(command) + 2, context_id, 0x03) + command
    return _pdu(0x04, pdv)


def iter_pdvs(body: bytes | bytearray) -> Iterator[tuple[int, int, memoryview]]:
    """(context id, message control header, fragment) for each PDV item in a P-DATA-TF body."""
    view = memoryview(body)
    pos = 0
    while pos + 6 <= len(view):
        length = struct.unpack_from(">I", view, pos)[0]
        if length < 2 or pos + 4 + length > len(view):
            raise ProtocolError("malformed PDV item")
        yield view[pos + 4], view[pos + 5], view[pos + 6 : pos + 4 + length]
        pos += 4 + length


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    """A fresh buffer per call: fragments handed to writers view it, so it must never be reused."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        read = sock.recv_into(view[got:], n - got)
        if read == 0:
            raise ConnectionError("peer closed the connection")
        got += read
    return buf


def read_pdu(sock: socket.socket) -> tuple[int, bytearray]:
    header = _recv_exact(sock, 6)
    pdu_type, length = header[0], struct.unpack_from(">I", header, 2)[0]
    return pdu_type, header + _recv_exact(sock, length) if pdu_type == 0x01 else _recv_exact(sock, length)


@dataclass
class Policy:
    """Who may associate, and how large our PDUs may be."""

    known_aes: dict[str, str]
    refuse_unknown: bool = False
    max_pdu: int = 1024 * 1024


def serve_storage(sock: socket.socket, policy: Policy, start: StartFn) -> tuple[str, set[str]]:
    """Run one storage association to its end; (calling AE, Study Instance UIDs stored)."""
    studies: set[str] = set()
    _, rq = read_pdu(sock)
    req = parse_associate_rq(rq)
    if policy.refuse_unknown and req.calling_ae not in policy.known_aes:
        sock.sendall(build_associate_rj(3))  # calling AE title not recognised
        return req.calling_ae, studies
    result = negotiate(req)
    sock.sendall(build_associate_ac(req, result, policy.max_pdu))
    command: list[bytes] = []
    current: tuple[dict[int, bytes], int, InstanceWriter] | None = None  # command, context, writer
    try:
        while True:
            pdu_type, body = read_pdu(sock)
            if pdu_type in (0x05, 0x07):
                if current is not None:
                    current[2].abort()  # the instance in flight is dropped, never half-stored
                if pdu_type == 0x05:
                    sock.sendall(RELEASE_RP)
                return req.calling_ae, studies
            if pdu_type != 0x04:
                raise ProtocolError(f"unexpected PDU type {pdu_type:#x}")
            for ctx_id, control, fragment in iter_pdvs(body):
                if ctx_id not in result.accepted:
                    raise ProtocolError("PDV on a context that was not accepted")
                if control & 0x01:
                    command.append(bytes(fragment))
                    if control & 0x02:
                        cmd = parse_command(b"".join(command))
                        command = []
                        if _us(cmd.get(0x0800, b"")) == NO_DATASET:
                            _echo(sock, cmd, ctx_id)
                        else:
                            current = (cmd, ctx_id, _writer(cmd, ctx_id, result, req.calling_ae, start))
                elif current is None:
                    raise ProtocolError("dataset without a command")
                else:
                    current[2].write(fragment)
                    if control & 0x02:
                        cmd, ctx, writer = current
                        current = None
                        status, study = writer.finish()
                        if study:
                            studies.add(study)
                        _respond(sock, cmd, ctx, status)
    except (ProtocolError, ConnectionError, OSError) as exc:
        if current is not None:
            current[2].abort()
        log.warning("storage association from %s ended abnormally: %s", req.calling_ae, exc)
        try:
            sock.sendall(ABORT)
        except OSError:
            pass
        return req.calling_ae, studies


def _writer(
    cmd: dict[int, bytes], ctx_id: int, result: Negotiated, calling: str, start: StartFn
) -> InstanceWriter:
    if _us(cmd.get(0x0100, b"")) != C_STORE_RQ:
        raise ProtocolError("only C-STORE carries a dataset on a storage association")
    sop_class = _uid(cmd.get(0x0002, b""))
    abstract, transfer_syntax = result.accepted[ctx_id]
    if sop_class != abstract:
        return _Refused(v.DATASET_DOES_NOT_MATCH_SOP_CLASS)
    return start(calling, sop_class, _uid(cmd.get(0x1000, b"")), transfer_syntax)


def _echo(sock: socket.socket, cmd: dict[int, bytes], ctx_id: int) -> None:
    if _us(cmd.get(0x0100, b"")) != C_ECHO_RQ:
        raise ProtocolError("command without a dataset other than C-ECHO on a storage association")
    message_id, sop_class = _us(cmd.get(0x0110, b"")), _uid(cmd.get(0x0002, b""))
    sock.sendall(p_data(ctx_id, build_response(C_ECHO_RSP, message_id, sop_class, v.SUCCESS, "")))


def _respond(sock: socket.socket, cmd: dict[int, bytes], ctx_id: int, status: int) -> None:
    message_id, sop_class = _us(cmd.get(0x0110, b"")), _uid(cmd.get(0x0002, b""))
    sop_instance = _uid(cmd.get(0x1000, b""))
    sock.sendall(p_data(ctx_id, build_response(C_STORE_RSP, message_id, sop_class, status, sop_instance)))
