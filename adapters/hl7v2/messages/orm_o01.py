"""ORM^O01 and OML^O21 → ServiceRequest(s) (+ Patient, requester, performer Organization).

Each ORC starts an order; its OBR says what is ordered (an OBR without a preceding ORC, as some OML
senders do, is an order of its own). The Patient from PID is created when unknown (never overwritten: see
`patient_url`), so an order for a patient the hub has not seen yet is not lost; PV1-19, when present,
links the Encounter.
"""

from __future__ import annotations

from adapters.hl7v2.parse import Message, Segment
from adapters.hl7v2.segments import orc as orc_map
from adapters.hl7v2.segments import pid, pv1
from adapters.hl7v2.transaction import Context, TransactionBuilder, Translation, TranslationError, require


def orders(message: Message) -> list[tuple[Segment | None, Segment | None]]:
    """(ORC, OBR) pairs in message order."""
    pairs: list[tuple[Segment | None, Segment | None]] = []
    for seg in message.segments:
        if seg.name == "ORC":
            pairs.append((seg, None))
        elif seg.name == "OBR":
            if pairs and pairs[-1][1] is None:
                pairs[-1] = (pairs[-1][0], seg)
            else:
                pairs.append((None, seg))
    return pairs


def patient_url(message: Message, tx: TransactionBuilder, ctx: Context) -> str:
    """The PID's Patient by conditional *create*, and its fullUrl.

    Orders, results and referrals carry a minimal PID; demographics belong to ADT. So these messages only
    create a Patient the hub has not seen (an order must not be lost for want of an A04) and never
    overwrite what registration sent.
    """
    pid_seg = message.first("PID")
    require(pid_seg, 3, "PID-3")
    assert pid_seg is not None
    patient = pid.translate(pid_seg, tx.facility, ctx.tz)
    tx.patient_key = patient.key
    return tx.ensure(patient.resource, patient.system, patient.value)


def translate(message: Message, ctx: Context) -> Translation:
    tx = TransactionBuilder(message, ctx)
    subject = patient_url(message, tx, ctx)
    pv1_seg = message.first("PV1")
    encounter = pv1.translate(pv1_seg, tx, subject, ctx.tz) if pv1_seg is not None else None
    pairs = orders(message)
    if not pairs:
        raise TranslationError("no ORC/OBR order in the message", "ORC", "100")
    receiver = message.msh.get(6)
    for orc, obr in pairs:
        if obr is None:
            raise TranslationError("order without OBR (nothing says what is ordered)", "OBR", "100")
        ids = orc_map.order_ids(orc, obr, tx.facility, receiver or tx.facility)
        url = orc_map.translate(orc, obr, tx, subject, ids, ctx.tz, tx.facility, receiver)
        if encounter:
            tx._by_url[url]["resource"]["encounter"] = {"reference": encounter}
    return tx.finish()
