"""Receiving one instance, the same way for C-STORE and STOW-RS: check, then make it durable.

Raises `InvalidInstance` (nothing stored) or `InstanceWriteError` (nothing stored); each edge maps
those once (DIMSE status / STOW FailureReason). Publishing the study is the caller's next step.
"""

from __future__ import annotations

from adapters.dicom import vocabulary as v
from adapters.dicom.instances import InstanceStore, InstanceWriteError, PendingWrite, StoredInstance
from adapters.dicom.summary import InvalidInstance, KnownMeta, summarize


def dimse_status(exc: Exception) -> int:
    """The one mapping from a failed receive to a C-STORE status (used by both DIMSE edges)."""
    if isinstance(exc, InstanceWriteError):
        return v.OUT_OF_RESOURCES
    if isinstance(exc, InvalidInstance):
        return v.CANNOT_UNDERSTAND
    return v.UNABLE_TO_PROCESS


def receive(
    store: InstanceStore,
    part10: bytes,
    calling_ae: str,
    member: str,
    expected_sop_uid: str | None = None,
    expected_study_uid: str | None = None,
    pending: PendingWrite | None = None,
    known: KnownMeta | None = None,
) -> StoredInstance:
    """Check and store one Part 10 instance; `pending` when its bytes were already streamed to disk."""
    if pending is None:
        pending = store.begin(part10)  # the flush to disk runs while the dataset is checked
    try:
        summary = summarize(part10, known)
        if expected_sop_uid is not None and summary.sop_instance_uid != expected_sop_uid:
            raise InvalidInstance("SOP Instance UID differs from the request")
        if expected_study_uid is not None and summary.study_uid != expected_study_uid:
            raise InvalidInstance("Study Instance UID differs from the target study")
    except InvalidInstance:
        store.abandon(pending)
        raise
    return store.commit(pending, summary, calling_ae, member)
