"""ADT A40 (merge patient, structure ADT_A39) → a PID update and a `Patient/$merge`, in one transaction.

The IG has no map for A40; ours: the Bundle updates the surviving Patient from PID-3 (a sparse update
like every PID's, `fhir_server/model/sparse_update.py`: an A40's PID usually carries only the number
and a name, and what it does not send stays, a 居民身份证 registered earlier included) and invokes
`POST Patient/$merge` with `source-patient-identifier` = MRG-1 (same member namespace rules as
PID-3) and `target-patient` = the survivor's entry. The server merges in the same write section
(`fhir_server/interactions/merge.py`): the old Patient is kept `active: false` with `link replaced-by`,
the survivor gains its identifiers (`use: old`) and `link replaces`, and every resource referring to
the old Patient is re-pointed, with Provenance. Nothing is read through the Sink first, so an A40 costs
one transaction, and a later message naming the old MRN lands on the survivor.

An A40 is applied alone (no patient key): it concerns two patients, and a message about the old MRN
coalesced into the same transaction would be resolved before the merge it follows.
"""

from __future__ import annotations

from adapters.hl7v2 import datatypes as dtp
from adapters.hl7v2.parse import Message
from adapters.hl7v2.segments import pid
from adapters.hl7v2.transaction import Context, TransactionBuilder, Translation, TranslationError, require
from adapters.identity import patient_identifier_system

TRIGGERS = ("A40",)


def translate(message: Message, ctx: Context) -> Translation:
    tx = TransactionBuilder(message, ctx)
    pid_seg = message.first("PID")
    require(pid_seg, 3, "PID-3")
    assert pid_seg is not None
    mrg = message.first("MRG")
    require(mrg, 1, "MRG-1")
    assert mrg is not None
    old_value, old_authority, _ = dtp.cx(mrg.reps(1)[0], mrg.enc)
    old_system = patient_identifier_system(old_authority or tx.facility)
    survivor = pid.translate(pid_seg, tx.facility, ctx.tz)
    if (survivor.system, survivor.value) == (old_system, old_value):
        raise TranslationError("MRG-1 names the surviving patient itself", "MRG-1", "102")
    survivor_url = tx.upsert_patient(survivor.resource, survivor.system, survivor.value, survivor.cleared)
    tx.invoke(
        "Patient/$merge",
        [
            {
                "name": "source-patient-identifier",
                "valueIdentifier": {"system": old_system, "value": old_value},
            },
            {"name": "target-patient", "valueReference": {"reference": survivor_url}},
        ],
    )
    translation = tx.finish()
    translation.fields["Parameters.source-patient-identifier"] = ("MRG-1", "204")  # unknown key identifier
    return translation
