"""MLLP framing: frames across arbitrary chunking, garbage outside frames, oversize frames."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapters.hl7v2.mllp import Frame, FrameDecoder, Garbage, Oversize, frame


@given(
    st.lists(
        st.binary(min_size=1, max_size=200).filter(lambda b: b"\x1c" not in b and b"\x0b" not in b),
        min_size=1,
        max_size=8,
    ),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30),
)
def test_any_chunking_yields_the_same_frames(messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(m) for m in messages)
    decoder = FrameDecoder(max_size=10_000)
    events = []
    pos = 0
    for cut in cuts * 100:
        if pos >= len(stream):
            break
        events += decoder.feed(stream[pos : pos + cut])
        pos += cut
    events += decoder.feed(stream[pos:])
    assert [e.data for e in events if isinstance(e, Frame)] == messages
    assert decoder.partial == 0


def test_bytes_outside_frames_are_reported_and_skipped() -> None:
    decoder = FrameDecoder(100)
    events = decoder.feed(b"hello" + frame(b"MSH|1") + b"\r\n" + frame(b"MSH|2"))
    assert isinstance(events[0], Garbage) and events[0].size == 5
    assert [e.data for e in events if isinstance(e, Frame)] == [b"MSH|1", b"MSH|2"]


def test_oversize_frame_is_cut_and_the_next_frame_still_decoded() -> None:
    decoder = FrameDecoder(50)
    big = b"MSH|^~\\&|HIS|H1|||||ADT^A04|C9|P|2.5\r" + b"X" * 500
    events = []
    for i in range(0, len(big) + 10, 37):
        events += decoder.feed((frame(big) + frame(b"MSH|ok"))[i : i + 37])
    events += decoder.feed((frame(big) + frame(b"MSH|ok"))[len(big) + 10 - (len(big) + 10) % 37 + 37 :])
    over = [e for e in events if isinstance(e, Oversize)]
    assert len(over) == 1 and over[0].size == len(big) and over[0].head.startswith(b"MSH|^~\\&|HIS|H1")
    assert [e.data for e in events if isinstance(e, Frame)] == [b"MSH|ok"]


def test_partial_frame_counted() -> None:
    decoder = FrameDecoder(100)
    assert decoder.feed(b"\x0bMSH|half") == []
    assert decoder.partial == 8
