"""``.dockerignore`` with Docker's exact semantics (moby/patternmatcher, as BuildKit uses it).

Patterns are cleaned like Go's ``filepath.Clean`` with a leading ``/`` dropped; ``#`` lines are
comments; ``!`` re-includes; the *last* matching pattern wins; a pattern that matches a parent
directory matches everything below it; ``*`` and ``?`` do not cross ``/``; ``**`` crosses any
number of directories; ``\\`` escapes; matching is case-sensitive (unlike docker-py's
``exclude_paths``, which folds case). BuildKit reads ``<Dockerfile>.dockerignore`` next to the
Dockerfile first and falls back to ``<context>/.dockerignore``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from buildtool.errors import BtError


@dataclass(frozen=True)
class _Pattern:
    text: str
    exclusion: bool  # a "!" pattern: re-includes what it matches
    regex: re.Pattern[str]


def _clean(pattern: str) -> str:
    """Go's filepath.Clean on a slash path, then a leading '/' dropped (as moby does)."""
    cleaned = posixpath.normpath(pattern)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if len(cleaned) > 1 and cleaned.startswith("/"):
        cleaned = cleaned[1:]
    return cleaned


def _compile(pattern: str, source: str, line: int) -> re.Pattern[str]:
    # moby/patternmatcher Pattern.compile: "**" is any number of directories, "*" and "?"
    # stay within one path component, "." and "$" are literal, other characters pass
    # through to the regular expression as they do in Docker.
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(.*/)?")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in ".$":
            out.append("\\" + ch)
        elif ch == "\\":
            if i + 1 < n:
                out.append(re.escape(pattern[i + 1]))
                i += 1
            else:
                out.append("\\\\")
        else:
            out.append(ch)
        i += 1
    out.append("$")
    try:
        return re.compile("".join(out))
    except re.error as err:
        raise BtError(f"invalid .dockerignore pattern {pattern!r}: {err}", source, line) from None


class IgnoreRules:
    """The patterns of one ignore file, in order."""

    def __init__(self, patterns: list[_Pattern], source: str | None = None):
        self.patterns = patterns
        self.source = source
        self.has_exclusions = any(p.exclusion for p in patterns)

    @classmethod
    def parse(cls, text: str, source: str = ".dockerignore") -> IgnoreRules:
        patterns = []
        for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
                if not line:
                    continue
            cleaned = _clean(line)
            patterns.append(_Pattern(cleaned, exclusion, _compile(cleaned, source, number)))
        return cls(patterns, source)

    def ignored(self, relpath: str) -> bool:
        """Whether ``relpath`` (slash-separated, relative to the context) is excluded."""
        if not self.patterns:
            return False
        parent = posixpath.dirname(relpath)
        parents = parent.split("/") if parent else []
        matched = False
        for pattern in self.patterns:
            # moby's MatchesOrParentMatches: only a pattern that could flip the result counts.
            if pattern.exclusion != matched:
                continue
            hit = pattern.regex.match(relpath) is not None
            if not hit:
                for i in range(len(parents)):
                    if pattern.regex.match("/".join(parents[: i + 1])):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched

    def may_include_under(self, reldir: str) -> bool:
        """False when nothing below an ignored ``reldir`` can be re-included (prune the walk)."""
        return self.has_exclusions


def load_ignore_rules(context_dir: Path, dockerfile: Path) -> IgnoreRules:
    """BuildKit's choice: ``<Dockerfile>.dockerignore`` first, else ``<context>/.dockerignore``."""
    for candidate in (dockerfile.with_name(dockerfile.name + ".dockerignore"),
                      context_dir / ".dockerignore"):  # fmt: skip
        try:
            text = candidate.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as err:
            raise BtError(f"cannot read ignore file: {err}", candidate) from None
        return IgnoreRules.parse(text, str(candidate))
    return IgnoreRules([], None)
