"""A workflow's patches, taken by a new run all at once.

The first `workflow.patched(id)` of a run records a marker and upserts Temporal's
`TemporalChangeVersion` search attribute, a visibility write on the server. A run started
today takes every patch its code has, one at a time as its path reaches them: for one
amendment that was five markers and five visibility writes, more than the amendment's own
status changes. A new run now takes one patch, its workflow's `release`, first thing in the
run, which stands for every patch the release includes; it records one marker and one write.

Runs recorded before a release do not hold its marker at their start, so `taken` is False for
them for good and each of their patches answers as it did (`workflow.patched` replays the
marker the run recorded, or its absence). A patch made after a release is not in it: it is
asked on its own, as before, until a later release includes it.
"""

from __future__ import annotations

from temporalio import workflow


class Patches:
    """One per workflow run: `begin` first thing in `run`, then `patched` for each patch."""

    def __init__(self, release: str, included: frozenset[str]) -> None:
        self._release = release
        self._included = included
        self._taken: bool | None = None

    def begin(self) -> None:
        """At the run's start, so that a run takes the release now or never (a run from
        before, resumed on new code, must not change its path halfway)."""
        self._taken = workflow.patched(self._release)

    def patched(self, patch_id: str) -> bool:
        if self._taken is None:
            raise RuntimeError(f"{self._release}: begin() was not called at the run's start")
        if self._taken and patch_id in self._included:
            return True
        return workflow.patched(patch_id)


__all__ = ["Patches"]
