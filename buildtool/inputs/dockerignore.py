"""``.dockerignore`` with Docker's own semantics.

Lines are read as BuildKit's ignore-file reader does (moby/patternmatcher ``ignorefile``): a
``#`` in column 1 starts a comment, blank lines are skipped, a leading ``!`` re-includes,
patterns are trimmed and cleaned like Go's ``filepath.Clean`` and lose a leading ``/``. A
pattern matches a path or one of its parent directories; the last matching line wins; ``*``,
``?`` and ``[...]`` stay within one path component, ``**`` spans any number of them, ``\\``
escapes, and matching is case-sensitive (docker-py's ``exclude_paths`` folds case; Docker
does not).

Docker's walkers do not all apply those words alike, and bt must not miss a file any of them
sends (a missed input is a stale image). A path is an input when at least one of these sends it:

* ``DOCUMENTED``: patternmatcher's ``MatchesOrParentMatches``, the rule the docs describe;
* ``BUILDKIT``: the context walk of BuildKit (fsutil) and of Docker >= 23, which reuses each
  directory's matches for its children (``MatchesUsingParentResults``) and so differs from the
  rule above when lines overlap in some orders;
* ``LEGACY``: the walk of docker CLI 20.10 (Debian's ``docker.io``), which checks only the parent
  prefix as deep as the pattern (``**`` lines miss deeper files), treats ``+()|{}^`` as regular
  expression syntax, reads ``**x`` as ``(.*/)?x``, descends into an excluded directory only
  when some ``!`` line starts with its path, and then sends that directory itself.

BuildKit reads ``<Dockerfile>.dockerignore`` beside the Dockerfile first and falls back to
``<context>/.dockerignore``.
"""

from __future__ import annotations

import posixpath
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from buildtool.errors import BtError

DOCUMENTED = 1
BUILDKIT = 2
LEGACY = 4

# Go's strings.TrimSpace (unicode.IsSpace); Python's str.strip() also trims \x1c-\x1f.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    map(chr, range(0x2000, 0x200B))
)
# Regexp metacharacters patternmatcher escapes (the rest pass through to Go's regexp); docker
# CLI 20.10's copy escaped only "." and "$".
_ESCAPED = frozenset(".+()|{}$")
_LEGACY_ESCAPED = frozenset(".$")
# Backslash escapes whose meaning Go's regexp (RE2) and Python's re share.
_SHARED_ESCAPES = frozenset("dDsSwWbBAaftnrv")
# fsutil: an exception pattern holding one of these may match anywhere below a directory.
_WILDCARDS = frozenset("*[]?^\\")

_Matcher = Callable[[str], bool]


class Pattern(NamedTuple):
    """One line of an ignore file, cleaned as Docker cleans it."""

    text: str  # without the leading "!"
    exclusion: bool  # a "!" line: re-includes what it matches
    line: int
    matches: _Matcher  # BuildKit's and the documented reading
    legacy_matches: _Matcher | None  # docker CLI 20.10's reading; None when it cannot compile


class PathState(NamedTuple):
    """What the walks know about one context path, and what its children inherit."""

    kept: bool  # some walk sends this path because no pattern excludes it
    present: bool  # kept, or a directory the legacy walk sends although it is excluded
    descend: int  # the walks (DOCUMENTED | BUILDKIT | LEGACY) that look inside this directory
    parents: int  # bit i: pattern i matches this path or a parent (DOCUMENTED)
    walked: int  # bit i: pattern i held for this directory in BuildKit's walk
    prefix: int  # bit i: pattern i matches the ancestor as deep as itself (LEGACY)
    depth: int


def _clean(pattern: str) -> str:
    """Go's filepath.Clean on a slash path, then a leading '/' dropped, as BuildKit does."""
    cleaned = posixpath.normpath(pattern)
    if cleaned.startswith("//"):  # POSIX keeps a leading "//"; Go does not
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned[1:] if len(cleaned) > 1 and cleaned.startswith("/") else cleaned


def go_match_regex(pattern: str) -> re.Pattern[str] | None:
    """Go's filepath.Match as a regular expression for one path component (``*`` and ``?``
    may match any character there); None when Go reports the pattern malformed."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            if i >= n:
                return None
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch == "[":
            parsed = _char_class(pattern, i)
            if parsed is None:
                return None
            text, i = parsed
            out.append(text)
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _char_class(pattern: str, i: int) -> tuple[str, int] | None:
    """The class whose "[" ends just before index ``i``: (regex, index after its "]"). Go
    negates with "^" only and reads a range whose ends are reversed as matching nothing."""
    negate = pattern.startswith("^", i)
    i += negate
    ranges, count = [], 0
    while not (i < len(pattern) and pattern[i] == "]" and count):
        low, i = _class_char(pattern, i)
        high = low
        if i >= 0 and pattern[i] == "-":
            high, i = _class_char(pattern, i + 1)
        if i < 0:
            return None
        count += 1
        if low <= high:
            ranges.append(re.escape(low) if low == high else f"{re.escape(low)}-{re.escape(high)}")
    body = "".join(ranges)
    if negate:
        return (f"[^{body}]" if body else "."), i + 1
    return (f"[{body}]" if body else "(?!)"), i + 1


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One (possibly escaped) character of a class and the index after it, which must hold
    more of the class; index -1 when malformed (Go's getEsc)."""
    n = len(pattern)
    if i >= n or pattern[i] in "-]":
        return "", -1
    if pattern[i] == "\\":
        i += 1
        if i >= n:
            return "", -1
    return pattern[i], (i + 1 if i + 1 < n else -1)


def go_pattern_is_valid(pattern: str) -> bool:
    """Whether Go's filepath.Match accepts ``pattern`` (patternmatcher rejects what it does not)."""
    return go_match_regex(pattern) is not None


def _regex(pattern: str, escaped: frozenset[str]) -> tuple[str, str]:
    """patternmatcher's translation of a cleaned pattern: (kind, regular expression), kind one
    of "exact", "prefix", "suffix" (the shortcuts it takes) or "regex"."""
    out = ["^"]
    kind = "exact"
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        first = i == 0
        i += 1
        if ch == "*" and i < n and pattern[i] == "*":
            i += 1
            if i < n and pattern[i] == "/":
                i += 1
            if i < n:
                out.append("(.*/)?")
                kind = "regex"
            elif kind == "exact":
                kind = "prefix"
            else:
                out.append(".*")
                kind = "regex"
            if first:
                kind = "suffix"
        elif ch == "*":
            out.append("[^/]*")
            kind = "regex"
        elif ch == "?":
            out.append("[^/]")
            kind = "regex"
        elif ch in escaped:
            out.append("\\" + ch)
        elif ch == "\\":  # never last: go_pattern_is_valid rejects a trailing backslash
            following = pattern[i]
            i += 1
            kind = "regex"
            if following.isascii() and following.isalnum():
                # Go's regexp reads "\d" as a class; keep only escapes both engines share.
                if following == "z":
                    out.append("\\Z")
                elif following in _SHARED_ESCAPES:
                    out.append("\\" + following)
                else:
                    raise ValueError(f"unsupported escape \\{following}")
            else:
                out.append(re.escape(following))
        else:
            if ch in "[]":
                kind = "regex"
            out.append(ch)
    out.append(r"\Z")  # Go's "$" without (?m); Python's "$" also matches before a final "\n"
    return kind, "".join(out)


def _compile_regex(source: str) -> _Matcher:
    with warnings.catch_warnings():  # "possible nested set" for "[[": Go reads it the same way
        warnings.simplefilter("ignore", FutureWarning)
        regex = re.compile(source)
    return lambda path: regex.match(path) is not None


def _matcher(pattern: str) -> _Matcher:
    kind, source = _regex(pattern, _ESCAPED)
    if kind == "exact":
        return pattern.__eq__
    if kind == "prefix":
        stem = pattern[:-2]
        return lambda path: path.startswith(stem)
    if kind == "suffix":
        tail = pattern[2:]
        bare = tail[1:] if tail.startswith("/") else None  # "**/foo" also matches "foo"
        return lambda path: path.endswith(tail) or path == bare
    return _compile_regex(source)


def _legacy_matcher(pattern: str, matcher: _Matcher) -> _Matcher | None:
    if not any(ch in "+()|{}^" for ch in pattern) and not (
        pattern.startswith("**") and not pattern.startswith("**/") and pattern != "**"
    ):
        return matcher  # both readings agree
    try:
        return _compile_regex(_regex(pattern, _LEGACY_ESCAPED)[1])
    except (re.error, ValueError):
        return None  # docker CLI 20.10 fails the build on this line


def _strip_trailing_glob(text: str) -> str:
    return text.removesuffix("/**").removesuffix("/*")


class IgnoreRules:
    """The patterns of one ignore file, in order."""

    def __init__(self, patterns: Sequence[Pattern] = (), source: str | None = None):
        self.patterns = tuple(patterns)
        self.source = source
        self._matchers = tuple(p.matches for p in self.patterns)
        self._exclusions = tuple(p.exclusion for p in self.patterns)
        self._exclusion_bits = sum(1 << i for i, p in enumerate(self.patterns) if p.exclusion)
        legacy = tuple(p.legacy_matches for p in self.patterns)
        # Patterns docker CLI 20.10 reads differently: (index, its matcher).
        self._legacy = tuple(
            (i, m) for i, m in enumerate(legacy) if m is not None and m is not self._matchers[i]
        )
        self._legacy_matchers = tuple(
            m or p.matches for m, p in zip(legacy, self.patterns, strict=True)
        )
        self._depth_bits: dict[int, int] = {}
        for i, p in enumerate(self.patterns):
            depth = p.text.count("/") + 1
            self._depth_bits[depth] = self._depth_bits.get(depth, 0) | 1 << i
        exceptions = [p.text for p in self.patterns if p.exclusion]
        self._legacy_exceptions = tuple(text + "/" for text in exceptions)
        stripped = [_strip_trailing_glob(text) for text in exceptions]
        self._exception_prefixes: tuple[str, ...] | None = None
        if not any(_WILDCARDS.intersection(s) for s in stripped):
            self._exception_prefixes = tuple(s + "/" for s in stripped)
        walks = DOCUMENTED | BUILDKIT | (LEGACY if None not in legacy else 0)
        self.root = PathState(True, True, walks, 0, 0, 0, 0)

    @classmethod
    def parse(cls, text: str, source: str = ".dockerignore") -> IgnoreRules:
        patterns = []
        for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
            if raw.startswith("#"):  # only in column 1: "  # x" is a pattern
                continue
            line = raw.strip(_GO_SPACE)
            if not line:
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip(_GO_SPACE)
            cleaned = _clean(line) if line else ""
            if exclusion and cleaned in ("", "/"):
                raise BtError('illegal exclusion pattern: "!"', source, number)
            if not go_pattern_is_valid(cleaned):
                raise BtError(f"syntax error in pattern {line!r}", source, number)
            try:
                matcher = _matcher(cleaned)
            except (re.error, ValueError) as err:
                raise BtError(f"cannot use pattern {line!r}: {err}", source, number) from None
            legacy = _legacy_matcher(cleaned, matcher)
            patterns.append(Pattern(cleaned, exclusion, number, matcher, legacy))
        return cls(patterns, source)

    def _excluded_by_last(self, bits: int) -> bool:
        """The last pattern whose bit is set decides; none set means not excluded."""
        return bool(bits) and not (self._exclusion_bits >> (bits.bit_length() - 1)) & 1

    def _buildkit_walk(self, inherited: int, bits: int) -> tuple[int, bool]:
        """fsutil's MatchesUsingParentResults: a pattern the parent matched holds; a pattern
        is only tried when it could change the outcome, and only then recorded."""
        walked, matched = 0, False
        for i, exclusion in enumerate(self._exclusions):
            bit = 1 << i
            if not inherited & bit and (exclusion != matched or not bits & bit):
                continue
            walked |= bit
            matched = not exclusion
        return walked, matched

    def may_include_under(self, reldir: str) -> bool:
        """False when nothing below the excluded directory ``reldir`` can be re-included, so a
        walker may prune it (no walk of Docker's enters it)."""
        below = reldir + "/"
        return self._buildkit_enters(below) or self._legacy_enters(below)

    def _buildkit_enters(self, below: str) -> bool:
        # fsutil prunes an excluded directory unless an exception may match beneath it: one
        # with wildcards (after a trailing "/*" or "/**") anywhere, a literal one by prefix.
        if not self._exclusion_bits:
            return False
        prefixes = self._exception_prefixes
        return prefixes is None or any(p.startswith(below) for p in prefixes)

    def _legacy_enters(self, below: str) -> bool:
        # docker CLI 20.10: only when some exception's text starts with the directory's path.
        return any(p.startswith(below) for p in self._legacy_exceptions)

    def _bits(self, relpath: str) -> tuple[int, int]:
        """The patterns matching ``relpath`` itself, as bits: (BuildKit's reading, docker CLI
        20.10's)."""
        bits = 0
        for i, matcher in enumerate(self._matchers):
            if matcher(relpath):
                bits |= 1 << i
        legacy = bits
        for i, matcher in self._legacy:
            legacy = legacy | 1 << i if matcher(relpath) else legacy & ~(1 << i)
        return bits, legacy

    def keeps(self, parent: PathState, relpath: str) -> bool:
        """Whether a walk sends the file or symlink ``relpath`` found in directory ``parent``."""
        if not self.patterns:
            return True
        bits, legacy = self._bits(relpath)
        if not (bits | legacy | parent.parents | parent.walked | parent.prefix):
            return bool(parent.descend)  # no pattern bears on this path: the usual case
        return self._state(parent, relpath, bits, legacy).kept

    def enter(self, parent: PathState, relpath: str) -> PathState:
        """The state of ``relpath``, a child of the directory whose state is ``parent``."""
        if not self.patterns:
            return parent._replace(depth=parent.depth + 1)
        return self._state(parent, relpath, *self._bits(relpath))

    def _state(self, parent: PathState, relpath: str, bits: int, legacy: int) -> PathState:
        depth = parent.depth + 1
        parents = parent.parents | bits
        walked, buildkit_excluded = self._buildkit_walk(parent.walked, bits)
        kept = 0
        if not self._excluded_by_last(parents):
            kept |= DOCUMENTED
        if not buildkit_excluded:
            kept |= BUILDKIT
        if not self._excluded_by_last(parent.prefix | legacy):
            kept |= LEGACY
        kept &= parent.descend
        excluded = parent.descend & ~kept
        descend = kept
        legacy_sends_dir = False
        if excluded and self._exclusion_bits:
            below = relpath + "/"
            if excluded & LEGACY and self._legacy_enters(below):
                descend |= LEGACY
                legacy_sends_dir = True  # docker CLI 20.10 sends the directory it descends into
            if excluded & (DOCUMENTED | BUILDKIT) and self._buildkit_enters(below):
                descend |= excluded & (DOCUMENTED | BUILDKIT)  # the docs' rule prunes likewise
        prefix = parent.prefix | (legacy & self._depth_bits.get(depth, 0))
        return PathState(
            bool(kept), bool(kept) or legacy_sends_dir, descend, parents, walked, prefix, depth
        )

    def ignored(self, relpath: str) -> bool:
        """Whether no walk sends ``relpath`` (slash-separated, relative to the context) on its
        own account. A directory may still be sent for what is re-included beneath it."""
        clean = posixpath.normpath(relpath)
        if clean in (".", "/"):
            return False  # Docker never excludes the context itself
        parts = clean.split("/")
        state = self.root
        for i in range(len(parts)):
            if not state.descend:
                return True
            state = self.enter(state, "/".join(parts[: i + 1]))
        return not state.kept


def load_ignore_rules(context_dir: Path, dockerfile: Path | None) -> IgnoreRules:
    """BuildKit's choice: ``<Dockerfile>.dockerignore`` first, else ``<context>/.dockerignore``;
    no rules when neither exists. A named context (``dockerfile`` None) has only its own."""
    own = [] if dockerfile is None else [dockerfile.with_name(dockerfile.name + ".dockerignore")]
    for candidate in (*own, context_dir / ".dockerignore"):
        try:
            data = candidate.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as err:
            raise BtError(f"cannot read ignore file: {err.strerror}", candidate) from None
        # Patterns are bytes to Docker; surrogateescape keeps undecodable names comparable
        # with what os.scandir returns.
        return IgnoreRules.parse(data.decode("utf-8", "surrogateescape"), str(candidate))
    return IgnoreRules((), None)
