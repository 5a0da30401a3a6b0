"""Static analysis of a Dockerfile: which files of the build context a build of one stage reads.

A platform build is stale exactly when something it reads changed, so this module follows
BuildKit's Dockerfile frontend (moby/buildkit ``frontend/dockerfile``: ``parser``,
``instructions``, ``shell/lex.go``, ``dockerfile2llb``) rule by rule rather than approximating.
Where a value cannot be known statically (an unset variable that the base image's environment
may define, a platform that was not given, a substitution Docker rejects), the analysis never
guesses: it reports ``whole_context`` with the reason, and the whole context counts as input.

Two rule sets are in use: current BuildKit, and v0.8, built into Docker 20.10, which differs
for some builds that succeed (checked against a real engine). Unless the Dockerfile pins a
current frontend, a build's reads are the union of both.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar
from urllib.parse import urlsplit

from buildtool.errors import BtError

_T = TypeVar("_T")

# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction after continuation lines are joined.

    ``args`` by keyword: COPY/ADD/VOLUME/FROM/EXPOSE the words (or JSON list); RUN/CMD/
    ENTRYPOINT/SHELL the JSON list or the whole command as one string; ARG the ``name[=default]``
    words; ENV/LABEL flattened ``(key, value, key, value, ...)``; HEALTHCHECK the type then its
    command; ONBUILD the trigger text (parsed into ``trigger``); others the text as one string.
    Values keep their quotes: substitution happens only when a build is evaluated.
    """

    keyword: str
    original: str
    args: tuple[str, ...]
    flags: tuple[tuple[str, str | None], ...]
    json_form: bool
    heredocs: tuple[tuple[str, str], ...]
    line: int
    end_line: int
    trigger: Instruction | None = None


@dataclass(frozen=True)
class Stage:
    index: int
    name: str | None
    base: str
    platform_flag: str | None
    line: int
    end_line: int
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True)
class Dockerfile:
    path: str
    escape: str
    meta_args: tuple[tuple[str, str | None], ...]
    stages: tuple[Stage, ...]
    syntax: str | None = None  # the `# syntax=` directive: which frontend BuildKit runs


@dataclass(frozen=True)
class SourceRef:
    """A context path a build reads, as BuildKit resolves it: relative to the context root,
    cleaned like Go's ``path.Join("/", src)`` ("." is the whole context). It may hold glob
    characters with Go ``filepath.Match`` syntax (``*``, ``?``, ``[...]``, backslash escapes).
    ``excludes`` are ``--exclude`` patterns verbatim: BuildKit does not substitute them.
    A source may match nothing (a missing COPY source fails the build; a path read only under
    the other BuildKit rule set may not exist): it then contributes no input."""

    source: str
    line: int
    instruction: str  # "COPY", "ADD" or "RUN --mount"
    parents: bool
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageReads:
    sources: tuple[SourceRef, ...]
    whole_context: str | None
    remote_sources: tuple[str, ...]
    has_run: bool
    external_bases: tuple[str, ...]
    stage_lines: tuple[tuple[int, int], ...]
    # Images (not stages) named by `COPY --from=` or `RUN --mount=from=` in reached stages.
    from_images: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Parsing (parser/parser.go, parser/line_parsers.go, instructions/parse.go)

_KEYWORDS = frozenset(
    {
        *("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK"),
        *("LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME"),
        "WORKDIR",
    }
)
_HEREDOC_KEYWORDS = frozenset({"ADD", "COPY", "RUN"})
# Go's unicode.IsSpace; Python's str.isspace also accepts \x1c-\x1f, which Go does not.
_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WS = re.compile(r"[\t\v\f\r ]+")  # parser.reWhitespace: how shell-form words are split
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*")
_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")
_STAGE_INDEX = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)

_BOOL, _STRING, _STRINGS = "bool", "string", "strings"
_FLAG_SPECS: dict[str, dict[str, str]] = {
    "COPY": {
        "chown": _STRING,
        "from": _STRING,
        "chmod": _STRING,
        "link": _BOOL,
        "exclude": _STRINGS,
        "parents": _BOOL,
    },
    "ADD": {
        "chown": _STRING,
        "chmod": _STRING,
        "link": _BOOL,
        "keep-git-dir": _BOOL,
        "checksum": _STRING,
        "unpack": _BOOL,
        "exclude": _STRINGS,
    },
    "FROM": {"platform": _STRING},
}


class _ParseError(Exception):
    """A rejection by Docker's parser; the caller attaches the path and line."""


def _lstrip(text: str) -> str:
    i = 0
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return text[i:]


def _strip(text: str) -> str:
    end = len(text)
    while end and text[end - 1] in _SPACE:
        end -= 1
    return _lstrip(text[:end])


def _is_comment(line: str) -> bool:
    return _lstrip(line).startswith("#")


def _trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    """Docker's continuation rule: the escape char ends the line (spaces and tabs may follow),
    unless it is itself escaped. Returns the line without it and whether the line is complete."""
    body = line.rstrip(" \t")
    if body.endswith(escape) and (len(body) == 1 or body[-2] != escape):
        return body[:-1], False
    return line, True


def _split_lines(text: str) -> list[str]:
    """Lines with their "\\n" kept (heredoc bodies keep them); bufio's scanLines, not
    str.splitlines, which would also split on \\r, \\v, \\f and others."""
    lines = [part + "\n" for part in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    return lines


def _scan_words(text: str, escape: str, flags: bool) -> tuple[list[str], str]:
    """Words split at spaces, honouring quotes and the escape character.

    With ``flags`` (BuildKit's extractBuilderFlags) only the leading ``--`` words are taken,
    quotes and escapes removed, and the rest of the text is returned as well; otherwise
    (parseWords, for ARG/ENV/LABEL) every word is taken with quotes and escapes kept verbatim.
    """
    keep = not flags
    words: list[str] = []
    buf: list[str] = []
    in_word, quote, blank_ok = False, "", False
    pos, n = 0, len(text)
    while pos < n:
        ch = text[pos]
        if not in_word:
            if ch in _SPACE:
                pos += 1
                continue
            if flags and not text.startswith("--", pos):
                return words, text[pos:]
            in_word = True
        if ch == escape and (flags or quote != "'"):  # nothing escapes in '...' words
            if pos + 1 == n:  # an escape at the very end is dropped
                quote = ""
                pos += 1
                continue
            buf.append(ch + text[pos + 1] if keep else text[pos + 1])
            pos += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
                if flags:
                    pos += 1
                    continue
            buf.append(ch)
            pos += 1
            continue
        if ch in _SPACE:
            word = "".join(buf)
            if flags and word == "--":
                return words, text[pos:]
            if blank_ok or word:
                words.append(word)
            buf, in_word, blank_ok = [], False, False
            pos += 1
            continue
        if ch in "'\"":
            quote, blank_ok = ch, True
            if flags:
                pos += 1
                continue
        buf.append(ch)
        pos += 1
    word = "".join(buf)
    if in_word and (blank_ok or word) and not (flags and word == "--"):
        words.append(word)
    return words, ""


def _parse_words(rest: str, escape: str) -> list[str]:
    return _scan_words(rest, escape, flags=False)[0]


def _reject_constant(name: str) -> object:
    raise ValueError(name)  # Go's encoding/json rejects NaN and Infinity


def _parse_json(rest: str) -> tuple[str, ...] | None:
    """The JSON form, or None when ``rest`` is not a JSON array (then it is shell form)."""
    rest = _lstrip(rest)
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest, parse_constant=_reject_constant)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise _ParseError("when using JSON array syntax, arrays must be comprised of strings only")
    return tuple(value)


def _split_ws(rest: str) -> tuple[str, ...]:
    return tuple(_WS.split(rest)) if rest else ()


def _name_values(rest: str, keyword: str, escape: str) -> tuple[str, ...]:
    """ENV/LABEL: ``key value`` (old form) or ``key=value ...``, flattened to pairs."""
    words = _parse_words(rest, escape)
    if not words:
        raise _ParseError(f"{keyword} requires at least one argument")
    if "=" not in words[0]:
        parts = _WS.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _ParseError(f"{keyword} must have two arguments")
        pairs: list[str] = [parts[0], parts[1]]
    else:
        pairs = []
        for word in words:
            key, eq, value = word.partition("=")
            if not eq:
                raise _ParseError(
                    f"Syntax error - can't find = in {json.dumps(word)}. "
                    "Must be of the form: name=value"
                )
            pairs += [key, value]
    if any(not key for key in pairs[::2]):
        raise _ParseError(f"{keyword} names can not be blank")
    return tuple(pairs)


def _parse_args(keyword: str, rest: str, escape: str) -> tuple[tuple[str, ...], bool]:
    """Arguments as BuildKit's per-instruction line parser splits them, and the JSON flag."""
    if keyword in ("ADD", "COPY", "VOLUME"):
        parsed = _parse_json(rest)
        return (parsed, True) if parsed is not None else (_split_ws(rest), False)
    if keyword in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
        if not rest:
            return (), False
        parsed = _parse_json(rest)
        return (parsed, True) if parsed is not None else ((rest,), False)
    if keyword in ("FROM", "EXPOSE"):
        return _split_ws(rest), False
    if keyword == "ARG":
        return tuple(_parse_words(rest, escape)), False
    if keyword in ("ENV", "LABEL"):
        return _name_values(rest, keyword, escape), False
    if keyword == "HEALTHCHECK":
        sep = 0
        while sep < len(rest) and rest[sep] not in _SPACE:
            sep += 1
        if not sep:
            return (), False
        command, json_form = _parse_args("CMD", _lstrip(rest[sep:]), escape)
        return (rest[:sep], *command), json_form
    return ((rest,) if rest else ()), False


def _split_command(line: str, escape: str) -> tuple[str, list[str], str]:
    text = _strip(line)
    parts = _WS.split(text, maxsplit=1)
    if len(parts) < 2:
        return parts[0], [], ""
    flags, rest = _scan_words(parts[1], escape, flags=True)
    return parts[0], flags, _strip(rest)


def _flag_pairs(words: Iterable[str]) -> tuple[tuple[str, str | None], ...]:
    pairs: list[tuple[str, str | None]] = []
    for word in words:
        name, eq, value = word[2:].partition("=")
        pairs.append((name, value if eq else None))
    return tuple(pairs)


def _check_flags(keyword: str, flags: tuple[tuple[str, str | None], ...]) -> None:
    """BuildKit's BFlags.Parse for the instructions whose flags decide what is read."""
    spec = _FLAG_SPECS.get(keyword)
    if keyword == "RUN":
        spec = {"mount": _STRINGS}
    if spec is None:
        return
    seen: set[str] = set()
    for name, value in flags:
        kind = spec.get(name)
        if kind is None:
            if keyword == "RUN":
                continue  # --network, --security, --device and future flags read no context
            close = difflib.get_close_matches(name, list(spec), n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            raise _ParseError(f"unknown flag: --{name}{hint}")
        if name in seen and kind != _STRINGS:
            raise _ParseError(f"duplicate flag specified: --{name}")
        seen.add(name)
        if kind == _BOOL:
            if value == "":
                raise _ParseError(f"missing a value on flag: --{name}")
            if value is not None and value.lower() not in ("true", "false"):
                raise _ParseError(f"expecting boolean value for flag --{name}, not: {value}")
        elif value is None:
            raise _ParseError(f"missing a value on flag: --{name}")


def _flag(ins: Instruction, name: str) -> str | None:
    values = _flag_values(ins, name)
    return values[-1] if values else None


def _flag_values(ins: Instruction, name: str) -> tuple[str, ...]:
    return tuple(value or "" for key, value in ins.flags if key == name)


def _bool_flag(ins: Instruction, name: str) -> bool:
    found = [value for key, value in ins.flags if key == name]
    return bool(found) and (found[-1] is None or found[-1].lower() == "true")


def _csv_fields(text: str) -> list[str]:
    """One CSV record, as go-csvvalue parses ``--mount`` values (no lazy quotes)."""
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text:
        raise ValueError("EOF")
    fields: list[str] = []
    i, n = 0, len(text)
    while True:
        if i >= n or text[i] != '"':
            j = text.find(",", i)
            field = text[i:] if j < 0 else text[i:j]
            if '"' in field:
                raise ValueError('bare " in non-quoted-field')
            fields.append(field)
            if j < 0:
                return fields
            i = j + 1
            continue
        i += 1
        buf: list[str] = []
        while True:
            j = text.find('"', i)
            if j < 0:
                raise ValueError('extraneous or missing " in quoted-field')
            buf.append(text[i:j])
            i = j + 1
            following = text[i] if i < n else ""
            if following == '"':
                buf.append('"')
                i += 1
                continue
            if following in ("", ","):
                break
            raise ValueError('extraneous or missing " in quoted-field')
        fields.append("".join(buf))
        if i >= n:
            return fields
        i += 1


def _mount_fields(spec: str) -> dict[str, str]:
    """The ``--mount`` keys that decide what is read (last one wins, as in BuildKit)."""
    found: dict[str, str] = {}
    for field in _csv_fields(spec):
        key, eq, value = field.partition("=")
        key = key.lower()
        if eq and key in ("type", "from", "source", "src"):
            found["source" if key == "src" else key] = value
    return found


def _is_literal(word: str, escape: str) -> bool:
    try:
        return _Lexer(escape).word(word, _no_env) == word
    except (_ExpandError, _Unresolved):
        return False


def _check_instruction(ins: Instruction, escape: str) -> None:
    """The arg-independent checks of instructions.Parse and of the stage dependency graph."""
    kw, args = ins.keyword, ins.args
    _check_flags(kw, ins.flags)
    if kw in ("COPY", "ADD"):
        if len(args) < 2:
            raise _ParseError(
                f"{kw} requires at least two arguments, but only one was provided. "
                "Destination could not be determined"
            )
        if _is_inline_source(args[-1]):
            raise _ParseError(f"{kw} cannot accept a heredoc as a destination")
        source = _flag(ins, "from")
        if source is not None and not _is_literal(source, escape):
            raise _ParseError(
                "variable expansion is not supported for --from, define a new stage with "
                "FROM using ARG from global scope as a workaround"
            )
    elif kw == "FROM":
        if len(args) == 3 and args[1].lower() == "as":
            if not _STAGE_NAME.fullmatch(args[2].lower()):
                raise _ParseError(
                    f"invalid name for build stage: {json.dumps(args[2])}, "
                    "name can't start with a number or contain symbols"
                )
        elif len(args) != 1:
            raise _ParseError("FROM requires either one or three arguments")
    elif kw == "ARG":
        if not args:
            raise _ParseError("ARG requires at least one argument")
        if any(word.startswith("=") for word in args):
            raise _ParseError("ARG names can not be blank")
    elif kw == "RUN":
        for spec in _flag_values(ins, "mount"):
            try:
                source = _mount_fields(spec).get("from", "")
            except ValueError as err:
                raise _ParseError(f"failed to parse csv mounts: {err}") from None
            if "$" in source[:-1]:
                raise _ParseError(
                    "'from' doesn't support variable expansion, define alias stage instead"
                )
    elif kw == "ONBUILD":
        if not args:
            raise _ParseError("ONBUILD requires at least one argument")
    elif kw == "SHELL":
        if not args:
            raise _ParseError("SHELL requires at least one argument")
        if not ins.json_form:
            raise _ParseError(f"SHELL requires the arguments to be in JSON form: {ins.original}")
    elif kw in ("WORKDIR", "USER", "MAINTAINER", "STOPSIGNAL") and len(args) != 1:
        raise _ParseError(f"{kw} requires exactly one argument")
    elif kw in ("EXPOSE", "VOLUME", "HEALTHCHECK") and not args:
        raise _ParseError(f"{kw} requires at least one argument")


class _Parser:
    """One pass over the lines, as parser.Parse reads them."""

    def __init__(self, text: str, path: str):
        self.lines = _split_lines(text.removeprefix("\ufeff"))
        self.path = path
        self.pos = 0
        self.escape = "\\"
        self.syntax: str | None = None
        self.directives_done = False
        self.directives_seen: set[str] = set()

    def error(self, message: str, line: int) -> BtError:
        return BtError(message, path=self.path, line=line)

    def directive(self, line: str, lineno: int) -> None:
        """Parser directives: `# key=value` lines before anything else, even a blank line."""
        if self.directives_done:
            return
        match = _DIRECTIVE.fullmatch(_lstrip(line[1:])) if line.startswith("#") else None
        key = match.group(1).lower() if match else ""
        if match is None or key not in ("syntax", "escape", "check"):
            self.directives_done = True
            return
        if key in self.directives_seen:
            raise self.error(f"only one {key} parser directive can be used", lineno)
        self.directives_seen.add(key)
        value = match.group(2)
        if key == "escape":
            if value not in ("\\", "`"):
                raise self.error(f"invalid escape token '{value}' does not match ` or \\", lineno)
            self.escape = value
        elif key == "syntax":
            self.syntax = value

    def parse(self) -> Dockerfile:
        nodes: list[Instruction] = []
        lines = self.lines
        while self.pos < len(lines):
            token = _lstrip(lines[self.pos].rstrip("\r\n"))
            self.directive(token, self.pos + 1)
            self.pos += 1
            start = self.pos
            token, complete = _trim_continuation("" if _is_comment(token) else token, self.escape)
            if complete and not token:
                continue
            parts = [token]
            while not complete and self.pos < len(lines):
                raw = lines[self.pos]
                token = raw.rstrip("\r\n")
                self.directive(token, self.pos + 1)
                self.pos += 1
                # Docker drops comment lines and (with a warning) empty lines inside a
                # continuation, so the instruction goes on past them.
                if _is_comment(raw) or not _lstrip(token):
                    continue
                token, complete = _trim_continuation(token, self.escape)
                parts.append(token)
            try:
                nodes.append(self.instruction("".join(parts), start))
            except _ParseError as err:
                raise self.error(str(err), start) from None
        return self.assemble(nodes)

    def instruction(self, line: str, start: int) -> Instruction:
        command, flag_words, rest = _split_command(line, self.escape)
        keyword = command.upper()
        if keyword not in _KEYWORDS:
            close = difflib.get_close_matches(keyword, sorted(_KEYWORDS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise _ParseError(f"unknown instruction: {command}{hint}")
        args, json_form = _parse_args(keyword, rest, self.escape)
        heredoc_capable = keyword in _HEREDOC_KEYWORDS and not json_form
        if keyword == "ONBUILD" and rest:
            sub_command, _, sub_rest = _split_command(rest, self.escape)
            sub_keyword = sub_command.upper()
            heredoc_capable = (
                sub_keyword in _HEREDOC_KEYWORDS
                and not _parse_args(sub_keyword, sub_rest, self.escape)[1]
            )
        heredocs: tuple[tuple[str, str], ...] = ()
        if heredoc_capable and "<<" in line:
            heredocs = self.heredoc_bodies(line, start)
        ins = Instruction(
            keyword=keyword,
            original=line,
            args=args,
            flags=_flag_pairs(flag_words),
            json_form=json_form,
            heredocs=heredocs,
            line=start,
            end_line=self.pos,
        )
        if keyword == "ONBUILD" and rest:
            ins = replace(ins, args=(rest,), trigger=self.trigger(ins, rest))
        _check_instruction(ins, self.escape)
        return ins

    def heredoc_bodies(self, line: str, start: int) -> tuple[tuple[str, str], ...]:
        bodies: list[tuple[str, str]] = []
        for name, chomp in _heredocs_in_line(line):
            content: list[str] = []
            while self.pos < len(self.lines):
                raw = self.lines[self.pos]
                self.pos += 1
                candidate = raw.rstrip("\r\n")
                if (candidate.lstrip("\t") if chomp else candidate) == name:
                    break
                content.append(raw)
            else:
                raise self.error("unterminated heredoc", start)
            body = "".join(content)
            bodies.append((name, _LEADING_TABS.sub("", body) if chomp else body))
        return tuple(bodies)

    def trigger(self, ins: Instruction, rest: str) -> Instruction:
        """ONBUILD triggers run in stages built FROM this one; BuildKit re-parses the trigger
        text on its own there, so with the default escape character."""
        command, flag_words, sub_rest = _split_command(rest, "\\")
        keyword = command.upper()
        if keyword == "ONBUILD":
            raise _ParseError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if keyword in ("MAINTAINER", "FROM"):
            raise _ParseError(f"{keyword} isn't allowed as an ONBUILD trigger")
        if keyword not in _KEYWORDS:
            raise _ParseError(f"unknown instruction: {command}")
        args, json_form = _parse_args(keyword, sub_rest, "\\")
        flags = _flag_pairs(flag_words)
        trigger = replace(
            ins, keyword=keyword, original=rest, args=args, flags=flags, json_form=json_form
        )
        _check_instruction(trigger, "\\")
        return trigger

    def assemble(self, nodes: list[Instruction]) -> Dockerfile:
        if not nodes:
            raise self.error("file with no instructions", len(self.lines) or 1)
        meta: list[tuple[str, str | None]] = []
        stages: list[Stage] = []
        current: list[Instruction] = []
        head: Instruction | None = None

        def close() -> None:
            if head is None:
                return
            args = head.args
            stages.append(
                Stage(
                    index=len(stages),
                    name=args[2].lower() if len(args) == 3 else None,
                    base=args[0],
                    platform_flag=_flag(head, "platform"),
                    line=head.line,
                    end_line=current[-1].end_line if current else head.end_line,
                    instructions=tuple(current),
                )
            )

        for ins in nodes:
            if ins.keyword == "FROM":
                close()
                head, current = ins, []
            elif head is not None:
                current.append(ins)
            elif ins.keyword == "ARG":
                meta += [_arg_pair(word) for word in ins.args]
            else:
                raise self.error("no build stage in current context", ins.line)
        close()
        if not stages:
            raise self.error("dockerfile contains no stages to build", nodes[-1].line)
        for stage in stages:
            for ins in _executed(stage.instructions):
                source = (_flag(ins, "from") if ins.keyword == "COPY" else None) or ""
                if _STAGE_INDEX.fullmatch(source) and not 0 <= int(source) < len(stages):
                    raise self.error(f"invalid stage index {int(source)}", ins.line)
        return Dockerfile(self.path, self.escape, tuple(meta), tuple(stages), self.syntax)


def _arg_pair(word: str) -> tuple[str, str | None]:
    key, eq, value = word.partition("=")
    return key, (value if eq else None)


def _executed(instructions: Iterable[Instruction]) -> Iterable[Instruction]:
    """Instructions with ONBUILD triggers alongside (BuildKit resolves both for --from)."""
    for ins in instructions:
        yield ins
        if ins.trigger is not None:
            yield ins.trigger


def parse_dockerfile(text: str, path: str) -> Dockerfile:
    """Parse Dockerfile text; raise BtError(path:line) for what Docker rejects at parse time."""
    return _Parser(text, path).parse()


# ---------------------------------------------------------------------------------------------
# Heredocs (parser.heredocsFromLine, parser.ParseHeredoc)


def _heredoc_word(word: str) -> tuple[str, bool] | None:
    """``[fd]<<[-]NAME`` -> (NAME unquoted, chomp), as ParseHeredoc matches one word."""
    i = 0
    while i < len(word) and word[i] in "0123456789":
        i += 1
    if not word.startswith("<<", i):
        return None
    i += 2
    chomp = word.startswith("-", i)
    i += chomp
    while i < len(word) and word[i] in "\t\n\f\r ":
        i += 1
    rest = word[i:]
    if not rest or "<" in rest:
        return None
    names = _Lexer("\\", skip_unset=True).words(rest, _no_env)
    return (names[0], chomp) if len(names) == 1 else None


def _heredocs_in_line(line: str) -> list[tuple[str, bool]]:
    lexer = _Lexer("\\", raw_quotes=True, raw_escapes=True, skip_unset=True)
    try:
        words = lexer.words(line, _no_env)
    except _ExpandError:
        return []  # BuildKit ignores this error: such a line simply has no heredocs
    found: list[tuple[str, bool]] = []
    for word in words:
        try:
            heredoc = _heredoc_word(word)
        except _ExpandError as err:
            raise _ParseError(str(err)) from None
        if heredoc is not None:
            found.append(heredoc)
    return found


def _is_inline_source(word: str) -> bool:
    try:
        return _heredoc_word(word) is not None
    except _ExpandError:
        return False


# ---------------------------------------------------------------------------------------------
# Variable substitution (shell/lex.go)


class _ExpandError(Exception):
    """Docker rejects the word (bad substitution, `${X:?msg}` on an unset X, ...)."""


class _Unresolved(Exception):
    """The word depends on a value that is not known statically; args[0] says which."""


# A variable's value, None when it is unset; raises _Unresolved when it cannot be known.
_Lookup = Callable[[str], "str | None"]


def _no_env(name: str) -> str | None:
    return None


class _Lexer:
    """BuildKit's shell word processor: quotes, escapes and ``$VAR`` / ``${VAR...}`` forms."""

    def __init__(
        self,
        escape: str,
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_unset: bool = False,
    ):
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes_default = raw_escapes
        self.skip_unset = skip_unset

    def word(self, text: str, lookup: _Lookup) -> str:
        try:
            return _Scan(self, text, lookup).stop_on("", self.raw_escapes_default)[0]
        except RecursionError:
            raise _Unresolved("substitutions nested too deeply to evaluate") from None

    def words(self, text: str, lookup: _Lookup) -> list[str]:
        try:
            return _Scan(self, text, lookup).stop_on("", self.raw_escapes_default)[1]
        except RecursionError:
            raise _ExpandError("substitutions nested too deeply to evaluate") from None


class _Scan:
    """State of one word being processed."""

    def __init__(self, lexer: _Lexer, text: str, lookup: _Lookup):
        self.lx = lexer
        self.text = text
        self.n = len(text)
        self.pos = 0
        self.lookup = lookup
        self.raw_escapes = lexer.raw_escapes_default
        # Go shares one word buffer across nested ${...} processing; keep that quirk, since
        # it decides which words heredoc detection sees.
        self.wbuf: list[str] = []

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < self.n else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words: list[str] = []
        self.wbuf.clear()
        in_word = False
        escape = self.lx.escape
        while self.pos < self.n:
            ch = self.text[self.pos]
            if stop and ch == stop:
                self.pos += 1
                return "".join(result), self._flush(words)
            if ch == "$":
                tmp = self.dollar()
                result.append(tmp)
                for c in tmp:
                    in_word = self._add_char(words, c, in_word)
                continue
            if ch in "<'\"":
                tmp = self.maybe_heredoc() if ch == "<" else self.quoted()
                result.append(tmp)
                self.wbuf.append(tmp)
                in_word = True
                continue
            self.pos += 1
            if ch == escape:
                if self.raw_escapes:
                    self.wbuf.append(ch)
                    result.append(ch)
                if self.pos >= self.n:
                    break
                ch = self.next()
                self.wbuf.append(ch)
                in_word = True
            else:
                in_word = self._add_char(words, ch, in_word)
            result.append(ch)
        if stop:
            raise _ExpandError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), self._flush(words)

    def _add_char(self, words: list[str], ch: str, in_word: bool) -> bool:
        if ch not in _SPACE:
            self.wbuf.append(ch)
            return True
        if in_word and "".join(self.wbuf):
            words.append("".join(self.wbuf))
            self.wbuf.clear()
            return False
        return in_word

    def _flush(self, words: list[str]) -> list[str]:
        word = "".join(self.wbuf)
        if word:
            words.append(word)
            self.wbuf.clear()
        return words

    def quoted(self) -> str:
        """A quoted part: '...' keeps everything literally; "..." expands $ and honours
        escapes of ", $ and the escape character."""
        quote = self.next()
        double = quote == '"'
        out = [quote] if self.lx.raw_quotes else []
        while True:
            ch = self.peek()
            if not ch:
                kind = "double-quote" if double else "single-quote"
                raise _ExpandError(f"unexpected end of statement while looking for matching {kind}")
            if double and ch == "$":
                out.append(self.dollar())
                continue
            self.pos += 1
            if ch == quote:
                break
            if double and ch == self.lx.escape:
                if self.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if not following:
                    continue
                if following in ('"', "$", self.lx.escape):
                    ch = self.next()
            out.append(ch)
        if self.lx.raw_quotes:
            out.append(quote)
        return "".join(out)

    def maybe_heredoc(self) -> str:
        self.pos += 1
        if self.peek() != "<":
            return "<"
        self.pos += 1
        start = self.pos
        while self.peek() in ("\t", "\r", " "):
            self.pos += 1
        return "<<" + self.text[start : self.pos]

    def name(self) -> str:
        start = self.pos
        ch = self.peek()
        if ch.isdecimal():
            while self.peek().isdecimal():
                self.pos += 1
            return self.text[start : self.pos]
        if ch and ch in "@*#?-$!0":
            self.pos += 1
            return ch
        while True:
            ch = self.peek()
            if not ch or not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                return self.text[start : self.pos]
            self.pos += 1

    def get(self, name: str) -> str | None:
        return self.lookup(name)

    def dollar(self) -> str:
        self.pos += 1
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value = self.get(name)
            if value is None:
                return "$" + name if self.lx.skip_unset else ""
            return value
        self.pos += 1
        ch = self.peek()
        if not ch:
            raise _ExpandError("syntax error: missing '}'")
        if ch in "{}:":
            raise _ExpandError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "}":
            value = self.get(name)
            if value is None:
                return "${" + name + "}" if self.lx.skip_unset else ""
            return value
        if op == "/":
            return self.replace(name)
        null_is_unset = op == ":"
        if null_is_unset:
            op = self.next()
        if not null_is_unset and op not in ("+", "-", "?", "#", "%"):
            raise _ExpandError(f"unsupported modifier ({op}) in substitution")
        modifier = (":" if null_is_unset else "") + op
        pattern_op = op in ("#", "%")
        if null_is_unset and pattern_op:
            raise _ExpandError(f"unsupported modifier ({modifier}) in substitution")
        word = self.inner("}", pattern_op, "syntax error: missing '}'")
        value = self.get(name)
        if value is None and self.lx.skip_unset:
            return "${" + name + modifier + word + "}"
        empty = value is None or (null_is_unset and value == "")
        if op == "-":
            return word if empty else value or ""
        if op == "+":
            return "" if empty else word
        if op == "?":
            if value is None:
                raise _ExpandError(f"{name}: {word or 'is not allowed to be unset'}")
            if empty:
                raise _ExpandError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if op in ("#", "%"):
            greedy = word.startswith(op)
            word = word[1:] if greedy else word
            if op == "%":
                return _trim_suffix(word, value or "", greedy)
            return _trim_prefix(word, value or "", greedy)
        raise _ExpandError(f"unsupported modifier ({modifier}) in substitution")

    def inner(self, stop: str, raw_escapes: bool, missing: str) -> str:
        try:
            return self.stop_on(stop, raw_escapes)[0]
        except _ExpandError:
            if not self.peek():
                raise _ExpandError(missing) from None
            raise

    def replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        self.pos += replace_all
        pattern = self.inner("/", True, "syntax error: missing '/' in ${}")
        replacement = self.inner("}", True, "syntax error: missing '}'")
        value = self.get(name)
        if value is None and self.lx.skip_unset:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        regex = _shell_pattern(pattern, greedy=True, anchored=False)
        if not replace_all:
            match = regex.search(value or "")
            if match is None:
                return value or ""
            return (value or "")[: match.start()] + replacement + (value or "")[match.end() :]
        if "$" in replacement:
            # Go's ReplaceAllString expands $-templates in the replacement; not modelled.
            raise _Unresolved(f"a '$' in the replacement of ${{{name}//...}} is not evaluated")
        return regex.sub(lambda _m: replacement, value or "")


def _shell_pattern(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A ``${VAR#pattern}`` shell pattern as a regex: ``*``, ``?`` and escapes; no brackets."""
    out = ["^"] if anchored else []
    i = 0
    while i < len(pattern):
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(".*" if greedy else ".*?")
            continue
        if tok == "?":
            out.append(".")
            continue
        if tok == "\\":
            following = pattern[i] if i < len(pattern) else ""
            if following in ("}", "/"):
                continue  # the escape only protected the delimiter of ${...}
            i += 1
            if following not in ("*", "?", "\\"):
                raise _ExpandError(
                    f"invalid pattern ({pattern}) in substitution: invalid escape '\\{following}'"
                )
            out.append("\\" + following)
            continue
        out.append("\\" + tok if tok in "[]{}.+()|^$" else tok)
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _shell_pattern(pattern, greedy=greedy, anchored=True).search(value)
    return value[match.end() :] if match else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping each escape before the character it escapes."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i != len(pattern) - 1:
            out.append(pattern[i : i + 2])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(reversed(out))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # Shortest/longest rightmost match == leftmost match of the reversed pattern on the
    # reversed value (BuildKit's approach).
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


# ---------------------------------------------------------------------------------------------
# Evaluation of one build (dockerfile2llb/convert.go)

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
_MOUNT_TYPES = frozenset({"bind", "cache", "tmpfs", "secret", "ssh"})
_DOCKERFILE_FRONTEND = re.compile(r"(docker\.io/)?docker/dockerfile(-upstream)?([:@].*)?")
# Tags that always resolve to the newest frontend, so BuildKit v0.8's rules never apply.
_CURRENT_FRONTEND = re.compile(
    r"(docker\.io/)?docker/dockerfile(-upstream)?:(1|1-labs|labs|latest|master|master-labs)"
)
_PROTOCOL = re.compile(r"([a-zA-Z0-9]+)://")
_SCP_URL = re.compile(r"[a-zA-Z0-9_-]+@[a-zA-Z0-9.-]+:")


@dataclass(frozen=True)
class _Unknown:
    """A value that cannot be known statically, and why; ``fails`` when Docker rejects it."""

    reason: str
    fails: bool = False


_Value = str | _Unknown
_MISSING = _Unknown("")


class _Env:
    """A stage's environment as BuildKit expands words with it (ENV and ARG values)."""

    def __init__(self, values: dict[str, _Value], fallback: str | None):
        self.values = values
        # Why a name the Dockerfile never set is unknown (it may come from the base image).
        self.fallback = fallback

    def copy(self) -> _Env:
        return _Env(dict(self.values), self.fallback)

    def get(self, name: str) -> str | None:
        value = self.values.get(name, _MISSING)
        if value is _MISSING:
            if self.fallback is not None:
                raise _Unresolved(f"variable {name} {self.fallback}")
            return None
        if isinstance(value, _Unknown):
            raise _Unresolved(value.reason)
        return value


@dataclass(frozen=True)
class _Base:
    kind: str  # "stage", "scratch", "image" or "unknown"
    stage: int = -1
    ref: str = ""
    reason: str = ""


def _normalize_platform(platform: str) -> tuple[str, str, str]:
    """containerd's platforms.Parse + Normalize for ``os/arch[/variant]``."""
    parts = platform.lower().split("/")
    if len(parts) not in (2, 3) or not all(re.fullmatch(r"[a-z0-9_-]+", p) for p in parts):
        raise BtError(f"invalid platform {platform!r}: expected os/arch[/variant]")
    os_name = "darwin" if parts[0] == "macos" else parts[0]
    arch, variant = parts[1], parts[2] if len(parts) == 3 else ""
    if arch == "i386":
        arch, variant = "386", ""
    elif arch in ("x86_64", "x86-64", "amd64"):
        arch, variant = "amd64", "" if variant == "v1" else variant
    elif arch in ("aarch64", "arm64"):
        arch = "arm64"
        variant = {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9", "v9.0": "v9"}.get(
            variant, variant
        )
    elif arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    elif arch == "arm":
        variant = {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(variant, variant)
    return os_name, arch, variant


def _platform_args(prefix: str, platform: str | None, flag: str) -> dict[str, _Value]:
    names = ("PLATFORM", "OS", "OSVERSION", "ARCH", "VARIANT")
    if platform is None:
        unknown = _Unknown(f"{prefix}PLATFORM is not known ({flag} was not given)")
        return {prefix + name: unknown for name in names}
    os_name, arch, variant = _normalize_platform(platform)
    formatted = "/".join(p for p in (os_name, arch, variant) if p)
    values = (formatted, os_name, "", arch, variant)
    return {prefix + name: value for name, value in zip(names, values, strict=True)}


def _context_path(source: str) -> str:
    """Go's ``path.Join("/", source)`` relative to the context root ("." for the root)."""
    parts: list[str] = []
    for segment in source.split("/"):
        if segment == "..":
            if parts:
                parts.pop()
        elif segment not in ("", "."):
            parts.append(segment)
    return "/".join(parts) or "."


def _is_remote(source: str, legacy: bool) -> bool:
    """Whether ADD fetches ``source`` (HTTP or git) instead of reading the context."""
    if source.startswith(("http://", "https://")):
        return True
    if legacy:
        return False  # BuildKit v0.8 fetched only http(s) URLs; git@... was a context path
    if source.startswith(("./", "../", "github.com/")):
        return False  # BuildKit takes the bare github.com/ form as a local path
    match = _PROTOCOL.match(source)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("http", "https"):
            return urlsplit(source).path.endswith(".git")
        return scheme in ("git", "ssh")  # other schemes are (odd) local paths to BuildKit
    return _SCP_URL.match(source) is not None


def _quote(word: str) -> str:
    return repr(word if len(word) <= 80 else word[:77] + "...")


def _frontend(df: Dockerfile, build_args: Mapping[str, str]) -> str | None:
    return build_args.get("BUILDKIT_SYNTAX") or df.syntax


def _resolve_target(df: Dockerfile, stage: str | None) -> int:
    if stage is None:
        return len(df.stages) - 1
    found = [s.index for s in df.stages if s.name == stage.lower()]
    if found:
        return found[-1]
    names = [s.name for s in df.stages if s.name]
    close = difflib.get_close_matches(stage.lower(), names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    available = ", ".join(names) if names else "none are named"
    raise BtError(
        f"target stage {stage!r} could not be found{hint}; available stages: {available}",
        path=df.path,
    )


class _Evaluation:
    """What one build (target stage + build args + platform) of a Dockerfile reads.

    ``legacy`` applies the rules of BuildKit v0.8 (the frontend built into Docker 20.10) where
    they differ for builds that succeed: ARG defaults see the environment from before their
    instruction, an ARG before FROM without a value hides the automatic platform args, mount
    values are not substituted, and ADD fetches only http(s) URLs.
    """

    def __init__(
        self,
        df: Dockerfile,
        target: int,
        build_args: Mapping[str, str],
        platform: str | None,
        build_platform: str | None,
        legacy: bool,
    ):
        self.df = df
        self.target = target
        self.build_args = build_args
        self.legacy = legacy
        self.lexer = _Lexer(df.escape)
        self.reasons: list[str] = []
        self.sources: list[SourceRef] = []
        self.remote: list[str] = []
        self.from_images: list[str] = []
        self.has_run = False
        self.by_name = {s.name: s.index for s in df.stages if s.name}
        self.globals = _Env({}, None)
        # What an in-stage ARG without a value inherits (v0.8: None hides a platform arg).
        self.meta: dict[str, _Value | None] = {}
        self.set_global_args(platform, build_platform)
        self.bases = [self.resolve_base(stage) for stage in df.stages]

    def whole(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def expand(self, word: str, env: _Env, what: str) -> _Value:
        try:
            return self.lexer.word(word, env.get)
        except _Unresolved as err:
            return _Unknown(str(err))
        except _ExpandError as err:
            where = f"{what}: " if what else ""
            return _Unknown(f"{where}{err} (Docker fails this build)", fails=True)

    def set_global_args(self, platform: str | None, build_platform: str | None) -> None:
        """Values FROM lines see: automatic platform args, then ARGs before the first FROM."""
        values = self.globals.values
        values.update(_platform_args("BUILD", build_platform, "the build platform"))
        values.update(_platform_args("TARGET", platform, "the target platform"))
        if self.legacy:
            del values["BUILDOSVERSION"], values["TARGETOSVERSION"]
        else:
            values["TARGETSTAGE"] = self.df.stages[self.target].name or "default"
        for name in values:
            if name in self.build_args:
                values[name] = self.build_args[name]
        self.meta.update(values)
        for name, default in self.df.meta_args:
            value: _Value | None = None
            if name in self.build_args:
                value = self.build_args[name]
            elif default is not None:
                value = self.expand(default, self.globals, f"ARG {name}")
                if self.legacy and isinstance(value, _Unknown) and value.fails:
                    value = ""  # v0.8 ignored errors in these defaults
            if self.legacy:
                self.meta[name] = value
                values[name] = "" if value is None else value
            elif value is not None:
                values[name] = self.meta[name] = value

    def resolve_base(self, stage: Stage) -> _Base:
        where = f"line {stage.line}: FROM {stage.base}"
        # Docker expands every stage's FROM, reached or not, so a failure anywhere fails it.
        if stage.platform_flag is not None:
            platform = self.expand(stage.platform_flag, self.globals, where)
            if platform == "":
                self.whole(f"{where}: empty platform value (Docker fails this build)")
            elif isinstance(platform, _Unknown) and platform.fails:
                self.whole(platform.reason)
        ref = self.expand(stage.base, self.globals, where)
        if isinstance(ref, _Unknown):
            if ref.fails:
                self.whole(ref.reason)
                return _Base("unknown", reason=ref.reason)
            return _Base("unknown", reason=f"{where}: the base is unknown: {ref.reason}")
        if not ref:
            reason = f"{where}: base name should not be blank (Docker fails this build)"
            self.whole(reason)
            return _Base("unknown", reason=reason)
        # A FROM names a stage only if that stage is declared above it.
        earlier = [s.index for s in self.df.stages[: stage.index] if s.name == ref]
        if earlier:
            return _Base("stage", stage=earlier[-1])
        return _Base("scratch") if ref == "scratch" else _Base("image", ref=ref)

    def stage_ref(self, name: str, by_index: bool) -> int | None:
        if by_index and _STAGE_INDEX.fullmatch(name):
            return int(name)  # the parser checked the range
        return self.by_name.get(name.lower())

    def triggers(self, index: int) -> list[Instruction]:
        """ONBUILD triggers of a stage's base stage: BuildKit runs them first in the stage."""
        base = self.bases[index]
        if base.kind != "stage":
            return []
        instructions = self.df.stages[base.stage].instructions
        return [ins.trigger for ins in instructions if ins.trigger is not None]

    def dependencies(self, index: int) -> Iterable[int | str]:
        """Stages (indexes) and images a stage copies or mounts from."""
        for ins in [*self.triggers(index), *self.df.stages[index].instructions]:
            if ins.keyword == "COPY":
                source = _flag(ins, "from")
                if source is not None:
                    found = self.stage_ref(source, by_index=True)
                    yield source if found is None else found
            elif ins.keyword == "RUN":
                for spec in _flag_values(ins, "mount"):
                    # A mount without from= takes "scratch" (or a stage of that name).
                    source = _mount_fields(spec).get("from", "") or "scratch"
                    found = self.stage_ref(source, by_index=False)
                    yield source if found is None else found

    def reached(self) -> list[int]:
        seen: set[int] = set()
        todo = [self.target]
        while todo:
            index = todo.pop()
            if index in seen:
                continue
            seen.add(index)
            base = self.bases[index]
            if base.kind == "stage":
                todo.append(base.stage)
            todo += [dep for dep in self.dependencies(index) if isinstance(dep, int)]
        return sorted(seen)

    def run(self) -> StageReads:
        frontend = _frontend(self.df, self.build_args)
        if frontend and not _DOCKERFILE_FRONTEND.fullmatch(frontend):
            self.whole(f"the build runs frontend {frontend!r}, whose semantics bt does not know")
        reached = self.reached()
        final_envs: dict[int, _Env] = {}
        external: list[str] = []
        for index in reached:
            stage = self.df.stages[index]
            base = self.bases[index]
            if base.kind == "stage":
                env = final_envs[base.stage].copy()
            elif base.kind == "scratch":
                env = _Env({"PATH": _DEFAULT_PATH}, None)
            elif base.kind == "image":
                external.append(base.ref)
                env = _Env({}, f"is not set in the Dockerfile and may be set by image {base.ref}")
            else:
                self.whole(base.reason)
                env = _Env({}, f"is unknown: {base.reason}")
            for dep in self.dependencies(index):
                if isinstance(dep, int) and dep >= index:
                    self.whole(
                        f"stage at line {stage.line} copies or mounts from stage "
                        f"{self.df.stages[dep].name or dep}, which is not defined before it "
                        "(Docker fails this build)"
                    )
                elif isinstance(dep, str) and dep != "scratch":
                    self.from_images.append(dep)
            for ins in [*self.triggers(index), *stage.instructions]:
                self.apply(ins, env)
            final_envs[index] = env
        unique_sources = list(dict.fromkeys(self.sources))
        unique_sources.sort(key=lambda ref: ref.line)
        return StageReads(
            sources=tuple(unique_sources),
            whole_context=self._whole_context(),
            remote_sources=tuple(dict.fromkeys(self.remote)),
            has_run=self.has_run,
            external_bases=tuple(dict.fromkeys(external)),
            stage_lines=tuple(
                (self.df.stages[i].line, self.df.stages[i].end_line) for i in reached
            ),
            from_images=tuple(dict.fromkeys(self.from_images)),
        )

    def _whole_context(self) -> str | None:
        if not self.reasons:
            return None
        more = len(self.reasons) - 1
        return self.reasons[0] + (f" (and {more} more)" if more else "")

    def apply(self, ins: Instruction, env: _Env) -> None:
        kw = ins.keyword
        if kw == "ARG":
            self.apply_arg(ins, env)
        elif kw == "ENV":
            # Every word of one ENV sees the environment from before that instruction.
            what = f"ENV at line {ins.line}"
            pairs = [
                (self.expand(ins.args[i], env, what), self.expand(ins.args[i + 1], env, what))
                for i in range(0, len(ins.args), 2)
            ]
            for key, value in pairs:
                if isinstance(key, _Unknown):
                    env.values.clear()
                    env.fallback = f"is unknown: the name set by {what} is unknown: {key.reason}"
                else:
                    env.values[key] = value
        elif kw in ("COPY", "ADD"):
            self.apply_copy(ins, env)
        elif kw == "RUN":
            self.has_run = True
            self.apply_mounts(ins, env)

    def apply_arg(self, ins: Instruction, env: _Env) -> None:
        # A build arg wins; else the ARG's default; else the value of the ARG of that name
        # before the first FROM; else the variable stays unset.
        before = env.copy() if self.legacy else env
        for word in ins.args:
            name, default = _arg_pair(word)
            value: _Value | None
            if name in self.build_args:
                value = self.build_args[name]
            elif default is not None:
                value = self.expand(default, before, f"ARG {name} at line {ins.line}")
            else:
                value = self.meta.get(name)
            if value is not None and name not in _NON_ENV_ARGS:
                env.values[name] = value

    def resolve_source(self, ins: Instruction, label: str, word: str, env: _Env) -> str | None:
        value = self.expand(word, env, "")
        if isinstance(value, _Unknown):
            self.whole(
                f"line {ins.line}: cannot resolve {label} source {_quote(word)}: {value.reason}"
            )
            return None
        return value

    def apply_copy(self, ins: Instruction, env: _Env) -> None:
        kw = ins.keyword
        if kw == "COPY" and _flag(ins, "from") is not None:
            return  # reads another stage or an image, not the context
        parents = _bool_flag(ins, "parents")
        excludes = _flag_values(ins, "exclude")
        for word in ins.args[:-1]:
            if _is_inline_source(word):
                continue  # a heredoc: inline content
            source = self.resolve_source(ins, kw, word, env)
            if source is None:
                continue
            if kw == "ADD" and _is_remote(source, self.legacy):
                self.remote.append(source)
                continue
            if kw == "COPY" and source.startswith(("http://", "https://")):
                self.whole(
                    f"line {ins.line}: COPY source {_quote(source)} is a URL, which COPY does not "
                    "accept (Docker fails this build)"
                )
                continue
            self.sources.append(SourceRef(_context_path(source), ins.line, kw, parents, excludes))

    def apply_mounts(self, ins: Instruction, env: _Env) -> None:
        label = "RUN --mount"
        for spec in _flag_values(ins, "mount"):
            fields = _mount_fields(spec)
            if fields.get("from"):
                continue  # a stage or an image, not the context
            raw_type = fields.get("type", "bind")
            # BuildKit v0.8 took mount values literally.
            mount_type = raw_type if self.legacy else self.expand(raw_type, env, "")
            if isinstance(mount_type, _Unknown):
                self.whole(f"line {ins.line}: cannot resolve {label} type: {mount_type.reason}")
                continue
            if mount_type.lower() not in _MOUNT_TYPES:
                if not self.legacy:  # v0.8 rejects `type=$T`; current BuildKit may accept it
                    self.whole(
                        f"line {ins.line}: unsupported mount type {mount_type!r} "
                        "(Docker fails this build)"
                    )
                continue
            if mount_type.lower() != "bind":
                continue  # cache and tmpfs start empty; secret and ssh come from the client
            source: str | None = fields.get("source", "")
            if not self.legacy:
                source = self.resolve_source(ins, label, source or "", env)
            if source is not None:
                self.sources.append(SourceRef(_context_path(source), ins.line, label, False))


def context_reads(
    df: Dockerfile,
    stage: str | None,
    build_args: Mapping[str, str],
    *,
    platform: str | None = None,
    build_platform: str | None = None,
) -> StageReads:
    """What a build of ``stage`` (None: the last stage, Docker's default) reads.

    ``platform`` / ``build_platform`` (``os/arch[/variant]``) give TARGETPLATFORM and
    BUILDPLATFORM and their parts; when omitted those args are unknown unless ``build_args``
    sets them, so a context path that depends on them makes the whole context the input.
    Raises BtError only for an unknown stage or platform; whatever Docker would reject at build
    time, or bt cannot resolve, sets ``whole_context`` instead.
    """
    target = _resolve_target(df, stage)
    current = _Evaluation(df, target, build_args, platform, build_platform, False).run()
    if _CURRENT_FRONTEND.fullmatch(_frontend(df, build_args) or ""):
        return current
    # Docker 20.10's built-in frontend and current ones are both in use: a build reads what
    # either would read.
    legacy = _Evaluation(df, target, build_args, platform, build_platform, True).run()
    return _union(current, legacy)


def _union(first: StageReads, second: StageReads) -> StageReads:
    def merged(a: tuple[_T, ...], b: tuple[_T, ...]) -> tuple[_T, ...]:
        return tuple(dict.fromkeys(a + b))

    return StageReads(
        sources=tuple(sorted(merged(first.sources, second.sources), key=lambda ref: ref.line)),
        whole_context=first.whole_context or second.whole_context,
        remote_sources=merged(first.remote_sources, second.remote_sources),
        has_run=first.has_run or second.has_run,
        external_bases=merged(first.external_bases, second.external_bases),
        stage_lines=tuple(sorted(merged(first.stage_lines, second.stage_lines))),
        from_images=merged(first.from_images, second.from_images),
    )
