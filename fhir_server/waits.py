"""Waiting for a wake-up with a timeout, in the worker loops that `cancel()` stops.

Why not `asyncio.wait_for(event.wait(), seconds)`: on Python 3.11 it swallows a cancellation that
arrives just as the event is set, returning as if woken. A worker loop then went back to sleep for its
whole interval instead of ending: the audit writer, woken by the record that filled a batch as the hub
shut down, held the shutdown for up to an hour (`tests/api/test_audit.py`). `asyncio.timeout` turns only
its own expiry into `TimeoutError` and lets every cancellation through.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wake_or_timeout(event: asyncio.Event, seconds: float) -> None:
    """Return when `event` is set or `seconds` have passed, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a worker task (if any) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
