"""`Patient/$merge` over REST (R5's OperationDefinition Patient-merge, offered on this R4 server).

In: `source-patient` / `source-patient-identifier`, `target-patient` / `target-patient-identifier`,
`result-patient`, `preview`. Out: Parameters with `input`, `outcome` and `result` (the target as it
stands after the merge). What a merge does is `interactions/merge.py`; it runs in one write section.

`preview`: the merge runs in full inside the section, which is then rolled back; the answer is what
would have happened (the same code path, so a preview cannot promise what the merge would not do).
"""

from __future__ import annotations

from typing import Any

from fhir_server.interactions.member_view import MemberView
from fhir_server.interactions.merge import MergeResult, merge_patients, output_parameters, parse_request
from fhir_server.interactions.section import write_section
from fhir_server.interactions.service import FhirService

JsonObject = dict[str, Any]


class _RollBack(Exception):
    """Raised inside the write section of a preview: the store undoes everything the merge wrote."""

    def __init__(self, result: MergeResult) -> None:
        super().__init__("preview")
        self.result = result


async def patient_merge(
    service: FhirService, body: JsonObject, *, agent: str, view: MemberView | None = None
) -> JsonObject:
    """`view`: a member client's, which merges its own records only (`MemberView.check_writes`)."""
    request = parse_request(body)
    try:
        async with write_section(service, view=view) as (tx, changes):
            result = await merge_patients(service, tx, request, changes=changes, agent=agent)
            if request.preview:
                raise _RollBack(result)
    except _RollBack as preview:
        return output_parameters(body, preview.result, preview=True)
    return output_parameters(body, result, preview=False)
