"""Dockerfile syntax: lines, continuations, parser directives, flags, JSON and shell forms and
heredocs, as BuildKit's ``frontend/dockerfile/parser`` and ``instructions/parse.go`` read them.
``parse_dockerfile`` turns text into stages, or raises what Docker rejects at parse time."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import replace

from buildtool.dockerfile.flags import (
    ParseError,
    check_flags,
    flag_value,
    flag_values,
    mount_fields,
)
from buildtool.dockerfile.records import Dockerfile, Instruction, Stage
from buildtool.dockerfile.shell import SPACE, ExpandError, Lexer, Unresolved, no_env
from buildtool.errors import BtError

_KEYWORDS = frozenset(
    {
        *("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK"),
        *("LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME"),
        "WORKDIR",
    }
)
_HEREDOC_KEYWORDS = frozenset({"ADD", "COPY", "RUN"})
_WS = re.compile(r"[\t\v\f\r ]+")  # parser.reWhitespace: how shell-form words are split
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*")
_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")
STAGE_INDEX = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)


def _lstrip(text: str) -> str:
    i = 0
    while i < len(text) and text[i] in SPACE:
        i += 1
    return text[i:]


def _strip(text: str) -> str:
    end = len(text)
    while end and text[end - 1] in SPACE:
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
            if ch in SPACE:
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
        if ch in SPACE:
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
        raise ParseError("when using JSON array syntax, arrays must be comprised of strings only")
    return tuple(value)


def _split_ws(rest: str) -> tuple[str, ...]:
    return tuple(_WS.split(rest)) if rest else ()


def _name_values(rest: str, keyword: str, escape: str) -> tuple[str, ...]:
    """ENV/LABEL: ``key value`` (old form) or ``key=value ...``, flattened to pairs."""
    words = _parse_words(rest, escape)
    if not words:
        raise ParseError(f"{keyword} requires at least one argument")
    if "=" not in words[0]:
        parts = _WS.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ParseError(f"{keyword} must have two arguments")
        pairs: list[str] = [parts[0], parts[1]]
    else:
        pairs = []
        for word in words:
            key, eq, value = word.partition("=")
            if not eq:
                raise ParseError(
                    f"Syntax error - can't find = in {json.dumps(word)}. "
                    "Must be of the form: name=value"
                )
            pairs += [key, value]
    if any(not key for key in pairs[::2]):
        raise ParseError(f"{keyword} names can not be blank")
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
        while sep < len(rest) and rest[sep] not in SPACE:
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


def _is_literal(word: str, escape: str) -> bool:
    try:
        return Lexer(escape).word(word, no_env) == word
    except (ExpandError, Unresolved):
        return False


def _check_instruction(ins: Instruction, escape: str) -> None:
    """The arg-independent checks of instructions.Parse and of the stage dependency graph."""
    kw, args = ins.keyword, ins.args
    check_flags(kw, ins.flags)
    if kw in ("COPY", "ADD"):
        if len(args) < 2:
            raise ParseError(
                f"{kw} requires at least two arguments, but only one was provided. "
                "Destination could not be determined"
            )
        if is_inline_source(args[-1]):
            raise ParseError(f"{kw} cannot accept a heredoc as a destination")
        source = flag_value(ins, "from")
        if source is not None and not _is_literal(source, escape):
            raise ParseError(
                "variable expansion is not supported for --from, define a new stage with "
                "FROM using ARG from global scope as a workaround"
            )
    elif kw == "FROM":
        if len(args) == 3 and args[1].lower() == "as":
            if not _STAGE_NAME.fullmatch(args[2].lower()):
                raise ParseError(
                    f"invalid name for build stage: {json.dumps(args[2])}, "
                    "name can't start with a number or contain symbols"
                )
        elif len(args) != 1:
            raise ParseError("FROM requires either one or three arguments")
    elif kw == "ARG":
        if not args:
            raise ParseError("ARG requires at least one argument")
        if any(word.startswith("=") for word in args):
            raise ParseError("ARG names can not be blank")
    elif kw == "RUN":
        for spec in flag_values(ins, "mount"):
            try:
                source = mount_fields(spec).get("from", "")
            except ValueError as err:
                raise ParseError(f"failed to parse csv mounts: {err}") from None
            if "$" in source[:-1]:
                raise ParseError(
                    "'from' doesn't support variable expansion, define alias stage instead"
                )
    elif kw == "ONBUILD":
        if not args:
            raise ParseError("ONBUILD requires at least one argument")
    elif kw == "SHELL":
        if not args:
            raise ParseError("SHELL requires at least one argument")
        if not ins.json_form:
            raise ParseError(f"SHELL requires the arguments to be in JSON form: {ins.original}")
    elif kw in ("WORKDIR", "USER", "MAINTAINER", "STOPSIGNAL") and len(args) != 1:
        raise ParseError(f"{kw} requires exactly one argument")
    elif kw in ("EXPOSE", "VOLUME", "HEALTHCHECK") and not args:
        raise ParseError(f"{kw} requires at least one argument")


class _Parser:
    """One pass over the lines, as parser.Parse reads them."""

    def __init__(self, text: str, path: str):
        self.lines = _split_lines(text.removeprefix("\ufeff"))
        self.path = path
        self.pos = 0
        self.escape = "\\"
        self.syntax: str | None = None
        self.syntax_line: int | None = None
        self.check: str | None = None
        self.directives_done = False
        self.directives_seen: set[str] = set()

    def error(self, message: str, line: int) -> BtError:
        return BtError(message, path=self.path, line=line)

    def directive(self, line: str, lineno: int) -> None:
        """Parser directives: `# key=value` lines before anything else, even a blank line."""
        if self.directives_done:
            return
        if lineno == 1 and line.startswith("#!"):
            return  # BuildKit's DirectiveParser skips a shebang line and reads on
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
            self.syntax, self.syntax_line = value, lineno
        else:
            self.check = value

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
            except ParseError as err:
                raise self.error(str(err), start) from None
        return self.assemble(nodes)

    def instruction(self, line: str, start: int) -> Instruction:
        command, flag_words, rest = _split_command(line, self.escape)
        keyword = command.upper()
        if keyword not in _KEYWORDS:
            close = difflib.get_close_matches(keyword, sorted(_KEYWORDS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ParseError(f"unknown instruction: {command}{hint}")
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
            raise ParseError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if keyword in ("MAINTAINER", "FROM"):
            raise ParseError(f"{keyword} isn't allowed as an ONBUILD trigger")
        if keyword not in _KEYWORDS:
            raise ParseError(f"unknown instruction: {command}")
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
                    platform_flag=flag_value(head, "platform"),
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
                meta += [arg_pair(word) for word in ins.args]
            else:
                raise self.error("no build stage in current context", ins.line)
        close()
        if not stages:
            raise self.error("dockerfile contains no stages to build", nodes[-1].line)
        for stage in stages:
            for ins in _executed(stage.instructions):
                source = (flag_value(ins, "from") if ins.keyword == "COPY" else None) or ""
                if STAGE_INDEX.fullmatch(source) and not 0 <= int(source) < len(stages):
                    raise self.error(f"invalid stage index {int(source)}", ins.line)
        return Dockerfile(
            self.path,
            self.escape,
            tuple(meta),
            tuple(stages),
            self.syntax,
            self.check,
            self.syntax_line,
        )


def arg_pair(word: str) -> tuple[str, str | None]:
    key, eq, value = word.partition("=")
    return key, (value if eq else None)


def _executed(instructions: Iterable[Instruction]) -> Iterable[Instruction]:
    """Instructions with ONBUILD triggers alongside (BuildKit resolves both for --from)."""
    for ins in instructions:
        yield ins
        if ins.trigger is not None:
            yield ins.trigger


def parse_dockerfile(text: str, path: str) -> Dockerfile:
    """Parse Dockerfile text; raise BtError(path:line) for what Docker rejects at parse time.

    A file whose frontend is named only in a form the Dockerfile frontend does not read
    (``foreign_syntax``), and is another frontend, is not parsed: BuildKit hands it to that
    frontend, whose language bt does not know."""
    foreign = foreign_syntax(text)
    if foreign is not None and not _DOCKERFILE_FRONTEND.fullmatch(foreign[0]):
        from buildtool.state.hashing import digest_bytes

        frontend, line = foreign
        opaque = digest_bytes(text.encode("utf-8", "surrogateescape"))
        return Dockerfile(path, "\\", (), (), frontend, None, line, opaque)
    return _Parser(text, path).parse()


# The Dockerfile frontend's images (``docker/dockerfile``), whatever the tag or digest.
_DOCKERFILE_FRONTEND = re.compile(r"(docker\.io/)?docker/dockerfile(-upstream)?([:@].*)?")
_SLASH_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*")


def foreign_syntax(text: str) -> tuple[str, int] | None:
    """The frontend a file names, as BuildKit's ``DetectSyntax`` finds it, when it is named in
    a form only other frontends read: with no ``# syntax=`` directive, a ``// syntax=``
    directive among the leading ``//`` directives, else a whole file that is a JSON object
    with a string ``"syntax"``. (frontend, line); a shebang first line is skipped, as there."""
    body = text.removeprefix("\ufeff")
    first, _, rest = body.partition("\n")
    offset = 0
    if first.startswith("#!"):
        body, offset = rest, 1
    lines = body.splitlines()
    for line in lines:
        match = _DIRECTIVE.fullmatch(_lstrip(line[1:])) if line.startswith("#") else None
        if match is None or match.group(1).lower() not in ("syntax", "escape", "check"):
            break
        if match.group(1).lower() == "syntax":
            return None  # the usual form: the Dockerfile parser reads it
    for number, line in enumerate(lines, start=1 + offset):
        if not line.startswith("//"):
            break
        match = _SLASH_DIRECTIVE.fullmatch(line[2:].lstrip())
        if match is None or match.group(1).lower() not in ("syntax", "escape", "check"):
            break
        if match.group(1).lower() == "syntax":
            return match.group(2).split(" ", 1)[0], number
    if not body.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, dict) and isinstance(value.get("syntax"), str):
        return value["syntax"], 1 + offset
    return None


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
    names = Lexer("\\", skip_unset=True).words(rest, no_env)
    return (names[0], chomp) if len(names) == 1 else None


def _heredocs_in_line(line: str) -> list[tuple[str, bool]]:
    lexer = Lexer("\\", raw_quotes=True, raw_escapes=True, skip_unset=True)
    try:
        words = lexer.words(line, no_env)
    except ExpandError:
        return []  # BuildKit ignores this error: such a line simply has no heredocs
    found: list[tuple[str, bool]] = []
    for word in words:
        try:
            heredoc = _heredoc_word(word)
        except ExpandError as err:
            raise ParseError(str(err)) from None
        if heredoc is not None:
            found.append(heredoc)
    return found


def is_inline_source(word: str) -> bool:
    try:
        return _heredoc_word(word) is not None
    except ExpandError:
        return False
