"""Stand-ins for CaseToCredit that `bench.footprint --stand-in` registers under its name, to
measure the SDK's own cost per waiting run in the same worker (a diagnosis):

- `CreditCommandsOnly` gives CaseToCredit's commands up to `awaiting_approval`, in the same
  order, and keeps nothing: the release's patch marker, the facts activity, the three
  search-attribute upserts, the current details, the approval timer;
- `BareWait` only shows `awaiting_approval` and waits on the timer.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.credits import CreditFactsActivities, CreditFactsInput
    from adapters import visibility
    from canonical.credit import CaseToCreditInput, CreditState
    from workflows.activity_options import call_system
    from workflows.case_to_credit import (
        CREDIT_FACTS_ONCE,
        CREDIT_RELEASES,
        REMIND_AFTER,
        STANDING_FROM_ENTITLEMENTS,
    )
    from workflows.patches import Patches

AWAITING = "awaiting_approval"


async def wait_for_finance() -> CreditState:
    """The approval's first timer, as CaseToCredit sets it; nothing is measured past it."""
    await workflow.wait_condition(lambda: False, timeout=REMIND_AFTER)
    raise ApplicationError("a stand-in ends at the wait", non_retryable=True)


@workflow.defn(name="CaseToCredit")
class CreditCommandsOnly:
    @workflow.run
    async def run(self, request: CaseToCreditInput) -> CreditState:
        credit = request.request
        patches = Patches(CREDIT_RELEASES)
        patches.begin()
        patches.patched(CREDIT_FACTS_ONCE)
        facts = await call_system(
            CreditFactsActivities.gather_credit_facts,
            CreditFactsInput(
                case_id=credit.case_id, currency=credit.amount.currency, as_of=workflow.now()
            ),
        )
        customer_id = facts.case.customer_id or ""
        del facts
        workflow.upsert_search_attributes([visibility.CUSTOMER_ID.value_set(customer_id)])
        patches.patched(STANDING_FROM_ENTITLEMENTS)
        workflow.upsert_search_attributes([visibility.PROCESS_STATUS.value_set(AWAITING)])
        workflow.set_current_details("Waiting for finance to approve the credit")
        if patches.patched(visibility.INBOX_ROW_PATCH):
            workflow.upsert_search_attributes(
                visibility.credit_row(credit.amount.currency, ["above the auto-approval threshold"])
            )
        return await wait_for_finance()


@workflow.defn(name="CaseToCredit")
class BareWait:
    @workflow.run
    async def run(self, request: CaseToCreditInput) -> CreditState:
        workflow.upsert_search_attributes([visibility.PROCESS_STATUS.value_set(AWAITING)])
        return await wait_for_finance()


STAND_INS: dict[str, type[object]] = {"commands": CreditCommandsOnly, "bare": BareWait}
