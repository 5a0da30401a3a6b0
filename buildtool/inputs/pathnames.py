"""File names as bt shows them: unambiguous, one line, whatever bytes they hold.

A name the file system allows may hold bytes that are not UTF-8 (Python keeps them as surrogate
escapes), newlines, leading or trailing spaces, quotes. ``shown_path`` leaves a plain name as it
is and writes any other in double quotes with Go's ``%q`` escapes (``"d/new\\nline"``,
``"d/bad\\xff"``), so each name is one line and no two names look alike.
"""

from __future__ import annotations

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}


def shown_path(path: str) -> str:
    plain = path.isprintable() and '"' not in path and "\\" not in path
    if plain and path == path.strip() and "  " not in path:  # `bt inputs` columns: two spaces
        return path
    out = []
    for char in path:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (os.fsdecode's escape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif not char.isprintable() and char != " ":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
