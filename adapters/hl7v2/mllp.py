"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol): <VT> message <FS><CR>. Pure, no sockets.

`FrameDecoder` is fed whatever bytes the socket delivers and yields events: complete frames, bytes
outside any frame (skipped up to the next <VT>, reported so the peer can be logged), and oversize frames
(the rest is discarded up to <FS><CR>; the first bytes are kept so the answer can still name the
message's MSH). A peer that disconnects mid-frame leaves a partial frame that was never acknowledged,
so nothing acknowledged is lost.
"""

from __future__ import annotations

from dataclasses import dataclass

VT = b"\x0b"
FS = b"\x1c"
CR = b"\r"
END = FS + CR
HEAD_KEEP = 4096


def frame(message: bytes) -> bytes:
    return VT + message + END


@dataclass(frozen=True)
class Frame:
    data: bytes


@dataclass(frozen=True)
class Garbage:
    """Bytes received outside a frame (not MLLP)."""

    size: int
    head: bytes


@dataclass(frozen=True)
class Oversize:
    """A frame longer than the limit; `head` is its beginning (for the MSH)."""

    size: int
    head: bytes


Event = Frame | Garbage | Oversize


class FrameDecoder:
    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._in_frame = False
        self._oversize = 0
        self._head = b""

    @property
    def partial(self) -> int:
        """Bytes of an unfinished frame (what a disconnect now would drop, unacknowledged)."""
        return len(self._buf) + self._oversize

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        buf = self._buf
        buf += data
        while buf:
            if not self._in_frame:
                start = buf.find(VT)
                if start == -1:
                    if buf.strip(b"\r\n\x00 "):
                        events.append(Garbage(len(buf), bytes(buf[:64])))
                    buf.clear()
                    break
                if start > 0:
                    skipped = bytes(buf[:start])
                    if skipped.strip(b"\r\n\x00 "):
                        events.append(Garbage(start, skipped[:64]))
                del buf[: start + 1]
                self._in_frame = True
            end = buf.find(END)
            if end == -1:
                if self._oversize or len(buf) > self.max_size:
                    if not self._oversize:
                        self._head = bytes(buf[:HEAD_KEEP])
                    keep = 1 if buf.endswith(FS) else 0
                    self._oversize += len(buf) - keep
                    del buf[: len(buf) - keep]
                break
            if self._oversize or end > self.max_size:
                head = self._head or bytes(buf[:HEAD_KEEP])
                events.append(Oversize(self._oversize + end, head))
                self._oversize = 0
                self._head = b""
            else:
                events.append(Frame(bytes(buf[:end])))
            del buf[: end + 2]
            self._in_frame = False
        return events
