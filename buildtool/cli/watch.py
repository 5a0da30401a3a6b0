"""``bt watch``: the file set a selection's keys read, and the loop that rebuilds what each
batch of changes touches.

Watching re-enters the data path at "hash": a change only matters if it can change a key, so the
watched set is exactly what the keys of the selected platform builds were computed from.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from buildtool.build.events import ReportEvent, Round, StoryEvent, WatchError, Watching
from buildtool.errors import BtError
from buildtool.inputs.filesets import FileSet
from buildtool.inputs.globs import glob_matches
from buildtool.plan.session import Workbench
from buildtool.plan.stale import PlannedBuild
from buildtool.workspace.config import LOCKFILE_NAME, Config

BUILD_FILE = "BUILD.images"
SPEC_FILE = ".cache-spec"
# Milliseconds. watchfiles yields once no new event arrived for one step (or after `debounce`):
# an editor's save burst (write, rename, chmod) lands within a few ms, so 10/50 coalesces it
# while keeping save -> build start well under 200 ms.
DEBOUNCE_MS = 50
STEP_MS = 10
# How often the watcher wakes while idle; its first wake-up starts the initial build, once the
# file watches are in place, so nothing saved during that build is missed.
IDLE_MS = 100


@dataclass(frozen=True)
class WatchSet:
    """Absolute paths whose change can change a key of the selection.

    ``dirs`` are the directories holding input files: a file added there may be a new input of a
    directory source (``COPY align/en/ ...``), so anything directly inside them counts.
    """

    root: str
    files: frozenset[str]
    dirs: frozenset[str]
    global_patterns: tuple[str, ...]
    excluded: tuple[str, ...]

    def accepts(self, path: str) -> bool:
        if any(path == ex or path.startswith(ex + os.sep) for ex in self.excluded):
            return False  # bt's own lockfile and caches: watching them would loop forever
        name = os.path.basename(path)
        if name.endswith(".tmp") and any(
            path.startswith(os.path.join(os.path.dirname(ex), f".{os.path.basename(ex)}."))
            for ex in self.excluded
        ):
            return False  # the lockfile's temporary file while it is replaced (``statefile``)
        if name == BUILD_FILE or path == os.path.join(self.root, SPEC_FILE):
            return True
        if path in self.files or path in self.dirs or os.path.dirname(path) in self.dirs:
            return True
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        return any(glob_matches(rel, pattern) for pattern in self.global_patterns)


def bare_watch_set(root: Path) -> WatchSet:
    """Only the files that declare the graph: what is left to watch when loading them failed."""
    excluded = (str(root / LOCKFILE_NAME),)
    return WatchSet(str(root), frozenset(), frozenset(), (), excluded)


# What one file set adds to a watch set: (the set, files, directories), by the set's id.
Contributions = dict[int, tuple[FileSet, frozenset[str], frozenset[str]]]


def watch_set(
    config: Config, planned: Iterable[PlannedBuild], known: Contributions | None = None
) -> WatchSet:
    """The inputs of every planned build: Dockerfile, its ignore files, context inputs and the
    global inputs, plus the files that declare the graph. (The file sets, not the manifests:
    what a key covers of the disk is its file set's, and sets are shared by many builds.)
    ``known`` keeps each set's share between calls: a watch round recomputes only new sets'."""
    root = str(config.root)
    known = {} if known is None else known
    files: set[str] = set()
    dirs: set[str] = set()
    for fileset in {id(p.fileset): p.fileset for p in planned}.values():
        found = known.get(id(fileset))
        if found is None or found[0] is not fileset:
            found = known[id(fileset)] = (fileset, *_contribution(root, fileset))
        files |= found[1]
        dirs |= found[2]
    return WatchSet(
        root, frozenset(files), frozenset(dirs), config.global_inputs, _excluded(config)
    )


def _contribution(root: str, fileset: FileSet) -> tuple[frozenset[str], frozenset[str]]:
    files: set[str] = set()
    dirs: set[str] = set()
    context = os.path.normpath(os.path.join(root, fileset.context))
    dockerfile = os.path.normpath(os.path.join(root, fileset.dockerfile))
    # BuildKit reads <Dockerfile>.dockerignore first, else <context>/.dockerignore; either
    # may appear later, so both are watched whether they exist or not.
    files.update((dockerfile, dockerfile + ".dockerignore", os.path.join(context, ".dockerignore")))
    files.update(os.path.join(root, path) for path, _ in fileset.global_inputs)
    for path, kind, _, _ in fileset.entries:
        full = os.path.normpath(os.path.join(context, path))
        files.add(full)
        dirs.add(full if kind == "dir" else os.path.dirname(full))
    if fileset.fallback is not None:
        dirs.add(context)  # a whole-context input gains every file added to the context
    for named in fileset.named:  # directory contexts: their read files and own ignore file
        directory = os.path.normpath(os.path.join(root, named.directory))
        files.add(os.path.join(directory, ".dockerignore"))
        for path, kind, _, _ in named.entries:
            full = os.path.normpath(os.path.join(directory, path))
            files.add(full)
            dirs.add(full if kind == "dir" else os.path.dirname(full))
    return frozenset(files), frozenset(dirs)


def _excluded(config: Config) -> tuple[str, ...]:
    return (str(config.lockfile), str(config.cache_dir))


def changed_paths(root: str, paths: Iterable[str]) -> list[str]:
    """Workspace-relative, sorted, each once: how a round names what changed."""
    return sorted({os.path.relpath(p, root).replace(os.sep, "/") for p in paths})


class Watcher:
    """The loop: one round per batch of changes, each a plan and a `bt build` run.

    A round re-enters the data path at "hash": the workbench of the last round is kept (graph,
    file sets, keys) and forgets only what the changed files can change (``Workbench.forget``),
    so only they are hashed again and only the keys that read them are encoded again. A change
    to what declares the graph or every key (a BUILD file, .cache-spec, a Dockerfile, an
    ignore file, a global input) starts from a new workbench, at "load".
    Ctrl-C (KeyboardInterrupt) ends it; finished builds are recorded by then.
    """

    def __init__(
        self,
        root: Path,
        patterns: tuple[str, ...],
        platforms: tuple[str, ...],
        push: bool | None,
        report: Callable[[ReportEvent], None],
        story: Callable[[StoryEvent], None] = lambda event: None,
    ):
        self.root = root
        self.story = story
        self.patterns = patterns
        self.platforms = platforms
        self.push = push
        self.report = report
        self.watched = bare_watch_set(root)
        self.bench: Workbench | None = None
        self.contributions: Contributions = {}  # of the watch set (``watch_set``)

    def run(self) -> None:
        import watchfiles

        started = False
        for changes in watchfiles.watch(
            self.root,
            watch_filter=lambda _change, path: self.watched.accepts(path),
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            rust_timeout=IDLE_MS,
            yield_on_timeout=True,
        ):
            if not started:
                started = True
                self.round(())  # covers whatever this first batch held
            elif changes:
                self.round(tuple(changed_paths(str(self.root), (path for _, path in changes))))

    def round(self, changed: tuple[str, ...]) -> None:
        began = time.monotonic()
        try:
            self.report(self.rebuild(changed, began))
            if self.bench is not None:
                # Between rounds, out of the next one's way: keep what was learnt, and parse
                # images.lock as the next round will read it.
                self.bench.save()
                self.bench.lockfile()
        except BtError as err:
            # A half-saved BUILD.images must not end the session: report it, wait for a fix.
            self.bench = None
            self.report(WatchError(changed, str(err)))
        except BaseException:
            self.bench = None
            raise
        self.report(Watching(len(self.watched.files)))

    def rebuild(self, changed: tuple[str, ...], began: float) -> Round:
        from buildtool.build.run import BuildOptions
        from buildtool.cli.pipeline import Selection, build_selection

        if self.bench is None or not changed or not self.bench.forget(changed):
            self.contributions = {}
            self.bench = Workbench.open()
            self.bench.saves = False  # after the round (``round``)
        bench = self.bench
        config = bench.config
        push = config.push if self.push is None else self.push
        options = BuildOptions(push=push, jobs=config.jobs)
        seen: list[PlannedBuild] = []
        selection = Selection(self.patterns, self.platforms, watching=True)
        try:
            result = build_selection(
                bench, options, selection, self.report, seen.extend, story=self.story
            )
        finally:
            # After the builds started: changes seen meanwhile are filtered by it only once
            # this round returns.
            if seen:
                self.watched = watch_set(config, seen, self.contributions)
        summary = result.summary
        if summary is not None and summary.interrupted:
            raise KeyboardInterrupt
        ran = (*summary.succeeded, *summary.cached, *summary.failed) if summary else ()
        failed = len(summary.failed) if summary else 0
        return Round(changed, tuple(sorted(ran)), failed, time.monotonic() - began)
