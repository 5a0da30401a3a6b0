"""What every command starts from: the workspace, its configuration and its target graph
(``Session``), plus the hashing state planning needs (``Workbench``)."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildtool.inputs.globs import glob_matches
from buildtool.state.cachedir import CacheDir, hold_in_use
from buildtool.workspace.analysis import Analyses
from buildtool.workspace.config import Config, find_root, load_config
from buildtool.workspace.graph import TargetGraph, build_graph

if TYPE_CHECKING:
    from buildtool.plan.keys import KeyComputer
    from buildtool.plan.pins import ExternalImage
    from buildtool.plan.stale import LastPlan, PlannedBuild
    from buildtool.state.hashing import StatCache
    from buildtool.state.lockfile import Lockfile, LockfileReader
    from buildtool.workspace.labels import Label
    from buildtool.workspace.target import BuildId

    Selection = tuple[tuple[str, ...], tuple[str, ...]]  # patterns, platforms


@dataclass
class Session:
    """The workspace seen from the current directory."""

    cwd: Path
    # A digest of what the graph was made from (``graphcache.graph_identity``), once loaded.
    graph_identity: str | None = None
    # A graph evaluated by this run, described as it will be kept (None: not to be kept), and
    # whether there is one: written by ``save()``.
    _unsaved: tuple[dict[str, Any] | None] | None = field(default=None, init=False, repr=False)

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

        from buildtool.workspace.graphcache import describe_graph, load_kept_graph

        config = self.config
        kept = load_kept_graph(config, self.analyses)
        if kept is not None:
            graph, self.graph_identity = kept
            return graph
        from buildtool.plan import noop
        from buildtool.workspace.loader import load_workspace

        noop.abandon()  # a kept plan answer is recorded by a run that loads the kept graph
        taken_ns = time.time_ns()
        loaded = load_workspace(config)
        graph = build_graph(loaded, self.analyses, config.registry)
        top = describe_graph(config, self.analyses, loaded, graph, taken_ns)
        self._unsaved = (top,)
        self.graph_identity = None if top is None else str(top["identity"])
        return graph

    def save(self) -> None:
        """Keep what loading learnt (Dockerfile analyses, the graph) for the next run. Commands
        call it once they have succeeded: a refused input leaves the cache directory as it was."""
        hold_in_use(self.config.cache_dir, create=True)
        if self._unsaved is None:
            self.analyses.save()
            return
        from buildtool.workspace.graphcache import write_graph

        (top,), self._unsaved = self._unsaved, None
        # Inference analysed every build of the workspace: the analyses of anything gone are
        # dropped.
        self.analyses.save(complete=True)
        if top is not None:
            write_graph(self.config, top)

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
    # Whether each plan saves what it learnt at once (``bt watch`` saves after a round).
    saves: bool = True
    # The last plan of each selection, planned again cheaply while the pins stand.
    _plans: dict[Selection, LastPlan] = field(default_factory=dict)
    _selections: dict[Selection, list[BuildId]] = field(default_factory=dict)
    _externals: dict[Selection, list[tuple[ExternalImage, str]]] = field(default_factory=dict)

    @classmethod
    def open(cls) -> Workbench:
        return cls(Session.here())

    @property
    def config(self) -> Config:
        return self.session.config

    @cached_property
    def stat_cache(self) -> StatCache:
        from buildtool.state.hashing import StatCache

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
        from buildtool.plan.keys import KeyComputer

        session = self.session
        pins = self.recorded.pins
        graph = session.graph  # first: loading it sets its identity
        return KeyComputer(
            session.config, graph, self.stat_cache, session.analyses, pins, session.graph_identity
        )

    @cached_property
    def recorded(self) -> Lockfile:
        """images.lock as this workbench first read it (read once: keys and the plan share it);
        ``lockfile()`` reads it again."""
        return self.lockfile()

    def lockfile(self) -> Lockfile:
        """images.lock as it is now (read-only: parsed again only when its bytes changed)."""
        return self._lock_reader.read()

    @cached_property
    def _lock_reader(self) -> LockfileReader:
        from buildtool.state.lockfile import LockfileReader

        config = self.session.config
        return LockfileReader(config.lockfile, CacheDir(config.cache_dir).lockfile_checked)

    def labels(self, patterns: Iterable[str]) -> set[Label]:
        return self.session.graph.match(patterns, self.session.current_package)

    def selected_builds(
        self, patterns: Iterable[str], platforms: Iterable[str] = ()
    ) -> list[BuildId]:
        """The platform builds ``patterns`` need, in build order (asked once per selection:
        the graph does not change under a workbench)."""
        from buildtool.plan.stale import selected_builds

        selection = (tuple(patterns), tuple(platforms))
        found = self._selections.get(selection)
        if found is None:
            graph = self.session.graph
            found = self._selections[selection] = selected_builds(
                graph, self.labels(selection[0]), selection[1]
            )
        return found

    def plan(
        self, patterns: Iterable[str], platforms: Iterable[str] = (), lock: Lockfile | None = None
    ) -> list[PlannedBuild]:
        """The plan against ``lock`` (default: images.lock as it is now)."""
        with _collector_paused():
            return self._plan(patterns, platforms, lock)

    def _plan(
        self, patterns: Iterable[str], platforms: Iterable[str], lock: Lockfile | None
    ) -> list[PlannedBuild]:
        from buildtool.plan.stale import LastPlan, make_plan

        lock = self.recorded if lock is None else lock
        computer = self.computer
        if lock.pins != computer.pins:
            self._plans.clear()  # every key changes with the pins
            computer.use_pins(lock.pins)
        selection = (tuple(patterns), tuple(platforms))
        builds = self.selected_builds(*selection)
        last = self._plans.get(selection)
        changed = None
        if last is not None:
            changed = (
                set() if lock is last.lock else self._lock_reader.changed_since(lock, last.lock)
            )
        if last is not None and changed is not None:
            planned = last.replan(self.session.config, computer, lock, changed)
        else:
            planned = make_plan(self.session.config, computer, lock, builds)
            self._plans[selection] = LastPlan(lock, planned)
        if self.saves:
            self.save()
        return planned

    def save(self) -> None:
        """Keep what planning learnt for the next run: digests, analyses, described sets and
        keys, the graph, and which lockfile bytes passed their check."""
        self.computer.save()
        self.session.save()
        self._lock_reader.save()

    def forget(self, paths: Iterable[str]) -> bool:
        """Drop what was learnt of the workspace-relative ``paths``, changed on disk (as
        ``bt watch`` sees them), so that the next plan hashes only them and encodes only the
        keys that read them, and reads images.lock again. False when one of them is what the
        graph or every key is made from (a BUILD file, .cache-spec, a Dockerfile, an ignore
        file, a global input): then only a new workbench plans right."""
        changed = list(paths)
        if "computer" not in self.__dict__ or any(map(self._declares, changed)):
            return False
        self.__dict__.pop("recorded", None)
        forgotten = self.computer.forget(changed)
        for last in self._plans.values():
            last.forget(forgotten)
        return True

    def _declares(self, path: str) -> bool:
        if path.rsplit("/", 1)[-1] in ("BUILD.images", ".cache-spec") or path.endswith(
            ".dockerignore"
        ):
            return True
        if path in self._dockerfiles:
            return True
        if any(path == known for known, _ in self.computer.filesets.global_inputs()):
            return True
        patterns = self.session.config.global_inputs  # a file that may become one
        return any(glob_matches(path, pattern) for pattern in patterns)

    @cached_property
    def _dockerfiles(self) -> frozenset[str]:
        return frozenset(t.dockerfile for t in self.session.graph.targets.values())

    def external_images(
        self, patterns: Iterable[str], platforms: Iterable[str] = ()
    ) -> list[tuple[ExternalImage, str]]:
        """(image, platform) for every pinnable external image the selected builds use, sorted
        by reference, then platform (asked once per selection: they follow from the graph and
        the Dockerfiles, which do not change under a workbench)."""
        selection = (tuple(patterns), tuple(platforms))
        known = self._externals.get(selection)
        if known is not None:
            return list(known)
        builds = self.selected_builds(*selection)
        found = {
            (image.name, platform): image
            for label, platform in builds
            for image in self.computer.external_images((label, platform))
            if image.pinnable
        }
        self._externals[selection] = [(found[used], used[1]) for used in sorted(found)]
        return list(self._externals[selection])


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Planning allocates a few objects per file and per build (the lockfile's records, the
    graph, file sets, the plan) that live as long as the process, forming no cycles worth
    collecting: the collector's passes over them cost a tenth of a large no-op. They are
    frozen (``gc.freeze``: never scanned again; freed as usual when unreferenced), and the
    collector runs again for what follows."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.freeze()
            gc.enable()
