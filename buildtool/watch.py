"""What ``bt watch`` watches and how it reports a round: the file set a selection's keys read,
and one summary line per change.

Watching re-enters the data path at "hash": a change only matters if it can change a key, so the
watched set is exactly what the keys of the selected platform builds were computed from.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from buildtool.plan import PlannedBuild
from buildtool.workspace import LOCKFILE_NAME, Config

BUILD_FILE = "BUILD.images"
SPEC_FILE = ".cache-spec"


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
        if name == BUILD_FILE or path == os.path.join(self.root, SPEC_FILE):
            return True
        if path in self.files or path in self.dirs or os.path.dirname(path) in self.dirs:
            return True
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        return any(fnmatch.fnmatch(rel, pattern) for pattern in self.global_patterns)


def bare_watch_set(root: Path) -> WatchSet:
    """Only the files that declare the graph: what is left to watch when loading them failed."""
    excluded = (str(root / LOCKFILE_NAME),)
    return WatchSet(str(root), frozenset(), frozenset(), (), excluded)


def watch_set(config: Config, planned: Iterable[PlannedBuild]) -> WatchSet:
    """The inputs of every planned build: Dockerfile, its ignore files, context inputs and the
    global inputs, plus the files that declare the graph."""
    root = str(config.root)
    files: set[str] = set()
    dirs: set[str] = set()
    for build in planned:
        manifest = build.manifest
        context = os.path.normpath(os.path.join(root, manifest.context))
        dockerfile = os.path.normpath(os.path.join(root, manifest.dockerfile))
        # BuildKit reads <Dockerfile>.dockerignore first, else <context>/.dockerignore; either
        # may appear later, so both are watched whether they exist or not.
        files.update(
            (dockerfile, dockerfile + ".dockerignore", os.path.join(context, ".dockerignore"))
        )
        files.update(os.path.join(root, path) for path, _ in manifest.global_inputs)
        for path, kind, _, _ in manifest.inputs:
            full = os.path.normpath(os.path.join(context, path))
            files.add(full)
            dirs.add(full if kind == "dir" else os.path.dirname(full))
        if manifest.fallback is not None:
            dirs.add(context)  # a whole-context input gains every file added to the context
    return WatchSet(
        root, frozenset(files), frozenset(dirs), config.global_inputs, _excluded(config)
    )


def _excluded(config: Config) -> tuple[str, ...]:
    return (str(config.lockfile), str(config.cache_dir))


def changed_paths(root: str, paths: Iterable[str]) -> list[str]:
    """Workspace-relative, sorted, each once: how a round names what changed."""
    return sorted({os.path.relpath(p, root).replace(os.sep, "/") for p in paths})


@dataclass(frozen=True)
class Round:
    """One rebuild after a change: what changed, which platform builds ran, how it went."""

    changed: tuple[str, ...]
    rebuilt: tuple[tuple[str, str], ...]  # (label, platform) of the builds that ran
    failed: int
    seconds: float

    def line(self) -> str:
        changed = _shorten(self.changed)
        if not self.rebuilt:
            return f"{changed}: no build affected ({self.seconds:.2f}s)"
        labels = sorted({label for label, _ in self.rebuilt})
        outcome = f", {self.failed} failed" if self.failed else ""
        return (
            f"{changed}: rebuilt {len(self.rebuilt)} ({', '.join(labels)}){outcome} "
            f"in {self.seconds:.1f}s"
        )

    def record(self) -> dict[str, object]:
        return {
            "event": "watch_round",
            "changed": list(self.changed),
            "rebuilt": [list(build) for build in self.rebuilt],
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
        }


def _shorten(paths: tuple[str, ...], shown: int = 3) -> str:
    """A few paths and a count: a save of a whole tree must still fit on one line."""
    if not paths:
        return "start"
    head = ", ".join(paths[:shown])
    return head if len(paths) <= shown else f"{head} and {len(paths) - shown} more"
