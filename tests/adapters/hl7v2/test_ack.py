"""ACK construction per version and mode, and the journal's idempotency rules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from adapters.hl7v2 import ack as acks
from adapters.hl7v2.journal import Journal, NewEntry, Outcome
from adapters.hl7v2.parse import parse, parse_text
from tests.adapters.hl7v2.conftest import sample

NOW = dt.datetime(2024, 3, 15, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def test_accept_ack_swaps_sender_and_receiver_and_echoes_control_id() -> None:
    header = acks.Header.from_message(parse(sample("adt_a04_utf8")))
    ack = parse(acks.build(header, "AA", "YL1", now=NOW))
    msh = ack.msh
    assert (msh.get(3), msh.get(4), msh.get(5), msh.get(6)) == ("YILIAN", "YLHUB", "HIS", "FYXWSY")
    assert (msh.get(7), msh.get(9, 1), msh.get(9, 2), msh.get(10), msh.get(12), msh.get(18)) == (
        "20240315083000+0800", "ACK", "A04", "YL1", "2.5", "UNICODE UTF-8",
    )  # fmt: skip
    assert ack.first("MSA").raw(1) == "AA" and ack.first("MSA").raw(2) == "ADT0001"  # type: ignore[union-attr]


def test_v25_err_segment_layout() -> None:
    header = acks.Header.from_message(parse(sample("adt_a04_utf8")))
    errors = [acks.ErrorDetail("102", "不是有效的身份证号 | bad", "PID-3[2]")]
    ack = parse(acks.build(header, "AE", "YL2", errors, now=NOW))
    err = ack.first("ERR")
    assert err is not None
    assert err.raw(2) == "PID^1^3^2" and err.raw(3) == "102^Data type error^HL70357" and err.raw(4) == "E"
    assert err.get(8) == "PID-3[2]: 不是有效的身份证号 | bad"  # escaped on the wire, readable decoded


def test_v23_err_segment_layout_and_gb18030_encoding() -> None:
    raw = sample("adt_a01_gb18030").replace(b"|P|2.5|", b"|P|2.3|")
    header = acks.Header.from_message(parse(raw))
    out = acks.build(header, "AE", "YL3", [acks.ErrorDetail("101", "姓名为空", "PID-5")], now=NOW)
    text = out.decode("gb18030")
    ack = parse_text(text)
    assert ack.first("ERR").raw(1) == "PID^1^5^101&Required field missing&HL70357"  # type: ignore[union-attr]
    assert ack.first("MSA").get(3) == "姓名为空"  # type: ignore[union-attr]


def test_enhanced_mode_rules() -> None:
    assert acks.wants("AL", True) and acks.wants("AL", False)
    assert not acks.wants("NE", True) and not acks.wants("NE", False)
    assert acks.wants("ER", False) and not acks.wants("ER", True)
    assert acks.wants("SU", True) and not acks.wants("SU", False)


def _entry(raw: bytes, control: str) -> NewEntry:
    return NewEntry(raw, "peer", "H1", control, "ADT^A04", dt.datetime.now(dt.UTC))


def test_journal_recognises_resends_and_reopens_failed_ones(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    [first, second] = journal.append([_entry(b"MSH|a", "C1"), _entry(b"MSH|b", "C2")])
    journal.finish(
        [Outcome(first.id, "applied", None, b"ACK1"), Outcome(second.id, "error", "PID-3: empty", b"ACK2")]
    )
    [dup, retry, fresh] = journal.append(
        [_entry(b"MSH|a", "C1"), _entry(b"MSH|b fixed", "C2"), _entry(b"MSH|c", "C3")]
    )
    assert dup.duplicate_of is not None and dup.duplicate_of.ack == b"ACK1"
    assert retry.duplicate_of is None and retry.id == second.id  # never applied: processed again
    assert journal.get(second.id).raw == b"MSH|b fixed" and journal.get(second.id).status == "received"  # type: ignore[union-attr]
    assert fresh.duplicate_of is None and fresh.id > second.id
    assert journal.counts() == {"applied": 1, "received": 2}
    assert [e.id for e in journal.pending()] == [second.id, fresh.id]
    journal.close()
