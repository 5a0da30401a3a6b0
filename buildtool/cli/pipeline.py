"""The sequence `bt build` and every `bt watch` round run: plan with pins, select (check the
registry, leave out stale parents, take one shard), build, and after a complete push put the
multi-platform indexes. Written once, here, above the build and release packages it joins."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buildtool.build.events import (
    Merged,
    Phase,
    Planned,
    PlannedBuildInfo,
    ReportEvent,
    StoryEvent,
)
from buildtool.build.layer_cache import layer_source
from buildtool.build.pinning import plan_pinned
from buildtool.build.run import BuildOptions, bench_run, build_planned
from buildtool.errors import BtError, BuildFailed, RegistryUnavailable
from buildtool.plan.stale import PlannedBuild, needs_run
from buildtool.workspace.labels import Label

if TYPE_CHECKING:
    from buildtool.build.events import Summary
    from buildtool.plan.session import Workbench
    from buildtool.state.lockfile import Lockfile
    from buildtool.workspace.config import Config


@dataclass(frozen=True)
class Selection:
    """What one run builds: PATTERNS on PLATFORMS (all of each target's when empty)."""

    patterns: tuple[str, ...]
    platforms: tuple[str, ...] = ()
    no_deps: bool = False  # never the selected targets' stale parents (CI waves)
    shard: tuple[int, int] | None = None  # (I, N): the I-th of N slices of the ready builds
    # A `bt watch` round: a plan with nothing to run is no news (no report, no merge).
    watching: bool = False

    def merges(self, options: BuildOptions) -> bool:
        """Whether a complete run puts the indexes: only a push of every platform of every
        selected build into images.lock itself (no fragment, no partial selection)."""
        return (
            options.push
            and not self.platforms
            and options.lock_out is None
            and not self.no_deps
            and self.shard is None
        )


@dataclass(frozen=True)
class BuildResult:
    planned: tuple[PlannedBuild, ...]
    summary: Summary | None  # None when nothing needed a run
    merged: bool  # the indexes were put (a complete run that merges)
    tests_failed: int = 0  # builds this run did not run whose due tests failed

    @property
    def ok(self) -> bool:
        return (self.summary is None or self.summary.ok) and not self.tests_failed


def build_selection(
    bench: Workbench,
    options: BuildOptions,
    selection: Selection,
    report: Callable[[ReportEvent], None],
    on_planned: Callable[[Sequence[PlannedBuild]], None] = lambda planned: None,
    say: Callable[[str], None] = lambda line: None,
    story: Callable[[StoryEvent], None] = lambda event: None,
) -> BuildResult:
    """Plan, select, build and merge; ``on_planned`` sees the plan before anything builds,
    ``say`` gets the lines the user reads about the selection (which shard), and ``story`` the
    plan and the phases' times (for the step summary and the trace)."""
    from buildtool.build.from_registry import parents_from_registry
    from buildtool.ci.waves import shard_of
    from buildtool.plan.stale import check_registry

    config = bench.config
    push = options.push
    if push and not config.registry:
        # Before any pin or build: every build would fail at its push.
        raise BtError(
            "pushing needs [registry] url in .cache-spec (or build without --push)",
            ".cache-spec",
        )
    run = bench_run(bench, options, report)
    began = time.monotonic()
    try:
        planned = plan_pinned(
            bench,
            run.pinning,
            push,
            selection.patterns,
            selection.platforms,
            report,
            prefetch=run,
        )
        if push:
            # A pushed digest deleted from the registry since is pushed again (or rebuilt).
            planned = check_registry(config, planned, strict=False)
        if selection.no_deps:
            # Stale parents some other job pushed are recorded from the registry.
            planned = parents_from_registry(run, planned, bench.labels(selection.patterns))
        if selection.shard is not None:
            planned, message = shard_of(planned, selection.shard, push, config)
            say(message)
        on_planned(planned)
        story(Phase("plan", began, time.monotonic()))
        story(Planned(tuple(_info(p, options, config) for p in planned), time.monotonic()))
        if selection.watching and not any(needs_run(p, push, config.registry) for p in planned):
            return BuildResult(tuple(planned), None, False)
        summary = build_planned(bench, planned, options, report, run=run)
    finally:
        run.close()
    tests_failed = 0
    if options.run_tests and (summary is None or not summary.interrupted):
        tests_failed = test_unchanged(bench, planned, options, report)
    merged = False
    if selection.merges(options):
        began = time.monotonic()
        merged = merge_after(bench, planned, options, summary, report)
        story(Phase("merge", began, time.monotonic()))
    return BuildResult(tuple(planned), summary, merged, tests_failed)


def test_unchanged(
    bench: Workbench,
    planned: Sequence[PlannedBuild],
    options: BuildOptions,
    report: Callable[[ReportEvent], None],
) -> int:
    """Run the tests of the builds this run did not need to run whose tests have no recorded
    pass for their key (a test added or edited since); the number of builds that failed."""
    from buildtool.build.image_tests import due_tests, passed_tests, run_image_tests

    targets = bench.session.graph.targets
    if not any(targets[p.label].tests for p in planned):
        return 0
    config = bench.config
    passed = passed_tests(config.cache_dir)
    due = [
        p
        for p in planned
        if targets[p.label].tests
        and p.record is not None
        and not needs_run(p, options.push, config.registry)
        and due_tests(targets[p.label], p.platform, p.key, passed)
    ]
    if not due:
        return 0
    return run_image_tests(bench, due, report, only_due=True).failed


def _info(planned: PlannedBuild, options: BuildOptions, config: Config) -> PlannedBuildInfo:
    runs = needs_run(planned, options.push, config.registry)
    source = layer_source(planned, config.cache_layers and options.cache_layers) if runs else None
    return PlannedBuildInfo(
        (str(planned.label), planned.platform),
        planned.key,
        planned.reason,
        tuple(str(parent) for parent in planned.parents),
        runs,
        source or "",
    )


def merge_after(
    bench: Workbench,
    planned: Sequence[PlannedBuild],
    options: BuildOptions,
    summary: Summary | None,
    report: Callable[[ReportEvent], None],
) -> bool:
    """After a complete push every planned image gets its index; after an interrupt, those of
    the images whose builds all finished. True when every planned image's index was put."""
    config = bench.config
    if summary is None or summary.ok:
        merge_built(bench, {p.label for p in planned}, report)
        return True
    if summary.interrupted:
        # The indexes that follow from what finished: images none of whose builds still needs a
        # run, as images.lock records them now (an interrupt may land after a build's record
        # was written and before the run counted the build as done).
        lock = bench.lockfile()
        unfinished = {
            p.label
            for p in planned
            if needs_run(_as_recorded(p, lock), options.push, config.registry)
        }
        complete = {p.label for p in planned} - unfinished
        if complete:
            with contextlib.suppress(BtError):  # the interrupt is what the user hears of
                merge_built(bench, complete, report)
    return False


def _as_recorded(planned: PlannedBuild, lock: Lockfile) -> PlannedBuild:
    """``planned`` against the record ``lock`` holds for it."""
    record = lock.get(str(planned.label), planned.platform)
    stale = record is None or record.key != planned.key
    return dataclasses.replace(planned, stale=stale, record=record)


def merge_built(
    bench: Workbench, labels: Iterable[Label], report: Callable[[ReportEvent], None]
) -> None:
    """Put the multi-platform index of every image of ``labels``. A registry that cannot be
    reached now fails the run as a push would have (exit 1), not as bad input."""
    from buildtool.release.merge import merge_images

    try:
        outcomes = merge_images(bench.config, bench.session.graph.targets, labels, bench.lock_path)
    except RegistryUnavailable as err:
        raise BuildFailed(f"built, but the multi-platform merge failed: {err}") from None
    for tag in outcomes.tags:
        report(Merged(str(tag.label), tag.tag, tag.status, tag.digest, str(tag)))
