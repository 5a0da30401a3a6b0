"""Counts in what bt says: ``1 platform build``, ``2 platform builds``."""

from __future__ import annotations


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and ``noun``, in the plural unless it is one (``plural``: when adding an
    ``s`` is not how the noun makes it, as ``index``, ``indexes``)."""
    if number == 1:
        return f"{number} {noun}"
    return f"{number} {plural or noun + 's'}"
