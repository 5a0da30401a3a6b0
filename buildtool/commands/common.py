"""What the commands past ``query`` share: keys, the lockfile and the plan for a selection."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from buildtool.cachedir import CacheDir
from buildtool.hashing import StatCache
from buildtool.keys import KeyComputer
from buildtool.labels import Label
from buildtool.lockfile import Lockfile, read_lockfile
from buildtool.pins import ExternalImage
from buildtool.plan import PlannedBuild, make_plan, selected_builds
from buildtool.session import Session

if TYPE_CHECKING:
    from buildtool.build import BuildRun

F = TypeVar("F", bound=Callable[..., Any])


def platform_option(func: F) -> F:
    return click.option(
        "--platform",
        "platforms",
        multiple=True,
        metavar="OS/ARCH",
        help="Only builds for this platform (repeatable), e.g. linux/arm64.",
    )(func)


def push_option(func: F) -> F:
    return click.option(
        "--push/--no-push",
        default=None,
        help="Push each platform image by digest to the registry of .cache-spec "
        "(default: [registry] push).",
    )(func)


@dataclass
class Workbench:
    """A session plus the hashing state needed to plan: stat cache, key computer, lockfile."""

    session: Session

    @classmethod
    def open(cls) -> Workbench:
        return cls(Session.here())

    @property
    def config(self):  # type: ignore[no-untyped-def]
        return self.session.config

    @cached_property
    def stat_cache(self) -> StatCache:
        return StatCache.load(self.stat_cache_path)

    @property
    def stat_cache_path(self) -> Path:
        return CacheDir(self.session.config.cache_dir).stat_cache

    @property
    def lock_path(self) -> Path:
        """The workspace lock: every writer of the lockfile holds it."""
        return CacheDir(self.session.config.cache_dir).workspace_lock

    @cached_property
    def computer(self) -> KeyComputer:
        pins = self.lockfile().pins
        return KeyComputer(self.session.config, self.session.graph, self.stat_cache, pins)

    def lockfile(self) -> Lockfile:
        return read_lockfile(self.session.config.lockfile)

    def labels(self, patterns: Iterable[str]) -> set[Label]:
        return self.session.graph.match(patterns, self.session.current_package)

    def plan(
        self, patterns: Iterable[str], platforms: Iterable[str] = (), lock: Lockfile | None = None
    ) -> list[PlannedBuild]:
        """The plan against ``lock`` (default: images.lock as it is now)."""
        lock = self.lockfile() if lock is None else lock
        self.computer.use_pins(lock.pins)
        builds = selected_builds(self.session.graph, self.labels(patterns), platforms)
        planned = make_plan(self.session.config, self.computer, lock, builds)
        self.stat_cache.save()
        self.computer.analyses.save()
        return planned

    def external_images(
        self, patterns: Iterable[str], platforms: Iterable[str] = ()
    ) -> list[tuple[ExternalImage, str]]:
        """(image, platform) for every pinnable external image the selected builds use, sorted
        by reference, then platform."""
        builds = selected_builds(self.session.graph, self.labels(patterns), platforms)
        found = {
            (image.name, platform): image
            for label, platform in builds
            for image in self.computer.external_images((label, platform))
            if image.pinnable
        }
        return [(found[used], used[1]) for used in sorted(found)]


def plan_pinned(
    bench: Workbench,
    run: BuildRun,
    patterns: Iterable[str],
    platforms: Iterable[str],
    push: bool,
) -> list[PlannedBuild]:
    """The plan `bt build` runs: builds refused by their routing are refused before anything is
    written; then the external images images.lock does not pin yet are pinned (each line says
    from where), and the builds are planned against the pins. The builds using an image that
    could not be pinned fail when they run (``BuildRun``)."""
    from buildtool.plan import needs_run

    config = bench.config
    planned = bench.plan(patterns, platforms)
    run.check_routing([p for p in planned if needs_run(p, push, config.registry)])
    lock = bench.lockfile()
    missing = [
        (image, platform)
        for image, platform in bench.external_images(patterns, platforms)
        if lock.pin(image.name, platform) is None
    ]
    if missing:
        for image, platform, pin, _ in run.pin(missing):
            click.echo(
                f"pinned {image.written} ({platform}) to {pin.digest} from the {pin.source}",
                err=True,
            )
        for (_, platform), problem in sorted(run.pin_failures.items()):
            click.echo(f"not pinned ({platform}): {problem}", err=True)
        lock = bench.lockfile()
        planned = bench.plan(patterns, platforms, lock)
    run.pins = lock.pins
    return planned
