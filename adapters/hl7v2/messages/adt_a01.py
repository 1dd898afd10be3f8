"""ADT A01/A04/A08/A28/A31 (structure ADT_A01 / ADT_A05) → Patient (+ Encounter when PV1-19 is valued).

All five carry the full demographics in PID, so they share one map: the Patient is conditionally updated
on its member-local number (A08/A31 are updates, A01/A04/A28 may create), the Encounter on its visit
number. A28/A31 are person-level (no visit); their PV1 is usually empty and is then ignored.
"""

from __future__ import annotations

from adapters.hl7v2.parse import Message
from adapters.hl7v2.segments import pid, pv1
from adapters.hl7v2.transaction import Context, TransactionBuilder, Translation, require

TRIGGERS = ("A01", "A04", "A08", "A28", "A31")


def translate(message: Message, ctx: Context) -> Translation:
    tx = TransactionBuilder(message, ctx)
    pid_seg = message.first("PID")
    require(pid_seg, 3, "PID-3")
    assert pid_seg is not None
    patient = pid.translate(pid_seg, tx.facility, ctx.tz)
    patient.resource["managingOrganization"] = {"reference": tx.organization(tx.facility)}
    patient_url = tx.upsert_patient(patient.resource, patient.system, patient.value, patient.cleared)
    tx.patient_key = patient.key
    pv1_seg = message.first("PV1")
    if pv1_seg is not None and message.trigger in ("A01", "A04", "A08"):
        pv1.translate(pv1_seg, tx, patient_url, ctx.tz)
    return tx.finish()
