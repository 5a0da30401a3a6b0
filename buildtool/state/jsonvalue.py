"""JSON read from files and from engines and registries, with a bound on its nesting.

Python's decoder recurses once per level: a value nested thousands of levels deep (a hostile
file or server) would end in RecursionError, a crash. Such input is refused like any other bad
input: one line naming where it came from (exit 2). Nothing bt reads nests more than a few
levels; ``MAX_DEPTH`` is far above that and far below the interpreter's limit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from buildtool.errors import BtError

MAX_DEPTH = 200


def load_json(text: str | bytes, where: str | Path | None, what: str = "not valid JSON") -> Any:
    """``text`` parsed; BtError ``<where>: <what>: <reason>`` when it is not JSON or nests
    deeper than ``MAX_DEPTH``."""
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
        depth = MAX_DEPTH + 1
    except ValueError as err:
        raise BtError(f"{what}: {err}", where) from None
    else:
        depth = nesting(value)
    if depth > MAX_DEPTH:
        raise BtError(f"{what}: nested more than {MAX_DEPTH} levels deep", where)
    return value


def nesting(value: Any) -> int:
    """How many levels of lists and objects ``value`` nests (walked without recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest
