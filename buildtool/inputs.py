"""The exact file set a build reads from its context.

A ``ContextTree`` is a lazy, cached view of one build context filtered by one set of ignore
rules; every target sharing that context and ignore file shares one tree, so directories are
listed once however many targets read them.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import translate
from pathlib import Path

from buildtool.dockerignore import IgnoreRules
from buildtool.errors import BtError

_GLOB_CHARS = re.compile(r"[*?\[\\]")


@dataclass(frozen=True, order=True)
class InputEntry:
    path: str  # slash-separated, relative to the context
    kind: str  # "file" | "symlink" | "dir"
    executable: bool
    link_target: str | None


_Listing = list[tuple[str, InputEntry]]  # (name, entry)


def _segment_regex(segment: str) -> re.Pattern[str]:
    # Go's filepath.Match for one path component: like fnmatch, but "\\" escapes a character
    # and "[!...]"/"[^...]" negate; "*" and "?" never match "/".
    parts, i = [], 0
    while i < len(segment):
        ch = segment[i]
        if ch == "\\" and i + 1 < len(segment):
            parts.append(re.escape(segment[i + 1]))
            i += 2
            continue
        if ch == "[":
            end = segment.find("]", i + 2)
            if end != -1:
                body = segment[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("^"):
                    body = "!" + body[1:]
                parts.append(translate(f"[{body}]")[4:-3])
                i = end + 1
                continue
        parts.append(translate(ch)[4:-3] if ch in "*?" else re.escape(ch))
        i += 1
    return re.compile("".join(parts).replace(".*", "[^/]*").replace("(?s:.)", "[^/]") + r"\Z")


class ContextTree:
    def __init__(self, context_dir: Path, rules: IgnoreRules, exclude: Collection[str] = ()):
        self.context_dir = context_dir
        self.base = str(context_dir)
        self.rules = rules
        self.exclude = frozenset(exclude)
        self._listings: dict[str, _Listing] = {}
        self._below: dict[str, list[InputEntry]] = {}
        self._expanded: dict[str, list[InputEntry]] = {}

    def _abs(self, rel: str) -> str:
        return os.path.join(self.base, rel) if rel else self.base

    def _excluded(self, rel: str) -> bool:
        return rel in self.exclude or self.rules.ignored(rel)

    def _list(self, reldir: str) -> _Listing:
        """Entries directly in ``reldir`` (not ignore-filtered), sorted by name."""
        found = self._listings.get(reldir)
        if found is not None:
            return found
        listing: _Listing = []
        try:
            with os.scandir(self._abs(reldir)) as it:
                for item in it:
                    rel = f"{reldir}/{item.name}" if reldir else item.name
                    listing.append((item.name, self._entry(rel, item.stat(follow_symlinks=False))))
        except OSError as err:
            raise BtError(f"cannot list directory: {err.strerror}", self._abs(reldir)) from None
        listing.sort()
        self._listings[reldir] = listing
        return listing

    def _entry(self, rel: str, st: os.stat_result) -> InputEntry:
        if stat.S_ISLNK(st.st_mode):
            return InputEntry(rel, "symlink", False, os.readlink(self._abs(rel)))
        if stat.S_ISDIR(st.st_mode):
            return InputEntry(rel, "dir", False, None)
        if not stat.S_ISREG(st.st_mode):
            raise BtError("inputs must be regular files, directories or symlinks", self._abs(rel))
        if not os.access(self._abs(rel), os.R_OK):
            raise BtError("cannot read input file: permission denied", self._abs(rel))
        return InputEntry(rel, "file", bool(st.st_mode & stat.S_IXUSR), None)

    def _below_dir(self, reldir: str) -> list[InputEntry]:
        """Every non-ignored entry below ``reldir``, recursively (symlinks not followed)."""
        found = self._below.get(reldir)
        if found is not None:
            return found
        result: list[InputEntry] = []
        for _, entry in self._list(reldir):
            ignored = self._excluded(entry.path)
            if entry.kind == "dir":
                if ignored and not self.rules.may_include_under(entry.path):
                    continue
                below = self._below_dir(entry.path)
                if not ignored or below:
                    result.append(entry)
                result.extend(below)
            elif not ignored:
                result.append(entry)
        self._below[reldir] = result
        return result

    def whole(self) -> list[InputEntry]:
        return self._below_dir("")

    def _lookup(self, rel: str, origin: str, line: int) -> InputEntry | None:
        """The entry at ``rel``, following symlinks inside the context as BuildKit does for a
        source path; a path that leaves the context is an error."""
        real_base = os.path.realpath(self.base)
        real = os.path.realpath(self._abs(rel))
        if real != real_base and not real.startswith(real_base + os.sep):
            raise BtError(
                f"source {rel!r} resolves through a symlink to {real}, outside the build context",
                origin,
                line,
            )
        try:
            st = os.stat(self._abs(rel))
        except FileNotFoundError:
            return None
        except OSError as err:
            raise BtError(f"cannot read {rel!r}: {err.strerror}", origin, line) from None
        kind_entry = self._entry(rel, st)
        return kind_entry

    def _glob(self, pattern: str) -> list[str]:
        """Context paths matching a pattern of Go filepath.Match segments (plus ``**``)."""
        paths = [""]
        for segment in pattern.split("/"):
            following: list[str] = []
            if segment == "**":
                for base in paths:
                    following.append(base)
                    following.extend(e.path for e in self._below_dir(base) if e.kind == "dir")
            elif not _GLOB_CHARS.search(segment):
                following = [f"{b}/{segment}" if b else segment for b in paths]
                following = [p for p in following if os.path.lexists(self._abs(p))]
            else:
                regex = _segment_regex(segment)
                for base in paths:
                    if not os.path.isdir(self._abs(base)):
                        continue
                    following.extend(e.path for n, e in self._list(base) if regex.match(n))
            paths = following
        return sorted(set(paths))

    def expand(self, source: str, *, origin: str, line: int) -> list[InputEntry]:
        """The entries Docker sends for one COPY/ADD/bind-mount source."""
        rel = posixpath.normpath(source.lstrip("/")) if source not in ("", ".", "/") else "."
        memo = self._expanded.get(rel)
        if memo is not None:
            return memo
        if rel == ".":
            result = list(self.whole())
        elif _GLOB_CHARS.search(rel):
            result = []
            for path in self._glob(rel):
                if not self._excluded(path):
                    result.extend(self._expand_path(path, origin, line))
        else:
            if self._excluded(rel):
                raise BtError(
                    f"COPY source {source!r} is excluded by {self.rules.source}", origin, line
                )
            result = self._expand_path(rel, origin, line)
        self._expanded[rel] = result
        return result

    def _expand_path(self, rel: str, origin: str, line: int) -> list[InputEntry]:
        entry = self._lookup(rel, origin, line)
        if entry is None:
            raise BtError(f"COPY source {rel!r} not found in context {self.base}", origin, line)
        if entry.kind == "dir":
            return [entry, *self._below_dir(rel)]
        return [entry]


def resolve_inputs(
    tree: ContextTree, sources: Sequence[tuple[str, str, int]] | Iterable[tuple[str, str, int]]
) -> list[InputEntry]:
    """(source, origin, line) triples -> the sorted, de-duplicated union of their entries."""
    entries: dict[str, InputEntry] = {}
    for source, origin, line in sources:
        for entry in tree.expand(source, origin=origin, line=line):
            entries[entry.path] = entry
    return [entries[path] for path in sorted(entries)]
