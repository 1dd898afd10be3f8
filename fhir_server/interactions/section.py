"""One write section as every interaction runs it: the store's serialised section, the changes it
makes, the steps that must see all of them before commit, and the notifications after.

Why one helper: what a section must do before it commits grows (today: the care-relationship
CareTeams, `care_team.settle`, which look at every change of the section at once, so a transaction
Bundle that registers a patient and refers her recomputes her relationships once), and a section that
forgot a step would leave a member seeing what it should not, or not seeing its own patient.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fhir_server.interactions import care_team
from fhir_server.interactions.events import ResourceChanged
from fhir_server.interactions.member_view import MemberView
from fhir_server.interactions.service import FhirService
from fhir_server.storage.protocol import WriteTransaction


@asynccontextmanager
async def write_section(
    service: FhirService, *, durable: bool = True, view: MemberView | None = None
) -> AsyncIterator[tuple[WriteTransaction, list[ResourceChanged]]]:
    """`async with write_section(service) as (tx, changes):` write through `tx`, appending to `changes`;
    on leaving, a member client's changes are checked against what it may write (`view`,
    `MemberView.check_writes`: 403 and nothing written), the care relationships are settled, the section
    commits, and the changes are published. An exception leaves nothing written and publishes nothing.
    `durable`: see `ResourceStore.write`."""
    changes: list[ResourceChanged] = []
    async with service.store.write(durable=durable) as tx:
        yield tx, changes
        if view is not None:
            await view.check_writes(service.registry, tx, changes)
        await care_team.settle(service, tx, changes)
    await service.events.publish(changes)
