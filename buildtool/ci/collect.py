"""The registry as CI's only channel: what the plan job asks of it, and what the merge job
gathers from it.

Every build a job pushes is tagged ``bt-<key>`` (``build.run.remote_ref``). The plan job leaves
out of the waves the builds some earlier run already pushed, so a run with nothing new starts no
wave; the merge job records every build of the plan from those tags, in a fresh checkout, and
puts the indexes. Neither builds anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from buildtool.build.from_registry import record_from_registry, remote_outcomes
from buildtool.build.run import BuildOptions, bench_run
from buildtool.ci.waves import CiEvent
from buildtool.errors import BtError
from buildtool.plan.stale import PlannedBuild, needs_run

if TYPE_CHECKING:
    from buildtool.plan.session import Workbench
    from buildtool.release.merge import TagOutcome
    from buildtool.workspace.target import BuildId


def require_registry(bench: Workbench) -> str:
    registry = bench.config.registry
    if not registry:
        raise BtError(
            "CI across machines needs [registry] url in .cache-spec: its jobs pass images to "
            "each other only through the registry",
            ".cache-spec",
        )
    return registry


def pushed_builds(bench: Workbench, planned: Sequence[PlannedBuild]) -> set[BuildId]:
    """The builds ``planned`` would run that the registry already holds under their key."""
    registry = bench.config.registry
    if not registry:
        return set()
    wanted = [p for p in planned if needs_run(p, True, registry)]
    run = bench_run(bench, BuildOptions(push=False), lambda event: None)
    try:
        outcomes = remote_outcomes(run, wanted)
    finally:
        run.close()
    return {p.id for p, outcome in zip(wanted, outcomes, strict=True) if outcome is not None}


@dataclass
class Collected:
    """What the merge job found: builds recorded from the registry, builds missing, and the
    tags put (none when the event leaves platforms out: partial indexes would replace full)."""

    recorded: list[PlannedBuild] = field(default_factory=list)
    missing: list[PlannedBuild] = field(default_factory=list)
    tags: list[TagOutcome] = field(default_factory=list)
    indexes: bool = True


def collect(bench: Workbench, patterns: Sequence[str], event: CiEvent) -> Collected:
    """Record every build of ``patterns`` the event builds from the registry into images.lock,
    then put the indexes of the images all of whose builds are there."""
    from buildtool.release.merge import merge_images

    registry = require_registry(bench)
    every = bench.plan(patterns)
    planned = [p for p in every if p.platform in event.platforms]
    run = bench_run(bench, BuildOptions(push=True), lambda event: None)
    try:
        stale = [p for p in planned if needs_run(p, True, registry)]
        recorded, missing = record_from_registry(run, stale)
    finally:
        run.close()
    found = Collected(recorded, missing, indexes=len(planned) == len(every))
    incomplete = {p.label for p in missing}
    complete = {p.label for p in planned} - incomplete
    if found.indexes and complete:
        targets = bench.session.graph.targets
        outcome = merge_images(bench.config, targets, complete, bench.lock_path)
        found.tags = list(outcome.tags)
    bench.session.save()
    return found
