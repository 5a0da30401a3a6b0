"""Hermetic evaluation of a Starlark-like subset of Python (the BUILD.images language).

The file is parsed with ``ast``, checked against an allow-list of node types, rewritten so
that every attribute read, loop, function call and operator that can grow a value goes through
a guard that counts it against the evaluation budget (``budget.py``), and run with a whitelist
of builtins. There is no import, no file or network access, no dunder or private attribute,
no ``while``/``class``/``try``/sets, and no way to reach the interpreter's internals.
"""

from __future__ import annotations

import ast
import gc
import sys
from collections.abc import Mapping
from typing import Any

from buildtool.errors import BtError, StarlarkError
from buildtool.workspace.budget import Exceeded, Meter
from buildtool.workspace.config import Budget

# Node types a BUILD file may contain. Everything else is refused with its line number.
_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.For, ast.If, ast.Break, ast.Continue,
    ast.Pass, ast.FunctionDef, ast.Return, ast.arguments, ast.arg, ast.Name,
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
    ast.Lambda: "'lambda' is not allowed (use def)",
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

_ATTR = "__bt_attr__"
_ITER = "__bt_iter__"
_AUGMENT = "__bt_augment__"
_AUGMENT_ITEM = "__bt_augment_item__"
_ENTER = "__bt_enter__"
_SIZE = "__bt_size__"
_FIELD = "__bt_field__"
_JOINED = "__bt_joined__"
# Operators that can grow a value, checked by the size budget before they run.
_GROWING = {ast.Add: "+", ast.Mult: "*", ast.Pow: "**", ast.LShift: "<<", ast.Mod: "%"}
_OPERATOR_NAMES = {"+": "__bt_add__", "*": "__bt_mul__", "**": "__bt_pow__",
                   "<<": "__bt_lshift__", "%": "__bt_mod__"}  # fmt: skip


def _allowed_method(obj: Any, name: str) -> None:
    allowed = _METHODS.get(type(obj))
    if allowed is None or name not in allowed:
        raise AttributeError(f"{type(obj).__name__!s} has no attribute {name!r}")


def _type(value: Any) -> str:
    return type(value).__name__


SAFE_BUILTINS: dict[str, Any] = {
    "True": True, "False": False, "None": None, "abs": abs, "all": all, "any": any,
    "bool": bool, "dict": dict, "enumerate": enumerate, "float": float, "int": int,
    "len": len, "list": list, "max": max, "min": min, "range": range, "repr": repr,
    "reversed": reversed, "sorted": sorted, "str": str, "sum": sum, "tuple": tuple,
    "type": _type, "zip": zip,
}  # fmt: skip
# Builtins that walk a whole argument in C: charged by its size.
_CONSUMING = ("all", "any", "dict", "list", "max", "min", "sorted", "sum", "tuple")


def _call(name: str, args: list[ast.expr], node: ast.AST) -> ast.expr:
    call = ast.Call(func=ast.Name(id=name, ctx=ast.Load()), args=args, keywords=[])
    return ast.copy_location(call, node)


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
        self.generic_visit(node)
        if node.arg is None:
            node.value = self._sized(node.value)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self._refuse_private(node.name, node)
        if node.decorator_list:
            raise StarlarkError("decorators are not allowed", self.path, node.lineno)
        self.generic_visit(node)
        # At the first statement's line: endless recursion is reported where the body recurses.
        enter = ast.copy_location(ast.Expr(_call(_ENTER, [], node.body[0])), node.body[0])
        node.body.insert(0, enter)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        symbol = _GROWING.get(type(node.op))
        if symbol is None:
            return node
        return _call(_OPERATOR_NAMES[symbol], [node.left, node.right], node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        symbol = _GROWING.get(type(node.op))
        if symbol is None:
            return node
        target = node.target
        if isinstance(target, ast.Name):
            current = ast.copy_location(ast.Name(id=target.id, ctx=ast.Load()), target)
            value = _call(_AUGMENT, [current, node.value, ast.Constant(symbol)], node)
            return ast.copy_location(ast.Assign(targets=[target], value=value), node)
        if isinstance(target, ast.Subscript) and not isinstance(target.slice, ast.Slice):
            args = [target.value, target.slice, node.value, ast.Constant(symbol)]
            return ast.copy_location(ast.Expr(_call(_AUGMENT_ITEM, args, node)), node)
        raise StarlarkError(
            "this augmented assignment is not allowed", self.path, getattr(node, "lineno", None)
        )

    def _sized(self, node: ast.expr) -> ast.expr:
        # Whole-value C work (comparing, slicing, unpacking) is charged by the value's size.
        return node if isinstance(node, ast.Constant) else _call(_SIZE, [node], node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        node.left = self._sized(node.left)
        node.comparators = [self._sized(c) for c in node.comparators]
        return node

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.slice, ast.Slice) and isinstance(node.ctx, ast.Load):
            node.value = self._sized(node.value)
        return node

    def visit_Starred(self, node: ast.Starred) -> ast.AST:
        self.generic_visit(node)
        node.value = self._sized(node.value)
        return node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        parts = [self.visit(value) for value in node.values]
        joined = ast.copy_location(ast.List(elts=parts, ctx=ast.Load()), node)
        return _call(_JOINED, [joined], node)

    def visit_FormattedValue(self, node: ast.FormattedValue) -> ast.AST:
        value = self.visit(node.value)
        spec = ast.Constant("") if node.format_spec is None else self.visit(node.format_spec)
        return _call(_FIELD, [value, ast.Constant(node.conversion), spec], node)

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


def compile_file(source: str, path: str, budget: Budget | None = None) -> Any:
    """Parse and guard a BUILD file; raise StarlarkError at the first refused construct."""
    try:
        # Parsing costs about a second a megabyte: the source is a value like any other.
        Meter(budget or Budget()).check_size(len(source), "file", "characters")
        tree = ast.parse(source, filename=path)
        tree = _Guard(path).visit(tree)
        ast.fix_missing_locations(tree)
        return compile(tree, path, "exec", dont_inherit=True)
    except SyntaxError as err:
        raise StarlarkError(f"syntax error: {err.msg}", path, err.lineno) from None
    except Exceeded as err:
        raise StarlarkError(str(err), path, None) from None
    except (RecursionError, MemoryError):
        # Python's parser and compiler recurse per level of nesting.
        line = _most_nested_line(source)
        raise StarlarkError("expression nested too deeply", path, line) from None


def _most_nested_line(source: str) -> int | None:
    """The line with the most brackets and operators. Counted in C, one call a line: Python's
    tokenizer took seconds over the 100,000-term sum this is asked about."""
    best, best_line = 0, None
    for number, line in enumerate(source.split("\n"), 1):
        count = len(line) - len(line.translate(_NESTING))
        if count > best:
            best, best_line = count, number
    return best_line


_NESTING = str.maketrans("", "", "([{+-*/%<>&|^~.@")


def execute(
    code: Any, path: str, builtins: Mapping[str, Any], budget: Budget | None = None
) -> dict[str, Any]:
    """Run guarded code with only the safe builtins and ``builtins`` (each charged by the
    size of its arguments) within ``budget``; return its globals."""
    meter = Meter(budget or Budget())

    def attr(obj: Any, name: str) -> Any:
        _allowed_method(obj, name)
        return meter.method(obj, name)

    safe = dict(SAFE_BUILTINS)
    for name in _CONSUMING:
        safe[name] = meter.consuming(SAFE_BUILTINS[name])
    safe.update(range=meter.range, str=meter.text(str, False), repr=meter.text(repr, True))
    scope: dict[str, Any] = {
        "__builtins__": {**safe, **{name: meter.builtin(f) for name, f in builtins.items()}},
        _ATTR: attr,
        _ITER: meter.iterate,
        **{_OPERATOR_NAMES[op]: run for op, run in meter.operators().items()},
        _AUGMENT: meter.augment,
        _AUGMENT_ITEM: meter.augment_item,
        _ENTER: meter.enter,
        _SIZE: meter.charge_size,
        _FIELD: meter.formatted_value,
        _JOINED: meter.joined,
    }
    # Values of a BUILD file rarely form cycles, and the collector's passes over a large
    # evaluation's millions of young objects cost more than the evaluation itself.
    collecting = gc.isenabled()
    gc.disable()
    try:
        exec(code, scope)
    except BtError:
        raise
    except Exceeded as err:
        raise StarlarkError(str(err), path, line_in(path, err.__traceback__)) from None
    except RecursionError as err:
        line = line_in(path, err.__traceback__)
        raise StarlarkError("recursion is not allowed (or nesting too deep)", path, line) from None
    except MemoryError as err:
        raise StarlarkError("out of memory", path, line_in(path, err.__traceback__)) from None
    except Exception as err:  # any runtime error of the user's code, reported at its line
        raise StarlarkError(_describe(err), path, line_in(path, err.__traceback__)) from None
    finally:
        if collecting:
            gc.enable()
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
