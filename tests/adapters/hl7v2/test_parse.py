"""The lean parser: MSH-18 charsets (incl. GBK/GB2312 and per-sender defaults), escapes, batches."""

from __future__ import annotations

import pytest

from adapters.hl7v2.parse import Encoding, ParseError, escape, parse, split_batch, unescape
from tests.adapters.hl7v2.conftest import sample

MSH = "MSH|^~\\&|HIS|{fac}|YILIAN|YLHUB|20240315083000||ADT^A04|C1|P|2.5|||||CHN|{cs}\r"


def test_gb18030_bytes_decoded_by_msh18() -> None:
    msg = parse(sample("adt_a01_gb18030"))
    assert msg.codec == "gb18030"
    pid = msg.first("PID")
    assert pid is not None
    assert pid.get(5, 1) + pid.get(5, 2) == "李四"
    assert pid.get(11, 9) == "富阳区"


@pytest.mark.parametrize("charset", ["GBK", "GB2312", "GB 18030-2000", "gb18030"])
def test_chinese_charset_names_chinese_his_send(charset: str) -> None:
    raw = (MSH.format(fac="H1", cs=charset) + "PID|1||1||王^五\r").encode("gb18030")
    assert parse(raw).first("PID").get(5, 1) == "王"  # type: ignore[union-attr]


def test_empty_msh18_uses_sender_default_then_hub_default() -> None:
    raw = (MSH.format(fac="XCWSS", cs="") + "PID|1||1||王^五\r").encode("gb18030")
    assert parse(raw, sender_charsets={"XCWSS": "GB18030"}).first("PID").get(5) == "王"  # type: ignore[union-attr]
    with pytest.raises(ParseError) as err:
        parse(raw)  # hub default UTF-8: these bytes are not UTF-8
    assert err.value.location == "MSH-18"
    assert err.value.code == "102"


def test_unknown_charset_rejected_naming_msh18() -> None:
    with pytest.raises(ParseError) as err:
        parse((MSH.format(fac="H", cs="KLINGON") + "PID|1\r").encode())
    assert (err.value.location, err.value.code) == ("MSH-18", "203")


def test_not_hl7_rejected() -> None:
    with pytest.raises(ParseError) as err:
        parse(b"GET / HTTP/1.1\r\n\r\n")
    assert err.value.location == "MSH"


def test_escape_sequences_decoded() -> None:
    enc = Encoding()
    assert unescape("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f", enc) == "a|b^c&d~e\\f"
    assert unescape("line1\\.br\\line2", enc) == "line1\nline2"
    assert unescape("\\XE5BC A0\\x", enc) == "\\XE5BC A0\\x"  # malformed: left as sent
    assert unescape("\\XE5BCA0\\", enc) == "张"  # UTF-8 bytes of 张
    assert unescape("\\H\\bold\\N\\", enc) == "bold"
    gb = Encoding(codec="gb18030")
    assert unescape("\\XD5C5\\", gb) == "张"


def test_escape_roundtrip() -> None:
    text = "a|b^c&d~e\\f\ng"
    assert unescape(escape(text), Encoding()) == text


def test_field_component_access_with_escapes() -> None:
    msg = parse(sample("adt_a08_gbk"))
    pid = msg.first("PID")
    assert pid is not None
    assert pid.get(11, 1) == "江滨路12号|3单元^501"
    assert pid.get(13, 2) == "PRN" and pid.get(13, 7) == "13900139001"


def test_msh_numbering() -> None:
    msg = parse(sample("adt_a04_utf8"))
    assert msg.msh.get(1) == "|"
    assert msg.msh.get(2) == "^~\\&"
    assert (msg.message_type, msg.trigger, msg.control_id, msg.sending_facility) == (
        "ADT",
        "A04",
        "ADT0001",
        "FYXWSY",
    )


def test_batch_split() -> None:
    messages = split_batch(sample("batch"))
    assert len(messages) == 2
    assert [parse(m).control_id for m in messages] == ["BAT0001", "BAT0002"]
