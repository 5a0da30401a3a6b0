"""The query language of ``bt query``: patterns, ``deps(x)``, ``rdeps(universe, x)`` and set
operators (``a + b``, ``a - b``, ``a ^ b``, also spelled union/except/intersect), as in Bazel."""

from __future__ import annotations

import re

from buildtool.errors import BtError
from buildtool.workspace.graph import TargetGraph
from buildtool.workspace.labels import Label

_TOKEN_RE = re.compile(r"\s*(\(|\)|,|[^\s(),]+)")
_MAX_NESTING = 100  # parentheses and deps()/rdeps() inside each other
_OPERATORS = {"+": "+", "union": "+", "-": "-", "except": "-", "^": "^", "intersect": "^"}


def evaluate(expression: str, graph: TargetGraph, current_package: str = "") -> set[Label]:
    return _Parser(expression, graph, current_package).parse()


class _Parser:
    def __init__(self, text: str, graph: TargetGraph, current_package: str):
        self.text = text
        self.tokens = _TOKEN_RE.findall(text)
        if "".join(self.tokens) != re.sub(r"\s+", "", text):
            raise BtError(f"cannot parse query {text!r}")
        self.pos = 0
        self.nesting = 0
        self.graph = graph
        self.package = current_package

    def fail(self, message: str) -> BtError:
        text = self.text if len(self.text) <= 80 else self.text[:77] + "..."
        return BtError(f"query {text!r}: {message}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None:
            raise self.fail("unexpected end of expression")
        if expected is not None and token != expected:
            raise self.fail(f"expected {expected!r}, found {token!r}")
        self.pos += 1
        return token

    def parse(self) -> set[Label]:
        result = self.expr()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()!r}")
        return result

    def expr(self) -> set[Label]:
        result = self.term()
        while (token := self.peek()) in _OPERATORS:
            self.take()
            other = self.term()
            op = _OPERATORS[token or ""]
            result = (
                result | other if op == "+" else result - other if op == "-" else result & other
            )
        return result

    def _depth(self) -> int | None:
        if self.peek() != ",":
            return None
        self.take(",")
        token = self.take()
        if not token.isdigit():
            raise self.fail(f"depth must be a non-negative integer, found {token!r}")
        return int(token)

    def term(self) -> set[Label]:
        self.nesting += 1
        try:
            if self.nesting > _MAX_NESTING:
                raise self.fail(f"nested more than {_MAX_NESTING} levels deep")
            return self._term()
        finally:
            self.nesting -= 1

    def _term(self) -> set[Label]:
        token = self.take()
        if token == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if token in ("deps", "rdeps") and self.peek() == "(":
            self.take("(")
            if token == "deps":
                labels = self.expr()
                depth = self._depth()
                self.take(")")
                return self.graph.deps(labels, depth)
            universe = self.expr()
            self.take(",")
            labels = self.expr()
            depth = self._depth()
            self.take(")")
            return self.graph.rdeps(universe, labels, depth)
        if token in ("(", ")", ","):
            raise self.fail(f"unexpected {token!r}")
        return self.graph.match([token], self.package)
