"""A workflow's patches, taken by a new run all at once.

The first `workflow.patched(id)` of a run records a marker and upserts Temporal's
`TemporalChangeVersion` search attribute, a visibility write on the server. A run started
today takes every patch its code has, one at a time as its path reaches them: for one
amendment that was five markers and five visibility writes, more than the amendment's own
status changes. A new run now takes one patch, its workflow's `release`, first thing in the
run, which stands for every patch the release includes; it records one marker and one write.

Runs recorded before a release do not hold its marker at their start, so it is not taken for
them for good and each of their patches answers as it did (`workflow.patched` replays the
marker the run recorded, or its absence). A release, once runs have taken it, never changes:
a later patch goes into a new release, asked first; a run recorded under an earlier release
does not hold the new one's marker and goes on under the earlier one.
"""

from __future__ import annotations

from temporalio import workflow


class Patches:
    """One per workflow run: `begin` first thing in `run`, then `patched` for each patch.
    `releases`: each release's id and the patches it includes, the newest first."""

    def __init__(self, releases: dict[str, frozenset[str]]) -> None:
        self._releases = releases
        self._included: frozenset[str] | None = None

    def begin(self) -> None:
        """At the run's start, so that a run takes a release now or never (a run from
        before, resumed on new code, must not change its path halfway)."""
        self._included = frozenset()
        for release, included in self._releases.items():
            if workflow.patched(release):
                self._included = included
                return

    def patched(self, patch_id: str) -> bool:
        if self._included is None:
            raise RuntimeError("Patches.begin() was not called at the run's start")
        return patch_id in self._included or workflow.patched(patch_id)


__all__ = ["Patches"]
