"""A lean HL7 v2 parser: bytes → `Message` (segments of raw field strings), charset and escapes handled.

Why our own parser: hl7apy builds a full typed tree per message (about 86 ADT/s here) and python-hl7
about 2k/s, while the ingest target is ≥ 1,000 msg/s end to end. Translators only read a few dozen
fields, so we split the message once into segments and fields and split components, repetitions and
escapes lazily, on the fields actually read. hl7apy still supplies message-structure knowledge
(`structure.py`) and builds error ACKs (`ack.py`), off the hot path.

Charset (MSH-18): the MSH segment is ASCII in every charset a member sends, so MSH-18 is read from the raw
bytes first, then the whole message is decoded with it. Chinese HIS send the non-standard `GBK` and
`GB2312` as well as `GB 18030-2000`; all three decode as GB 18030, their superset. When MSH-18 is empty
the sender's configured default (by MSH-4) applies, then the hub default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from adapters.base import AdapterError

SEGMENT_SEPARATORS = re.compile(r"\r\n|\r|\n")

# MSH-18 value (upper-cased, spaces/underscores/dashes removed) → Python codec.
_CHARSETS: dict[str, str] = {
    "UNICODEUTF8": "utf-8",
    "UTF8": "utf-8",
    "GB180302000": "gb18030",
    "GB18030": "gb18030",
    "GBK": "gb18030",
    "GB2312": "gb18030",
    "CNS116431992": "big5",
    "BIG5": "big5",
    "ASCII": "ascii",
    "88591": "latin-1",
    "ISOIR6": "ascii",
    "ISOIR100": "latin-1",
    "ISOIR58": "gb18030",
    "UNICODE": "utf-8",
}


class ParseError(AdapterError):
    """The bytes are not a usable HL7 v2 message; `location` names the segment/field (e.g. 'MSH-18')."""

    def __init__(self, reason: str, location: str = "", code: str = "102") -> None:
        super().__init__(reason)
        self.reason = reason
        self.location = location
        self.code = code  # HL7 table 0357 error condition


def codec_for(charset: str) -> str:
    """Python codec for an MSH-18 value; raises ParseError for values we do not know."""
    key = re.sub(r"[\s_\-/]", "", charset).upper()
    codec = _CHARSETS.get(key)
    if codec is None:
        raise ParseError(f"unsupported character set '{charset}'", "MSH-18", "203")
    return codec


@dataclass(frozen=True)
class Encoding:
    """The five delimiters from MSH-1/MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    codec: str = "utf-8"  # for \\Xhh\\ escapes: hex bytes are in the message's charset


@dataclass
class Segment:
    """One segment: `fields[n]` is SEG-n as a raw string (escapes and sub-structure still inside)."""

    name: str
    fields: list[str]
    enc: Encoding = field(default_factory=Encoding)

    def raw(self, n: int) -> str:
        """SEG-n as sent (empty string when absent)."""
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[str]:
        """Repetitions of SEG-n, raw."""
        value = self.raw(n)
        if not value:
            return []
        return value.split(self.enc.repetition)

    def get(self, n: int, comp: int = 1, sub: int = 1) -> str:
        """The decoded text of SEG-n.comp.sub (first repetition); '' when absent."""
        value = self.raw(n)
        if not value or (n <= 2 and self.name == "MSH"):
            return value  # MSH-1/MSH-2 are the delimiters themselves
        return component(value.split(self.enc.repetition, 1)[0], comp, self.enc, sub)

    def comps(self, n: int, rep: int = 0) -> list[str]:
        """Decoded components of one repetition of SEG-n (first sub-component of each)."""
        reps = self.reps(n)
        if rep >= len(reps):
            return []
        return components(reps[rep], self.enc)


def components(rep: str, enc: Encoding) -> list[str]:
    """Decoded components of one repetition (first sub-component of each)."""
    esc, sub = enc.escape, enc.subcomponent
    out = []
    for part in rep.split(enc.component):
        first = part.split(sub, 1)[0] if sub in part else part
        out.append(unescape(first, enc) if esc in first else first)  # most values have no escapes
    return out


def component(rep: str, comp: int, enc: Encoding, sub: int = 1) -> str:
    """Decoded text of component `comp` (1-based) and sub-component `sub` of one repetition."""
    parts = rep.split(enc.component)
    if comp > len(parts):
        return ""
    subs = parts[comp - 1].split(enc.subcomponent)
    if sub > len(subs):
        return ""
    value = subs[sub - 1]
    return unescape(value, enc) if enc.escape in value else value  # most values have no escapes


_ESCAPES = re.compile(r"\\(F|S|T|R|E|H|N|\.br|X[0-9A-Fa-f]*|C[0-9A-Fa-f]*|M[0-9A-Fa-f]*|Z[^\\]*)\\")


def unescape(value: str, enc: Encoding) -> str:
    """Decode HL7 escape sequences (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ \\.br\\; \\H\\ \\N\\ dropped)."""
    if enc.escape not in value:
        return value
    esc = enc.escape
    pattern = (
        _ESCAPES
        if esc == "\\"
        else re.compile(re.escape(esc) + r"(F|S|T|R|E|H|N|\.br|X[0-9A-Fa-f]*)" + re.escape(esc))
    )

    def replace(m: re.Match[str]) -> str:
        code = m.group(1)
        if code == "F":
            return enc.field
        if code == "S":
            return enc.component
        if code == "T":
            return enc.subcomponent
        if code == "R":
            return enc.repetition
        if code == "E":
            return esc
        if code == ".br":
            return "\n"
        if code[0] == "X" and len(code) > 1 and len(code) % 2 == 1:
            try:
                return bytes.fromhex(code[1:]).decode(enc.codec)
            except (ValueError, UnicodeDecodeError):
                return m.group(0)
        return ""  # \H\ \N\ highlighting, \C..\ \M..\ \Z..\ charset switches and locals: not text

    return pattern.sub(replace, value)


@dataclass
class Message:
    """A parsed message: segments in order plus the MSH facts every stage needs."""

    segments: list[Segment]
    enc: Encoding
    codec: str

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def first(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.name == name]

    @property
    def message_type(self) -> str:
        return self.msh.get(9, 1)

    @property
    def trigger(self) -> str:
        return self.msh.get(9, 2)

    @property
    def control_id(self) -> str:
        return self.msh.get(10)

    @property
    def sending_facility(self) -> str:
        return self.msh.get(4) or self.msh.get(4, 2)

    @property
    def sending_application(self) -> str:
        return self.msh.get(3) or self.msh.get(3, 2)

    @property
    def version(self) -> str:
        return self.msh.get(12) or "2.5"


def msh_fields(raw: bytes) -> list[bytes]:
    """The MSH fields straight from the bytes, before decoding (MSH is ASCII in every charset we
    accept): element n-1 is MSH-n. Empty when the bytes do not start with MSH."""
    if not raw.startswith(b"MSH") or len(raw) < 4:
        return []
    end = len(raw)
    for sep in (b"\r", b"\n"):
        i = raw.find(sep, 0, end)
        if i != -1:
            end = i
    return raw[:end].split(raw[3:4])


def _field(fields: list[bytes], n: int) -> bytes:
    return fields[n - 1] if n - 1 < len(fields) else b""


def header_facts(raw: bytes) -> tuple[str, str, str]:
    """(sending facility, control id, message type) from raw MSH bytes, to journal before a full parse."""
    fields = msh_fields(raw)
    facility = _field(fields, 4).split(b"^", 1)[0]
    return (
        facility.decode("utf-8", "replace").strip(),
        _field(fields, 10).decode("utf-8", "replace").strip(),
        _field(fields, 9).decode("ascii", "replace")[:20],
    )


def detect_codec(raw: bytes, default_charset: str, sender_charsets: Mapping[str, str]) -> str:
    """The codec for a message: MSH-18 (first repetition), else the sender's default, else the hub's."""
    fields = msh_fields(raw)
    msh18 = _field(fields, 18).split(b"~", 1)[0].strip()
    if msh18:
        return codec_for(msh18.decode("ascii", "replace"))
    facility = _field(fields, 4).split(b"^", 1)[0].decode("utf-8", "replace").strip()
    configured = sender_charsets.get(facility)
    return codec_for(configured or default_charset)


def parse(
    raw: bytes, default_charset: str = "UNICODE UTF-8", sender_charsets: Mapping[str, str] | None = None
) -> Message:
    """Parse one message. Raises ParseError naming the field for a missing MSH or undecodable bytes."""
    if not raw.startswith(b"MSH") or len(raw) < 8:
        raise ParseError("message does not start with an MSH segment", "MSH", "100")
    codec = detect_codec(raw, default_charset, sender_charsets or {})
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"bytes at offset {exc.start} are not valid {codec} (check MSH-18 or the sender's default)",
            "MSH-18",
            "102",
        ) from exc
    return parse_text(text, codec)


def parse_text(text: str, codec: str = "utf-8") -> Message:
    """Parse an already-decoded message text."""
    fs = text[3]
    msh_end = len(text)
    for sep in ("\r", "\n"):
        i = text.find(sep)
        if i != -1:
            msh_end = min(msh_end, i)
    enc_chars = text[4:msh_end].split(fs, 1)[0]
    if len(enc_chars) < 3:
        raise ParseError("MSH-2 encoding characters missing", "MSH-2", "101")
    enc = Encoding(
        field=fs,
        component=enc_chars[0],
        repetition=enc_chars[1],
        escape=enc_chars[2] if len(enc_chars) > 2 else "\\",
        subcomponent=enc_chars[3] if len(enc_chars) > 3 else "&",
        codec=codec,
    )
    segments: list[Segment] = []
    for line in SEGMENT_SEPARATORS.split(text):
        if not line.strip():
            continue
        parts = line.split(fs)
        name = parts[0]
        if name == "MSH":
            # MSH-1 is the separator itself, so shift by one: fields[n] stays MSH-n.
            parts = ["MSH", fs, *parts[1:]]
        elif len(name) != 3 or not name.isalnum():
            raise ParseError(f"'{name[:10]}' is not a segment name", f"segment {len(segments) + 1}", "100")
        segments.append(Segment(name, parts, enc))
    return Message(segments, enc, codec)


BATCH_HEADERS = (b"FHS", b"BHS", b"BTS", b"FTS")


def split_batch(raw: bytes) -> list[bytes]:
    """Split an HL7 batch (FHS/BHS ... BTS/FTS) or a plain file of messages into single messages.

    Works on bytes: CR/LF never occur inside GB 18030/UTF-8 multi-byte sequences, so segment boundaries
    are safe to find before decoding. A single message comes back unchanged.
    """
    messages: list[list[bytes]] = []
    for line in re.split(rb"\r\n|\r|\n", raw):
        if not line.strip() or line[:3] in BATCH_HEADERS:
            continue
        if line.startswith(b"MSH"):
            messages.append([line])
        elif messages:
            messages[-1].append(line)
        else:
            raise ParseError(
                "batch content before the first MSH segment", line[:3].decode("ascii", "replace"), "100"
            )
    return [b"\r".join(segs) + b"\r" for segs in messages]


def is_batch(raw: bytes) -> bool:
    return raw[:3] in (b"FHS", b"BHS")


def escape(value: str, enc: Encoding | None = None) -> str:
    """Encode text for a v2 field (the inverse of `unescape` for the five delimiters and line breaks)."""
    enc = enc or Encoding()
    esc = enc.escape
    out = value.replace(esc, f"{esc}E{esc}")
    for char, code in (
        (enc.field, "F"),
        (enc.component, "S"),
        (enc.subcomponent, "T"),
        (enc.repetition, "R"),
    ):
        out = out.replace(char, f"{esc}{code}{esc}")
    return (
        out.replace("\r\n", f"{esc}.br{esc}").replace("\n", f"{esc}.br{esc}").replace("\r", f"{esc}.br{esc}")
    )
