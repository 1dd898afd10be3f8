"""The review Task's states (pure): proposed, kept, withdrawn, reopened only for someone new."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fhir_server.interactions.events import ResourceChanged
from fhir_server.interactions.match_review import MatchReview, next_task
from fhir_server.interactions.matching import Match

A = ("a", Match(0.9, "probable"))
B = ("b", Match(0.6, "possible"))


def test_a_first_proposal_is_requested_and_nothing_is_no_task() -> None:
    assert next_task("r", [], None) is None
    task = next_task("r", [A, B], None)
    assert task is not None and task["status"] == "requested"
    assert [i["valueReference"]["reference"] for i in task["input"]] == ["Patient/a", "Patient/b"]
    assert [i["type"]["coding"][0]["code"] for i in task["input"]] == ["probable", "possible"]
    assert task["focus"] == {"reference": "Patient/r"} and task["intent"] == "proposal"


def test_unchanged_is_not_rewritten_and_gone_candidates_cancel_a_waiting_task() -> None:
    task = next_task("r", [A], None)
    assert task is not None
    assert next_task("r", [A], task) is None
    cancelled = next_task("r", [], task)
    assert cancelled is not None and cancelled["status"] == "cancelled"
    assert cancelled["input"] == task["input"]  # what was proposed stays readable


def test_a_decided_task_reopens_only_for_a_new_candidate() -> None:
    task = next_task("r", [A], None)
    assert task is not None
    rejected = {**task, "status": "rejected"}
    assert next_task("r", [A], rejected) is None
    assert next_task("r", [], rejected) is None
    reopened = next_task("r", [A, B], rejected)
    assert reopened is not None and reopened["status"] == "requested"


class _Recording(MatchReview):
    """The scheduler under test; what a review does is the API tests' business."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(None, **kwargs)  # type: ignore[arg-type]
        self.reviewed: list[tuple[str, float]] = []

    async def review(self, record_id: str) -> None:
        self.reviewed.append((record_id, time.monotonic()))


def _patient(rid: str) -> ResourceChanged:
    return ResourceChanged("Patient", rid, 1, "PUT", {"resourceType": "Patient", "id": rid})


async def test_reviews_wait_for_writes_to_pause_but_never_longer_than_max_delay() -> None:
    review = _Recording(interval=0.05, max_delay=0.3)
    review.start()
    try:
        for i in range(60):  # writes every 10 ms for 0.6 s: never a 50 ms pause
            await review.on_change(_patient(f"p{i}"))
            await review.on_change(_patient(f"p{i}"))  # noted twice, reviewed once
            await asyncio.sleep(0.01)
            if i == 2:
                assert review.reviewed == []  # a burst is not reviewed while it goes on...
        during = [t for _, t in review.reviewed]
        assert during  # ...until its oldest record is overdue (then at most 10% of the time)
        await asyncio.sleep(0.3)  # writes paused: everything left is reviewed
        assert sorted(rid for rid, _ in review.reviewed) == sorted(f"p{i}" for i in range(60))
        await review.on_change(ResourceChanged("Task", "t", 1, "PUT", {"resourceType": "Task"}))
        await review.on_change(ResourceChanged("Patient", "m", 2, "PUT", {}, reason="merge"))
        assert review.pending == 0  # only member Patient writes are noted
    finally:
        await review.stop()
