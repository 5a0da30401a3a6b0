"""What the commands past ``query`` share: keys, the lockfile and the plan for a selection."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import click

from buildtool.cachedir import CacheDir
from buildtool.hashing import StatCache
from buildtool.keys import KeyComputer
from buildtool.labels import Label
from buildtool.lockfile import Lockfile, read_lockfile
from buildtool.plan import PlannedBuild, make_plan, selected_builds
from buildtool.session import Session

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
        session = self.session
        return KeyComputer(session.config, session.graph, self.stat_cache, session.analyses)

    def lockfile(self) -> Lockfile:
        return read_lockfile(self.session.config.lockfile)

    def labels(self, patterns: Iterable[str]) -> set[Label]:
        return self.session.graph.match(patterns, self.session.current_package)

    def plan(self, patterns: Iterable[str], platforms: Iterable[str] = ()) -> list[PlannedBuild]:
        builds = selected_builds(self.session.graph, self.labels(patterns), platforms)
        planned = make_plan(self.session.config, self.computer, self.lockfile(), builds)
        self.stat_cache.save()
        self.computer.analyses.save()
        return planned
