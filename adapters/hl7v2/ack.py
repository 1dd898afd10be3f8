"""ACK construction: original mode (AA/AE/AR) and enhanced mode (commit CA/CE/CR, then application ACK).

Two builders, one shape. Accepts (AA/CA) are the hot path, so they come from a string template (an
hl7apy-built ACK costs ~3.6 ms, more than the whole rest of the per-message work). Anything carrying
errors (AE/AR/CE/CR) is built with hl7apy's ACK structure for the message's version, so ERR follows the
version's layout: v2.5+ ERR-2 location (ERL) / ERR-3 code (HL7 table 0357) / ERR-4 severity / ERR-8 text;
v2.3/2.4 ERR-1 (segment^sequence^field^code&text&0357). MSA-2 always echoes the original MSH-10.

Mode rules (MSH-15 accept ack type, MSH-16 application ack type; table 0155 AL/NE/ER/SU): both empty →
original mode, one ACK after processing. Otherwise enhanced: a commit ACK once the message is journaled
(if MSH-15 asks for it), then an application ACK after processing (if MSH-16 asks for it).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from hl7apy.core import Message as Hl7apyMessage

from adapters.hl7v2.parse import Encoding, Message, codec_for, escape, msh_fields

ERROR_TEXT = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}
_HL7APY_VERSIONS = {
    "2.1",
    "2.2",
    "2.3",
    "2.3.1",
    "2.4",
    "2.5",
    "2.5.1",
    "2.6",
    "2.7",
    "2.8",
    "2.8.1",
    "2.8.2",
}
_LOCATION = re.compile(r"^([A-Z][A-Z0-9]{2})(?:-(\d+))?(?:\[(\d+)\])?(?:\.(\d+))?")


@dataclass(frozen=True)
class ErrorDetail:
    """One ERR segment: HL7 table 0357 code, readable reason, 'SEG-n[rep].comp' location, severity."""

    code: str
    reason: str
    location: str = ""
    severity: str = "E"


@dataclass(frozen=True)
class Header:
    """The MSH facts an ACK needs, readable even when the message itself could not be parsed."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    control_id: str = ""
    trigger: str = ""
    processing_id: str = "P"
    version: str = "2.5"
    charset: str = ""
    accept_ack: str = ""
    app_ack: str = ""

    @property
    def enhanced(self) -> bool:
        return bool(self.accept_ack or self.app_ack)

    @property
    def codec(self) -> str:
        try:
            return codec_for(self.charset) if self.charset else "utf-8"
        except ValueError:
            return "utf-8"

    @classmethod
    def from_message(cls, msg: Message) -> Header:
        msh = msg.msh
        return cls(
            msh.raw(3), msh.raw(4), msh.raw(5), msh.raw(6), msh.get(10), msh.get(9, 2),
            msh.get(11) or "P", msh.get(12) or "2.5", msh.get(18), msh.get(15), msh.get(16),
        )  # fmt: skip

    @classmethod
    def from_raw(cls, raw: bytes) -> Header:
        """Best effort from bytes (for messages that failed to parse or decode)."""

        fields = [b.decode("utf-8", "replace") for b in msh_fields(raw)]

        def f(n: int) -> str:
            return fields[n - 1] if n - 1 < len(fields) else ""

        return cls(
            f(3), f(4), f(5), f(6), f(10), f(9).split("^")[1] if "^" in f(9) else "",
            f(11).split("^")[0] or "P", f(12).split("^")[0] or "2.5", f(18).split("~")[0], f(15), f(16),
        )  # fmt: skip


def wants(ack_type: str, ok: bool) -> bool:
    """Whether an enhanced-mode ACK of this type (table 0155) is to be sent for this outcome."""
    kind = (ack_type or "AL").upper()
    return kind == "AL" or (kind == "ER" and not ok) or (kind == "SU" and ok)


_STAMP: list[object] = [None, ""]


def _timestamp(now: dt.datetime) -> str:
    """DTM of `now` to the second with zone; formatted once per second (strftime with %z is slow)."""
    key = (now.replace(microsecond=0), now.utcoffset())
    if _STAMP[0] != key:
        _STAMP[0], _STAMP[1] = key, now.strftime("%Y%m%d%H%M%S%z")
    return str(_STAMP[1])


def build(
    header: Header,
    code: str,
    ack_control_id: str,
    errors: list[ErrorDetail] | None = None,
    now: dt.datetime | None = None,
) -> bytes:
    """An ACK for `header` with MSA-1 = code (AA AE AR CA CE CR), encoded in the message's charset."""
    now = now or dt.datetime.now(dt.UTC).astimezone()
    if not errors:
        text = _fast(header, code, ack_control_id, now)
    else:
        text = _with_errors(header, code, ack_control_id, errors, now)
    return text.encode(header.codec, "replace")


def _fast(h: Header, code: str, ack_control_id: str, now: dt.datetime) -> str:
    return (
        f"MSH|^~\\&|{h.receiving_application}|{h.receiving_facility}|{h.sending_application}|"
        f"{h.sending_facility}|{_timestamp(now)}||ACK^{h.trigger}^ACK|{ack_control_id}|{h.processing_id}|"
        f"{h.version}||||||{h.charset}\rMSA|{code}|{h.control_id}\r"
    )


def _with_errors(
    h: Header, code: str, ack_control_id: str, errors: list[ErrorDetail], now: dt.datetime
) -> str:
    version = h.version if h.version in _HL7APY_VERSIONS else "2.5"
    msg = Hl7apyMessage("ACK", version=version)
    msh = msg.msh
    msh.msh_3 = h.receiving_application
    msh.msh_4 = h.receiving_facility
    msh.msh_5 = h.sending_application
    msh.msh_6 = h.sending_facility
    msh.msh_7 = _timestamp(now)
    msh.msh_9 = "ACK" if version in ("2.1", "2.2") else f"ACK^{h.trigger}^ACK"
    msh.msh_10 = ack_control_id
    msh.msh_11 = h.processing_id
    msh.msh_12 = h.version
    if h.charset:
        msh.msh_18 = h.charset
    msg.msa.msa_1 = code
    msg.msa.msa_2 = h.control_id
    first = errors[0]
    if version in ("2.1", "2.2", "2.3", "2.3.1", "2.4"):
        msg.msa.msa_3 = escape(first.reason)[:80]
    enc = Encoding()
    for err in errors:
        seg = msg.add_segment("ERR")
        m = _LOCATION.match(err.location or "")
        where = (m.group(1), m.group(3) or "1", m.group(2) or "", m.group(4) or "") if m else ("", "", "", "")
        label = ERROR_TEXT.get(err.code, "Application error")
        if version in ("2.1", "2.2", "2.3", "2.3.1", "2.4"):
            seg.err_1 = f"{where[0]}^{where[1] if where[0] else ''}^{where[2]}^{err.code}&{label}&HL70357"
        else:
            if where[0]:
                seg.err_2 = "^".join(
                    (where[0], "1", where[2], where[1] if where[2] else "", where[3])
                ).rstrip("^")
            seg.err_3 = f"{err.code}^{label}^HL70357"
            seg.err_4 = err.severity
            seg.err_8 = escape(f"{err.location}: {err.reason}" if err.location else err.reason, enc)
    return str(msg.to_er7()) + "\r"


def is_accept(ack: bytes) -> bool:
    """Whether an ACK (as sent to us, e.g. by a member for an outbound ORU) accepts the message."""
    for line in re.split(rb"[\r\n]+", ack):
        if line.startswith(b"MSA"):
            return line[4:6] in (b"AA", b"CA")
    return False
