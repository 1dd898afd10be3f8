from __future__ import annotations

import errno
import os

import pytest
from pydicom.uid import generate_uid

from adapters.dicom.instances import InstanceStore, InstanceWriteError
from adapters.dicom.summary import summarize
from tests.adapters.dicom.synthetic import half_written, make_instance, part10


def _inst(**kw):
    data = part10(make_instance(generate_uid(), generate_uid(), **kw))
    return data, summarize(data)


def test_put_is_content_addressed_and_indexed(tmp_path):
    store = InstanceStore(tmp_path, "keep")
    data, s = _inst()
    rec = store.put(data, s, "TOWNA", "org-a")
    assert rec.outcome == "stored"
    assert store.path_for(rec.sha256).read_bytes() == data
    assert store.read_bytes(s.sop_instance_uid) == data
    assert store.study(s.study_uid)[0].summary == s
    assert store.pending_studies() == {s.study_uid: 1}
    store.close()  # the spare tmp file created ahead for the next instance goes with the store
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("policy", "outcome", "kept_first"), [("keep", "duplicate-kept", True), ("replace", "replaced", False)]
)
def test_duplicate_sop_instance_policy(tmp_path, policy, outcome, kept_first):
    store = InstanceStore(tmp_path, policy)
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = part10(make_instance(study, series, sop_uid=sop, instance_number=1))
    second = part10(make_instance(study, series, sop_uid=sop, instance_number=2))
    store.put(first, summarize(first), "A", "")
    rec = store.put(second, summarize(second), "A", "")
    assert rec.outcome == outcome
    assert store.read_bytes(sop) == (first if kept_first else second)
    assert len(store.study(study)) == 1
    objects = list((tmp_path / "objects").rglob("*.dcm"))
    assert len(objects) == 1  # the replaced file is gone, the kept one untouched
    store.close()


def test_disk_full_leaves_nothing_behind(tmp_path, monkeypatch):
    store = InstanceStore(tmp_path, "keep")
    data, s = _inst()

    def full(fd, buf):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)  # the disk is the boundary we cannot fill in a test
    with pytest.raises(InstanceWriteError, match="No space"):
        store.put(data, s, "A", "")
    monkeypatch.undo()
    assert store.get(s.sop_instance_uid) is None
    assert half_written(tmp_path / "tmp") == []
    assert list((tmp_path / "objects").rglob("*.dcm")) == []
    assert store.pending_studies() == {}
    store.close()


def test_mark_published_respects_later_arrivals(tmp_path):
    store = InstanceStore(tmp_path, "keep")
    study, series = generate_uid(), generate_uid()
    for i in range(2):
        d = part10(make_instance(study, series, instance_number=i))
        store.put(d, summarize(d), "A", "")
    gen = store.pending_studies()[study]
    d = part10(make_instance(study, series, instance_number=9))
    store.put(d, summarize(d), "A", "")
    store.mark_published(study, gen)
    assert study in store.pending_studies()  # the late instance still needs publishing
    store.mark_published(study, store.pending_studies()[study])
    assert store.pending_studies() == {}
    store.close()


def test_files_whose_index_rows_were_lost_are_reindexed(tmp_path):
    """A power cut can take the last (crash-consistent, not fsync'd) index commits but not the files."""
    store = InstanceStore(tmp_path, "keep")
    data, s = _inst()
    store.put(data, s, "A", "")
    store._db.execute("DELETE FROM instance")  # what a lost WAL tail looks like
    store.close()
    reopened = InstanceStore(tmp_path, "keep")
    assert not reopened.take_clean_mark()
    assert reopened.reindex_orphans() == 1
    assert reopened.read_bytes(s.sop_instance_uid) == data
    reopened.leave_clean_mark()
    reopened.close()
    third = InstanceStore(tmp_path, "keep")
    assert third.take_clean_mark()
    third.close()
