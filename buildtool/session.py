"""What every command starts from: the workspace, its configuration and its target graph
(``Session``), plus the hashing state planning needs (``Workbench``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from buildtool.analysis import Analyses
from buildtool.cachedir import CacheDir, hold_in_use
from buildtool.graph import TargetGraph, build_graph
from buildtool.loader import load_workspace
from buildtool.workspace import Config, find_root, load_config

if TYPE_CHECKING:
    from buildtool.hashing import StatCache
    from buildtool.keys import KeyComputer
    from buildtool.labels import Label
    from buildtool.loader import LoadedWorkspace
    from buildtool.lockfile import Lockfile
    from buildtool.pins import ExternalImage
    from buildtool.plan import PlannedBuild


@dataclass
class Session:
    """The workspace seen from the current directory."""

    cwd: Path
    # A graph evaluated by this run, with what it was made from: kept by ``save()``.
    _unsaved: tuple[LoadedWorkspace, TargetGraph, int] | None = field(
        default=None, init=False, repr=False
    )

    @classmethod
    def here(cls) -> Session:
        return cls(Path(os.getcwd()))

    @cached_property
    def root(self) -> Path:
        return find_root(self.cwd)

    @cached_property
    def config(self) -> Config:
        config = load_config(self.root)
        hold_in_use(config.cache_dir)  # `bt clean` waits for this process to end
        return config

    @cached_property
    def analyses(self) -> Analyses:
        """The workspace's Dockerfile analyses, shared by the graph and the file sets."""
        return Analyses(self.config)

    @cached_property
    def graph(self) -> TargetGraph:
        """The graph kept by an earlier run while nothing it was made from changed
        (``graphcache.py``), else BUILD.images evaluated again."""
        import time

        from buildtool.graphcache import load_graph

        config = self.config
        kept = load_graph(config, self.analyses)
        if kept is not None:
            return kept
        taken_ns = time.time_ns()
        loaded = load_workspace(config)
        graph = build_graph(loaded, self.analyses, config.registry)
        self._unsaved = (loaded, graph, taken_ns)
        return graph

    def save(self) -> None:
        """Keep what loading learnt (Dockerfile analyses, the graph) for the next run. Commands
        call it once they have succeeded: a refused input leaves the cache directory as it was."""
        with contextlib.suppress(OSError):  # the writes below report it, at the file
            self.config.cache_dir.mkdir(parents=True, exist_ok=True)
        hold_in_use(self.config.cache_dir)
        if self._unsaved is None:
            self.analyses.save()
            return
        from buildtool.graphcache import save_graph

        loaded, graph, taken_ns = self._unsaved
        self._unsaved = None
        # Inference analysed every build of the workspace: the analyses of anything gone are
        # dropped.
        self.analyses.save(complete=True)
        save_graph(self.config, self.analyses, loaded, graph, taken_ns)

    @cached_property
    def current_package(self) -> str:
        """The package of the current directory, for relative labels like ``:name``."""
        rel = os.path.relpath(self.cwd.resolve(), self.root)
        return "" if rel == "." else rel.replace(os.sep, "/")


@dataclass
class Workbench:
    """A session plus the hashing state needed to plan: stat cache, key computer, lockfile.

    Hashing and keys are imported on first use: `bt query` needs a session, not a plan.
    """

    session: Session

    @classmethod
    def open(cls) -> Workbench:
        return cls(Session.here())

    @property
    def config(self) -> Config:
        return self.session.config

    @cached_property
    def stat_cache(self) -> StatCache:
        from buildtool.hashing import StatCache

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
        from buildtool.keys import KeyComputer

        session = self.session
        pins = self.recorded.pins
        return KeyComputer(session.config, session.graph, self.stat_cache, session.analyses, pins)

    @cached_property
    def recorded(self) -> Lockfile:
        """images.lock as this workbench first read it (read once: keys and the plan share it);
        ``lockfile()`` reads it again."""
        return self.lockfile()

    def lockfile(self) -> Lockfile:
        from buildtool.lockfile import read_lockfile

        return read_lockfile(self.session.config.lockfile)

    def labels(self, patterns: Iterable[str]) -> set[Label]:
        return self.session.graph.match(patterns, self.session.current_package)

    def plan(
        self, patterns: Iterable[str], platforms: Iterable[str] = (), lock: Lockfile | None = None
    ) -> list[PlannedBuild]:
        """The plan against ``lock`` (default: images.lock as it is now)."""
        from buildtool.plan import make_plan, selected_builds

        lock = self.recorded if lock is None else lock
        self.computer.use_pins(lock.pins)
        builds = selected_builds(self.session.graph, self.labels(patterns), platforms)
        planned = make_plan(self.session.config, self.computer, lock, builds)
        self.computer.filesets.save()  # digests, analyses and described sets
        self.session.save()
        return planned

    def external_images(
        self, patterns: Iterable[str], platforms: Iterable[str] = ()
    ) -> list[tuple[ExternalImage, str]]:
        """(image, platform) for every pinnable external image the selected builds use, sorted
        by reference, then platform."""
        from buildtool.plan import selected_builds

        builds = selected_builds(self.session.graph, self.labels(patterns), platforms)
        found = {
            (image.name, platform): image
            for label, platform in builds
            for image in self.computer.external_images((label, platform))
            if image.pinnable
        }
        return [(found[used], used[1]) for used in sorted(found)]
