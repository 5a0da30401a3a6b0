"""Hermetic evaluation of a Starlark-like subset of Python (the BUILD.images language).

The file is parsed with ``ast``, checked against an allow-list of node types, rewritten so
that every attribute read and every loop goes through a guard, and run with a whitelist of
builtins. There is no import, no file or network access, no dunder or private attribute,
no ``while``/``class``/``try``/sets, and no way to reach the interpreter's internals.
"""

from __future__ import annotations

import ast
import re
import string
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from buildtool.errors import BtError, StarlarkError

# Node types a BUILD file may contain. Everything else is refused with its line number.
_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.For, ast.If, ast.Break, ast.Continue,
    ast.Pass, ast.FunctionDef, ast.Return, ast.arguments, ast.arg, ast.Lambda, ast.Name,
    ast.Load, ast.Store, ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.ListComp,
    ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.BinOp, ast.UnaryOp, ast.BoolOp,
    ast.Compare, ast.IfExp, ast.Call, ast.keyword, ast.Subscript, ast.Slice, ast.Attribute,
    ast.JoinedStr, ast.FormattedValue, ast.Starred, ast.operator, ast.unaryop, ast.boolop,
    ast.cmpop, ast.expr_context,
)  # fmt: skip

_REFUSED = {
    ast.Import: "import is not allowed in BUILD files",
    ast.ImportFrom: "import is not allowed in BUILD files",
    ast.While: "'while' is not allowed (use 'for' over a finite sequence)",
    ast.ClassDef: "'class' is not allowed in BUILD files",
    ast.Set: "sets are not allowed (their order is not deterministic); use a list",
    ast.SetComp: "sets are not allowed (their order is not deterministic); use a list",
    ast.Global: "'global' is not allowed",
    ast.Nonlocal: "'nonlocal' is not allowed",
    ast.Try: "'try' is not allowed (use fail() to report an error)",
    ast.Raise: "'raise' is not allowed (use fail(message))",
    ast.With: "'with' is not allowed",
    ast.Delete: "'del' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
    ast.NamedExpr: "':=' is not allowed",
}

_METHODS: dict[type, frozenset[str]] = {
    str: frozenset(
        [
            "capitalize",
            "count",
            "endswith",
            "find",
            "format",
            "index",
            "isalnum",
            "isalpha",
            "isdigit",
            "islower",
            "isspace",
            "istitle",
            "isupper",
            "join",
            "lower",
            "lstrip",
            "partition",
            "removeprefix",
            "removesuffix",
            "replace",
            "rfind",
            "rindex",
            "rpartition",
            "rsplit",
            "rstrip",
            "split",
            "splitlines",
            "startswith",
            "strip",
            "title",
            "upper",
            "zfill",
        ]
    ),
    list: frozenset(
        [
            "append",
            "clear",
            "count",
            "extend",
            "index",
            "insert",
            "pop",
            "remove",
            "reverse",
            "sort",
        ]
    ),
    dict: frozenset(
        ["clear", "get", "items", "keys", "pop", "popitem", "setdefault", "update", "values"]
    ),
    tuple: frozenset(("count", "index")),
}

_MAX_RANGE = 1_000_000
_FORMAT_FIELD_RE = re.compile(r"\d*|[A-Za-z][A-Za-z0-9_]*")
_ATTR = "__bt_attr__"
_ITER = "__bt_iter__"


def _checked_format(template: str) -> Callable[..., str]:
    # str.format can read attributes and items ("{0.__class__}"): allow plain fields only.
    for _, field, spec, _ in string.Formatter().parse(template):
        if field and not _FORMAT_FIELD_RE.fullmatch(field):
            raise ValueError(f"format field {field!r}: only {{}}, {{0}} or {{name}} are allowed")
        if spec and "{" in spec:
            _checked_format(spec)
    return template.format


def _attr(obj: Any, name: str) -> Any:
    allowed = _METHODS.get(type(obj))
    if allowed is None or name not in allowed:
        raise AttributeError(f"{type(obj).__name__!s} has no attribute {name!r}")
    if name == "format":
        return _checked_format(obj)
    return getattr(obj, name)


def _iter(value: Any) -> Iterable[Any]:
    # Loops run over a snapshot: mutating a list while iterating over it cannot loop forever.
    if isinstance(value, (list, dict)):
        return tuple(value)
    return value  # type: ignore[no-any-return]


def _range(*args: int) -> range:
    result = range(*args)
    if len(result) > _MAX_RANGE:
        raise ValueError(f"range of {len(result)} elements is larger than {_MAX_RANGE}")
    return result


def _type(value: Any) -> str:
    return type(value).__name__


SAFE_BUILTINS: dict[str, Any] = {
    "True": True, "False": False, "None": None, "abs": abs, "all": all, "any": any,
    "bool": bool, "dict": dict, "enumerate": enumerate, "float": float, "int": int,
    "len": len, "list": list, "max": max, "min": min, "range": _range, "repr": repr,
    "reversed": reversed, "sorted": sorted, "str": str, "sum": sum, "tuple": tuple,
    "type": _type, "zip": zip,
}  # fmt: skip


class _Guard(ast.NodeTransformer):
    """Validate every node and route attribute reads and loop iterables through guards."""

    def __init__(self, path: str):
        self.path = path

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if type(node) in _REFUSED:
            raise StarlarkError(_REFUSED[type(node)], self.path, getattr(node, "lineno", None))
        if not isinstance(node, _ALLOWED_NODES):
            name = type(node).__name__
            raise StarlarkError(
                f"{name} is not allowed in BUILD files", self.path, getattr(node, "lineno", None)
            )
        return super().generic_visit(node)

    def _refuse_private(self, name: str, node: ast.AST) -> None:
        if name.startswith("__"):
            raise StarlarkError(
                f"names starting with '__' are not allowed: {name!r}",
                self.path,
                getattr(node, "lineno", None),
            )

    def visit_Name(self, node: ast.Name) -> ast.AST:
        self._refuse_private(node.id, node)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        self._refuse_private(node.arg, node)
        return node

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        if node.arg is not None:
            self._refuse_private(node.arg, node)
        return self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self._refuse_private(node.name, node)
        if node.decorator_list:
            raise StarlarkError("decorators are not allowed", self.path, node.lineno)
        return self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if node.attr.startswith("_"):
            raise StarlarkError(
                f"access to attribute {node.attr!r} is not allowed", self.path, node.lineno
            )
        if not isinstance(node.ctx, ast.Load):
            raise StarlarkError("assigning to attributes is not allowed", self.path, node.lineno)
        value = self.visit(node.value)
        call = ast.Call(
            func=ast.Name(id=_ATTR, ctx=ast.Load()),
            args=[value, ast.Constant(node.attr)],
            keywords=[],
        )
        return ast.copy_location(call, node)

    def _guard_iter(self, node: ast.expr) -> ast.expr:
        call = ast.Call(func=ast.Name(id=_ITER, ctx=ast.Load()), args=[node], keywords=[])
        return ast.copy_location(call, node)

    def visit_For(self, node: ast.For) -> ast.AST:
        if node.orelse:
            raise StarlarkError("'for ... else' is not allowed", self.path, node.lineno)
        self.generic_visit(node)
        node.iter = self._guard_iter(node.iter)
        return node

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        if node.is_async:
            raise StarlarkError("async comprehensions are not allowed", self.path, None)
        self.generic_visit(node)
        node.iter = self._guard_iter(node.iter)
        return node


def compile_file(source: str, path: str) -> Any:
    """Parse and guard a BUILD file; raise StarlarkError at the first refused construct."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as err:
        raise StarlarkError(f"syntax error: {err.msg}", path, err.lineno) from None
    tree = _Guard(path).visit(tree)
    ast.fix_missing_locations(tree)
    return compile(tree, path, "exec", dont_inherit=True)


def execute(code: Any, path: str, builtins: Mapping[str, Any]) -> dict[str, Any]:
    """Run guarded code with only the safe builtins and ``builtins``; return its globals."""
    scope: dict[str, Any] = {
        "__builtins__": {**SAFE_BUILTINS, **builtins},
        _ATTR: _attr,
        _ITER: _iter,
    }
    try:
        exec(code, scope)
    except BtError:
        raise
    except RecursionError:
        raise StarlarkError("recursion is not allowed (or nesting too deep)", path) from None
    except Exception as err:  # any runtime error of the user's code, reported at its line
        raise StarlarkError(_describe(err), path, line_in(path, err.__traceback__)) from None
    return scope


def caller_line(path: str) -> int | None:
    """Line of the innermost frame executing ``path`` (for builtins called from BUILD code)."""
    frame: Any = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == path:
            return int(frame.f_lineno)
        frame = frame.f_back
    return None


def line_in(path: str, tb: Any) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _describe(err: Exception) -> str:
    if isinstance(err, NameError):
        return f"name {err.name!r} is not defined" if err.name else str(err)
    if isinstance(err, (TypeError, ValueError, KeyError, IndexError, AttributeError)):
        return f"{type(err).__name__}: {err}"
    return f"{type(err).__name__}: {err}"
