"""The evaluation budget of BUILD.images: a step budget and a size budget (design invariant 6).

Steps are counted where time can be spent: every loop or comprehension iteration, every call
of a function the file defines, every call of a bt builtin (``image()``...) charged by the size
of its arguments, and C-level work over a value (``sorted``, ``sum``, ``x in list``, slices,
``str.replace``...) charged a tenth of a step per element, about what it costs next to a
Python-level step. Without ``while`` and recursion, that bounds the time a file can take.

Sizes are checked *before* a value is made: a string, list, tuple or dict longer than
``max_size`` is refused, and so is an integer wider than ``MAX_INT_BITS``, so that
``"a" * 10**11``, ``"{:>1000000000}".format("a")``, ``"%1000000000d" % 1`` and ``10 ** 10 ** 9``
fail at once instead of allocating (or computing) first.
"""

from __future__ import annotations

import operator
import re
import string
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from buildtool.workspace.config import Budget

MAX_INT_BITS = 4096  # no BUILD file needs a wider integer; Python's own str() stops at ~14,000
_C_STEP = 10  # elements of C-level work charged as one step

_SIZED = (str, list, tuple, dict, range)
_PERCENT_RE = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.?)")
_NUMBER_RE = re.compile(r"\d+")
_FORMAT_FIELD_RE = re.compile(r"\d*|[A-Za-z][A-Za-z0-9_]*")


class Exceeded(Exception):
    """The evaluation went over its budget; the evaluator reports it at the file's line."""


class Meter:
    """Counts the steps of one evaluation and checks sizes against its budget."""

    def __init__(self, budget: Budget):
        self.budget = budget
        self.steps = 0
        self.max_steps = budget.max_steps
        self.max_size = budget.max_size
        self._templates: dict[str, int] = {}  # %-template -> its size without the values

    # -- steps ---------------------------------------------------------------------------------

    def charge(self, steps: int) -> None:
        self.steps += steps
        if self.steps > self.max_steps:
            raise Exceeded(
                f"evaluation took more than {self.max_steps} steps (an endless or huge loop?); "
                "the limit is [evaluation] max_steps in .cache-spec"
            )

    def charge_size(self, value: Any) -> Any:
        """Charge the C-level work of using ``value`` whole; return it unchanged."""
        if isinstance(value, _SIZED):
            self.steps += len(value) // _C_STEP
            if self.steps > self.max_steps:
                self.charge(0)
        return value

    def iterate(self, value: Any) -> Iterator[Any]:
        """One step per iteration; lists and dicts are iterated over a snapshot, so mutating
        them in the loop cannot make it endless."""
        if isinstance(value, (list, dict)):
            self.charge_size(value)
            value = tuple(value)
        for item in value:
            self.steps += 1
            if self.steps > self.max_steps:
                self.charge(0)
            yield item

    def enter(self) -> None:
        """A call of a function the BUILD file defines."""
        self.steps += 1
        if self.steps > self.max_steps:
            self.charge(0)

    # -- sizes ---------------------------------------------------------------------------------

    def check_size(self, size: int, what: str = "value", unit: str = "elements") -> None:
        if size > self.max_size:
            raise Exceeded(
                f"{what} of {size} {unit} is larger than the size budget ({self.max_size}); "
                "the limit is [evaluation] max_size in .cache-spec"
            )

    def check_bits(self, bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise Exceeded(f"integer of about {bits} bits is wider than {MAX_INT_BITS} bits")

    def text_size(self, value: Any, *, quoted: bool = False) -> int:
        """An upper bound of ``len(str(value))`` (``repr`` when ``quoted``), found without
        making the text and given up past the size budget."""
        if type(value) is str and not quoted:
            return len(value)
        if type(value) is int:
            return value.bit_length() * 3 // 10 + 2
        total = 0
        stack = [(value, quoted)]
        while stack:
            item, in_repr = stack.pop()
            if isinstance(item, str):
                total += len(item) + 2 if not in_repr or item.isprintable() else 10 * len(item) + 2
            elif isinstance(item, bool) or item is None:
                total += 5
            elif isinstance(item, int):
                total += item.bit_length() * 3 // 10 + 2
            elif isinstance(item, float):
                total += 24
            elif isinstance(item, (list, tuple)):
                total += 2 + 2 * len(item)
                stack.extend((element, True) for element in item)
            elif isinstance(item, dict):
                total += 2 + 4 * len(item)
                stack.extend((element, True) for pair in item.items() for element in pair)
            else:
                total += 100
            if total > self.max_size:
                break
        return total

    # -- operators -----------------------------------------------------------------------------

    def operators(self) -> dict[str, Callable[[Any, Any], Any]]:
        """``left op right`` for each operator that can grow a value (+, *, **, <<, %): one
        step each, the size of what it makes checked first. Plain numbers and short strings
        take the fast path: these run once or more per loop iteration."""

        def add(left: Any, right: Any) -> Any:
            self.steps += 1
            if type(left) is str and type(right) is str and len(left) + len(right) < 4096:
                if self.steps > self.max_steps:
                    self.charge(0)
                return left + right
            self._check_binop(left, right, "+")
            result = left + right
            if isinstance(result, int):
                self.check_bits(result.bit_length())
            return result

        def mod(left: Any, right: Any) -> Any:
            self.steps += 1
            if self.steps > self.max_steps:
                self.charge(0)
            if type(left) is str:
                self.check_size(self._percent_size(left, right), "formatted string")
            return left % right

        def checked(op: str) -> Callable[[Any, Any], Any]:
            apply = _OPERATORS[op]

            def run(left: Any, right: Any) -> Any:
                self.steps += 1
                self._check_binop(left, right, op)
                return apply(left, right)

            return run

        return {"+": add, "%": mod, "*": checked("*"), "**": checked("**"), "<<": checked("<<")}

    def augment(self, left: Any, right: Any, op: str) -> Any:
        """``left op= right`` (in place for lists, as in Python)."""
        self._check_binop(left, right, op)
        result = _IN_PLACE[op](left, right)
        if isinstance(result, int) and op == "+":
            self.check_bits(result.bit_length())
        return result

    def augment_item(self, container: Any, index: Any, right: Any, op: str) -> None:
        container[index] = self.augment(container[index], right, op)

    def _check_binop(self, left: Any, right: Any, op: str) -> None:
        if self.steps > self.max_steps:
            self.charge(0)
        if op == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                self.charge_size(left)
                self.charge_size(right)
                self.check_size(len(left) + len(right))
        elif op == "*":
            if isinstance(left, int) and isinstance(right, (str, list, tuple)):
                left, right = right, left
            if isinstance(left, (str, list, tuple)) and isinstance(right, int):
                size = len(left) * max(right, 0)
                self.check_size(size)
                self.charge(size // _C_STEP)
            elif isinstance(left, int) and isinstance(right, int):
                self.check_bits(left.bit_length() + right.bit_length())
        elif op == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                self.check_bits((abs(left) - 1).bit_length() * right)
        elif op == "<<":
            if isinstance(left, int) and isinstance(right, int) and left and right > 0:
                self.check_bits(left.bit_length() + right)
        elif op == "%" and isinstance(left, str):
            self.check_size(self._percent_size(left, right), "formatted string")

    def _percent_size(self, template: str, args: Any) -> int:
        """An upper bound of the length of ``template % args``."""
        size = self._templates.get(template)
        if size is None:
            size = len(template)
            for match in _PERCENT_RE.finditer(template):
                for number in (match.group(2), match.group(3)):
                    if number == "*":
                        raise Exceeded("'*' widths are not supported in BUILD files")
                    if number:
                        size += int(number) if len(number) < 12 else self.max_size + 1
            self._templates[template] = size
        if isinstance(args, tuple):
            return size + sum(self.text_size(value, quoted=True) for value in args)
        if isinstance(args, dict):
            return size + sum(self.text_size(value, quoted=True) for value in args.values())
        return size + self.text_size(args, quoted=True)

    # -- builtins and methods ------------------------------------------------------------------

    def text(self, convert: Callable[[Any], str], quoted: bool) -> Callable[..., str]:
        """``str`` or ``repr``, checked before the text is made."""

        def make(*args: Any) -> str:
            if args:
                size = self.text_size(args[0], quoted=quoted)
                self.check_size(size, "text")
                self.charge(size // _C_STEP)
            return convert(*args)

        return make

    def consuming(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """A builtin that walks its arguments (``sorted``, ``sum``, ``list``...), charged for
        doing so."""

        def call(*args: Any, **kwargs: Any) -> Any:
            for arg in args:
                self.charge_size(arg)
            return func(*args, **kwargs)

        return call

    def builtin(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """A bt builtin (``image()``...): its Python-level work grows with its arguments."""

        def call(*args: Any, **kwargs: Any) -> Any:
            steps = 1
            for arg in (*args, *kwargs.values()):
                if isinstance(arg, str):
                    steps += len(arg) // _C_STEP  # matched by a regular expression, in C
                elif isinstance(arg, _SIZED):
                    steps += len(arg)
            self.charge(steps)
            return func(*args, **kwargs)

        return call

    def method(self, obj: Any, name: str) -> Any:
        self.charge_size(obj)
        if isinstance(obj, str):
            if name == "format":
                return self.formatter(obj)
            if name == "join":
                return lambda parts: self._join(obj, parts)
            if name == "replace":
                return lambda old, new, count=-1: self._replace(obj, old, new, count)
            if name == "zfill":
                return lambda width: self._zfill(obj, width)
        elif isinstance(obj, list) and name == "extend":
            return lambda items: self._extend(obj, items)
        return getattr(obj, name)

    def _join(self, separator: str, parts: Iterable[Any]) -> str:
        items = list(parts)
        self.charge_size(items)
        size = len(separator) * max(len(items) - 1, 0)
        size += sum(len(item) for item in items if isinstance(item, str))
        self.check_size(size, "joined string")
        return separator.join(items)

    def _replace(self, text: str, old: str, new: str, count: int = -1) -> str:
        if isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
            found = text.count(old) if old else len(text) + 1
            if isinstance(count, int) and count >= 0:
                found = min(found, count)
            self.check_size(len(text) + found * (len(new) - len(old)), "string")
        return text.replace(old, new, count)

    def _zfill(self, text: str, width: int) -> str:
        if isinstance(width, int):
            self.check_size(width, "string")
        return text.zfill(width)

    def _extend(self, items: list[Any], more: Iterable[Any]) -> None:
        if isinstance(more, _SIZED):
            self.charge_size(more)
            self.check_size(len(items) + len(more), "list")
        items.extend(more)
        self.check_size(len(items), "list")

    def formatter(self, template: str) -> Callable[..., str]:
        """``template.format``: plain fields only (``"{0.__class__}"`` could read attributes),
        every field's width and text checked before the result is made."""
        for _, field, spec, _ in string.Formatter().parse(template):
            if field and not _FORMAT_FIELD_RE.fullmatch(field):
                raise ValueError(f"format field {field!r}: only {{}}, {{0}} or {{name}} allowed")
            if spec and "{" in spec:
                self.formatter(spec)
        self.check_size(len(template), "format string")
        return lambda *args, **kwargs: _Formatter(self).vformat(template, args, kwargs)

    def formatted_value(self, value: Any, conversion: int, spec: str) -> str:
        """One ``{value!conversion:spec}`` field of an f-string."""
        if conversion in (ord("r"), ord("a")):
            value = self.text(repr, True)(value)
        elif conversion == ord("s"):
            value = self.text(str, False)(value)
        self.check_size(self._field_size(value, spec), "formatted string")
        return format(value, spec)

    def joined(self, parts: list[str]) -> str:
        """An f-string's pieces, joined."""
        self.check_size(sum(len(part) for part in parts), "formatted string")
        return "".join(parts)

    def _field_size(self, value: Any, spec: str) -> int:
        widths = [int(n) if len(n) < 12 else self.max_size + 1 for n in _NUMBER_RE.findall(spec)]
        return self.text_size(value) + sum(widths)

    def range(self, *args: int) -> range:
        result = range(*args)
        self.check_size(len(result), "range")
        self.charge(len(result) // _C_STEP)
        return result


class _Formatter(string.Formatter):
    """``str.format`` that checks each field before formatting it, and the running total."""

    def __init__(self, meter: Meter):
        self.meter = meter
        self.total = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        self.total += self.meter._field_size(value, format_spec)
        self.meter.check_size(self.total, "formatted string")
        return format(value, format_spec)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion in ("r", "a"):
            return self.meter.text(repr, True)(value)
        if conversion == "s":
            return self.meter.text(str, False)(value)
        return super().convert_field(value, conversion)


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "*": operator.mul, "**": operator.pow, "<<": operator.lshift,
    "%": operator.mod,
}  # fmt: skip
_IN_PLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.iadd, "*": operator.imul, "**": operator.ipow, "<<": operator.ilshift,
    "%": operator.imod,
}  # fmt: skip
