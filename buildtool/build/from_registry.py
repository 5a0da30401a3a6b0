"""Record builds from the registry alone: what another machine pushed under ``bt-<key>``.

CI jobs share nothing but the registry. A job building wave 2 finds its parents there (the
images wave 1 pushed), and the job that merges finds every build of the plan there; neither
builds anything. A hit counts only as the remote action cache counts it (``remote_cache``): the
image carries the very key it is tagged with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from buildtool.build.record import record_builds
from buildtool.plan.stale import needs_run
from buildtool.state.lockfile import BuildRecord

if TYPE_CHECKING:
    from buildtool.build.run import BuildRun
    from buildtool.build.scheduler import Outcome
    from buildtool.plan.stale import PlannedBuild
    from buildtool.workspace.labels import Label

LOOKUPS_AT_ONCE = 16  # two small requests each: latency, not bandwidth, bounds them


def remote_outcomes(run: BuildRun, builds: Sequence[PlannedBuild]) -> list[Outcome | None]:
    """The remote action cache's answer for each of ``builds``, a few asked at once."""
    if not builds:
        return []
    with ThreadPoolExecutor(max_workers=min(LOOKUPS_AT_ONCE, len(builds))) as pool:
        return list(pool.map(run.remote_hit, builds))


def record_from_registry(
    run: BuildRun, builds: Sequence[PlannedBuild]
) -> tuple[list[PlannedBuild], list[PlannedBuild]]:
    """Record each of ``builds`` whose key the registry holds, as its push would have been
    recorded (images.lock, and the run's lock fragment): those builds, now fresh, and the
    builds the registry does not hold."""
    outcomes = remote_outcomes(run, builds)
    found = [(p, o) for p, o in zip(builds, outcomes, strict=True) if o is not None]
    if found:
        record_builds(
            run.config,
            run.lock_path,
            [(p.manifest, o.digest or "", o.detail) for p, o in found],
            fragment=run.options.lock_out,
        )
        for p, o in found:
            run.references[p.id] = o.detail
    recorded = [
        dataclasses.replace(p, stale=False, record=BuildRecord(p.key, o.digest or "", o.detail))
        for p, o in found
    ]
    return recorded, [p for p, o in zip(builds, outcomes, strict=True) if o is None]


def parents_from_registry(
    run: BuildRun, planned: Sequence[PlannedBuild], selected: set[Label]
) -> list[PlannedBuild]:
    """`bt build --no-deps`: the selected targets' builds, and the parents they take, the stale
    ones recorded from the registry when some other job pushed them. A parent found nowhere is
    left out, so its child fails instead of building it."""
    push, registry = run.options.push, run.config.registry

    def waiting(p: PlannedBuild) -> bool:
        return p.label not in selected and needs_run(p, push, registry)

    found: dict[tuple[Label, str], PlannedBuild] = {}
    if registry:
        recorded, _ = record_from_registry(run, [p for p in planned if waiting(p)])
        found = {p.id: p for p in recorded}
    kept = [found.get(p.id, p) for p in planned]
    return [p for p in kept if not waiting(p)]
