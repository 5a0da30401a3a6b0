"""Whether a workspace path matches a ``.cache-spec`` global input pattern, exactly as
``glob.glob(pattern, root_dir=root, recursive=True)`` (what keys use, ``filesets.py``) finds it.

``fnmatch`` is not that matcher: its ``*`` crosses ``/`` and it has no ``**``, so ``a/**/b.txt``
does not match ``a/b.txt`` there while glob finds it. Here, as in glob: ``*``, ``?`` and
``[...]`` stay within one path component, ``**`` is zero or more directories (all that is
below, at the end), and a component starting with ``.`` is matched only by a pattern part that
starts with ``.``.
"""

from __future__ import annotations

import re
from functools import lru_cache

_NOT_HIDDEN = r"(?!\.)"


def glob_matches(path: str, pattern: str) -> bool:
    """``path``: relative to the workspace root, ``/``-separated."""
    return _compiled(pattern).fullmatch(path) is not None


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    parts = pattern.split("/")
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            below = rf"{_NOT_HIDDEN}[^/]*"
            regex += rf"(?:{below}(?:/{below})*)?" if last else rf"(?:{below}/)*"
            continue
        regex += ("" if part.startswith(".") else _NOT_HIDDEN) + _component(part)
        regex += "" if last else "/"
    return re.compile(regex, re.DOTALL)


def _component(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        char = part[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = part.find("]", i + 2 if part[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(char))
            else:
                body = part[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"(?!/)[{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)
