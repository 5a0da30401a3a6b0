"""File sets: what one platform build reads, as a typed, immutable value.

A ``FileSet`` says which files of its context a (target, platform) build reads and why: the
Dockerfile analysis it used (reached stages' reads, a whole-context fallback and its reason),
the ignore file that filtered the context, explicit inputs of ``BUILD.images`` or inferred ones,
the global inputs of ``.cache-spec``, and each file's digest from the stat cache. Keys are made
from file sets (``keys.py``); this module is where input inference is decided.

The data path reads one way: keys -> filesets -> (dockerfile, dockerignore, inputs, hashing).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from buildtool.errors import BtError
from buildtool.inputs.context_tree import ContextTree, InputEntry, Source, resolve_inputs
from buildtool.inputs.dockerignore import load_ignore_rules
from buildtool.inputs.setcache import SetCache, set_key
from buildtool.state.cachedir import CacheDir
from buildtool.state.hashing import StatCache, digest_bytes
from buildtool.state.packing import pack
from buildtool.workspace.analysis import Analyses, AnalysisCache, ImageUse, InstructionText, Reads
from buildtool.workspace.config import Config
from buildtool.workspace.target import ImageTarget

# Re-exported: what file sets are made from.
__all__ = ["AnalysisCache", "FileEntry", "FileSet", "FileSets", "ImageUse", "InputRow",
           "InstructionText", "Reads", "input_rows"]  # fmt: skip

# (context path, kind, executable bit, content digest or symlink target)
FileEntry = tuple[str, str, bool, str]


# The name under which a build's context carries bt's copy of its Dockerfile, when the
# Dockerfile itself is not among the files sent (or is sent rewritten).
DOCKERFILE_IN_TAR = ".bt-Dockerfile"
# Where the context sent to the engine holds the files of named context NAME (a directory), as
# ``NAMED_IN_TAR/NAME/<path>``, for the engines that take no named contexts.
NAMED_IN_TAR = ".bt-contexts"


class NamedInputs(NamedTuple):
    """What one build reads from one named context that is a directory."""

    name: str
    directory: str  # workspace-relative
    ignore_file: str | None  # the directory's own .dockerignore, if any
    sources: tuple[Source, ...]  # what brought the entries in
    entries: tuple[FileEntry, ...]  # sorted by path, relative to ``directory``
    entries_digest: str


def inputs_identity(entries_digest: str, named: Iterable[tuple[str, str]]) -> str:
    """One digest for a build's input files: its context's entries (``entries_digest``), and
    those of its directory contexts as (name, entries digest); the first alone without any."""
    pairs = [list(pair) for pair in named]
    if not pairs:
        return entries_digest
    return digest_bytes(pack([entries_digest, pairs]))


@dataclass(frozen=True)
class FileSet:
    """Everything one platform build reads from disk, and why."""

    context: str  # workspace-relative context directory ("" for the root)
    dockerfile: str  # workspace-relative path
    dockerfile_digest: str
    dockerfile_text: str
    reads: Reads  # the analysis of the stages the build reaches
    ignore_file: str | None  # the ignore file that filtered the context, if any
    explicit: bool  # `inputs` of BUILD.images replaced inference
    sources: tuple[Source, ...]  # what brought the entries in
    fallback: str | None  # why the whole context counts as input, if it does
    entries: tuple[FileEntry, ...]  # sorted by path
    entries_digest: str  # blake3 of the canonical encoding of ``entries`` (a Merkle node)
    global_inputs: tuple[tuple[str, str], ...]  # (workspace path, digest)
    named: tuple[NamedInputs, ...] = ()  # what it reads from directory contexts, by name

    @property
    def inputs_identity(self) -> str:
        return inputs_identity(
            self.entries_digest, ((n.name, n.entries_digest) for n in self.named)
        )


class InputRow(NamedTuple):
    """One thing a build's key covers, as ``bt inputs`` lists it."""

    path: str  # workspace-relative
    kind: str  # "file", "symlink", "dir", "dockerfile" or "global"
    executable: bool
    digest: str  # blake3 of the content, or a symlink's target
    origin: str  # what brought it in: "docker/Dockerfile:12", "BUILD.images:30 (inputs)", ...

    def to_json(self) -> dict[str, object]:
        return self._asdict()


def _kind(root: str, path: str) -> str | None:
    """What ``path`` is now, as file set entries name it (None: absent or something else)."""
    try:
        mode = os.lstat(os.path.join(root, path)).st_mode
    except OSError:
        return None
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else None


def input_rows(
    fileset: FileSet,
    origins: dict[str, Source],
    named_origins: dict[str, dict[str, Source]] | None = None,
) -> list[InputRow]:
    """The files a key covers, each with what brought it in (``FileSets.origins``, and
    ``FileSets.named_origins`` for directory contexts)."""
    rows = [InputRow(fileset.dockerfile, "dockerfile", False, fileset.dockerfile_digest,
                     "the Dockerfile (the stages the build reaches)")]  # fmt: skip
    prefix = f"{fileset.context}/" if fileset.context else ""
    for path, kind, executable, value in fileset.entries:
        source = origins.get(path)
        if fileset.fallback is not None:
            origin = f"whole context ({fileset.fallback})"
        elif source is None:
            origin = "unknown"
        elif fileset.explicit:
            origin = f"{source[1]}:{source[2]} (inputs = {source[0]!r})"
        else:
            origin = f"{source[1]}:{source[2]} ({source[0]!r})"
        rows.append(InputRow(prefix + path, kind, executable, value, origin))
    for named in fileset.named:
        found = named_origins.get(named.name, {}) if named_origins else {}
        for path, kind, executable, value in named.entries:
            source = found.get(path)
            where = "unknown" if source is None else f"{source[1]}:{source[2]} ({source[0]!r})"
            full = posixpath.join(named.directory, path) if path != "." else named.directory
            origin = f"context {named.name}: {where}"
            rows.append(InputRow(full, kind, executable, value, origin))
    rows += [
        InputRow(path, "global", False, digest, ".cache-spec (global_inputs)")
        for path, digest in fileset.global_inputs
    ]
    return rows


def _named_kinds(named: NamedInputs, changed: list[str]) -> dict[str, str]:
    """The kinds of the ``changed`` workspace paths that are entries of ``named``."""
    prefix = f"{named.directory}/"
    entries = {entry[0]: entry[1] for entry in named.entries}
    return {p: entries[p[len(prefix) :]] for p in changed
            if p.startswith(prefix) and p[len(prefix) :] in entries}  # fmt: skip


def _touches_named(named: NamedInputs, changed: list[str], listed: list[str]) -> bool:
    """As ``FileSets._touches`` for what a build reads from a directory context: whether it
    holds a changed path, or may gain or lose an entry by a listed one (or its ignore file)."""
    prefix = f"{named.directory}/"
    if _named_kinds(named, changed):
        return True
    dirs = {p for p, kind, _, _ in named.entries if kind == "dir"}
    dirs |= {posixpath.dirname(p) for p, _, _, _ in named.entries}
    for path in listed:
        relative = path[len(prefix) :] if path.startswith(prefix) else None
        if relative is not None and (
            relative in dirs or posixpath.dirname(relative) in dirs or relative == ".dockerignore"
        ):
            return True
    return False


class FileSets:
    """Computes file sets for the builds of one workspace, sharing parses, trees and digests."""

    def __init__(self, config: Config, stat_cache: StatCache, analyses: Analyses | None = None):
        self.config = config
        self.stat_cache = stat_cache
        self.root = str(config.root)
        self.analyses = Analyses(config) if analyses is None else analyses
        self._trees: dict[tuple[str, str | None], ContextTree] = {}
        self._entries: dict[tuple[Any, ...], tuple[tuple[FileEntry, ...], str]] = {}
        self._globals: tuple[tuple[str, str], ...] | None = None
        self._tool_paths = self._own_paths()
        self._relpaths: dict[str, str] = {}
        self._sets: dict[tuple[Any, ...], FileSet] = {}
        self._paths: dict[int, tuple[FileSet, dict[str, str], frozenset[str]]] = {}  # ``forget``
        self.kept = SetCache(CacheDir(config.cache_dir).file_sets)

    def save(self) -> None:
        """Keep what was learnt for the next run (analyses, file digests, described sets)."""
        self.analyses.save()
        self.stat_cache.save()
        self.kept.save()

    def forget(self, paths: Iterable[str]) -> set[int]:
        """Drop what was learnt of the workspace-relative ``paths`` (changed on disk, as
        ``bt watch`` sees them), and return the ids of the dropped file sets: those holding
        one of them and, unless the path is an entry of some set still there as the same kind
        (its content or mode changed, not a listing), those listing the directory holding it;
        with the listings of their contexts. The other sets hold as they are."""
        changed = [p.replace(os.sep, "/") for p in paths]
        sets = list({id(f): f for f in self._sets.values()}.values())
        kinds: dict[str, str] = {}
        for fileset in sets:
            prefix = f"{fileset.context}/" if fileset.context else ""
            entries = self._paths_of(fileset)[0]
            for path in changed:
                if path.startswith(prefix) and path[len(prefix) :] in entries:
                    kinds[path] = entries[path[len(prefix) :]]
            for named in fileset.named:
                kinds.update(_named_kinds(named, changed))
        listed = [p for p in changed if kinds.get(p) is None or _kind(self.root, p) != kinds[p]]
        dropped = {id(f): f for f in sets if self._touches(f, changed, listed)}
        if not dropped:
            return set()
        for memo in [m for m, f in self._sets.items() if id(f) in dropped]:
            del self._sets[memo]
        touched = {(f.entries, f.entries_digest) for f in dropped.values()}
        touched |= {(n.entries, n.entries_digest) for f in dropped.values() for n in f.named}
        for memo in [m for m, d in self._entries.items() if d in touched]:
            del self._entries[memo]
        contexts = {f.context for f in dropped.values()}
        contexts.update(n.directory for f in dropped.values() for n in f.named)
        for tree_key in [t for t in self._trees if t[0] in contexts]:
            del self._trees[tree_key]  # its listings and lstats are of before the change
        return set(dropped)

    def _touches(self, fileset: FileSet, changed: list[str], listed: list[str]) -> bool:
        """Whether ``fileset`` holds one of ``changed``, or may gain or lose an entry by one of
        ``listed`` (added, removed or of another kind): a path directly inside a directory
        holding one of its entries (as ``watch.watch_set`` watches them), or anywhere in its
        context for a whole-context set."""
        prefix = f"{fileset.context}/" if fileset.context else ""
        entries, dirs = self._paths_of(fileset)
        if any(p.startswith(prefix) and p[len(prefix) :] in entries for p in changed):
            return True
        relative = [p[len(prefix) :] for p in listed if p.startswith(prefix)]
        if relative and fileset.fallback is not None:
            return True
        if any(p in dirs or posixpath.dirname(p) in dirs for p in relative):
            return True
        return any(_touches_named(named, changed, listed) for named in fileset.named)

    def _paths_of(self, fileset: FileSet) -> tuple[dict[str, str], frozenset[str]]:
        """Its entries' context paths with their kinds, and the directories holding them."""
        found = self._paths.get(id(fileset))
        if found is None or found[0] is not fileset:
            entries = {entry[0]: entry[1] for entry in fileset.entries}
            dirs = {path for path, kind in entries.items() if kind == "dir"}
            dirs.update({posixpath.dirname(p) for p, kind in entries.items() if kind != "dir"})
            found = self._paths[id(fileset)] = (fileset, entries, frozenset(dirs))
        return found[1], found[2]

    def of(self, target: ImageTarget, platform: str) -> FileSet:
        reads = self.analyses.reads(target, platform)  # first: its errors name the target
        # Builds that read alike (same analysis, context and inputs) share one file set.
        where = target.location if target.inputs is not None else None
        memo = (target.context, target.dockerfile, target.inputs, where, id(reads), target.contexts)
        shared = self._sets.get(memo)
        if shared is not None and shared.reads is reads:
            return shared
        fileset = self._fileset(target, reads)
        self._sets[memo] = fileset
        return fileset

    def _fileset(self, target: ImageTarget, reads: Reads) -> FileSet:
        digest, text = self.analyses.dockerfile(target.dockerfile)
        tree = self.tree(target)
        fallback = reads.whole_context
        sources: tuple[Source, ...]
        if target.inputs is not None:
            fallback = None
            loc = target.inputs_location or target.location
            sources = tuple((p, loc.path, loc.line, "inputs", ()) for p in target.inputs)
        elif fallback is not None:
            sources = ((".", target.dockerfile, 0, "whole context", ()),)
        else:
            df = target.dockerfile
            sources = tuple((src, df, line, ins, ex) for src, line, ins, ex in reads.sources)
        entries, entries_digest = self._described(target, tree, sources)
        named = self._named(target, reads)
        return FileSet(
            context=target.context,
            dockerfile=target.dockerfile,
            dockerfile_digest=digest,
            dockerfile_text=text,
            reads=reads,
            ignore_file=self._relative(tree.rules.source),
            explicit=target.inputs is not None,
            sources=sources,
            fallback=fallback,
            entries=entries,
            entries_digest=entries_digest,
            global_inputs=self.global_inputs(),
            named=named,
        )

    def _named(self, target: ImageTarget, reads: Reads) -> tuple[NamedInputs, ...]:
        """What the build reads from each of its directory contexts, by name."""
        if not reads.named_sources:
            return ()
        found = []
        df = target.dockerfile
        for context in target.contexts:
            if context.kind != "dir":
                continue
            sources = tuple(
                (src, df, line, ins, ex)
                for name, src, line, ins, ex in reads.named_sources
                if name == context.name
            )
            if not sources:
                continue
            tree = self.named_tree(target, context.value)
            entries, digest = self._described_in((context.value, None), tree, sources)
            ignore = self._relative(tree.rules.source)
            found.append(NamedInputs(context.name, context.value, ignore, sources, entries, digest))
        return tuple(found)

    def named_origins(self, target: ImageTarget, fileset: FileSet) -> dict[str, dict[str, Source]]:
        """For each directory context, the first source that brought each entry in."""
        result: dict[str, dict[str, Source]] = {}
        for named in fileset.named:
            tree = self.named_tree(target, named.directory)
            found = result[named.name] = {}
            for source in named.sources:
                for entry in resolve_inputs(tree, [source]):
                    found.setdefault(entry.path, source)
        return result

    def origins(self, target: ImageTarget, fileset: FileSet) -> dict[str, Source]:
        """For each entry of ``fileset``, the first source that brought it in."""
        tree = self.tree(target)
        found: dict[str, Source] = {}
        for source in fileset.sources:
            for entry in resolve_inputs(tree, [source]):
                found.setdefault(entry.path, source)
        return found

    def global_inputs(self) -> tuple[tuple[str, str], ...]:
        if self._globals is None:
            import glob as globlib

            paths: list[str] = []
            for pattern in self.config.global_inputs:
                matches = sorted(globlib.glob(pattern, root_dir=self.root, recursive=True))
                files = [m for m in matches if os.path.isfile(os.path.join(self.root, m))]
                if not files:
                    raise BtError(f"global input {pattern!r} matches no file", ".cache-spec")
                paths.extend(files)
            unique = sorted(set(paths))
            # A global input that is a symlink counts by the content it points at.
            real = [os.path.realpath(os.path.join(self.root, p)) for p in unique]
            digests = self.stat_cache.digest_many(real)
            self._globals = tuple(zip(unique, digests, strict=True))
        return self._globals

    def tree(self, target: ImageTarget) -> ContextTree:
        """The target's context as Docker sends it (ignore rules applied, bt's state left out)."""
        return self._tree(target, target.context, target.dockerfile)

    def named_tree(self, target: ImageTarget, directory: str) -> ContextTree:
        """A directory context of ``target``, filtered by its own .dockerignore only."""
        return self._tree(target, directory, None)

    def _tree(self, target: ImageTarget, context: str, dockerfile: str | None) -> ContextTree:
        tree_key = (context, dockerfile)
        tree = self._trees.get(tree_key)
        if tree is None:
            context_dir = Path(self.root, context)
            if not context_dir.is_dir():
                loc = target.location
                what = "context" if dockerfile is not None else "named context directory"
                raise BtError(
                    f"{what} {context or '.'!r} of {target.label} is not a directory",
                    loc.path,
                    loc.line,
                )
            own = None if dockerfile is None else Path(self.root, dockerfile)
            rules = load_ignore_rules(context_dir, own)
            exclude = [
                os.path.relpath(os.path.join(self.root, p), context_dir).replace(os.sep, "/")
                for p in self._tool_paths
            ]
            tree = ContextTree(context_dir, rules, [p for p in exclude if not p.startswith("..")])
            self._trees[tree_key] = tree
        return tree

    def _own_paths(self) -> tuple[str, ...]:
        """Workspace paths bt itself writes; never inputs, or every build would stale itself."""
        paths = [self.config.lockfile, self.config.cache_dir]
        return tuple(
            os.path.relpath(p, self.root).replace(os.sep, "/")
            for p in paths
            if str(p).startswith(self.root + os.sep)
        )

    def _relative(self, path: str | None) -> str | None:
        if path is None:
            return None
        found = self._relpaths.get(path)
        if found is None:
            found = self._relpaths[path] = os.path.relpath(path, self.root).replace(os.sep, "/")
        return found

    def _described(
        self, target: ImageTarget, tree: ContextTree, sources: tuple[Source, ...]
    ) -> tuple[tuple[FileEntry, ...], str]:
        return self._described_in((target.context, target.dockerfile), tree, sources)

    def _described_in(
        self, tree_key: tuple[str, str | None], tree: ContextTree, sources: tuple[Source, ...]
    ) -> tuple[tuple[FileEntry, ...], str]:
        memo = (*tree_key, sources)
        described = self._entries.get(memo)
        if described is None:
            rules = tree.rules
            key = set_key([tree.base, rules.source, [[p.text, p.exclusion] for p in rules.patterns],
                           sorted(tree.exclude), sources])  # fmt: skip
            described = self.kept.get(key)
            if described is None:
                described = self._resolved(tree, sources, key)
            self._entries[memo] = described
        return described

    def _resolved(
        self, tree: ContextTree, sources: tuple[Source, ...], key: str
    ) -> tuple[tuple[FileEntry, ...], str]:
        with tree.recording() as dirs:
            found = resolve_inputs(tree, sources)
        entries = self._describe(tree, found)
        packed = pack([list(e) for e in entries])
        described = (entries, digest_bytes(packed))
        dir_stats = [(d, st) for d in dirs if (st := tree.dir_stats.get(d)) is not None]
        files = [e[0] for e in entries if e[1] == "file"]
        file_stats = [(f, st) for f in files if (st := tree.file_stat(f)) is not None]
        if len(dir_stats) == len(dirs) and len(file_stats) == len(files):
            self.kept.put(key, tree.base, described, dir_stats, file_stats, tree.created_ns)
        return described

    def _describe(self, tree: ContextTree, found: Iterable[InputEntry]) -> tuple[FileEntry, ...]:
        entries = list(found)
        base = str(tree.context_dir)
        files = [e for e in entries if e.kind == "file"]
        stats = [st for st in map(tree.file_stat, (e.path for e in files)) if st is not None]
        paths = [os.path.join(base, e.path) for e in files]
        if len(stats) == len(files):  # listed: the listing's lstat is the one
            hashed = self.stat_cache.digest_many(paths, stats, tree.created_ns)
        else:
            hashed = self.stat_cache.digest_many(paths)
        digests = dict(zip((e.path for e in files), hashed, strict=True))
        described: list[FileEntry] = []
        for entry in entries:
            if entry.kind == "file":
                value = digests[entry.path]
            elif entry.kind == "symlink":
                value = entry.link_target or ""
            else:
                value = ""
            described.append((entry.path, entry.kind, entry.executable, value))
        return tuple(sorted(described))
