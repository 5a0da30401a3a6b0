"""The exact file set a build reads from its context.

A ``ContextTree`` is a lazy, cached view of one build context filtered by one set of ignore
rules: each directory is listed once (``os.scandir``; one ``lstat`` per regular file for its
mode) and each source expanded once, however many targets read them. What it returns is what
Docker would send for a ``COPY``/``ADD``/``RUN --mount=type=bind`` source and copy into the image.
"""

from __future__ import annotations

import os
import posixpath
import stat
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, pairwise
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

from buildtool.errors import BtError
from buildtool.inputs.dockerignore import IgnoreRules, PathState, go_match_regex

_MAX_LINKS = 40  # Linux's MAXSYMLINKS: a longer chain fails with ELOOP
# A whole "**" component spans any number of directories. BuildKit's COPY reads it as "*"
# (one component) today; spanning more can only add inputs, never miss one.
_DOUBLE_STAR = "**"
_by_path = attrgetter("path")
_by_name = attrgetter("name")


class InputEntry(NamedTuple):
    path: str  # slash-separated, relative to the context
    kind: str  # "file" | "symlink" | "dir"
    executable: bool  # a file's owner-exec bit
    link_target: str | None  # a symlink's text, as os.readlink returns it


@dataclass
class _Listing:
    """One directory's children as the filtered context holds them, keyed by name."""

    kept: dict[str, InputEntry] = field(default_factory=dict)
    # Excluded directories a walk still enters: present only if something below is sent.
    hidden: dict[str, InputEntry] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # name -> why it cannot be an input
    has_dirs: bool = False  # whether ``kept`` holds a directory


class _Unusable(Exception):
    """A path that would be sent but cannot be read as an input."""

    def __init__(self, path: str, reason: str):
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


class _Escapes(Exception):
    """A source path that leaves the context through a symlink."""

    def __init__(self, link: InputEntry):
        super().__init__(link)
        self.link = link


def _has_wildcard(segment: str) -> bool:
    """BuildKit's containsWildcards: an unescaped ``*``, ``?`` or ``[``."""
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


class ContextTree:
    """Lazy, cached view of one build context, filtered by one ``IgnoreRules``."""

    def __init__(self, context_dir: Path, rules: IgnoreRules, exclude: Collection[str] = ()):
        self.context_dir = context_dir
        self.base = os.fspath(context_dir)
        self.rules = rules
        # bt's own files (lockfile, cache) inside the context: never inputs.
        self.exclude = frozenset(posixpath.normpath(p) for p in exclude) - {".", ""}
        self._states: dict[str, PathState] = {"": rules.root}
        self._listings: dict[str, _Listing] = {}
        self._below: dict[str, list[InputEntry]] = {}
        self._expanded: dict[str, list[InputEntry]] = {}
        self._whole: list[InputEntry] | None = None
        self._euid = os.geteuid()
        self._groups = frozenset(os.getgroups()) | {os.getegid()}
        self._real_base: str | None = None
        self._stats: dict[str, os.stat_result] = {}
        # What a cache of resolved sources must watch: each listed directory's stat, and which
        # directories every cached aggregate (subtree, expansion) consulted.
        self.created_ns = time.time_ns()  # before any stat: the racy-file rule's clock
        self.dir_stats: dict[str, os.stat_result] = {}
        self._recorders: list[set[str]] = []
        self._below_dirs: dict[str, set[str]] = {}
        self._expanded_dirs: dict[str, set[str]] = {}

    def file_stat(self, relpath: str) -> os.stat_result | None:
        """The lstat taken when the regular file ``relpath`` was listed, so that a digest
        cache can reuse it instead of asking the file system again (None if not listed)."""
        return self._stats.get(relpath)

    @contextmanager
    def recording(self) -> Iterator[set[str]]:
        """The directories whose listings what runs inside consults (cached or not): a result
        built from them holds while none of them changes."""
        found: set[str] = set()
        self._recorders.append(found)
        try:
            yield found
        finally:
            self._recorders.pop()

    def _consulted(self, dirs: Iterable[str]) -> None:
        for recorder in self._recorders:
            recorder.update(dirs)

    def _abs(self, rel: str) -> str:
        return os.path.join(self.base, rel) if rel else self.base

    # -- listing -------------------------------------------------------------------------

    def _list(self, reldir: str) -> _Listing:
        for recorder in self._recorders:
            recorder.add(reldir)
        found = self._listings.get(reldir)
        if found is not None:
            return found
        state = self._states[reldir]
        try:
            # Stat before listing: an entry added after it changes the directory's mtime.
            self.dir_stats[reldir] = os.stat(self._abs(reldir))
            with os.scandir(self._abs(reldir)) as it:
                items = sorted(it, key=_by_name)
        except PermissionError:
            if state.kept:
                raise _Unusable(reldir, "permission denied") from None
            items = []  # fsutil skips an unreadable directory it entered only to look inside
        except OSError as err:
            raise _Unusable(reldir, f"cannot list directory: {err.strerror}") from None
        listing = _Listing()
        kept, stats, exclude = listing.kept, self._stats, self.exclude
        rules = self.rules if self.rules.patterns else None
        prefix = reldir + "/" if reldir else ""
        for item in items:
            name = item.name
            rel = prefix + name
            if rel in exclude:
                continue
            try:
                if item.is_dir(follow_symlinks=False):
                    self._add_dir(listing, name, rel, rules.enter(state, rel) if rules else state)
                    continue
                if rules and not rules.keeps(state, rel):
                    continue
                if item.is_symlink():
                    kept[name] = InputEntry(rel, "symlink", False, os.readlink(item.path))
                    continue
                # The hot path: one lstat per regular file, for its mode (and for reuse).
                st = item.stat(follow_symlinks=False)
                mode = st.st_mode
                if stat.S_ISREG(mode) and (self._euid == 0 or self._readable(st, item.path)):
                    kept[name] = InputEntry(rel, "file", bool(mode & stat.S_IXUSR), None)
                    stats[rel] = st
                elif stat.S_ISREG(mode):
                    listing.problems[name] = "permission denied"
                else:
                    listing.problems[name] = "not a regular file, directory or symlink"
            except OSError as err:
                listing.problems[name] = err.strerror or str(err)
        self._listings[reldir] = listing
        return listing

    def _add_dir(self, listing: _Listing, name: str, rel: str, state: PathState) -> None:
        if state.present:
            listing.kept[name] = InputEntry(rel, "dir", False, None)
            listing.has_dirs = True
        elif state.descend:
            listing.hidden[name] = InputEntry(rel, "dir", False, None)
        else:
            return
        self._states[rel] = state

    def _readable(self, st: os.stat_result, path: str) -> bool:
        # Decided from the mode at hand (the class that applies, as the kernel picks it);
        # os.access only confirms a refusal, which an ACL may override.
        if st.st_uid == self._euid:
            bit = stat.S_IRUSR
        elif st.st_gid in self._groups:
            bit = stat.S_IRGRP
        else:
            bit = stat.S_IROTH
        return bool(st.st_mode & bit) or os.access(path, os.R_OK)

    def _collect(self, reldir: str, out: list[InputEntry]) -> None:
        """Append every entry sent below ``reldir``, depth first (symlinks not followed).
        Walked with a stack of its own, not recursion: a context may nest directories deeper
        than Python's recursion limit."""
        stack = [self._entries_below(reldir, out)]
        while stack:
            below = next(stack[-1], None)
            if below is None:
                stack.pop()
            else:
                stack.append(self._entries_below(below, out))

    def _entries_below(self, reldir: str, out: list[InputEntry]) -> Iterator[str]:
        """Append the entries of ``reldir`` to ``out``, yielding each directory whose own
        entries must be appended right then (``_collect`` does, then resumes this)."""
        cached = self._below.get(reldir)
        if cached is not None:
            self._consulted(self._below_dirs[reldir])
            out.extend(cached)
            return
        listing = self._list(reldir)
        for name, reason in listing.problems.items():
            raise _Unusable(posixpath.join(reldir, name), reason)
        if not listing.has_dirs:
            out.extend(listing.kept.values())
        else:
            for entry in listing.kept.values():
                out.append(entry)
                if entry.kind == "dir":
                    yield entry.path
        for entry in listing.hidden.values():
            mark = len(out)
            out.append(entry)  # sent as the parent of what is re-included below it
            yield entry.path
            if len(out) == mark + 1:
                out.pop()

    def _subtree(self, reldir: str) -> list[InputEntry]:
        found = self._below.get(reldir)
        if found is not None:
            self._consulted(self._below_dirs[reldir])
            return found
        with self.recording() as dirs:
            found = []
            self._collect(reldir, found)
        self._consulted(dirs)
        self._below[reldir] = found
        self._below_dirs[reldir] = dirs
        return found

    def _child(self, reldir: str, name: str) -> InputEntry | None:
        """The entry ``name`` in directory ``reldir`` if the filtered context holds it."""
        listing = self._list(reldir)
        reason = listing.problems.get(name)
        if reason is not None:
            raise _Unusable(posixpath.join(reldir, name), reason)
        entry = listing.kept.get(name)
        if entry is None:
            entry = listing.hidden.get(name)
            if entry is not None and not self._subtree(entry.path):
                return None
        return entry

    def _children(self, reldir: str) -> Iterable[InputEntry]:
        listing = self._list(reldir)
        hidden = (e for e in listing.hidden.values() if self._subtree(e.path))
        return chain(listing.kept.values(), hidden)

    # -- sources -------------------------------------------------------------------------

    def _inside(self, target: str) -> str | None:
        """An absolute symlink target as a context path, or None when it is outside."""
        if self._real_base is None:
            self._real_base = os.path.realpath(self.base)
        target = posixpath.normpath(target)
        for base in (self.base, self._real_base):
            if target == base:
                return ""
            if target.startswith(base.rstrip("/") + "/"):
                return target[len(base.rstrip("/")) + 1 :]
        return None

    def _resolve(self, rel: str) -> tuple[str, InputEntry | None, list[InputEntry]] | None:
        """Follow ``rel`` through symlinks inside the context, as COPY does for a source:
        (real path, its entry or None for the context root, symlinks passed), or None when
        the filtered context does not hold it."""
        todo = list(reversed(rel.split("/")))
        current, entry = "", None
        links: list[InputEntry] = []
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if not current:
                    if not links:
                        return None
                    raise _Escapes(links[-1])
                current = posixpath.dirname(current)
                entry = None if not current else InputEntry(current, "dir", False, None)
                continue
            if entry is not None and entry.kind != "dir":
                return None  # a file used as a directory: ENOTDIR
            found = self._child(current, name)
            if found is None:
                return None
            if found.kind == "symlink":
                links.append(found)
                if len(links) > _MAX_LINKS:
                    raise _Unusable(found.path, "too many levels of symbolic links")
                target = found.link_target or ""
                if target.startswith("/"):
                    inside = self._inside(target)
                    if inside is None:
                        raise _Escapes(found)
                    current, entry, target = "", None, inside
                todo.extend(reversed(target.split("/")))
                continue
            current, entry = found.path, found
        return current, entry, links

    def _matches(self, base: str, segments: list[str], out: list[str]) -> None:
        """Paths below directory ``base`` matching ``segments`` (Go filepath.Match each), as
        BuildKit walks the sent context: symlinks are not followed."""
        if not segments:
            out.append(base)
            return
        segment, rest = segments[0], segments[1:]
        if segment == _DOUBLE_STAR:
            self._matches(base, rest, out)
            if rest:
                for child in self._children(base):
                    if child.kind == "dir":
                        self._matches(child.path, segments, out)
            return
        regex = go_match_regex(segment)
        if regex is None:
            return
        for name, reason in self._list(base).problems.items():
            if not rest and regex.fullmatch(name):
                raise _Unusable(posixpath.join(base, name), reason)
        for child in self._children(base):
            if regex.fullmatch(posixpath.basename(child.path)):
                if not rest:
                    out.append(child.path)
                elif child.kind == "dir":
                    self._matches(child.path, rest, out)

    def _entries_at(self, rel: str) -> list[InputEntry] | None:
        """What COPY takes for the context path ``rel``, symlinks followed; None if absent."""
        resolved = self._resolve(rel)
        if resolved is None:
            return None
        real, entry, links = resolved
        if entry is None:
            entries = [*self._subtree("")]
        elif entry.kind == "dir":
            entries = [entry, *self._subtree(real)]
        else:
            entries = [entry]
        return [*entries, *links]

    def _expand(self, rel: str) -> list[InputEntry] | None:
        segments = rel.split("/") if rel else []
        first = next((i for i, s in enumerate(segments) if _has_wildcard(s)), None)
        if first is None:
            return self._entries_at(rel)
        # BuildKit resolves the literal prefix (following symlinks), then matches the rest.
        resolved = self._resolve("/".join(segments[:first]))
        if resolved is None or (resolved[1] is not None and resolved[1].kind != "dir"):
            return None
        real, _, links = resolved
        matched: list[str] = []
        self._matches(real, segments[first:], matched)
        if not matched:
            return None
        entries = list(links)
        for path in dict.fromkeys(matched):
            found = self._entries_at(path)
            if found is None:
                return None  # a matched symlink that leads nowhere: COPY fails
            entries.extend(found)
        return entries

    def expand(
        self, source: str, *, origin: str, line: int, instruction: str = "COPY"
    ) -> list[InputEntry]:
        """The entries Docker sends and copies for one COPY/ADD/bind-mount source from the
        context, sorted by path; ``.`` is the whole context. The list is cached and shared:
        callers must not change it."""
        # BuildKit roots a source at the context: "/x", "./x" and "../x" all name "x".
        rel = posixpath.normpath("/" + source).lstrip("/")
        found = self._expanded.get(rel)
        if found is not None:
            self._consulted(self._expanded_dirs[rel])
            return found
        try:
            with self.recording() as dirs:
                entries = self._expand(rel)
        except _Unusable as err:
            raise BtError(f"cannot use {self._abs(err.path)}: {err.reason}", origin, line) from None
        except _Escapes as err:
            link = err.link
            raise BtError(
                f"{instruction} source {source!r} leaves the build context through symlink "
                f"{self._abs(link.path)} -> {link.link_target}",
                origin,
                line,
            ) from None
        if entries is None:
            raise BtError(self._missing(source, rel, instruction), origin, line)
        result = _unique_sorted(entries)
        self._consulted(dirs)
        self._expanded[rel] = result
        self._expanded_dirs[rel] = dirs
        return result

    def _missing(self, source: str, rel: str, instruction: str) -> str:
        what = "bind source" if instruction.startswith("RUN") else "source"
        message = f"{instruction} {what} {source!r} not found in context {self.base}"
        if not os.path.lexists(self._abs(rel)):
            submodule = _unchecked_submodule(self._abs(rel))
            if submodule is not None:
                return (
                    f"{message}: it is inside git submodule {submodule}, which is not checked "
                    "out (run `git submodule update --init`)"
                )
            return message
        if any(rel == p or rel.startswith(p + "/") for p in self.exclude):
            return f"{message} ({rel} is bt's own state, never a build input)"
        if self.rules.ignored(rel):
            return f"{message} (excluded by {self.rules.source})"
        return message

    def whole(self) -> list[InputEntry]:
        """Every entry of the context that Docker sends, sorted by path (cached and shared)."""
        if self._whole is None:
            try:
                self._whole = sorted(self._subtree(""), key=_by_path)
            except _Unusable as err:
                raise BtError(f"cannot use {self._abs(err.path)}: {err.reason}") from None
        else:
            self._consulted(self._below_dirs[""])
        return self._whole


def _unique_sorted(entries: Iterable[InputEntry]) -> list[InputEntry]:
    by_path = {entry.path: entry for entry in entries}
    return [by_path[path] for path in sorted(by_path)]


# (source as written, the file naming it, its line, the instruction, its --exclude patterns)
Source = tuple[str, str, int, str, tuple[str, ...]]


def resolve_inputs(tree: ContextTree, sources: Iterable[Source]) -> list[InputEntry]:
    """Sources -> the sorted, de-duplicated union of their entries."""
    expansions = []
    for source, origin, line, instruction, excludes in sources:
        found = tree.expand(source, origin=origin, line=line, instruction=instruction)
        if excludes:
            found = _without_excluded(found, source, excludes, f"{origin}:{line}")
        expansions.append(found)
    expansions = sorted((e for e in expansions if e), key=lambda e: e[0].path)
    if all(a[-1].path < b[0].path for a, b in pairwise(expansions)):
        return list(chain.from_iterable(expansions))  # disjoint sorted runs: the usual case
    return _unique_sorted(chain.from_iterable(expansions))


def _without_excluded(
    entries: list[InputEntry], source: str, excludes: tuple[str, ...], where: str
) -> list[InputEntry]:
    """Drop what ``COPY --exclude`` keeps out of the copy. BuildKit matches the patterns (with
    .dockerignore syntax) relative to each copied root: the source directory, or for a file or
    a wildcard match, the match's parent. A wildcard's match root is not known statically, so
    an entry is dropped only when every root it could have is excluded (never a missed input)."""
    rules = IgnoreRules.parse("\n".join(excludes), f"--exclude of {where}")
    rel = posixpath.normpath("/" + source).lstrip("/")
    literal = [] if rel in ("", ".") else rel.split("/")
    wild = next((i for i, seg in enumerate(literal) if _has_wildcard(seg)), None)
    prefix = "/".join(literal if wild is None else literal[:wild])
    kept = []
    for entry in entries:
        path = entry.path
        if wild is None and path == prefix:
            roots = [posixpath.dirname(path)]  # a file source: matched by its own name
        elif wild is None:
            roots = [prefix]
        else:
            parts = path.split("/")
            depth = len(prefix.split("/")) if prefix else 0
            roots = ["/".join(parts[:n]) for n in range(depth, len(parts))]
        inside = [posixpath.relpath(path, root) if root else path for root in roots]
        if not inside or not all(r != "." and rules.ignored(r) for r in inside):
            kept.append(entry)
    return kept


def _unchecked_submodule(path: str) -> str | None:
    """The git submodule (as .gitmodules names it) holding ``path`` when it is not checked out
    (its directory is missing or empty), else None."""
    directory = os.path.dirname(path)
    while True:
        modules = os.path.join(directory, ".gitmodules")
        if os.path.isfile(modules):
            for sub in _submodule_paths(modules):
                full = os.path.join(directory, sub)
                inside = path == full or path.startswith(full.rstrip("/") + "/")
                if inside and (not os.path.isdir(full) or not os.listdir(full)):
                    return sub
        if os.path.exists(os.path.join(directory, ".git")):
            return None
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _submodule_paths(modules: str) -> list[str]:
    try:
        with open(modules, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        key, _, value = line.strip().partition("=")
        if key.strip() == "path" and value.strip():
            paths.append(value.strip())
    return paths
