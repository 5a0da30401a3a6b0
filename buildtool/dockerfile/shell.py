"""Variable substitution in Dockerfile words, as BuildKit's shell word processor does it
(moby/buildkit ``frontend/dockerfile/shell/lex.go``): quotes, escapes, ``$VAR`` and the
``${VAR...}`` forms with their shell patterns."""

from __future__ import annotations

import re
from collections.abc import Callable

# Go's unicode.IsSpace; Python's str.isspace also accepts \x1c-\x1f, which Go does not.
SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)


class ExpandError(Exception):
    """Docker rejects the word (bad substitution, `${X:?msg}` on an unset X, ...)."""


class Unresolved(Exception):
    """The word depends on a value that is not known statically; args[0] says which."""


# A variable's value, None when it is unset; raises Unresolved when it cannot be known.
_Lookup = Callable[[str], "str | None"]


def no_env(name: str) -> str | None:
    return None


class Lexer:
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
            raise Unresolved("substitutions nested too deeply to evaluate") from None

    def words(self, text: str, lookup: _Lookup) -> list[str]:
        try:
            return _Scan(self, text, lookup).stop_on("", self.raw_escapes_default)[1]
        except RecursionError:
            raise ExpandError("substitutions nested too deeply to evaluate") from None


class _Scan:
    """State of one word being processed."""

    def __init__(self, lexer: Lexer, text: str, lookup: _Lookup):
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
            raise ExpandError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), self._flush(words)

    def _add_char(self, words: list[str], ch: str, in_word: bool) -> bool:
        if ch not in SPACE:
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
                raise ExpandError(f"unexpected end of statement while looking for matching {kind}")
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
            raise ExpandError("syntax error: missing '}'")
        if ch in "{}:":
            raise ExpandError("syntax error: bad substitution")
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
            raise ExpandError(f"unsupported modifier ({op}) in substitution")
        modifier = (":" if null_is_unset else "") + op
        pattern_op = op in ("#", "%")
        if null_is_unset and pattern_op:
            raise ExpandError(f"unsupported modifier ({modifier}) in substitution")
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
                raise ExpandError(f"{name}: {word or 'is not allowed to be unset'}")
            if empty:
                raise ExpandError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if op in ("#", "%"):
            greedy = word.startswith(op)
            word = word[1:] if greedy else word
            if op == "%":
                return _trim_suffix(word, value or "", greedy)
            return _trim_prefix(word, value or "", greedy)
        raise ExpandError(f"unsupported modifier ({modifier}) in substitution")

    def inner(self, stop: str, raw_escapes: bool, missing: str) -> str:
        try:
            return self.stop_on(stop, raw_escapes)[0]
        except ExpandError:
            if not self.peek():
                raise ExpandError(missing) from None
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
            raise Unresolved(f"a '$' in the replacement of ${{{name}//...}} is not evaluated")
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
                raise ExpandError(
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
