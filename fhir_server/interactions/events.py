"""After-commit notifications (subscriptions, audit, outbound HL7). Handlers never fail a committed write."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResourceChanged:
    resource_type: str
    id: str
    version: int
    method: str  # POST | PUT | PATCH | DELETE
    resource: dict[str, Any] | None
    reason: str | None = None
    """Why the hub wrote this version when no client asked for it: `merge` (a merge re-pointed its
    references to the surviving Patient; nothing else changed). Consumers that act on content, like
    outbound ORU delivery, skip such versions."""
    previous: dict[str, Any] | None = None
    """The version this one replaced (None for a create): what a relationship was before the change
    (`care_team.settle` sees a referral whose performer changed, or a deleted one)."""
    minted: bool = False
    """The server made this resource's id in this write section: nothing stored before can name it."""
    by_hub: bool = False
    """The hub wrote this version of its own accord (a master, a CareTeam, its Provenance), not a client:
    what a member client may write (`member_view.check_writes`) is not asked of it."""
    unchanged: bool = False
    """A client's write that changed nothing (its body equals the current version's, kept as it is): not
    published, but a member client's right to make it is checked like any other write's."""


Handler = Callable[[ResourceChanged], Awaitable[None]]


class EventBus:
    """Explicit registration; a handler registered twice is a wiring bug and raises."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    def subscribe(self, handler: Handler) -> None:
        if handler in self._handlers:
            raise ValueError(f"handler {handler!r} is already subscribed")
        self._handlers.append(handler)

    async def publish(self, changes: list[ResourceChanged]) -> None:
        for change in changes:
            if change.unchanged:
                continue
            for handler in self._handlers:
                try:
                    await handler(change)
                except Exception:
                    LOGGER.exception(
                        "event handler %r failed for %s/%s", handler, change.resource_type, change.id
                    )
