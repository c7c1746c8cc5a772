"""Every activity class says once which system's queue it runs on (the credit facts, which
read several systems, run on billing's): the workflows send its
calls to that system's task queue with that system's retries, and the workers poll that
queue for them, so the two cannot disagree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from adapters.task_queues import System

_SYSTEM_ATTRIBUTE = "__ledgerbridge_system__"
_DEFINITION_ATTRIBUTE = "__temporal_activity_definition"


def _is_activity(member: object) -> bool:
    return callable(member) and hasattr(member, _DEFINITION_ATTRIBUTE)


class SystemActivities:
    """Base of the activity classes: `system` names the system every activity of the class
    calls (the store's run on the workflow queue)."""

    system: ClassVar[System]
    # Its activities also run as local activities of the workflow queue's worker (quick
    # answers from memory or our store, see `call_locally`): that worker registers them too.
    runs_locally: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for member in vars(cls).values():
            if _is_activity(member):
                setattr(member, _SYSTEM_ATTRIBUTE, cls.system)

    def activities(self) -> list[Callable[..., Any]]:
        """This object's activities, bound: what a worker of `system`'s queue registers."""
        return [
            getattr(self, name) for name, member in vars(type(self)).items() if _is_activity(member)
        ]


def system_of(method: Callable[..., Any]) -> System:
    """The system of an activity method of a SystemActivities class."""
    system: System | None = getattr(method, _SYSTEM_ATTRIBUTE, None)
    if system is None:
        raise TypeError(f"{method.__qualname__} is not an activity of a SystemActivities class")
    return system


def activity_name(method: Callable[..., Any]) -> str:
    """The activity's registered name: what histories record and replay by."""
    return getattr(method, _DEFINITION_ATTRIBUTE).name  # type: ignore[no-any-return]
