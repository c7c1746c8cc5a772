"""An activity class names its system once; calls and workers both read it from there."""

from __future__ import annotations

import pytest
from temporalio import activity

from activities._system import SystemActivities, activity_name, system_of
from activities.amendments import ErpPostingActivities, JournalActivities


def test_each_activity_carries_the_system_of_its_class() -> None:
    assert system_of(ErpPostingActivities.post_ledger_document) == "erp"
    assert system_of(JournalActivities.find_journal_entry) == "store"
    assert activity_name(ErpPostingActivities.post_ledger_document) == "post_ledger_document"


def test_an_activity_outside_a_system_class_cannot_be_called_by_method() -> None:
    @activity.defn(name="loose")
    async def loose(_: str) -> None:
        return None

    with pytest.raises(TypeError, match="not an activity of a SystemActivities class"):
        system_of(loose)


def test_an_object_offers_its_activities_bound_and_nothing_else() -> None:
    class Desk(SystemActivities):
        system = "support"

        @activity.defn(name="desk_read")
        async def read(self, case_id: str) -> str:
            return case_id

        async def not_an_activity(self, case_id: str) -> str:
            return case_id

    desk = Desk()
    assert desk.activities() == [desk.read]
    assert system_of(Desk.read) == "support"
